"""The generation loop every backend shares: what the journal already has, what to decode, recording, progress.

``JournaledGenerator.generate`` splits the requests' samples into journaled and pending ones, gives the backend
each pending key once (a sample asked for by several requests, same conversation and sampling, is an *alias*
and is decoded once), records every batch the backend finishes in the journal (with what it cost) before the
next is decoded, reports progress, and returns the completions in request order. A backend implements only
``decode`` (pending samples in, finished batches out), its identity and where its journal lives, so a crashed
or repeated call resumes the same way on every backend.
"""

from __future__ import annotations

import collections.abc
import time
from abc import abstractmethod
from dataclasses import astuple, dataclass, replace
from pathlib import Path

from rd_pipeline.generation.base import (
    Completion,
    GenerationRequest,
    GenerationStats,
    Generator,
    ProgressCallback,
)
from rd_pipeline.generation.journal import Journal, PendingSample, SpendEntry


@dataclass
class FinishedBatch:
    """Samples a backend finished together, keyed by journal key, and what producing them took."""

    entries: list[tuple[str, Completion]]
    backend_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    spend: SpendEntry | None = None  # journaled in the same transaction as the samples it paid for


Batches = collections.abc.Generator[FinishedBatch, None, None]


class JournalRun:
    """One generate() call: the journaled samples, the pending ones (one per key), stats and progress."""

    def __init__(
        self,
        journal: Journal,
        identity: dict[str, str],
        requests: list[GenerationRequest],
        progress: ProgressCallback | None = None,
        progress_interval_s: float = 0.0,
    ) -> None:
        done, pending = journal.split(identity, requests)
        self.journal = journal
        self.requests = requests
        self.results: dict[tuple[int, int], Completion] = dict(done)
        self.aliases: dict[str, list[tuple[int, int]]] = {}  # key -> every (position, index) that wants it
        self.pending: list[PendingSample] = []  # the first (position, index) of each pending key
        for sample in pending:
            if sample.key not in self.aliases:
                self.aliases[sample.key] = []
                self.pending.append(sample)
            self.aliases[sample.key].append((sample.position, sample.sample_index))
        self.total = len(done) + len(pending)
        self.stats = GenerationStats(samples_requested=self.total, samples_from_journal=len(done))
        self._progress = progress
        self._progress_interval_s = progress_interval_s
        self._last_report = float("-inf")
        self._last_reported: tuple[object, ...] | None = None  # (done, stats) of the last report

    def record(self, batch: FinishedBatch) -> None:
        """Journal a finished batch (one transaction), give each sample to every request that asked for it."""
        self.journal.record(batch.entries, batch.spend)
        for key, completion in batch.entries:
            for position, index in self.aliases[key]:
                self.results[(position, index)] = replace(
                    completion, request_id=self.requests[position].request_id, sample_index=index
                )
                self.stats.samples_generated += 1
        self.stats.backend_requests += batch.backend_requests
        self.stats.input_tokens += batch.input_tokens
        self.stats.output_tokens += batch.output_tokens
        self.stats.cost_usd += batch.cost_usd
        self.report()

    def report(self, force: bool = False) -> None:
        """Call the progress callback, at most once per ``progress_interval_s`` unless forced, and never twice
        for the same state (the last batch and the end of the run report the same numbers once)."""
        now = time.monotonic()
        state = (len(self.results), astuple(self.stats))
        if self._progress is None or state == self._last_reported:
            return
        if force or now - self._last_report >= self._progress_interval_s:
            self._last_report, self._last_reported = now, state
            self._progress(len(self.results), self.total, self.stats)

    def completions(self) -> list[Completion]:
        """The samples there are, in request order then sample index (all of them unless the backend stopped)."""
        return [self.results[place] for place in sorted(self.results)]


class JournaledGenerator(Generator):
    """A generator whose samples go through its journal; subclasses implement ``decode`` and their identity."""

    progress_interval_s: float = 0.0  # least time between progress callbacks (the last one always comes)
    # Set: journal keys of their own, so that nothing journaled without it is reused (a forced re-evaluation
    # generates afresh, and what it generates is journaled as it finishes, like any sample).
    journal_salt: str = ""
    _journal: Journal | None = None

    @abstractmethod
    def journal_path(self) -> Path:
        """The journal file of this generator's identity."""

    @abstractmethod
    def decode(self, run: JournalRun) -> Batches:
        """Decode ``run.pending`` (one sample per key), yielding batches as they finish; each batch is journaled
        before the next is asked for. A backend that stops early (budget) yields what it has and sets
        ``run.stats`` accordingly."""

    def journal_identity(self) -> dict[str, str]:
        """The identity journal keys hash: the generator's own, with ``journal_salt`` when one is set."""
        identity = self.observe_identity()
        return identity | {"journal_salt": self.journal_salt} if self.journal_salt else identity

    @property
    def journal(self) -> Journal:
        """The journal, opened on first use (again after ``close()``)."""
        if self._journal is None:
            self._journal = Journal(self.journal_path())
        return self._journal

    def generate(
        self, requests: collections.abc.Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> tuple[list[Completion], GenerationStats]:
        """All samples of every request, in request order then sample index; only pending keys are decoded."""
        identity = self.journal_identity()
        run = JournalRun(self.journal, identity, list(requests), progress, self.progress_interval_s)
        try:
            if run.pending:
                run.report(force=True)
                batches = self.decode(run)
                try:
                    for batch in batches:
                        run.record(batch)
                finally:
                    batches.close()
        finally:
            run.report(force=True)
        return run.completions(), run.stats

    def close(self) -> None:
        """Close the journal (it reopens when used again)."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
