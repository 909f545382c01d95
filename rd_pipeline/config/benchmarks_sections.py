"""Which benchmarks are trained and evaluated on, where their records and instructions come from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from rd_pipeline.benchmark_traits import BENCHMARK_TRAITS
from rd_pipeline.config.section import Section

# The benchmark names and traits below are those the registry's benchmarks are built from.
ALL_BENCHMARKS = tuple(BENCHMARK_TRAITS)  # in report order
# Benchmarks without a gold answer (not ``verifiable``): answers are judged.
OPEN_ENDED_BENCHMARKS = tuple(name for name, bench in BENCHMARK_TRAITS.items() if not bench.verifiable)
# Benchmarks that are evaluation data only (GSM-Plus perturbs GSM8K test questions).
EVAL_ONLY_BENCHMARKS = tuple(name for name, bench in BENCHMARK_TRAITS.items() if bench.eval_only)
# Benchmarks evaluated on every record unless eval_size says otherwise.
EVALUATED_IN_FULL = tuple(name for name, bench in BENCHMARK_TRAITS.items() if bench.evaluated_in_full)
DEFAULT_TRAIN_SIZE, DEFAULT_EVAL_SIZE = 16, 8


class InstructionSourceConfig(Section):
    """Where open-ended training instructions come from. Never AlpacaEval, which is evaluation data only."""

    source: Literal["builtin", "local", "hub"] = Field(
        default="builtin", description="builtin: a sample of instructions written for this project"
    )
    path: str | None = Field(
        default=None, description="local: a JSON Lines file (.jsonl) or a JSON array of objects (.json)"
    )
    instruction_field: str = Field(default="instruction", description="the field holding each instruction")
    input_field: str | None = Field(
        default=None,
        description="a field holding the instruction's input (e.g. 'input' in Alpaca-style data); when not empty "
        "it follows the instruction after a blank line",
    )
    hub_id: str | None = Field(default=None, description="hub: the dataset id, e.g. tatsu-lab/alpaca")
    hub_config: str | None = Field(default=None, description="hub: the dataset config, if it has several")
    hub_split: str = Field(default="train", description="hub: the split to read")

    @model_validator(mode="after")
    def _source_settings(self) -> InstructionSourceConfig:
        if self.source == "local" and not self.path:
            raise ValueError("instruction source 'local' needs 'path'")
        if self.source == "hub" and not self.hub_id:
            raise ValueError("instruction source 'hub' needs 'hub_id'")
        named = {"hub": self.hub_id, "local": self.path}.get(self.source) or ""
        if "alpaca_eval" in Path(named).name.lower().replace("-", "_"):
            raise ValueError(f"the instruction source {named!r} is AlpacaEval, which is evaluation data only")
        return self


class BenchmarkConfig(Section):
    """Where a benchmark's records come from and how many go to training and evaluation."""

    name: Literal[ALL_BENCHMARKS] = Field(description="the benchmark")
    source: Literal["builtin", "local", "hub"] = Field(
        default="builtin",
        description="builtin: a small sample shipped with the code; local: path; hub: the benchmark's dataset",
    )
    path: str | None = Field(default=None, description="file or directory in the dataset's own format")
    eval_only: bool = Field(
        default=False,
        description="every record is evaluation data and train_size must be 0; defaults to true for gsm_plus "
        "(its questions perturb GSM8K test questions), set false to train on it anyway",
    )
    train_size: int = Field(
        default=DEFAULT_TRAIN_SIZE,
        ge=0,
        description=f"train prompts; defaults to {DEFAULT_TRAIN_SIZE}, or 0 for an evaluation-only benchmark; "
        "more than the data holds is an error",
    )
    eval_size: Annotated[int, Field(ge=0)] | Literal["all"] = Field(
        default=DEFAULT_EVAL_SIZE,
        description=f"eval prompts, or 'all'; defaults to {DEFAULT_EVAL_SIZE}, or 'all' for alpaca_eval; "
        "more than the data holds is an error",
    )
    instructions: InstructionSourceConfig | None = Field(
        default=None,
        description="alpaca_eval only: where its train instructions come from (default: the built-in sample); "
        "its eval items are AlpacaEval's",
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_benchmark(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("eval_only") is None:
            data["eval_only"] = data.get("name") in EVAL_ONLY_BENCHMARKS
        if "train_size" not in data and data["eval_only"] is True:
            data["train_size"] = 0
        if "eval_size" not in data and data.get("name") in EVALUATED_IN_FULL:
            data["eval_size"] = "all"
        return data

    @model_validator(mode="after")
    def _local_needs_path(self) -> BenchmarkConfig:
        if self.source == "local" and not self.path:
            raise ValueError("source 'local' needs 'path'")
        if self.eval_only and self.train_size:
            why = (
                f"{self.name} is evaluation-only ({BENCHMARK_TRAITS[self.name].eval_only_reason})"
                if self.name in EVAL_ONLY_BENCHMARKS
                else f"{self.name} is set eval_only"
            )
            raise ValueError(
                f"{why}, so train_size must be 0, got {self.train_size}; "
                "set eval_only: false to train on it anyway"
            )
        if self.instructions is not None and self.name not in OPEN_ENDED_BENCHMARKS:
            raise ValueError(
                f"'instructions' is for only {', '.join(OPEN_ENDED_BENCHMARKS)}, not {self.name}"
            )
        return self

    @property
    def instruction_source(self) -> InstructionSourceConfig:
        """Where the train instructions of an open-ended benchmark come from."""
        return self.instructions or InstructionSourceConfig()
