"""What a model card says about an exported model, read from its ``lineage.json`` and the DuckDB tables.

Every fact is measured or recorded; a fact that was not is ``None`` (or an empty list) and the card says so.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rd_pipeline.benchmarks import get_benchmark
from rd_pipeline.config import PipelineConfig, versioned_dump
from rd_pipeline.evaluation.metrics import wilson_interval
from rd_pipeline.models import SMOLLM2, TINY_MODELS
from rd_pipeline.steps.checkpoints import LINEAGE_FILE, checkpoint_problem
from rd_pipeline.steps.lineage import LineageNode, trace
from rd_pipeline.store import Store, store_path

EXPORTABLE_ASSETS = ("sft_student", "rl_student", "reward_model")
# The config section that trains each model asset (its hash is the lineage's ``config_hash``).
TRAINING_SECTION = {"sft_student": "sft", "reward_model": "reward_model", "rl_student": "rl"}
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
LIBRARIES = (
    "rd-pipeline",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "dagster",
    "huggingface_hub",
)


class ExportError(Exception):
    """An export that cannot be made (nothing materialized, a damaged checkpoint, a bad target)."""


@dataclass(frozen=True)
class Score:
    """One measured score with its 95% interval."""

    benchmark: str
    metric: str
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class BenchmarkSize:
    """A benchmark's stored prompts, where they came from and how good its labels are against gold."""

    name: str
    source: str
    hub_id: str
    verifiable: bool
    train_prompts: int
    eval_prompts: int
    training_dataset: str | None = (
        None  # the hub dataset its train prompts came from; None: built-in or unnamed
    )
    labelled_with_gold: int | None = None  # labelled train prompts that have a gold answer
    label_accuracy: float | None = None  # their majority answers equal to gold; None: not measured


@dataclass(frozen=True)
class ValidationPoint:
    """One step of a validation curve (summed over benchmarks)."""

    step: int
    agreement: float | None
    agreement_n: int
    gold_accuracy: float | None
    mean_reward: float | None
    kl: float | None
    selected: bool


@dataclass(frozen=True)
class Usage:
    """Generation behind a model's data: per (asset, benchmark), samples, tokens and cost."""

    asset: str
    benchmark: str
    samples_generated: int
    samples_from_journal: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class ModelFacts:
    """Everything the card is written from."""

    asset: str
    version: str
    checkpoint: Path
    lineage: dict[str, Any]
    lineage_tree: str
    base_model: str
    student: dict[str, Any]
    teacher: dict[str, Any]
    teacher_versions: list[str]
    judge: dict[str, Any]
    eval_judge: dict[str, Any]
    benchmarks: list[BenchmarkSize]
    scores: list[Score]
    reward_heldout: Score | None
    rl_validation: list[ValidationPoint]
    rl_selected_step: int | None
    sft_validation: list[ValidationPoint]
    sft_selected_step: int | None
    usage: list[Usage]
    api_spend_usd: float | None
    config_section: str
    config_hash_recorded: str | None
    config_hash_now: str
    config: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def config_matches(self) -> bool:
        """Whether the config given to the export is the one whose training section made the checkpoint."""
        return self.config_hash_recorded == self.config_hash_now


def latest_checkpoint_dir(store: Store, rd_home: Path, asset: str) -> tuple[Path, str]:
    """The latest materialized version of a model asset and its checkpoint folder; a clear error if missing."""
    if asset not in EXPORTABLE_ASSETS:
        raise ExportError(f"cannot export {asset!r}: choose one of {', '.join(EXPORTABLE_ASSETS)}")
    record = store.latest_version(asset)
    if record is None:
        raise ExportError(f"no materialization of {asset} recorded in {rd_home}; run `rd materialize` first")
    path = Path(rd_home) / "models" / asset / record["data_version"]
    if not (path / LINEAGE_FILE).is_file():
        raise ExportError(f"{asset} checkpoint {path} is missing; re-materialize {asset}")
    problem = checkpoint_problem(path)
    if problem:
        raise ExportError(f"{asset} checkpoint {path} is damaged: {problem}; re-materialize {asset}")
    return path, record["data_version"]


