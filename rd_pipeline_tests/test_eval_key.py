"""Reproducible evaluation: the evaluation key of eval_scores, reuse under an unchanged key, and a forced
re-evaluation (`rd materialize --refresh`) compared with the stored scores by the `eval_drift` check."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from rd_pipeline.cli import main
from rd_pipeline.config import PRESETS_DIR, load_config, parse_config
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.defs.run import materialize_graph
from rd_pipeline.evaluation.drift import compare_scores
from rd_pipeline.evaluation.key import EvalKey, KeyedModel, build_eval_key, output_identity
from rd_pipeline.evaluation.report import eval_key_lines, render_report
from rd_pipeline.generation.loop import JournaledGenerator
from rd_pipeline.generation.transformers_backend import TransformersGenerator
from rd_pipeline.labeling.judge import JUDGE_VERSION
from rd_pipeline.models import resolve_model
from rd_pipeline.store import SCHEMAS, Store

# ----------------------------------------------------------------------------------------- the key, part by part


def _tiny_data(rd_home: Path) -> dict[str, Any]:
    data = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    data["paths"] = {"rd_home": str(rd_home)}
    return data


@pytest.fixture(scope="module")
def key_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny base model, SFT, RL and reward-model checkpoints (copies of it), and a local AlpacaEval file."""
    root = tmp_path_factory.mktemp("key")
    base = Path(resolve_model("tiny-random", root / "rd_home").location)
    checkpoints = {}
    for name in ("sft", "rl", "rm"):
        checkpoints[name] = root / name
        shutil.copytree(base, checkpoints[name], ignore=shutil.ignore_patterns(".*"))
    bench = root / "alpaca_eval.json"
    shutil.copyfile(PRESETS_DIR.parent / "benchmarks" / "samples" / "alpaca_eval_sample.json", bench)
    return {"root": root, "checkpoints": checkpoints, "bench": bench}


def _key(inputs: dict[str, Any], **overrides: Any) -> EvalKey:
    """The key of alpaca_eval (judged) from ``key_inputs``; ``overrides`` replace config sections."""
    data = _tiny_data(inputs["root"] / "rd_home")
    data["benchmarks"] = [
        {"name": "alpaca_eval", "source": "local", "path": str(inputs["bench"]), "eval_size": 2}
    ]
    data.update(overrides)
    config = parse_config(data)
    points = inputs["checkpoints"]
    models = [
        KeyedModel("teacher", config.teacher),
        KeyedModel("base_student", config.student),
        KeyedModel("sft_student", config.student, str(points["sft"])),
        KeyedModel("rl_student", config.student, str(points["rl"])),
    ]
    records = json.loads(inputs["bench"].read_text())[:2]
    prompts = [
        {"prompt_id": f"p{i}", "prompt": r["instruction"], "gold": None, "reference": r["output"]}
        for i, r in enumerate(records)
    ]
    return build_eval_key(config, "alpaca_eval", models, points["rm"], prompts, JUDGE_VERSION)


def _changed_parts(before: EvalKey, after: EvalKey) -> set[str]:
    old, new = before.part_hashes(), after.part_hashes()
    return {name for name in old if old[name] != new[name]}


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_key_is_stable_and_ignores_what_does_not_change_scores(key_inputs):
    first = _key(key_inputs)
    assert _key(key_inputs).hash == first.hash
    for point in key_inputs["checkpoints"].values():  # the cached weight hashes are checked again, same value
        for file in point.glob("*.safetensors"):
            os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 10**9))
    data = _tiny_data(key_inputs["root"] / "rd_home")
    unrelated = {
        "teacher": {**data["teacher"], "batch_size": 3},
        "checks": {"enforce": True},
        "sampling": {**data["sampling"], "temperatures": [0.5, 0.9]},
        "sft": {**data["sft"], "max_steps": 7},
    }
    assert _key(key_inputs, **unrelated).hash == first.hash
    assert set(first.parts) == {
        "models",
        "chat_templates",
        "generation",
        "judge",
        "reward_model",
        "benchmark",
        "libraries",
    }
    assert set(first.parts["libraries"]) == {"transformers", "vllm", "trl", "torch"}
    assert first.parts["libraries"]["torch"]


