"""The model card (``README.md``) of an exported model: Hugging Face YAML metadata and a body written from lineage."""

from __future__ import annotations

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from rd_pipeline.export.facts import BenchmarkSize, ModelFacts, Score, Usage, ValidationPoint

NOT_MEASURED = "not measured"
TASK = {"reward_model": "text-classification"}
ROLE_TEXT = {
    "sft_student": "The student after supervised fine-tuning on the teacher's well-labelled responses",
    "rl_student": "The SFT student after RL against a reward model learnt from the teacher's labels",
    "reward_model": "A Bradley-Terry reward model (one score per response) learnt from the teacher's labels",
}


def render_card(facts: ModelFacts) -> ModelCard:
    """The card of an exported model: metadata (``base_model``, ``datasets``, ``tags``, ``model-index``) and
    a body that says, from lineage, where the model came from and what was measured."""
    data = ModelCardData(
        model_name=f"{facts.asset}-{facts.version}",
        base_model=facts.base_model,
        datasets=sorted({b.training_dataset for b in facts.benchmarks if b.training_dataset}) or None,
        tags=["rd-pipeline", "distillation", facts.asset.replace("_", "-")],
        library_name="transformers",
        pipeline_tag=TASK.get(facts.asset, "text-generation"),
        eval_results=_eval_results(facts) or None,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(facts)}")


def _eval_results(facts: ModelFacts) -> list[EvalResult]:
    task = TASK.get(facts.asset, "text-generation")
    sources = {b.name: b for b in facts.benchmarks}
    results = [_eval_result(score, task, sources.get(score.benchmark)) for score in facts.scores]
    if facts.asset == "reward_model" and facts.reward_heldout is not None:
        results.append(_eval_result(facts.reward_heldout, task, None))
    return results


