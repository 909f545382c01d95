"""An async client for one OpenAI-compatible chat endpoint: retries, backoff, errors that never hold the key.

The key is read from the environment variable named in the config each time a request is built; it is kept in
no attribute, and every error text is scrubbed of it before it is raised or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import logging
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from rd_pipeline.config import ApiConfig
from rd_pipeline.generation.endpoints import EndpointPool
from rd_pipeline.hashing import short_hash
from rd_pipeline.observed import SourceUnavailable

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429})  # plus every 5xx
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 600.0
# Fields of a GET /models entry that describe the model itself; others (vLLM's ``created``, a load status)
# change from call to call and would make every run look like a new model.
STABLE_MODEL_FIELDS = ("id", "owned_by", "root", "parent", "max_model_len")


class ApiError(RuntimeError):
    """A request the endpoint refused, or one that failed on every retry. The message never holds the key."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class RequestAbandoned(Exception):
    """A retry loop gave up early because the run is stopping."""


@dataclass(frozen=True)
class ChatResult:
    """One answered chat request."""

    texts: list[str]
    prompt_tokens: int | None
    completion_tokens: int | None
    attempts: int
    # The first choice's tokens and their top alternatives (token -> logprob), when the request asked for them.
    logprobs: list[tuple[str, dict[str, float]]] | None = None


class _Retry(Exception):
    def __init__(
        self,
        reason: str,
        retry_after: float | None = None,
        status: int | None = None,
        endpoint_fault: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status
        self.endpoint_fault = endpoint_fault  # the replica itself failed (connection, timeout, 5xx)


def read_key(api: ApiConfig) -> str | None:
    """The API key from the environment variable the config names, or None when it is unset or empty."""
    if not api.api_key_env:
        return None
    return os.environ.get(api.api_key_env) or None


def scrub(text: str, api: ApiConfig) -> str:
    """``text`` with the current key (if any) replaced by ``***``."""
    key = read_key(api)
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return text


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); else None."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(millis) / 1000.0))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def backoff_delay(attempt: int, base_s: float, retry_after: float | None) -> float:
    """Exponential backoff with jitter (half to all of ``base * 2**attempt``), at least ``retry_after``."""
    ceiling = min(MAX_BACKOFF_S, base_s * (2**attempt))
    delay = ceiling * (0.5 + 0.5 * random.random())
    return max(delay, retry_after or 0.0)


def parse_top_logprobs(raw: bytes) -> list[tuple[str, dict[str, float]]] | None:
    """The first choice's generated tokens, each with its top alternatives (token -> logprob, the chosen token
    included), from a chat completion body that carries ``logprobs.content``; None when it carries none."""
    try:
        content = json.loads(raw)["choices"][0]["logprobs"]["content"]
        positions = []
        for entry in content:
            alternatives = {str(t["token"]): float(t["logprob"]) for t in entry.get("top_logprobs") or []}
            alternatives.setdefault(str(entry["token"]), float(entry["logprob"]))
            positions.append((str(entry["token"]), alternatives))
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return positions or None


def parse_chat_body(raw: bytes) -> tuple[list[str], int | None, int | None]:
    """Choice texts (by choice index) and usage from a chat completion body; ValueError if it is not one."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"response body is not JSON ({error.msg if hasattr(error, 'msg') else error})"
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
        raise ValueError("response JSON has no 'choices' list")
    choices: list[tuple[int, str]] = []
    for position, choice in enumerate(body["choices"]):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise ValueError(f"choice {position} has no 'message' object")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError(f"choice {position} has non-text content")
        index = choice.get("index", position)
        choices.append((index if isinstance(index, int) else position, content or ""))
    choices.sort(key=lambda item: item[0])
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    prompt_tokens = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    return (
        [text for _, text in choices],
        prompt_tokens if isinstance(prompt_tokens, int) else None,
        completion_tokens if isinstance(completion_tokens, int) else None,
    )


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every pool (building one loads the CA bundle, tens of milliseconds)."""
    return httpx.create_ssl_context()