def test_key_changes_with_each_part(key_inputs, monkeypatch):
    first = _key(key_inputs)
    data = _tiny_data(key_inputs["root"] / "rd_home")
    sft = key_inputs["checkpoints"]["sft"]
    rl = key_inputs["checkpoints"]["rl"]
    weights = next(sft.glob("*.safetensors"))
    template = rl / "chat_template.jinja"
    saved = {path: path.read_bytes() for path in (weights, template, key_inputs["bench"])}
    try:
        _flip_last_byte(weights)
        assert _changed_parts(first, _key(key_inputs)) == {"models"}
        weights.write_bytes(saved[weights])

        template.write_text("{{ 'System: be brief.\\n' }}" + saved[template].decode())
        changed = _key(key_inputs)
        assert _changed_parts(first, changed) == {"chat_templates"}
        assert changed.parts["chat_templates"]["rl_student"] != first.parts["chat_templates"]["rl_student"]
        template.write_bytes(saved[template])

        generation = _key(key_inputs, eval={**data["eval"], "max_new_tokens": 25})
        assert _changed_parts(first, generation) == {"generation"}

        judge = _key(key_inputs, eval={**data["eval"], "judge": {"ref": str(sft), "dtype": "float32"}})
        assert _changed_parts(first, judge) == {"judge"}

        records = json.loads(key_inputs["bench"].read_text())
        records[-1]["output"] += " (edited)"  # a record the 2 eval prompts do not include
        key_inputs["bench"].write_text(json.dumps(records))
        assert _changed_parts(first, _key(key_inputs)) == {"benchmark"}
        key_inputs["bench"].write_bytes(saved[key_inputs["bench"]])

        from rd_pipeline.evaluation import key as key_module

        installed = key_module.metadata.version
        monkeypatch.setattr(
            key_module.metadata, "version", lambda name: "9.9.9" if name == "trl" else installed(name)
        )
        assert _changed_parts(first, _key(key_inputs)) == {"libraries"}
        monkeypatch.undo()
    finally:
        for path, content in saved.items():
            path.write_bytes(content)
    assert _key(key_inputs).hash == first.hash


def _respond_alike_copy(base: Path, target: Path) -> Path:
    """A copy of checkpoint ``base`` saved again with the pipeline's records and other batch-padding settings."""
    shutil.copytree(base, target, ignore=shutil.ignore_patterns(".*"))
    (target / "lineage.json").write_text("{}")
    (target / "rollouts.jsonl").write_text('{"step": 1}\n')
    settings = json.loads((target / "tokenizer_config.json").read_text())
    (target / "tokenizer_config.json").write_text(json.dumps({**settings, "padding_side": "right"}))
    return target


def test_roles_whose_checkpoints_respond_alike_share_an_output_identity(key_inputs, tmp_path):
    base = key_inputs["checkpoints"]["sft"]
    alike = _respond_alike_copy(base, tmp_path / "alike")
    other = _respond_alike_copy(base, tmp_path / "other")
    _flip_last_byte(next(other.glob("*.safetensors")))
    data = _tiny_data(key_inputs["root"] / "rd_home")
    config = parse_config(data)
    models = [
        KeyedModel("teacher", config.teacher),  # tiny-random by name, the base's content
        KeyedModel("base_student", config.student.model_copy(update={"batch_size": 5})),
        KeyedModel("sft_student", config.student, str(alike)),
        KeyedModel("rl_student", config.student, str(other)),
    ]
    key = build_eval_key(config, "gsm8k", models, key_inputs["checkpoints"]["rm"], [], None)
    identity = {keyed.role: output_identity(key, keyed) for keyed in models}
    assert identity["teacher"] == identity["sft_student"]
    assert identity["rl_student"] not in (identity["teacher"], None)  # other weights
    assert identity["base_student"] not in (identity["teacher"], None)  # other settings
    api = KeyedModel("teacher", config.teacher)
    api_key = EvalKey({**key.parts, "models": {**key.parts["models"], "teacher": {"backend": "openai"}}})
    assert output_identity(api_key, api) is None


