"""The whole graph through Dagster with the tiny preset, every partition; then a no-op re-run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import dagster as dg
import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rd_pipeline.config import load_preset
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.defs.run import materialize_graph
from rd_pipeline.store import Store

GENERATING_ASSETS = ("teacher_responses", "student_responses", "eval_scores", "judge_audit")
MODEL_ASSETS = ("sft_student", "reward_model", "rl_student")
WARNINGS_OF_FIRST_RUN: list[warnings.WarningMessage] = []


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory: pytest.TempPathFactory):
    """Materialize the full tiny graph once for every test in this module."""
    rd_home = tmp_path_factory.mktemp("rd_home")
    saved = {key: os.environ.get(key) for key in ("RD_HOME", "DAGSTER_HOME", "RD_PRESET", "RD_CONFIG")}
    os.environ["RD_HOME"] = str(rd_home)
    os.environ["RD_PRESET"] = "tiny"
    os.environ.pop("RD_CONFIG", None)
    config = load_preset("tiny")
    resource = PipelineResource(preset="tiny")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = materialize_graph(config, resource, log_level="WARNING")
    WARNINGS_OF_FIRST_RUN[:] = caught
    yield config, resource, rd_home, first
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
        ),
        limit=1,
    ).records
    assert records, f"no materialization of {asset}[{partition}]"
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


def _dump(rows: list[dict]) -> str:
    """Rows as text, so that NaN values (undefined metrics) compare equal."""
    return json.dumps(rows, sort_keys=True, default=str)


def test_no_dagster_preview_or_beta_notice_reaches_the_user(tiny_graph):
    """Launching training through Pipes uses a Dagster API still marked preview; its notice says nothing to users."""
    notices = [
        str(w.message)
        for w in WARNINGS_OF_FIRST_RUN
        if issubclass(w.category, dg.PreviewWarning | dg.BetaWarning)
    ]
    assert notices == [], "\n".join(notices)


def test_every_run_succeeds_and_every_table_is_populated(tiny_graph):
    config, _, rd_home, first = tiny_graph
    assert first and all(result.success for result in first)
    store = Store(rd_home / "rd.duckdb")
    for table in (
        "benchmark_prompts",
        "teacher_responses",
        "pseudo_labels",
        "student_responses",
        "eval_responses",
        "eval_scores",
        "judge_audit",
        "asset_versions",
        "generation_usage",
    ):
        for benchmark in config.benchmark_names if table not in ("asset_versions",) else [None]:
            assert store.count(table, benchmark) > 0, f"{table}[{benchmark}] is empty"
    # The tiny judge is a random model whose verdicts never parse as text, but its verdict probabilities rate
    # every AlpacaEval response, so every benchmark gets reward labels.
    for benchmark in config.benchmark_names:
        assert store.count("reward_labels", benchmark) > 0, f"reward_labels[{benchmark}] is empty"
    assert store.count("reward_pairs") > 0
    # n samples per prompt at each temperature, for every training prompt
    for benchmark in config.benchmark_names:
        prompts = store.read("benchmark_prompts", benchmark, split="train")
        expected = len(prompts) * config.sampling.n * len(config.sampling.temperatures)
        assert store.count("teacher_responses", benchmark) == expected
        assert store.count("student_responses", benchmark) == expected
    roles = {(row["benchmark"], row["model_role"]) for row in store.read("eval_scores")}
    assert roles == {
        (b, r)
        for b in config.benchmark_names
        for r in ("teacher", "base_student", "sft_student", "rl_student")
    }
    report_md = rd_home / "reports" / "latest" / "report.md"
    assert report_md.is_file() and "gsm8k" in report_md.read_text()
    assert "## Judge audit" in report_md.read_text()


def test_rl_validation_curve_and_rollouts_are_stored(tiny_graph):
    """rl_student validates every step from the SFT student (step 0) and records every rollout it trained on."""
    config, _, rd_home, _ = tiny_graph
    store = Store(rd_home / "rd.duckdb")
    version = store.latest_version("rl_student")["data_version"]
    validation = [row for row in store.read("rl_validation") if row["rl_version"] == version]
    benchmarks = {row["benchmark"] for row in validation}
    assert benchmarks and benchmarks <= set(config.benchmark_names)
    for benchmark in benchmarks:
        curve = [row for row in validation if row["benchmark"] == benchmark]
        assert sorted(row["step"] for row in curve) == list(range(config.rl.max_steps + 1))  # every step
        assert sum(row["selected"] for row in curve) == 1
        assert [row["kl"] for row in sorted(curve, key=lambda r: r["step"])][0] == 0.0
        assert all(row["kl"] is not None for row in curve)
    rollouts = [row for row in store.read("rl_rollouts") if row["rl_version"] == version]
    trained_steps = {row["step"] for row in rollouts}
    assert trained_steps and min(trained_steps) == 1
    assert len(rollouts) == config.rl.batch_size * len(trained_steps)  # log_rollouts: all
    for row in rollouts:
        assert row["benchmark"] in config.benchmark_names and row["prompt_id"]
        assert row["reward"] is not None and row["advantage"] is not None and row["length"] >= 0


def test_sft_validation_curve_is_stored(tiny_graph):
    """sft_student validates every step from the base student (step 0) on prompts held out of SFT; open-ended
    prompts are judged against the base student's answers inside the training job (the tiny judge is the
    teacher), step 0 at 0.5 by construction."""
    config, _, rd_home, _ = tiny_graph
    store = Store(rd_home / "rd.duckdb")
    version = store.latest_version("sft_student")["data_version"]
    validation = store.read("sft_validation", sft_version=version)
    benchmarks = {row["benchmark"] for row in validation}
    assert benchmarks and benchmarks <= set(config.benchmark_names)
    selected = {row["step"] for row in validation if row["selected"]}
    assert len(selected) <= 1
    for benchmark in benchmarks:
        curve = [row for row in validation if row["benchmark"] == benchmark]
        assert sorted(row["step"] for row in curve) == list(range(config.sft.max_steps + 1))
        assert all(row["kl"] is None and row["mean_reward"] is None for row in curve)
    open_ended = sorted((r for r in validation if r["benchmark"] == "alpaca_eval"), key=lambda r: r["step"])
    assert open_ended and all(r["agreement_n"] == 0 and r["agreement"] is None for r in open_ended)
    assert open_ended[0]["win_rate"] == 0.5 and all(
        r["win_n"] == open_ended[0]["prompts"] for r in open_ended
    )
    assert all(0.0 <= r["win_rate"] <= 1.0 for r in open_ended)
    metadata = _latest_metadata(dg.DagsterInstance.get(), "sft_student")
    assert metadata["validation_prompts"] == sum(row["prompts"] for row in validation if row["step"] == 0)
    assert "shipped" in metadata and "alpaca_eval" not in metadata.get("validation_unscored", "")
    assert metadata["validation_curve"][0]["win_rate"] == 0.5
    report = (rd_home / "reports" / "latest" / "report.md").read_text()
    assert "## SFT validation" in report


def test_checkpoints_load_and_carry_lineage(tiny_graph):
    config, _, rd_home, _ = tiny_graph
    store = Store(rd_home / "rd.duckdb")
    teacher_versions = {row["teacher_version"] for row in store.read("teacher_responses")}
    assert len(teacher_versions) == 1
    for asset in MODEL_ASSETS:
        version = store.latest_version(asset)["data_version"]
        path = rd_home / "models" / asset / version
        assert list(path.glob("*.safetensors")), f"{asset} has no safetensors weights"
        lineage = json.loads((path / "lineage.json").read_text())
        assert lineage["version"] == version
        assert set(lineage["teacher_versions"]) == teacher_versions
        assert lineage["metrics"], f"{asset} lineage has no metrics"
        loader = AutoModelForSequenceClassification if asset == "reward_model" else AutoModelForCausalLM
        model = loader.from_pretrained(path)
        assert sum(p.numel() for p in model.parameters()) > 0
    sft_lineage = json.loads(
        (
            rd_home
            / "models"
            / "sft_student"
            / store.latest_version("sft_student")["data_version"]
            / "lineage.json"
        ).read_text()
    )
    assert set(sft_lineage["upstream"]) == {f"pseudo_labels[{b}]" for b in config.benchmark_names}
    for ref in sft_lineage["upstream"].values():
        assert ref["run_id"] and ref["data_version"] and ref["teacher_versions"]
        assert set(ref["teacher_versions"]) <= teacher_versions


def test_materialization_metadata_in_dagster(tiny_graph):
    config, _, rd_home, _ = tiny_graph
    instance = dg.DagsterInstance.get()
    assert Path(instance.root_directory) == rd_home / "dagster"
    teacher = _latest_metadata(instance, "teacher_responses", "gsm8k")
    assert teacher["rows"] > 0 and teacher["teacher_version"]
    labels = _latest_metadata(instance, "pseudo_labels", "gsm8k")
    assert "coverage" in labels and "gold_label_accuracy" in labels
    sft = _latest_metadata(instance, "sft_student")
    assert (
        sft["examples"] > 0
        and "train_loss" in sft
        and set(sft["teacher_versions"]) == {teacher["teacher_version"]}
    )
    scores = _latest_metadata(instance, "eval_scores", "mmlu_pro")
    assert "teacher_accuracy" in scores and "rl_student_accuracy" in scores
    observation = instance.fetch_observations(dg.AssetKey("teacher"), limit=1).records
    assert observation and observation[0].asset_observation.data_version


def test_second_materialization_generates_and_trains_nothing(tiny_graph):
    config, resource, rd_home, _ = tiny_graph
    store = Store(rd_home / "rd.duckdb")
    before = {table: store.read(table) for table in ("teacher_responses", "student_responses", "eval_scores")}
    journal_sizes = {p.name: p.stat().st_size for p in (rd_home / "journal").glob("*.sqlite")}
    second = materialize_graph(config, resource, log_level="WARNING")
    assert all(result.success for result in second)
    instance = dg.DagsterInstance.get()
    for benchmark in config.benchmark_names:
        for asset in GENERATING_ASSETS:
            metadata = _latest_metadata(instance, asset, benchmark)
            assert metadata["samples_generated"] == 0, f"{asset}[{benchmark}] generated on a no-op re-run"
    for asset in MODEL_ASSETS:
        assert _latest_metadata(instance, asset)["trained_now"] is False
    for table, rows in before.items():
        assert _dump(store.read(table)) == _dump(rows), f"{table} changed on a no-op re-run"
    assert {p.name for p in (rd_home / "journal").glob("*.sqlite")} == set(journal_sizes)


def test_dagster_cli_materializes_one_partition(tiny_graph):
    _, _, rd_home, _ = tiny_graph
    env = dict(os.environ, RD_HOME=str(rd_home), RD_PRESET="tiny", DAGSTER_HOME=str(rd_home / "dagster"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "rd_pipeline.definitions",
            "--select",
            "teacher_responses",
            "--partition",
            "gsm8k",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RUN_SUCCESS" in result.stderr + result.stdout


def test_lineage_cli_traces_rl_student_to_the_teacher(tiny_graph, capsys):
    from rd_pipeline.cli import main

    _, _, rd_home, _ = tiny_graph
    store = Store(rd_home / "rd.duckdb")
    teacher_version = store.read("teacher_responses")[0]["teacher_version"]
    assert main(["lineage", "rl_student", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rl_student  version " + store.latest_version("rl_student")["data_version"])
    for upstream in (
        "reward_model",
        "sft_student",
        "reward_labels[gsm8k]",
        "student_responses[gsm8k]",
        "pseudo_labels[mmlu_pro]",
        "teacher_responses[alpaca_eval]",
        "benchmark_prompts[gsm_plus]",
    ):
        assert upstream in out, f"{upstream} missing from the lineage"
    assert f"teacher version(s): {teacher_version}" in out
    version = store.latest_version("rl_student")["data_version"]
    rollouts = len(store.read("rl_rollouts", rl_version=version))
    assert f"rl_rollouts: {rollouts} rows of this version in {rd_home / 'rd.duckdb'}" in out
    assert f"SELECT * FROM rl_rollouts WHERE rl_version = '{version}'" in out


def test_report_charts_are_valid_pngs(tiny_graph):
    import matplotlib.image

    _, _, rd_home, _ = tiny_graph
    report_dir = (rd_home / "reports" / "latest").resolve()
    pngs = sorted(report_dir.glob("*.png"))
    assert {p.name for p in pngs} >= {"scores.png", "gsm_plus_by_perturbation_type.png", "reward_scores.png"}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 100 and image.shape[1] > 100


def test_asset_checks_ran(tiny_graph):
    instance = dg.DagsterInstance.get()
    for asset, check in (
        ("pseudo_labels", "label_coverage"),
        ("pseudo_labels", "gold_label_accuracy"),
        ("reward_model", "heldout_accuracy"),
        ("teacher_responses", "not_empty"),
        ("eval_scores", "complete"),
    ):
        records = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(asset), check), limit=1
        )
        assert records, f"check {asset}:{check} never ran"


def test_judge_rates_every_alpaca_eval_response_from_its_probabilities(tiny_graph):
    """The tiny judge is random, yet its verdict probabilities score every response it labels and break every
    comparison (no tie from position bias); the report warns that the judge (the teacher) is also evaluated."""
    config, _, rd_home, _ = tiny_graph
    store = Store(rd_home / "rd.duckdb")
    labels = store.read("pseudo_labels", "alpaca_eval")
    assert labels and all(row["judge_score"] is not None and 1 <= row["judge_score"] <= 10 for row in labels)
    assert len({round(row["judge_score"], 6) for row in labels}) > 1
    students = [row for row in store.read("reward_labels", "alpaca_eval") if row["source"] == "student"]
    assert len(students) == store.count("student_responses", "alpaca_eval")
    metadata = _latest_metadata(dg.DagsterInstance.get(), "pseudo_labels", "alpaca_eval")
    assert metadata["judge_verdicts_probability"] == len(labels) and metadata["judge_verdicts_none"] == 0
    eval_prompts = len(store.read("benchmark_prompts", "alpaca_eval", split="eval"))
    preferences = [row["preference"] for row in store.read("eval_responses", "alpaca_eval")]
    assert len(preferences) == 4 * eval_prompts
    assert all(p is not None and 0 < p < 1 and p != 0.5 for p in preferences)
    for row in store.read("eval_scores", "alpaca_eval"):
        assert row["n"] == eval_prompts and row["ci_low"] < row["value"] < row["ci_high"], row
    report = (rd_home / "reports" / "latest" / "report.md").read_text()
    assert "## Warnings" in report and "is also an evaluated model (teacher, base student)" in report


def test_moved_rd_home_generates_and_trains_nothing(tiny_graph, tmp_path):
    """RD_HOME copied elsewhere (every path changes, no content does) reuses every sample and checkpoint."""
    config, resource, rd_home, _ = tiny_graph
    moved = tmp_path / "moved"
    shutil.copytree(rd_home, moved, ignore=shutil.ignore_patterns("*.lock"))
    journals = {p.name for p in (rd_home / "journal").glob("*.sqlite")}
    saved = os.environ["RD_HOME"]
    os.environ["RD_HOME"] = str(moved)
    try:
        results = materialize_graph(config, resource, log_level="WARNING")
        with dg.DagsterInstance.from_config(str(moved / "dagster")) as instance:
            generated = {
                f"{asset}[{benchmark}]": _latest_metadata(instance, asset, benchmark)["samples_generated"]
                for benchmark in config.benchmark_names
                for asset in GENERATING_ASSETS
            }
            assert set(generated.values()) == {0}, f"samples generated after the move: {generated}"
            for asset in MODEL_ASSETS:
                assert _latest_metadata(instance, asset)["trained_now"] is False, f"{asset} retrained"
        assert {p.name for p in (moved / "journal").glob("*.sqlite")} == journals
        assert all(result.success for result in results)
    finally:
        os.environ["RD_HOME"] = saved
        os.environ["DAGSTER_HOME"] = str(rd_home / "dagster")


def test_training_reports_per_step_metrics_and_launch_through_pipes(tiny_graph):
    config, _, rd_home, _ = tiny_graph
    instance = dg.DagsterInstance.get()
    store = Store(rd_home / "rd.duckdb")
    for asset, keys in (
        ("sft_student", {"loss"}),
        ("reward_model", {"loss"}),
        ("rl_student", {"reward", "kl"}),
    ):
        metadata = _latest_metadata(instance, asset)
        assert metadata["launch"]["num_processes"] == 1 and metadata["launch"]["strategy"] == "ddp"
        assert metadata["per_step"] and all(keys <= set(step) for step in metadata["per_step"]), asset
        path = rd_home / "models" / asset / store.latest_version(asset)["data_version"]
        lineage = json.loads((path / "lineage.json").read_text())
        assert lineage["metrics"]["per_step"] == metadata["per_step"]
        assert lineage["metrics"]["launch"] == metadata["launch"]
        # the worker's own log lines reached the training run through Dagster Pipes
        messages = [entry.user_message for entry in instance.all_logs(lineage["run_id"])]
        assert any(m.startswith("step 1/") for m in messages), asset
        assert any(m == f"checkpoint saved to {path.with_name(path.name + '.partial')}" for m in messages)
    rl = _latest_metadata(instance, "rl_student")
    assert len(rl["per_step"]) == config.rl.max_steps and rl["beta"] == config.rl.beta > 0


def test_no_op_training_steps_load_no_training_stack(tiny_graph):
    """Called without Dagster on unchanged inputs, the model steps reuse their checkpoints and never import
    torch, transformers, TRL, peft or accelerate."""
    _, _, rd_home, _ = tiny_graph
    code = (
        "import sys\n"
        "from rd_pipeline.config import load_preset\n"
        "from rd_pipeline.steps.context import StepContext\n"
        "from rd_pipeline.steps.reward_model import make_reward_model\n"
        "from rd_pipeline.steps.rl_student import make_rl_student\n"
        "from rd_pipeline.steps.sft_student import make_sft_student\n"
        "ctx = StepContext(load_preset('tiny'))\n"
        "print([m(ctx).metadata['trained_now'] for m in (make_sft_student, make_reward_model, make_rl_student)])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'accelerate') if m in sys.modules))\n"
    )
    env = dict(os.environ, RD_HOME=str(rd_home))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-2:] == ["[False, False, False]", "[]"]


def test_export_writes_loadable_folders_with_lineage_cards(tiny_graph, tmp_path, capsys):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rd_pipeline.cli import main

    for asset in ("rl_student", "reward_model"):
        out = tmp_path / asset
        assert main(["export", asset, "--to", str(out), "--preset", "tiny"]) == 0
        card = ModelCard.load(out / "README.md")
        assert card.data.eval_results, f"{asset} card has no scores"
        assert "not measured" not in card.text.split("## Tokens and cost")[1].split("##")[0]
    rl_card = ModelCard.load(tmp_path / "rl_student" / "README.md")
    assert {r.dataset_type for r in rl_card.data.eval_results} >= {"openai/gsm8k", "TIGER-Lab/MMLU-Pro"}
    assert "Selected step:" in rl_card.text and "this is the config that trained it" in rl_card.text
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "rl_student")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "rl_student")
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] > ids.shape[1]


def test_judge_audit_fills_every_partition_and_warns_on_the_random_judge(tiny_graph):
    config, _, rd_home, first = tiny_graph
    rows = Store(rd_home / "rd.duckdb").read("judge_audit")
    for benchmark in config.benchmark_names:
        mine = [r for r in rows if r["benchmark"] == benchmark]
        assert {r["judge_role"] for r in mine} == {"labeling", "eval"}, benchmark
        metrics = {(r["mode"], r["metric"]) for r in mine}
        assert {("pairwise", "swap_consistency"), ("pairwise", "position_bias")} <= metrics, benchmark
        assert ("pairwise", "verdict_probability") in metrics and ("pointwise", "length_bias") in metrics
        assert (("pairwise", "gold_agreement") in metrics) is (benchmark != "alpaca_eval"), benchmark
        assert all(r["n"] > 0 for r in mine if r["metric"] == "swap_consistency"), benchmark
    # The tiny judge is a random model: the audit says it is weak, and its checks warn without blocking.
    evaluations = [e for r in first for e in r.get_asset_check_evaluations()]
    weak = [e for e in evaluations if e.asset_key.to_user_string() == "judge_audit" and not e.passed]
    assert weak and all(e.severity == dg.AssetCheckSeverity.WARN for e in weak)
    assert {e.check_name for e in weak} >= {"judge_swap_consistency", "judge_position_bias"}