class ChatClient:
    """POSTs chat completions to an endpoint or its replicas; use as ``async with ChatClient(...) as client``.

    Each attempt goes to a replica chosen by an ``EndpointPool``; a failed attempt on a replica that is down is
    retried at once on a healthy one, without backoff.

    At most ``max_concurrency`` requests run at once: each holds a slot (``async with client.slot()``) for its
    whole retry loop. Slots are spread over several small connection pools of ``POOL_SIZE`` connections,
    because one httpx pool spends time quadratic in its size on every request it schedules.
    """

    POOL_SIZE = 8

    def __init__(self, api: ApiConfig, model: str, backoff_base_s: float = 0.5) -> None:
        self.api = api
        self.model = model
        self.backoff_base_s = backoff_base_s
        self.endpoints = EndpointPool(api.endpoint_urls(), api.endpoint_cooldown_s)
        self.endpoint = self.endpoints.endpoints[0].chat_url  # the last one used, for messages
        self.failed_attempts = 0
        self._pools: list[httpx.AsyncClient] = []
        self._slots: asyncio.Queue[int] | None = None

    def __repr__(self) -> str:
        return f"ChatClient(endpoint={self.endpoint!r}, model={self.model!r})"

    async def __aenter__(self) -> ChatClient:
        total = self.api.max_concurrency
        sizes = [min(self.POOL_SIZE, total - start) for start in range(0, total, self.POOL_SIZE)]
        self._pools = [
            httpx.AsyncClient(
                verify=_ssl_context(),
                timeout=httpx.Timeout(self.api.timeout_s),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            for size in sizes
        ]
        self._slots = asyncio.Queue()
        for slot in range(total):
            self._slots.put_nowait(slot)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for pool in self._pools:
            await pool.aclose()
        self._pools = []

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """Wait for a free concurrency slot and hold it."""
        assert self._slots is not None, "use ChatClient as an async context manager"
        slot = await self._slots.get()
        try:
            yield slot
        finally:
            self._slots.put_nowait(slot)

    def _where(self, url: str | None = None) -> str:
        return f"endpoint {url or self.endpoint}, model {self.model!r}"

    async def chat(
        self, payload: dict[str, Any], slot: int, should_stop: Callable[[], bool] = lambda: False
    ) -> ChatResult:
        """Send one chat request on a held slot, retrying transient failures.

        Raises ApiError when the endpoint refuses it or every retry failed.
        """
        pool = self._pools[slot // self.POOL_SIZE]
        attempts = self.api.max_retries + 1
        for attempt in range(attempts):
            endpoint = self.endpoints.pick()
            url = self.endpoint = endpoint.chat_url
            endpoint.in_flight += 1
            try:
                result = await self._attempt(pool, payload, attempt + 1, endpoint.chat_url)
                self.endpoints.mark_ok(endpoint)
                return result
            except _Retry as retry:
                self.failed_attempts += 1
                if retry.endpoint_fault:
                    self.endpoints.mark_failed(endpoint, retry.reason)
                if attempt + 1 >= attempts:
                    raise ApiError(
                        scrub(
                            f"{self._where(url)}: gave up after {attempts} attempts; last: {retry.reason}",
                            self.api,
                        ),
                        status=retry.status,
                        retryable=True,
                    ) from None
                if should_stop():
                    raise RequestAbandoned() from None
                if retry.endpoint_fault and self.endpoints.has_other_healthy(endpoint):
                    log.info("%s: %s; retrying on another replica", self._where(url), retry.reason)
                    continue
                delay = backoff_delay(attempt, self.backoff_base_s, retry.retry_after)
                log.info(
                    "%s: %s; retry %d of %d in %.2fs",
                    self._where(url),
                    retry.reason,
                    attempt + 1,
                    attempts - 1,
                    delay,
                )
                await asyncio.sleep(delay)
                if should_stop():
                    raise RequestAbandoned() from None
            finally:
                endpoint.in_flight -= 1
        raise AssertionError("unreachable")

    async def _attempt(
        self, pool: httpx.AsyncClient, payload: dict[str, Any], attempt: int, url: str
    ) -> ChatResult:
        try:
            response = await pool.post(url, json=payload, headers=auth_headers(self.api))
        except httpx.TimeoutException:
            raise _Retry(f"no answer within {self.api.timeout_s:g}s", endpoint_fault=True) from None
        except httpx.TransportError as error:
            reason = scrub(f"connection error ({type(error).__name__}: {error})", self.api)
            raise _Retry(reason, endpoint_fault=True) from None
        status = response.status_code
        if status == 200:
            try:
                texts, prompt_tokens, completion_tokens = parse_chat_body(response.content)
            except ValueError as error:
                raise _Retry(f"malformed response: {error}", status=status) from None
            logprobs = parse_top_logprobs(response.content) if payload.get("logprobs") else None
            return ChatResult(texts, prompt_tokens, completion_tokens, attempt, logprobs)
        detail = scrub(response.text, self.api).strip()[
            :300
        ]  # scrub before cutting, so no part of a key is left
        if status in RETRYABLE_STATUS or status >= 500:
            reason = f"HTTP {status} {detail[:120]}".strip()
            raise _Retry(reason, parse_retry_after(response.headers), status, endpoint_fault=status >= 500)
        hint = ""
        if status in (401, 403):
            source = f"${self.api.api_key_env}" if self.api.api_key_env else "no key variable configured"
            hint = f" (key from {source}{'' if read_key(self.api) else ', which is unset'})"
        raise ApiError(
            scrub(
                f"{self._where(url)}: request refused with HTTP {status}{hint}: {detail or '(empty body)'}",
                self.api,
            ),
            status=status,
        )


def auth_headers(api: ApiConfig) -> dict[str, str]:
    key = read_key(api)
    return {"Authorization": f"Bearer {key}"} if key else {}


def fetch_model_entry(
    api: ApiConfig, model: str, attempts: int = 3, base_url: str | None = None
) -> dict[str, Any] | None:
    """The GET /models entry for ``model`` at ``base_url`` (default: the first endpoint), or None when absent.

    Transient failures (connection errors, timeouts, 5xx, 429, a body that is not a listing) are retried a few
    times, then raise SourceUnavailable: an outage is not an answer, since the entry is part of the identity.
    """
    url = (base_url or api.endpoint_urls()[0]).rstrip("/") + "/models"
    for attempt in range(attempts):
        try:
            response = httpx.get(url, headers=auth_headers(api), timeout=min(api.timeout_s, 30.0))
        except httpx.HTTPError as error:
            failure = scrub(f"GET {url} failed ({type(error).__name__})", api)
            log.info("%s; attempt %d of %d", failure, attempt + 1, attempts)
            time.sleep(0.5 * (attempt + 1))
            continue
        if response.status_code >= 500 or response.status_code == 429:
            failure = f"GET {url} answered HTTP {response.status_code}"
            time.sleep(0.5 * (attempt + 1))
            continue
        if response.status_code != 200:
            return None  # no listing at this endpoint (404) or not for this key: a stable answer
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError):
            failure = f"GET {url} answered a body that is not a model listing"
            continue
        for entry in data if isinstance(data, list) else []:
            if isinstance(entry, dict) and entry.get("id") == model:
                return entry
        return None
    raise SourceUnavailable(failure)


def model_fingerprint(entry: dict[str, Any]) -> str:
    """A short hash of the stable fields of a GET /models entry."""
    stable = {name: entry[name] for name in STABLE_MODEL_FIELDS if name in entry}
    return short_hash(stable)


def estimate_input_tokens(messages: list[dict[str, str]]) -> int:
    """A deliberately high estimate of a chat request's prompt tokens (UTF-8 bytes / 3 plus overhead)."""
    return sum(len(m.get("content", "").encode()) // 3 + 8 for m in messages) + 8