def test_a_journal_salt_generates_afresh_and_journals_what_it_generates(key_inputs):
    """A salted generator (a forced re-evaluation) decodes samples the journal holds unsalted, and journals its
    own as they finish: the same salt again (a refresh resumed after a crash) decodes nothing."""
    from rd_pipeline.config import ModelConfig
    from rd_pipeline.generation import make_generator
    from rd_pipeline.generation.base import GenerationRequest, SamplingParams

    rd_home = key_inputs["root"] / "rd_home"
    params = SamplingParams(temperature=0.0, max_new_tokens=4)
    requests = [
        GenerationRequest(f"r{i}", ({"role": "user", "content": f"{i} + 1 ="},), params) for i in range(2)
    ]

    def decoded(salt: str) -> tuple[int, list[str]]:
        generator = make_generator(ModelConfig(ref="tiny-random"), rd_home, journal_salt=salt)
        try:
            completions, stats = generator.generate(requests)
        finally:
            generator.close()
        return stats.samples_generated, [c.text for c in completions]

    decoded("")
    plain = decoded("")
    assert plain[0] == 0
    assert decoded("refresh-1") == (2, plain[1])  # greedy: the same texts, generated again
    assert decoded("refresh-1") == (0, plain[1])
    assert decoded("refresh-2")[0] == 2


# ------------------------------------------------------------------------------------- drift and the report


def _score(role: str, metric: str, value: float, low: float, high: float, key: EvalKey | None = None) -> dict:
    row = {
        "benchmark": "gsm8k",
        "model_role": role,
        "model_version": "v1",
        "metric": metric,
        "value": value,
        "ci_low": low,
        "ci_high": high,
        "n": 10,
    }
    if key is not None:
        row |= {"eval_key": key.hash, "eval_key_parts": key.parts_json()}
    return row


def test_drift_is_a_new_score_outside_the_stored_interval():
    stored = [_score("teacher", "accuracy", 0.5, 0.3, 0.7), _score("rl_student", "accuracy", 0.2, 0.1, 0.4)]
    new = [_score("teacher", "accuracy", 0.7, 0.5, 0.85), _score("rl_student", "accuracy", 0.45, 0.25, 0.65)]
    compared = {d.label: d for d in compare_scores(stored, new)}
    assert not compared["teacher accuracy"].drifted  # on the interval's edge
    assert compared["rl_student accuracy"].drifted
    assert compared["rl_student accuracy"].to_json() == {
        "model_role": "rl_student",
        "metric": "accuracy",
        "old": 0.2,
        "new": 0.45,
        "ci_low": 0.1,
        "ci_high": 0.4,
        "drifted": True,
    }
    undefined = compare_scores([_score("teacher", "win_rate", float("nan"), float("nan"), float("nan"))], [])
    assert [d.drifted for d in undefined] == [False]


def test_report_prints_each_benchmarks_key_and_its_parts(tmp_path):
    key = EvalKey(
        {"models": {"teacher": {"weights": "abc"}}, "generation": {"temperature": 0.0}, "libraries": {}}
    )
    rows = [_score(role, "accuracy", 0.5, 0.3, 0.7, key) for role in ("teacher", "rl_student")]
    rows.append(_score("teacher", "accuracy", 0.5, 0.3, 0.7) | {"benchmark": "mmlu_pro"})
    report = render_report(rows, tmp_path)
    assert report.key_lines == eval_key_lines(rows)
    assert report.key_lines[0].startswith(f"gsm8k: evaluation key {key.short} (models ")
    assert "mmlu_pro: evaluation key not recorded" in report.key_lines[1]
    assert "## Evaluation keys" in report.markdown and f"evaluation key {key.short}" in report.markdown
    assert '"weights": "abc"' in report.markdown


