"""The request journal: keys, round trips across connections and processes, incremental n."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from rd_pipeline.generation.base import Completion, GenerationRequest, SamplingParams
from rd_pipeline.generation.journal import Journal, identity_version, sample_key

IDENTITY = {"backend": "test", "model": "m", "fingerprint": "abc"}


def _request(
    request_id: str, n: int, temperature: float = 0.7, seed: int = 0, text: str = "hi"
) -> GenerationRequest:
    return GenerationRequest(
        request_id,
        ({"role": "user", "content": text},),
        SamplingParams(temperature=temperature, n=n, seed=seed),
    )


def _fill(journal: Journal, request: GenerationRequest, indices: range) -> None:
    journal.record(
        (sample_key(IDENTITY, request, i), Completion(request.request_id, i, 0.7, f"answer {i}", 3, i + 1))
        for i in indices
    )


def test_key_covers_what_changes_a_sample_but_not_n() -> None:
    base = sample_key(IDENTITY, _request("a", n=2), 0)
    assert sample_key(IDENTITY, _request("other-id", n=5), 0) == base  # request id and n are not part of it
    assert sample_key(IDENTITY, _request("a", n=2), 1) != base
    assert sample_key(IDENTITY, _request("a", n=2, seed=1), 0) != base
    assert sample_key(IDENTITY, _request("a", n=2, temperature=1.0), 0) != base
    assert sample_key(IDENTITY, _request("a", n=2, text="hello"), 0) != base
    assert sample_key({**IDENTITY, "fingerprint": "def"}, _request("a", n=2), 0) != base


def test_round_trip_through_a_second_connection(tmp_path: Path) -> None:
    journal = Journal.for_identity(tmp_path, IDENTITY)
    assert journal.path == tmp_path / "journal" / f"{identity_version(IDENTITY)}.sqlite"
    request = _request("a", n=3)
    _fill(journal, request, range(3))
    journal.close()

    reopened = Journal.for_identity(tmp_path, IDENTITY)
    done, pending = reopened.split(IDENTITY, [request])
    assert pending == []
    assert [done[(0, i)].text for i in range(3)] == ["answer 0", "answer 1", "answer 2"]
    assert all(c.from_journal for c in done.values())
    assert [done[(0, i)].output_tokens for i in range(3)] == [1, 2, 3]


def test_more_samples_leave_only_new_indices_pending(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    _fill(journal, _request("a", n=2), range(2))
    done, pending = journal.split(IDENTITY, [_request("b", n=1, text="other"), _request("a", n=5)])
    assert sorted(done) == [(1, 0), (1, 1)]
    assert [(p.request.request_id, p.sample_index) for p in pending] == [
        ("b", 0),
        ("a", 2),
        ("a", 3),
        ("a", 4),
    ]
    assert done[(1, 0)].request_id == "a"


def test_a_recorded_key_keeps_its_first_value(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    request = _request("a", n=1)
    key = sample_key(IDENTITY, request, 0)
    journal.record([(key, Completion("a", 0, 0.7, "first", 1, 1))])
    journal.record([(key, Completion("a", 0, 0.7, "second", 1, 1))])
    assert journal.count() == 1
    assert journal.lookup([key])[key][0] == "first"


def test_records_survive_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    script = textwrap.dedent(
        f"""
        import os, signal
        from rd_pipeline.generation.base import Completion, GenerationRequest, SamplingParams
        from rd_pipeline.generation.journal import Journal, sample_key
        identity = {IDENTITY!r}
        journal = Journal({str(path)!r})
        request = GenerationRequest("a", ({{"role": "user", "content": "hi"}},), SamplingParams(0.7, n=4))
        for i in range(2):
            done = Completion("a", i, 0.7, f"answer {{i}}", 3, 1)
            journal.record([(sample_key(identity, request, i), done)])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -9, result.stderr.decode()
    done, pending = Journal(path).split(IDENTITY, [_request("a", n=4)])
    assert sorted(done) == [(0, 0), (0, 1)]
    assert [p.sample_index for p in pending] == [2, 3]


def test_journal_file_names_fingerprints_and_lock_names_keep_their_hash_values(tmp_path: Path) -> None:
    """These hashes name journal files, locks and model versions on disk: changing them orphans every journal."""
    from rd_pipeline.generation.api_client import model_fingerprint
    from rd_pipeline.generation.journal import lock_path

    assert identity_version({"backend": "openai", "model": "m", "owned_by": "me"}) == "9edc5e98e3d57a42"
    entry = {"id": "m", "object": "model", "created": 1700000000, "owned_by": "me", "root": "r", "extra": 1}
    assert model_fingerprint(entry) == "fec1ff49dd409a58"
    assert lock_path(tmp_path, "generate", "abc", "s") == tmp_path / "locks" / "1f22ee2c14097d2c.lock"
