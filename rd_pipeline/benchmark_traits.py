"""What the configuration knows of each benchmark before any data is read: its name and its traits.

The benchmark registry (``rd_pipeline.benchmarks``) builds each benchmark from its entry here, so the
configuration can validate benchmark names and sizes without importing the registry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchmarkTraits:
    """A benchmark's name and the traits the configuration and the pipeline branch on."""

    name: str
    verifiable: bool  # answers have a gold final answer to extract and compare; else open-ended and judged
    eval_only: bool = False  # evaluation data only: no train prompts unless a config explicitly opts in
    eval_only_reason: str = ""  # why, as error messages say it
    evaluated_in_full: bool = False  # eval_size defaults to every record


BENCHMARK_TRAITS: dict[str, BenchmarkTraits] = {  # in report order
    traits.name: traits
    for traits in (
        BenchmarkTraits("gsm8k", verifiable=True),
        BenchmarkTraits(
            "gsm_plus",
            verifiable=True,
            eval_only=True,
            eval_only_reason="its questions perturb GSM8K test questions",
        ),
        BenchmarkTraits("mmlu_pro", verifiable=True),
        BenchmarkTraits("alpaca_eval", verifiable=False, evaluated_in_full=True),
    )
}