def test_scores_table_of_an_older_release_gets_the_key_columns(tmp_path):
    path = tmp_path / "rd.duckdb"
    old_columns = {k: v for k, v in SCHEMAS["eval_scores"].items() if not k.startswith("eval_key")}
    with duckdb.connect(str(path)) as connection:
        connection.execute(
            "CREATE TABLE eval_scores (" + ", ".join(f'"{k}" {v}' for k, v in old_columns.items()) + ")"
        )
        connection.execute(
            "INSERT INTO eval_scores VALUES ('mmlu_pro', 'teacher', 'v0', 'accuracy', 1, 0, 1, 2)"
        )
    key = EvalKey({"generation": {}})
    store = Store(path)
    store.replace_partition("eval_scores", "gsm8k", [_score("teacher", "accuracy", 0.5, 0.3, 0.7, key)])
    rows = {row["benchmark"]: row for row in store.read("eval_scores")}
    assert rows["gsm8k"]["eval_key"] == key.hash and rows["mmlu_pro"]["eval_key"] is None


def test_refresh_without_eval_scores_in_the_selection_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RD_HOME", str(tmp_path / "rd_home"))
    assert main(["materialize", "--preset", "tiny", "--select", "benchmark_prompts", "--refresh"]) == 2
    assert "--refresh re-evaluates eval_scores" in capsys.readouterr().err


# ------------------------------------------------------------------------ the graph: reuse, refresh and drift

BENCHMARKS = ("gsm8k", "alpaca_eval")


@pytest.fixture(scope="module")
def evaluated_graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The tiny preset on gsm8k and alpaca_eval (judged), materialized once: (config file, RD_HOME)."""
    root = tmp_path_factory.mktemp("graph")
    data = _tiny_data(root / "rd_home")
    data["benchmarks"] = [
        {"name": name, "source": "builtin", "train_size": 8, "eval_size": 4} for name in BENCHMARKS
    ]
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    saved = {key: os.environ.get(key) for key in ("RD_HOME", "DAGSTER_HOME", "RD_PRESET", "RD_CONFIG")}
    os.environ.update(RD_HOME=str(root / "rd_home"), RD_CONFIG=str(config_path))
    os.environ.pop("RD_PRESET", None)
    os.environ.pop("DAGSTER_HOME", None)
    results = materialize_graph(load_config(config_path), _resource(config_path), log_level="WARNING")
    assert all(result.success for result in results)
    yield config_path, root / "rd_home"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _resource(config_path: Path) -> PipelineResource:
    return PipelineResource(config_file=str(config_path))


@pytest.fixture
def generation_requests(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts what reaches a generator: requests to generate, candidate-scoring requests (the judge), and the
    samples the transformers backend decodes (not found in the journal)."""
    counts: Counter = Counter()
    generate, score, decode = (
        JournaledGenerator.generate,
        TransformersGenerator.score_candidates,
        TransformersGenerator.decode,
    )

    def counted_generate(self, requests, progress=None):
        counts["generate"] += len(requests)
        return generate(self, requests, progress)

    def counted_score(self, requests):
        counts["score"] += len(requests)
        return score(self, requests)

    def counted_decode(self, run):
        counts["decoded"] += len(run.pending)
        return decode(self, run)

    monkeypatch.setattr(JournaledGenerator, "generate", counted_generate)
    monkeypatch.setattr(TransformersGenerator, "score_candidates", counted_score)
    monkeypatch.setattr(TransformersGenerator, "decode", counted_decode)
    return counts


