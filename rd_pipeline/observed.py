"""Identity parts fetched over the network, remembered under ``RD_HOME/journal/identities/`` so that a moment's
outage never changes a model's version.

A generator's identity is hashed into every version downstream. Parts of it that come from the network (an
endpoint's GET /models entry, a hub repository's commit) are observed once per generator and the observation is
recorded. When the network source is unavailable, the last recorded observation is used (with a warning); when
there is none, observing fails before anything is generated, instead of guessing an identity that would change
once the source answers again. A source that answers with a different value is a real change: the new value
is recorded and used, and the outputs get a new version.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from rd_pipeline.hashing import short_hash

log = logging.getLogger(__name__)

OBSERVATIONS_DIR = "identities"


class SourceUnavailable(RuntimeError):
    """The network source of an identity part did not answer (connection error, timeout, 5xx, 429, bad body)."""


class IdentityUnobservable(RuntimeError):
    """An identity part could not be observed now and was never recorded before: nothing may be generated."""


def record_path(journal_dir: Path, subject: dict[str, str]) -> Path:
    """Where the observation of ``subject`` (the configured part of an identity) is recorded."""
    return Path(journal_dir) / OBSERVATIONS_DIR / f"{short_hash(subject)}.json"


def read_record(path: Path) -> dict | None:
    """The recorded observation (``{"subject", "observed", "observed_at"}``), or None when there is none."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def _write_record(path: Path, subject: dict[str, str], observed: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "subject": subject,
        "observed": observed,
        "observed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    staging = path.with_name(f".{path.name}.{os.getpid()}.new")
    staging.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(staging, path)


def observe(
    journal_dir: Path,
    subject: dict[str, str],
    fetch: Callable[[], dict[str, str]],
    source: str,
) -> dict[str, str]:
    """The network-fetched identity parts of ``subject``: ``fetch()`` now, else the last recorded observation.

    ``fetch`` returns the parts (``{}`` when the source answers that it has none) or raises SourceUnavailable.
    An empty answer after a non-empty recorded one is taken as an outage too (a listing that briefly drops a
    model). ``source`` names what is asked, for messages. Raises IdentityUnobservable when the source is
    unavailable and nothing was recorded before.
    """
    path = record_path(journal_dir, subject)
    previous = read_record(path)
    try:
        observed = fetch()
    except SourceUnavailable as error:
        if previous is None:
            raise IdentityUnobservable(
                f"cannot observe the identity of {_describe(subject)}: {source} is unavailable ({error}) and no "
                f"earlier observation is recorded in {path}; nothing was generated. Retry once {source} answers "
                "(an identity guessed now would change when it does, and every output would be made again)"
            ) from None
        log.warning(
            "%s is unavailable (%s); keeping the identity last observed at %s for %s, so its version does not "
            "change",
            source,
            error,
            previous["observed_at"],
            _describe(subject),
        )
        return dict(previous["observed"])
    if previous is not None and not observed and previous["observed"]:
        log.warning(
            "%s no longer reports %s; keeping the identity last observed at %s, so its version does not change",
            source,
            _describe(subject),
            previous["observed_at"],
        )
        return dict(previous["observed"])
    if previous is None or previous["observed"] != observed:
        if previous is not None:
            log.warning(
                "%s reports a changed %s since %s (%s -> %s): its outputs get a new version",
                source,
                _describe(subject),
                previous["observed_at"],
                previous["observed"],
                observed,
            )
        _write_record(path, subject, observed)
    return dict(observed)


def _describe(subject: dict[str, str]) -> str:
    return f"model {subject.get('model', '?')!r} ({subject.get('backend', '?')})"
