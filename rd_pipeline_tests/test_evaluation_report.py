"""The report: terminal table, markdown, summary lines and charts from score rows."""

import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from rd_pipeline.evaluation.metrics import accuracy, breakdown, win_rate
from rd_pipeline.evaluation.report import MODEL_ROLES, render_report
from rd_pipeline.evaluation.report_tables import format_table

# The built-in GSM-Plus sample ships with the package, so these tests need no external data.
GSM_PLUS_SAMPLE = (
    Path(__file__).resolve().parents[1] / "rd_pipeline" / "benchmarks" / "samples" / "gsm_plus_sample.jsonl"
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RATES = {"teacher": 0.7, "base_student": 0.25, "sft_student": 0.5, "rl_student": 0.8}


def _row(benchmark, role, metric, est):
    return {
        "benchmark": benchmark,
        "model_role": role,
        "model_version": f"{role}-v1",
        "metric": metric,
        "value": est.value,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "n": est.n,
    }


def _correct(rate: float, n: int) -> list[bool]:
    """A deterministic correctness pattern with exactly round(rate * n) successes, spread out."""
    k = round(rate * n)
    return [(i * k) // n != ((i + 1) * k) // n for i in range(n)]


def _gsm_plus_types(limit: int = 160) -> list[str]:
    with GSM_PLUS_SAMPLE.open() as f:
        return [json.loads(line)["perturbation_type"] for _, line in zip(range(limit), f, strict=False)]


def _scores(benchmarks=("gsm8k", "gsm_plus", "mmlu_pro"), alpaca=True):
    rows = []
    for bench in benchmarks:
        for role, rate in RATES.items():
            rows.append(_row(bench, role, "accuracy", accuracy(_correct(rate, 120))))
    if alpaca:
        for role, rate in RATES.items():
            prefs = [1.0 if c else 0.0 for c in _correct(rate, 40)] + [0.5] * 4 + [None]
            est = win_rate(prefs)
            rows.append(_row("alpaca_eval", role, "win_rate", est))
            rows.append(_row("alpaca_eval", role, "lc_win_rate", est))
    return rows


def _gsm_plus_breakdown():
    types = _gsm_plus_types()
    rows = []
    for role, rate in RATES.items():
        for group, est in breakdown(_correct(rate, len(types)), types).items():
            rows.append(
                {
                    "benchmark": "gsm_plus",
                    "model_role": role,
                    "group_kind": "perturbation_type",
                    "group": group,
                    "value": est.value,
                    "n": est.n,
                }
            )
    return rows


def _rewards():
    rows = []
    for bench in ("gsm8k", "alpaca_eval"):
        rows += [{"benchmark": bench, "source": "teacher", "score": 0.5 + 0.1 * (i % 13)} for i in range(60)]
        rows += [{"benchmark": bench, "source": "student", "score": -0.4 + 0.1 * (i % 11)} for i in range(50)]
    return rows


def _assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image.std() > 0.01  # not a blank canvas


def test_format_table_rows_columns_and_values():
    text = format_table(_scores())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["benchmark", "metric", "teacher"]
    assert "RL student" in lines[0] and "SFT student" in lines[0]
    gsm8k = next(line for line in lines if line.startswith("gsm8k"))
    # 84 of 120 = 70.0%; Wilson half-width 1.96 * sqrt(0.21/120 + 3.8415/57600) / 1.03201 = 8.1 points.
    assert "70.0 ±8.1" in gsm8k
    assert any(line.startswith("alpaca_eval") and "LC win rate" in line for line in lines)
    assert len([line for line in lines if line.startswith(("gsm", "mmlu", "alpaca"))]) == 5


def test_format_table_marks_missing_roles_and_handles_no_rows():
    rows = [r for r in _scores(("gsm8k",), alpaca=False) if r["model_role"] != "rl_student"]
    line = next(li for li in format_table(rows).splitlines() if li.startswith("gsm8k"))
    assert line.rstrip().split()[-2:] == ["-", "120"]
    assert format_table([]) == "(no evaluation scores)"


def test_last_row_wins_for_a_repeated_role():
    rows = _scores(("gsm8k",), alpaca=False)
    rows.append(_row("gsm8k", "teacher", "accuracy", accuracy([True] * 9 + [False])))
    line = next(li for li in format_table(rows).splitlines() if li.startswith("gsm8k"))
    assert line.split()[2] == "90.0"


def test_full_report_renders_markdown_summary_and_valid_pngs(tmp_path):
    report = render_report(_scores(), tmp_path, _gsm_plus_breakdown(), _rewards())
    names = sorted(p.name for p in report.png_paths)
    assert names == ["gsm_plus_by_perturbation_type.png", "reward_scores.png", "scores.png"]
    for path in report.png_paths:
        assert path.parent == tmp_path
        _assert_valid_png(path)
    assert report.markdown_path == tmp_path / "report.md"
    assert report.markdown_path.read_text() == report.markdown
    assert "![scores](scores.png)" in report.markdown
    assert "critical thinking" in report.markdown and "Not shown" not in report.markdown
    assert report.table_text.splitlines()[0] == format_table(_scores()).splitlines()[0]
    # The RL student (80%) beats the teacher (70%) on 120 items: level within the interval.
    assert len(report.summary_lines) == 5
    gsm8k = report.summary_lines[0]
    assert gsm8k.startswith("gsm8k (RL student) accuracy") and "+10.0 pts" in gsm8k


def test_summary_falls_back_to_the_most_trained_student_present(tmp_path):
    rows = [r for r in _scores(("gsm8k",), alpaca=False) if r["model_role"] in ("teacher", "sft_student")]
    report = render_report(rows, tmp_path)
    assert report.summary_lines[0].startswith("gsm8k (SFT student) accuracy")
    assert "falls short" in report.summary_lines[0]


def test_missing_partitions_skip_their_charts_and_say_so(tmp_path):
    report = render_report(_scores(("gsm8k",), alpaca=False), tmp_path)
    assert [p.name for p in report.png_paths] == ["scores.png"]
    _assert_valid_png(report.png_paths[0])
    assert "GSM-Plus perturbation-type chart skipped" in report.markdown
    assert "reward-score chart skipped" in report.markdown
    assert not (tmp_path / "reward_scores.png").exists()


def test_report_with_no_scores_at_all(tmp_path):
    report = render_report([], tmp_path, [], [])
    assert report.png_paths == []
    assert report.summary_lines == []
    assert "No evaluation scores yet" in report.markdown
    assert "scores chart skipped" in report.markdown


def test_only_alpaca_eval_and_a_single_reward_source(tmp_path):
    rows = [r for r in _scores((), alpaca=True) if r["model_role"] in ("teacher", "rl_student")]
    rewards = [{"benchmark": "alpaca_eval", "source": "student", "score": float(i % 7)} for i in range(30)]
    report = render_report(rows, tmp_path, None, rewards)
    assert sorted(p.name for p in report.png_paths) == ["reward_scores.png", "scores.png"]
    for path in report.png_paths:
        _assert_valid_png(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("ci_low"), r"scores\[1\] lacks field\(s\) ci_low"),
        (lambda r: r.update(model_role="judge"), r"scores\[1\].model_role = 'judge'"),
        (lambda r: r.update(metric="f1"), r"scores\[1\].metric = 'f1'"),
        (lambda r: r.update(value="high"), r"scores\[1\].value = 'high' is not a number"),
        (lambda r: r.update(n=2.5), r"scores\[1\].n = 2.5 is not a count"),
    ],
)
def test_bad_score_rows_name_the_row_and_field(tmp_path, mutate, message):
    rows = _scores(("gsm8k",), alpaca=False)
    mutate(rows[1])
    with pytest.raises(ValueError, match=message):
        render_report(rows, tmp_path)


def test_bad_breakdown_and_reward_rows_name_the_row_and_field(tmp_path):
    bad = _gsm_plus_breakdown()[:3]
    del bad[2]["group"]
    with pytest.raises(ValueError, match=r"breakdown_rows\[2\] lacks field\(s\) group"):
        render_report(_scores(), tmp_path, bad)
    with pytest.raises(ValueError, match=r"reward_scores\[0\].source = 'judge'"):
        render_report(_scores(), tmp_path, None, [{"benchmark": "gsm8k", "source": "judge", "score": 1.0}])


def test_model_roles_are_the_four_of_the_pipeline():
    assert MODEL_ROLES == ("teacher", "base_student", "sft_student", "rl_student")