def _evaluate(
    config_path: Path, refresh: bool = False, benchmarks=BENCHMARKS
) -> list[dg.ExecuteInProcessResult]:
    results = materialize_graph(
        load_config(config_path),
        _resource(config_path),
        selection=["eval_scores"],
        partitions=list(benchmarks),
        log_level="WARNING",
        refresh=refresh,
    )
    assert all(result.success for result in results)
    return results


def _materialized(results: list[dg.ExecuteInProcessResult]) -> dict[str, dict[str, Any]]:
    """Each partition's eval_scores metadata."""
    return {
        event.partition: {k: v.value for k, v in event.materialization.metadata.items()}
        for result in results
        for event in result.get_asset_materialization_events()
    }


def _drift_checks(results: list[dg.ExecuteInProcessResult]) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        result.dagster_run.tags["dagster/partition"]: evaluation
        for result in results
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.check_name == "eval_drift"
    }


@pytest.mark.slow
def test_unchanged_key_reuses_the_stored_scores_without_any_generation_request(
    evaluated_graph, generation_requests
):
    config_path, rd_home = evaluated_graph
    _evaluate(config_path)  # whatever another test left, the stored scores are now this key's
    store = Store(rd_home / "rd.duckdb")
    before = store.read("eval_scores")
    generation_requests.clear()
    results = _evaluate(config_path)
    assert generation_requests == Counter(), "an unchanged key sent generation or judge requests"
    keys = {row["benchmark"]: row["eval_key"] for row in before}
    for benchmark, metadata in _materialized(results).items():
        assert metadata["reused"] is True and metadata["samples_generated"] == 0, benchmark
        assert metadata["eval_key"] == keys[benchmark]
    assert json.dumps(store.read("eval_scores"), default=str) == json.dumps(before, default=str)
    for row in before:
        assert row["eval_key"] == EvalKey.from_json(row["eval_key_parts"]).hash
    for benchmark, check in _drift_checks(results).items():
        assert check.passed and check.metadata["status"].value == "not re-evaluated", benchmark


@pytest.mark.slow
def test_refresh_generates_and_judges_again_and_passes_when_nothing_drifted(
    evaluated_graph, generation_requests, capsys
):
    config_path, rd_home = evaluated_graph
    _evaluate(config_path)
    store = Store(rd_home / "rd.duckdb")
    keys = {row["benchmark"]: row["eval_key"] for row in store.read("eval_scores")}
    generation_requests.clear()
    args = ["materialize", "--config", str(config_path), "--select", "eval_scores", "--refresh"]
    assert main([*args, "--log-level", "WARNING"]) == 0
    assert generation_requests["decoded"] >= 4 * 2, "the refresh replayed the journal instead of generating"
    assert generation_requests["score"] > 0, "the refresh did not ask the judge again"
    history = dg.DagsterInstance.get().event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("eval_scores"), "eval_drift"), limit=len(BENCHMARKS)
    )
    evaluations = [r.event.dagster_event.asset_check_evaluation_data for r in history if r.event]
    assert len(evaluations) == len(BENCHMARKS)
    for evaluation in evaluations:
        assert evaluation.passed and evaluation.metadata["status"].value.startswith("0 of ")
    assert {row["benchmark"]: row["eval_key"] for row in store.read("eval_scores")} == keys
    capsys.readouterr()
    assert main(["report", "--config", str(config_path)]) == 0
    out = capsys.readouterr().out
    for benchmark, key in keys.items():
        assert f"{benchmark}: evaluation key {key[:8]} (models " in out