def _eval_result(score: Score, task: str, bench: BenchmarkSize | None) -> EvalResult:
    """A model-index entry; the 95% interval and n are in the metric's args (and in its display name)."""
    dataset = bench.hub_id if bench else score.benchmark.replace(" ", "-")
    source = f", {bench.source} data" if bench else ""
    return EvalResult(
        task_type=task,
        dataset_type=dataset,
        dataset_name=f"{score.benchmark} (eval split{source})" if bench else score.benchmark,
        dataset_split="eval" if bench else "heldout",
        metric_type=score.metric,
        metric_value=round(score.value, 6),
        metric_name=f"{score.metric} (95% CI {_interval(score)}, n={score.n})",
        metric_args={"ci95_low": _round(score.ci_low), "ci95_high": _round(score.ci_high), "n": score.n},
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _interval(score: Score) -> str:
    if score.ci_low is None or score.ci_high is None:
        return "not computed"
    return f"{score.ci_low:.3f}-{score.ci_high:.3f}"


def _fmt(value: float | None, digits: int = 3) -> str:
    return NOT_MEASURED if value is None else f"{value:.{digits}f}"


def _model(identity: dict) -> str:
    parts = [f"`{identity['ref']}`", f"backend {identity['backend']}"]
    if identity.get("revision"):
        parts.append(f"revision {identity['revision']}")
    if identity.get("api_model"):
        parts.append(f"API model `{identity['api_model']}`")
    return ", ".join(parts)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _body(facts: ModelFacts) -> str:
    sections = [
        _intro(facts),
        _lineage(facts),
        _data(facts),
        _evaluation(facts),
        _reward(facts),
        _validation("SFT validation", facts.sft_validation, facts.sft_selected_step, "base student"),
        _rl_validation(facts),
        _spend(facts),
        _config(facts),
        _versions(facts),
    ]
    return "\n\n".join(sections) + "\n"


def _intro(facts: ModelFacts) -> str:
    loader = "AutoModelForSequenceClassification" if facts.asset == "reward_model" else "AutoModelForCausalLM"
    return (
        f"# {facts.asset} {facts.version}\n\n"
        f"{ROLE_TEXT[facts.asset]}, made by rd-pipeline from `{facts.base_model}`"
        f" (version `{facts.version}` of the `{facts.asset}` asset). Every number below was read from the run's "
        "lineage and its DuckDB tables; what was not measured says so.\n\n"
        "```python\n"
        f"from transformers import AutoTokenizer, {loader}\n\n"
        f'model = {loader}.from_pretrained("path/to/this/folder")\n'
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")  # chat template included\n'
        "```"
    )


def _lineage(facts: ModelFacts) -> str:
    versions = ", ".join(f"`{v}`" for v in facts.teacher_versions) or "none recorded"
    lines = [
        "## Lineage",
        "",
        f"- Teacher: {_model(facts.teacher)}; teacher version (hash of its identity: backend, model, revision or "
        f"file hash, sampling, prompt template) {versions}",
        f"- Labelling judge: {_model(facts.judge)}",
        f"- Evaluation judge: {_model(facts.eval_judge)}",
        f"- Student base model: {_model(facts.student)}",
        f"- Trained from: `{facts.lineage.get('base_model', 'not recorded')}`; run `{facts.lineage.get('run_id')}`, "
        f"created {facts.lineage.get('created_at', 'at an unrecorded time')}",
        "- `lineage.json` beside this card holds the full record (upstream versions, metrics, file digests).",
    ]
    if facts.lineage_tree:
        lines += ["", "```", facts.lineage_tree, "```"]
    return "\n".join(lines)


def _data(facts: ModelFacts) -> str:
    if not facts.benchmarks:
        return "## Data\n\nNo benchmark partition is recorded in this model's lineage."
    rows = [
        [b.name, _source(b), str(b.train_prompts), str(b.eval_prompts), _label_accuracy(b)]
        for b in facts.benchmarks
    ]
    header = ["benchmark", "source", "train prompts", "eval prompts", "label accuracy vs gold"]
    notes = [
        "Label accuracy: the share of labelled train prompts whose majority answer equals the gold answer (gold "
        "is read only to measure labels, never to train or select)."
    ]
    if not any(b.training_dataset for b in facts.benchmarks):
        notes.append(
            "No hub dataset is named in the metadata: the train prompts are built-in samples or local files."
        )
    return "## Data\n\n" + _table(header, rows) + "".join(f"\n\n{note}" for note in notes)


def _source(bench: BenchmarkSize) -> str:
    if bench.source == "builtin":
        return f"built-in sample written for rd-pipeline (format of `{bench.hub_id}`)"
    trained_on = f"; train prompts from `{bench.training_dataset}`" if bench.training_dataset else ""
    return f"`{bench.hub_id}` ({bench.source}){trained_on}"


def _label_accuracy(bench: BenchmarkSize) -> str:
    if not bench.verifiable:
        return "not measured (open-ended, judged; no gold)"
    if bench.label_accuracy is None:
        return NOT_MEASURED
    return f"{bench.label_accuracy:.3f} (n={bench.labelled_with_gold})"


def _score_rows(scores: list[Score]) -> list[list[str]]:
    return [[s.benchmark, s.metric, f"{s.value:.3f}", _interval(s), str(s.n)] for s in scores]


def _evaluation(facts: ModelFacts) -> str:
    if facts.asset == "reward_model":
        return (
            "## Evaluation\n\nThe evaluation (`eval_scores`) scores generating models; a reward model is "
            "measured by its held-out pairwise accuracy (below)."
        )
    if not facts.scores:
        return f"## Evaluation\n\n{NOT_MEASURED.capitalize()}: `eval_scores` holds no rows of this version."
    header = ["benchmark", "metric", "value", "95% interval", "n"]
    return "## Evaluation (held-out eval prompts)\n\n" + _table(header, _score_rows(facts.scores))


def _reward(facts: ModelFacts) -> str:
    score = facts.reward_heldout
    if score is None:
        text = "not part of this model's lineage" if facts.asset == "sft_student" else NOT_MEASURED
        return f"## Reward model\n\nHeld-out pairwise accuracy: {text}."
    return (
        "## Reward model\n\n"
        f"Held-out pairwise accuracy: {score.value:.3f} (95% Wilson interval {_interval(score)}, "
        f"{score.n} held-out pseudo-labelled pairs; the selected checkpoint's, so slightly optimistic)."
    )


def _curve_rows(points: list[ValidationPoint]) -> list[list[str]]:
    return [
        [
            str(p.step),
            f"{_fmt(p.agreement)} (n={p.agreement_n})",
            _fmt(p.gold_accuracy),
            _fmt(p.mean_reward),
            _fmt(p.kl, 4),
            "yes" if p.selected else "",
        ]
        for p in points
    ]


def _validation(title: str, points: list[ValidationPoint], selected: int | None, step0: str) -> str:
    if not points:
        return f"## {title}\n\n{NOT_MEASURED.capitalize()} for this model's lineage."
    header = ["step", "agreement with labels", "gold accuracy (monitor)", "mean reward", "KL", "shipped"]
    chosen = "not recorded" if selected is None else str(selected)
    return f"## {title}\n\nStep 0 is the {step0}. Selected step: {chosen}.\n\n" + _table(
        header, _curve_rows(points)
    )


def _rl_validation(facts: ModelFacts) -> str:
    if facts.asset != "rl_student":
        return "## RL validation\n\nNot applicable: this model was not trained by RL."
    return _validation("RL validation", facts.rl_validation, facts.rl_selected_step, "SFT student")


def _spend(facts: ModelFacts) -> str:
    if not facts.usage:
        return (
            f"## Tokens and cost\n\n{NOT_MEASURED.capitalize()}: no generation is recorded for this lineage."
        )
    rows = [_usage_row(u) for u in facts.usage]
    total = sum(u.cost_usd for u in facts.usage)
    tokens = sum(u.input_tokens + u.output_tokens for u in facts.usage)
    api = "none recorded" if facts.api_spend_usd is None else f"${facts.api_spend_usd:.4f}"
    header = [
        "asset",
        "benchmark",
        "generated",
        "from journal",
        "input tokens",
        "output tokens",
        "cost (USD)",
    ]
    return (
        "## Tokens and cost\n\nGeneration that made this model's data (every run that recorded the versions "
        "it was made from):\n\n"
        + _table(header, rows)
        + f"\n\nTotal: {tokens} tokens, ${total:.4f}. API spend ledger (`api_spend`) for these runs: {api}."
    )


def _usage_row(usage: Usage) -> list[str]:
    return [
        usage.asset,
        usage.benchmark,
        str(usage.samples_generated),
        str(usage.samples_from_journal),
        str(usage.input_tokens),
        str(usage.output_tokens),
        f"{usage.cost_usd:.4f}",
    ]


def _config(facts: ModelFacts) -> str:
    recorded = facts.config_hash_recorded or "not recorded"
    if facts.config_matches:
        note = (
            f"The `{facts.config_section}` section below hashes to `{recorded}`, the hash recorded with the "
            "checkpoint: this is the config that trained it."
        )
    else:
        note = (
            f"The checkpoint records `{facts.config_section}` hash `{recorded}`; the config given to the export "
            f"hashes to `{facts.config_hash_now}`, so what follows is not the config that trained it."
        )
    dump = yaml.safe_dump(facts.config, sort_keys=False).rstrip()
    return f"## Configuration\n\n{note}\n\n```yaml\n{dump}\n```"


def _versions(facts: ModelFacts) -> str:
    rows = [[name, version] for name, version in facts.versions.items()]
    return (
        "## Software\n\nInstalled when this folder was exported (the checkpoint does not record the versions "
        "that trained it):\n\n" + _table(["package", "version"], rows)
    )
