"""What a step wraps its generation in, so that money and compute are never spent twice.

- **One generator per scope at a time.** Two runs that generate the same scope (an asset partition, e.g.
  ``teacher_responses[gsm8k]``) with the same model identity take turns on a file lock under
  ``RD_HOME/journal/locks/``; the second waits, then finds the first one's samples in the journal and asks for
  nothing already made. This holds whatever Dagster's pools do, and for plain calls of the steps. The lock is an
  ``flock``: released when its holder exits, even when killed.
- **The API budget counts every run.** Each answered request's cost is journaled with its samples; before and
  after generating, the journals' spend is imported into the ``api_spend`` table, and the generator starts from
  what was spent on its endpoint and model since the last ``rd budget reset``. With ``max_budget_usd`` set, steps
  spending on the same endpoint and model take turns, so that together they stay under the cap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from rd_pipeline.generation.base import Generator
from rd_pipeline.generation.journal import identity_version, lock_path, read_spend
from rd_pipeline.locks import held_lock
from rd_pipeline.steps.context import StepContext


def journal_dir(ctx: StepContext) -> Path:
    return ctx.rd_home / "journal"


@contextlib.contextmanager
def guarded_generation(ctx: StepContext, generator: Generator, scope: str) -> Iterator[dict[str, str]]:
    """Hold the generation lock of ``scope`` and, for an API generator, set up its budget; yields the identity."""
    identity = generator.observe_identity()
    lock = lock_path(journal_dir(ctx), "generate", identity_version(identity), scope)

    def waiting() -> None:
        ctx.log(
            f"{scope}: another run is generating these samples with the same model (lock {lock}); waiting for "
            "it to finish, then only what it did not make is generated"
        )

    with held_lock(lock, waiting):
        from rd_pipeline.generation.openai_backend import OpenAIGenerator

        if isinstance(generator, OpenAIGenerator):
            with _api_budget(ctx, generator, scope):
                yield identity
        else:
            yield identity


@contextlib.contextmanager
def _api_budget(ctx: StepContext, generator, scope: str) -> Iterator[None]:
    """Give ``generator`` the spend of earlier runs on its endpoint and model; record its own afterwards."""
    endpoint, model = generator.spend_endpoint, generator.model_name
    budget = generator.api.max_budget_usd
    turn = (
        held_lock(
            lock_path(journal_dir(ctx), "budget", endpoint, model),
            lambda: ctx.log(f"{scope}: waiting for another step spending on {model!r} at {endpoint}"),
        )
        if budget is not None
        else contextlib.nullcontext()
    )
    with turn:
        import_journal_spend(ctx)
        generator.spent_before_usd = ctx.store.api_spent_usd(endpoint, model)
        generator.spend_label = f"{scope} run {ctx.run_id}"
        if budget is not None:
            ctx.log(
                f"{scope}: ${generator.spent_before_usd:.4f} of the ${budget:.4f} budget for {model!r} at "
                f"{endpoint} spent before this run (`rd budget show`)"
            )
        try:
            yield
        finally:
            import_journal_spend(ctx)


def import_journal_spend(ctx: StepContext) -> int:
    """Copy the spend entries of every journal into ``api_spend`` (each once). Returns how many were new."""
    rows = [
        {
            "endpoint": entry.endpoint,
            "model": entry.model,
            "entry_id": entry.entry_id,
            "label": entry.label,
            "input_tokens": entry.input_tokens,
            "output_tokens": entry.output_tokens,
            "cost_usd": entry.cost_usd,
            "recorded_at": datetime.fromisoformat(entry.recorded_at)
            .astimezone(timezone.utc)
            .replace(tzinfo=None),
        }
        for entry in read_spend(journal_dir(ctx))
    ]
    return ctx.store.import_api_spend(rows)
