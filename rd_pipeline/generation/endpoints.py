"""Replicas of one model behind several OpenAI-compatible base URLs: spread requests, track each one's health.

A request goes to the healthy replica with the fewest requests in flight (ties in turn). A replica whose
request fails at the transport level or with a 5xx is taken out for ``cooldown_s`` (doubled per consecutive
failure, at most ``MAX_COOLDOWN_S``), then tried again; one answer puts it back. When every replica is out, the
one due back first is tried, so a single endpoint behaves exactly as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_COOLDOWN_S = 300.0


@dataclass
class Endpoint:
    """One replica and what the client has seen of it."""

    base_url: str
    in_flight: int = 0
    answered: int = 0
    failures: int = 0  # consecutive failures since its last answer
    down_until: float = 0.0

    @property
    def chat_url(self) -> str:
        return self.base_url + "/chat/completions"


class EndpointPool:
    """The replicas of one model; ``pick()`` chooses where the next attempt goes."""

    def __init__(
        self,
        base_urls: Sequence[str],
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not base_urls:
            raise ValueError("an endpoint pool needs at least one base URL")
        self.endpoints = [Endpoint(url.rstrip("/")) for url in base_urls]
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._turn = 0

    def __len__(self) -> int:
        return len(self.endpoints)

    def healthy(self) -> list[Endpoint]:
        now = self.clock()
        return [e for e in self.endpoints if e.down_until <= now]

    def pick(self) -> Endpoint:
        """The healthy replica with the fewest requests in flight; else the one due back soonest."""
        healthy = self.healthy()
        if not healthy:
            return min(self.endpoints, key=lambda e: e.down_until)
        self._turn += 1
        count = len(self.endpoints)
        order = {id(e): (i - self._turn) % count for i, e in enumerate(self.endpoints)}
        return min(healthy, key=lambda e: (e.in_flight, order[id(e)]))

    def has_other_healthy(self, endpoint: Endpoint) -> bool:
        return any(e is not endpoint for e in self.healthy())

    def mark_ok(self, endpoint: Endpoint) -> None:
        if endpoint.failures and len(self.endpoints) > 1:
            log.info("endpoint %s answers again; back in the pool", endpoint.base_url)
        endpoint.answered += 1
        endpoint.failures = 0
        endpoint.down_until = 0.0

    def mark_failed(self, endpoint: Endpoint, reason: str) -> None:
        """Take ``endpoint`` out for a cooldown that doubles with each consecutive failure.

        Failures of requests already sent to a replica that is out (they were in flight when it failed) do not
        lengthen its cooldown.
        """
        now = self.clock()
        if endpoint.down_until > now:
            return
        endpoint.failures += 1
        cooldown = min(MAX_COOLDOWN_S, self.cooldown_s * 2 ** (endpoint.failures - 1))
        endpoint.down_until = now + cooldown
        if len(self.endpoints) > 1:
            log.warning(
                "endpoint %s taken out of the pool for %.0fs (%s); %d of %d replicas healthy",
                endpoint.base_url,
                cooldown,
                reason,
                len(self.healthy()),
                len(self.endpoints),
            )

    def answered_by_url(self) -> dict[str, int]:
        """Answers received per replica, for logs and tests."""
        return {e.base_url: e.answered for e in self.endpoints}