def gather_facts(config: PipelineConfig, asset: str) -> ModelFacts:
    """The facts about the latest version of ``asset`` under the config's ``RD_HOME``."""
    from rd_pipeline.steps.lineage import render

    rd_home = config.rd_home()
    store = Store(store_path(rd_home))
    checkpoint, version = latest_checkpoint_dir(store, rd_home, asset)
    lineage = json.loads((checkpoint / LINEAGE_FILE).read_text())
    tree = trace(store, asset, "", version)
    nodes = _flatten(tree) if tree else []
    section = TRAINING_SECTION[asset]
    sft_version = _version_of(nodes, "sft_student")
    return ModelFacts(
        asset=asset,
        version=version,
        checkpoint=checkpoint,
        lineage=lineage,
        lineage_tree=render(tree) if tree else "",
        base_model=hub_name(config.student.ref),
        student=_model_identity(config.student),
        teacher=_model_identity(config.teacher),
        teacher_versions=list(lineage.get("teacher_versions") or []),
        judge=_model_identity(config.judge_model),
        eval_judge=_model_identity(config.eval_judge_model),
        benchmarks=_benchmark_sizes(store, config, nodes),
        scores=_scores(store, asset, version),
        reward_heldout=_reward_heldout(rd_home, nodes),
        rl_validation=_curve(store, "rl_validation", "rl_version", version) if asset == "rl_student" else [],
        rl_selected_step=_selected_step(lineage) if asset == "rl_student" else None,
        sft_validation=_curve(store, "sft_validation", "sft_version", sft_version) if sft_version else [],
        sft_selected_step=_sft_selected_step(rd_home, sft_version),
        usage=_usage(store, nodes),
        api_spend_usd=_api_spend(store, nodes),
        config_section=section,
        config_hash_recorded=lineage.get("config_hash"),
        config_hash_now=config.section_hash(section),
        config=_config_dump(config),
        versions=library_versions(),
    )


def _flatten(node: LineageNode) -> list[LineageNode]:
    """Every node of a lineage tree, each (asset, benchmark, version) once."""
    seen: dict[tuple[str, str, str], LineageNode] = {}
    stack = [node]
    while stack:
        current = stack.pop()
        seen.setdefault((current.asset, current.benchmark, current.data_version), current)
        stack.extend(current.inputs)
    return list(seen.values())


def _version_of(nodes: list[LineageNode], asset: str) -> str | None:
    return next((n.data_version for n in nodes if n.asset == asset), None)


def hub_name(ref: str) -> str:
    """How the card names a model reference: its hub id where it has one, else its name (never a local path)."""
    if ref == SMOLLM2:
        return SMOLLM2_HUB_ID
    if ref in TINY_MODELS:
        return ref
    local = Path(ref).expanduser()
    return local.name if local.exists() or ref.startswith((".", "/", "~")) else ref


def _model_identity(model: Any) -> dict[str, Any]:
    identity = {"ref": hub_name(model.ref), "backend": model.backend, "revision": model.revision}
    if model.api is not None:
        identity["api_model"] = model.api.model
    return identity


def _benchmark_sizes(store: Store, config: PipelineConfig, nodes: list[LineageNode]) -> list[BenchmarkSize]:
    """Each benchmark in the model's lineage: its stored prompt counts and label accuracy against gold."""
    names = [b for b in config.benchmark_names if any(n.benchmark == b for n in nodes)]
    sizes = []
    for name in names:
        bench = get_benchmark(name)
        prompts = store.read("benchmark_prompts", name)
        labels = _label_accuracy(store, name, prompts, nodes) if bench.verifiable else (None, None)
        train_prompts = sum(1 for p in prompts if p["split"] == "train")
        sizes.append(
            BenchmarkSize(
                name=name,
                source=config.benchmark(name).source,
                hub_id=bench.hub_id,
                verifiable=bench.verifiable,
                train_prompts=train_prompts,
                eval_prompts=sum(1 for p in prompts if p["split"] == "eval"),
                training_dataset=_training_dataset(config, name) if train_prompts else None,
                labelled_with_gold=labels[0],
                label_accuracy=labels[1],
            )
        )
    return sizes


def _training_dataset(config: PipelineConfig, name: str) -> str | None:
    """The hub dataset a benchmark's train prompts came from: the benchmark's own (its published files, read
    locally or from the hub), the instruction source of an open-ended one, None for the built-in samples
    (written for this project) and for instructions from an unnamed local file."""
    bench_config = config.benchmark(name)
    if bench_config.source == "builtin":
        return None
    if get_benchmark(name).verifiable:
        return get_benchmark(name).hub_id
    instructions = bench_config.instructions
    return instructions.hub_id if instructions is not None and instructions.source == "hub" else None


def _label_accuracy(
    store: Store, benchmark: str, prompts: list[dict[str, Any]], nodes: list[LineageNode]
) -> tuple[int | None, float | None]:
    """(labelled prompts with gold, share whose majority answer equals gold) of the pseudo-labels this model
    was made from; (None, None) when the table no longer holds that version or no prompt has gold."""
    used = next((n for n in nodes if n.asset == "pseudo_labels" and n.benchmark == benchmark), None)
    current = store.latest_version("pseudo_labels", benchmark)
    if used is None or current is None or current["data_version"] != used.data_version:
        return None, None
    gold = {p["prompt_id"]: p["gold"] for p in prompts if p["split"] == "train" and p["gold"]}
    answers = {
        r["prompt_id"]: r["prompt_answer"]
        for r in store.read("pseudo_labels", benchmark)
        if r["prompt_labelled"] and r["prompt_answer"] is not None and r["prompt_id"] in gold
    }
    if not answers:
        return None, None
    equal = get_benchmark(benchmark).answers_equal
    correct = sum(1 for prompt_id, answer in answers.items() if equal(answer, gold[prompt_id]))
    return len(answers), correct / len(answers)


