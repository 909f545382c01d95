"""The rd command's own logic: run planning, selection errors, and messages when nothing exists yet."""

from __future__ import annotations

from pathlib import Path

import pytest

from rd_pipeline.cli import main
from rd_pipeline.defs.run import plan_runs


def test_runs_group_partitioned_assets_per_partition():
    runs = plan_runs(
        ["benchmark_prompts", "teacher_responses", "sft_student", "eval_scores", "report"],
        ["gsm8k", "mmlu_pro"],
    )
    assert runs == [
        (["benchmark_prompts", "teacher_responses"], "gsm8k"),
        (["benchmark_prompts", "teacher_responses"], "mmlu_pro"),
        (["sft_student"], None),
        (["eval_scores"], "gsm8k"),
        (["eval_scores"], "mmlu_pro"),
        (["report"], None),
    ]


def test_unknown_asset_is_refused():
    with pytest.raises(ValueError, match=r"unknown asset\(s\) \['teacher_answers'\]"):
        plan_runs(["teacher_answers"], ["gsm8k"])


def test_report_and_lineage_before_any_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("RD_HOME", str(tmp_path))
    assert main(["report", "--preset", "tiny"]) == 1
    assert "no eval scores yet" in capsys.readouterr().err
    assert main(["lineage", "rl_student", "--preset", "tiny"]) == 1
    assert "no materialization of rl_student" in capsys.readouterr().err


def test_bad_config_exits_2_with_the_field(tmp_path: Path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("teacher: {ref: tiny-random}\n")
    assert main(["report", "--config", str(path)]) == 2
    assert "student: Field required" in capsys.readouterr().err


def test_shipped_instance_config_matches_the_one_rd_installs():
    root = Path(__file__).resolve().parents[1]
    packaged = root / "rd_pipeline" / "defs" / "dagster_instance.yaml"
    assert (root / "dagster.yaml").read_text() == packaged.read_text()
    assert "pools" in packaged.read_text() and "run_retries" in packaged.read_text()