@pytest.mark.slow
def test_roles_with_one_checkpoint_and_one_config_are_generated_for_once(
    evaluated_graph, generation_requests
):
    config_path, rd_home = evaluated_graph
    _evaluate(config_path, benchmarks=["gsm8k"])
    generation_requests.clear()
    _evaluate(config_path, refresh=True, benchmarks=["gsm8k"])
    store = Store(rd_home / "rd.duckdb")
    # teacher and base student are one checkpoint with one config: their responses are generated once
    config = load_config(config_path)
    key = EvalKey.from_json(store.read("eval_scores", "gsm8k")[0]["eval_key_parts"])
    identities = {
        output_identity(key, KeyedModel(role, config.teacher if role == "teacher" else config.student))
        for role in key.parts["models"]
    }
    assert len(identities) <= 3
    decoded = generation_requests["decoded"]
    assert decoded == 4 * len(identities), "the refresh replayed the journal or repeated"
    responses = store.read("eval_responses", "gsm8k")
    by_role = {
        role: [r["response"] for r in responses if r["model_role"] == role]
        for role in ("teacher", "base_student")
    }
    assert by_role["teacher"] == by_role["base_student"] and by_role["teacher"]


@pytest.mark.slow
def test_refresh_warns_naming_the_model_and_metric_whose_score_left_its_interval(evaluated_graph):
    config_path, rd_home = evaluated_graph
    _evaluate(config_path, benchmarks=["gsm8k"])
    path = rd_home / "rd.duckdb"
    with duckdb.connect(str(path)) as connection:  # a stored score the same key cannot reproduce
        connection.execute(
            "UPDATE eval_scores SET value = 0.9, ci_low = 0.8, ci_high = 0.95 "
            "WHERE benchmark = 'gsm8k' AND model_role = 'rl_student' AND metric = 'accuracy'"
        )
    results = _evaluate(config_path, refresh=True, benchmarks=["gsm8k"])
    check = _drift_checks(results)["gsm8k"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["drifted"].value == "rl_student accuracy"
    scores = check.metadata["scores"].value
    moved = scores["rl_student accuracy"]
    assert moved["old"] == 0.9 and moved["interval"] == [0.8, 0.95] and moved["drifted"] is True
    assert moved["new"] == Store(path).read("eval_scores", "gsm8k", model_role="rl_student")[0]["value"]
    assert not scores["teacher accuracy"]["drifted"]
    assert _materialized(results)["gsm8k"]["refreshed"] is True


@pytest.mark.slow
def test_changed_chat_template_gives_a_new_key_and_a_new_evaluation(evaluated_graph, generation_requests):
    config_path, rd_home = evaluated_graph
    _evaluate(config_path, benchmarks=["gsm8k"])
    store = Store(rd_home / "rd.duckdb")
    before = EvalKey.from_json(store.read("eval_scores", "gsm8k")[0]["eval_key_parts"])
    template = rd_home / "models" / "base" / "tiny-random" / "chat_template.jinja"
    saved = template.read_bytes()
    try:
        template.write_text("{{ 'Answer briefly.\\n' }}" + saved.decode())
        generation_requests.clear()
        metadata = _materialized(_evaluate(config_path, benchmarks=["gsm8k"]))["gsm8k"]
    finally:
        template.write_bytes(saved)
    after = EvalKey.from_json(store.read("eval_scores", "gsm8k")[0]["eval_key_parts"])
    assert metadata["reused"] is False and metadata["eval_key"] == after.hash != before.hash
    assert "chat_templates" in _changed_parts(before, after)
    assert generation_requests["decoded"] > 0
    _evaluate(config_path, benchmarks=["gsm8k"])  # the original template again: its key again
    assert store.read("eval_scores", "gsm8k")[0]["eval_key"] == before.hash


@pytest.mark.slow
def test_report_asset_shows_the_stored_keys(evaluated_graph):
    config_path, rd_home = evaluated_graph
    _evaluate(config_path)
    results = materialize_graph(
        load_config(config_path), _resource(config_path), selection=["report"], log_level="WARNING"
    )
    assert all(result.success for result in results)
    report = (rd_home / "reports" / "latest" / "report.md").read_text()
    for row in Store(rd_home / "rd.duckdb").read("eval_scores"):
        assert f"{row['benchmark']}: evaluation key {row['eval_key'][:8]}" in report