def _scores(store: Store, asset: str, version: str) -> list[Score]:
    """The ``eval_scores`` rows of this model version (none for the reward model, which eval does not score)."""
    rows = store.read("eval_scores", model_role=asset, model_version=version)
    return [
        Score(r["benchmark"], r["metric"], r["value"], r["ci_low"], r["ci_high"], r["n"])
        for r in rows
        if r["value"] is not None
    ]


def _reward_heldout(rd_home: Path, nodes: list[LineageNode]) -> Score | None:
    """The held-out pairwise accuracy of the reward model in the lineage, with its Wilson interval."""
    version = _version_of(nodes, "reward_model")
    path = Path(rd_home) / "models" / "reward_model" / str(version) / LINEAGE_FILE
    if version is None or not path.is_file():
        return None
    metrics = json.loads(path.read_text()).get("metrics", {})
    accuracy, pairs = metrics.get("heldout_accuracy"), metrics.get("heldout_pairs") or 0
    if accuracy is None or not pairs:
        return None
    low, high = wilson_interval(accuracy * pairs, pairs)
    return Score("held-out reward pairs", "pairwise_accuracy", accuracy, low, high, pairs)


def _curve(store: Store, table: str, column: str, version: str) -> list[ValidationPoint]:
    """A validation curve, benchmarks pooled per step (agreement weighted by its n)."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for row in store.read(table, **{column: version}, order_by="step, benchmark"):
        by_step.setdefault(row["step"], []).append(row)
    return [_pooled(step, rows) for step, rows in sorted(by_step.items())]


def _pooled(step: int, rows: list[dict[str, Any]]) -> ValidationPoint:
    def weighted(value: str, count: str) -> tuple[float | None, int]:
        pairs = [(r[value], r[count] or 0) for r in rows if r[value] is not None and r[count]]
        n = sum(c for _, c in pairs)
        return (sum(v * c for v, c in pairs) / n if n else None), n

    agreement, agreement_n = weighted("agreement", "agreement_n")
    gold, _ = weighted("gold_accuracy", "gold_n")
    rewards = [r["mean_reward"] for r in rows if r["mean_reward"] is not None]
    kls = [r["kl"] for r in rows if r["kl"] is not None]
    return ValidationPoint(
        step=step,
        agreement=agreement,
        agreement_n=agreement_n,
        gold_accuracy=gold,
        mean_reward=sum(rewards) / len(rewards) if rewards else None,
        kl=kls[0] if kls else None,
        selected=any(r["selected"] for r in rows),
    )


def _selected_step(lineage: dict[str, Any]) -> int | None:
    return (lineage.get("metrics", {}).get("validation") or {}).get("selected_step")


def _sft_selected_step(rd_home: Path, sft_version: str | None) -> int | None:
    path = Path(rd_home) / "models" / "sft_student" / str(sft_version) / LINEAGE_FILE
    return _selected_step(json.loads(path.read_text())) if sft_version and path.is_file() else None


def _runs_of(store: Store, nodes: list[LineageNode]) -> dict[tuple[str, str], set[str]]:
    """Per (asset, benchmark) in the lineage: every run that recorded the version the model was made from
    (the run that generated it and any later run that found it already made)."""
    runs: dict[tuple[str, str], set[str]] = {}
    for node in nodes:
        records = store.read(
            "asset_versions", node.benchmark, asset=node.asset, data_version=node.data_version
        )
        runs.setdefault((node.asset, node.benchmark), set()).update(r["run_id"] for r in records)
    return runs


def _usage(store: Store, nodes: list[LineageNode]) -> list[Usage]:
    """Generation (samples, tokens, cost) that made the data in the model's lineage."""
    totals: dict[tuple[str, str], list[float]] = {}
    for (asset, benchmark), runs in sorted(_runs_of(store, nodes).items()):
        for row in store.read("generation_usage", benchmark, asset=asset):
            if row["run_id"] in runs:
                sums = totals.setdefault((asset, benchmark), [0, 0, 0, 0, 0.0])
                for index, key in enumerate(
                    ("samples_generated", "samples_from_journal", "input_tokens", "output_tokens", "cost_usd")
                ):
                    sums[index] += row[key] or 0
    return [
        Usage(asset, benchmark, int(s[0]), int(s[1]), int(s[2]), int(s[3]), float(s[4]))
        for (asset, benchmark), s in sorted(totals.items())
    ]


def _api_spend(store: Store, nodes: list[LineageNode]) -> float | None:
    """Money the API ledger (``api_spend``) records for the runs in the lineage; None when it records none."""
    runs = set().union(*_runs_of(store, nodes).values()) if nodes else set()
    spent = [
        r["cost_usd"] or 0.0 for r in store.read("api_spend") if r["label"].rsplit(" run ", 1)[-1] in runs
    ]
    return sum(spent) if spent else None


def _config_dump(config: PipelineConfig) -> dict[str, Any]:
    """The pipeline config as data versions hash it, without where state lives (``paths``)."""
    dump = versioned_dump(config)
    dump.pop("paths", None)
    return dump


def library_versions() -> dict[str, str]:
    """Installed versions of rd-pipeline and the libraries it trains and orchestrates with."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
