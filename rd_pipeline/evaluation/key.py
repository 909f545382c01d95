"""The evaluation key: everything one benchmark's eval scores depend on, hashed into one key.

Its parts: each evaluated model (the content hash of its weight files and of its other checkpoint files, or an API
model's observed identity), each model's chat template, the generation settings, the eval judge (open-ended
benchmarks), the reward model that scores the responses, the benchmark's eval files and prompts, and the versions
of the libraries that generate (transformers, vLLM, TRL, torch). Scores stored under a key are reused as long as
the key is the same; any change of a part gives a new key and a new evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rd_pipeline.benchmarks import get_benchmark
from rd_pipeline.config import BenchmarkConfig, ModelConfig, PipelineConfig
from rd_pipeline.hashing import file_sha256, short_hash
from rd_pipeline.models import (
    ResolvedModel,
    chat_template,
    config_files_fingerprint,
    resolve_model,
    weights_fingerprint,
)

LIBRARIES = ("transformers", "vllm", "trl", "torch")
# The order the parts are shown in.
PART_NAMES = (
    "models",
    "chat_templates",
    "generation",
    "judge",
    "reward_model",
    "benchmark",
    "libraries",
)


@dataclass(frozen=True)
class EvalKey:
    """The parts of an evaluation (JSON values) and the one hash that stands for them."""

    parts: dict[str, Any]

    @property
    def hash(self) -> str:
        return short_hash(self.parts)

    @property
    def short(self) -> str:
        """The first 8 hex digits of the hash, as the report shows it."""
        return self.hash[:8]

    def parts_json(self) -> str:
        return json.dumps(self.parts, sort_keys=True)

    def part_hashes(self) -> dict[str, str]:
        """A short hash of each part, in ``PART_NAMES`` order: which part differs between two keys."""
        return {name: short_hash(self.parts.get(name))[:8] for name in PART_NAMES if name in self.parts}

    @classmethod
    def from_json(cls, text: str) -> EvalKey:
        return cls(json.loads(text))


@dataclass(frozen=True)
class KeyedModel:
    """One evaluated model as the key sees it: its role, the model config, and where its checkpoint lies (None:
    the model config's own reference)."""

    role: str
    model: ModelConfig
    location: str | None = None


def library_versions() -> dict[str, str | None]:
    """The installed version of each library that generates or trains (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _checkpoint_directory(resolved: ResolvedModel) -> Path | None:
    """The directory holding a resolved model's files: its location, or a hub model's snapshot in the local
    Hugging Face cache (None when it is not there)."""
    if resolved.kind != "hub":
        return Path(resolved.location)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(resolved.ref, "config.json", revision=resolved.revision)
    return Path(cached).parent if isinstance(cached, str) else None


def model_part(
    model: ModelConfig, rd_home: Path, location: str | None = None
) -> tuple[dict[str, Any], str | None]:
    """What identifies one model's outputs, and the hash of its chat template (None: none, or served by an API).

    A local model is known by the content of its checkpoint (weights, other files), its reference where that is
    not a path, its revision, dtype and backend; an API model by its observed identity (model name and what the
    endpoint reports about it).
    """
    if model.backend == "openai":
        from rd_pipeline.generation import make_generator

        generator = make_generator(model, rd_home, role="evaluated model")
        try:
            return {"backend": "openai", "identity": generator.observe_identity()}, None
        finally:
            generator.close()
    resolved = resolve_model(location or model.ref, rd_home, model.revision)
    part: dict[str, Any] = {
        "backend": model.backend,
        "ref": "" if resolved.kind == "local" else resolved.ref,
        "revision": resolved.revision or "",
        "dtype": model.dtype,
    }
    directory = _checkpoint_directory(resolved)
    if directory is None:
        return part | {"weights": resolved.fingerprint, "config_files": None}, None
    template = chat_template(directory)
    part |= {"weights": weights_fingerprint(directory), "config_files": config_files_fingerprint(directory)}
    return part, short_hash(template) if template is not None else None


def benchmark_part(benchmark: BenchmarkConfig, eval_prompts: list[dict[str, Any]]) -> dict[str, Any]:
    """The sha256 of each file the eval records come from (a hub split by name), and a hash of the eval prompts
    as selected (ids, prompt text, gold answers and references)."""
    files: dict[str, str] = {}
    for source in get_benchmark(benchmark.name).eval_sources(benchmark.source, benchmark.path):
        if isinstance(source, str):
            files[source] = "hub"
        elif not source.is_file():
            raise FileNotFoundError(f"benchmark {benchmark.name}: eval file {source} does not exist")
        else:
            files[source.name] = file_sha256(source)[:16]
    prompts = [
        [row["prompt_id"], row["prompt"], row.get("gold"), row.get("reference")]
        for row in sorted(eval_prompts, key=lambda r: r["prompt_id"])
    ]
    return {"files": files, "eval_prompts": short_hash(prompts)}


def generation_part(config: PipelineConfig) -> dict[str, Any]:
    """The settings every evaluated model generates with."""
    return {
        "temperature": config.eval.temperature,
        "top_p": 1.0,
        "n": 1,
        "max_new_tokens": config.eval.max_new_tokens,
        "seed": config.sampling.seed,
    }


def build_eval_key(
    config: PipelineConfig,
    benchmark: str,
    models: list[KeyedModel],
    reward_model: Path,
    eval_prompts: list[dict[str, Any]],
    judge_version: str | None,
) -> EvalKey:
    """The key of evaluating ``models`` on ``benchmark``'s ``eval_prompts``; ``judge_version`` (the judging
    prompt's version) only for a judged (open-ended) benchmark."""
    rd_home = config.rd_home()
    model_parts: dict[str, Any] = {}
    templates: dict[str, str | None] = {}
    for keyed in models:
        model_parts[keyed.role], templates[keyed.role] = model_part(keyed.model, rd_home, keyed.location)
    judge = None
    if judge_version is not None:
        judge_model, judge_template = model_part(config.eval_judge_model, rd_home)
        judge = {
            "model": judge_model,
            "chat_template": judge_template,
            "judge_version": judge_version,
            "max_new_tokens": config.labeling.judge_max_new_tokens,
        }
    reward_template = chat_template(reward_model)
    return EvalKey(
        {
            "models": model_parts,
            "chat_templates": templates,
            "generation": generation_part(config),
            "judge": judge,
            "reward_model": {
                "weights": weights_fingerprint(reward_model),
                "config_files": config_files_fingerprint(reward_model),
                "chat_template": short_hash(reward_template) if reward_template is not None else None,
            },
            "benchmark": benchmark_part(config.benchmark(benchmark), eval_prompts),
            "libraries": library_versions(),
        }
    )


def output_identity(key: EvalKey, keyed: KeyedModel) -> str | None:
    """A hash of everything that decides one evaluated model's responses besides the settings all share: the
    content of its checkpoint (weights, config files, chat template) and its model config but for the name it
    was found by. Roles with the same identity (a guard that shipped the checkpoint it started from, a student
    that is the teacher) respond alike, so eval_scores generates their responses once. None for a model known
    only by name (an API model, a hub model not downloaded): its responses are never taken for another's."""
    part = key.parts["models"][keyed.role]
    if part.get("backend") == "openai" or part.get("config_files") is None:
        return None
    settings = keyed.model.model_dump(mode="json", exclude={"ref", "revision"})
    template = key.parts["chat_templates"][keyed.role]
    return short_hash([settings, part["weights"], part["config_files"], template])


def generation_salt(key: EvalKey, model: ModelConfig, refresh: int) -> str:
    """What eval generation adds to its journal keys: for a local model the library versions (a journaled sample
    of other versions is not reused, so a key's responses were made under its versions), and the number of a
    forced re-evaluation (each one generates afresh; one that crashed resumes from what it journaled)."""
    salt = {} if model.backend == "openai" else {"libraries": key.parts["libraries"]}
    if refresh:
        salt["refresh"] = [key.hash, refresh]
    return short_hash(salt) if salt else ""
