"""Pipeline configs whose teacher and judge talk to an OpenAI-compatible endpoint, for API-level tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from rd_pipeline.config import load_config

API_MODEL = "fake-model"
KEY_ENV = "RD_TEST_API_KEY"


def api_pipeline_config(
    base_url: str,
    benchmarks: Sequence[str] = ("gsm8k",),
    *,
    train_size: int = 16,
    n: int = 8,
    temperatures: Sequence[float] = (0.7, 1.0),
    max_new_tokens: int = 32,
    **api_fields: Any,
) -> dict[str, Any]:
    """A config mapping: teacher and judge over the API at ``base_url``, student ``tiny-random``.

    ``api_fields`` override the API section (concurrency, prices, budget, timeout, ...); the key is read from
    the environment variable ``KEY_ENV`` unless ``api_key_env`` is given.
    """
    api = {
        "base_url": base_url,
        "model": API_MODEL,
        "api_key_env": KEY_ENV,
        "max_concurrency": 8,
        "timeout_s": 10.0,
        "max_retries": 4,
    }
    api.update(api_fields)
    endpoint = {"backend": "openai", "api": api}
    return {
        "teacher": {"ref": "api-teacher", **endpoint},
        "judge": {"ref": "api-judge", **endpoint},
        "student": {"ref": "tiny-random"},
        "benchmarks": [
            {"name": name, "source": "builtin", "train_size": train_size, "eval_size": 2}
            for name in benchmarks
        ],
        "sampling": {
            "n": n,
            "temperatures": list(temperatures),
            "max_new_tokens": max_new_tokens,
            "seed": 0,
        },
        "labeling": {"judge_max_new_tokens": 16, "min_vote_share": 0.0, "min_valid_votes": 1},
        # A fake server's answers carry no judge verdicts, so label coverage checks report without blocking.
        "checks": {"enforce": False},
    }


def write_api_config(path: Path, base_url: str, **kwargs: Any) -> Path:
    """Write ``api_pipeline_config(base_url, **kwargs)`` as YAML to ``path``, check it loads, return the path."""
    path = Path(path)
    path.write_text(yaml.safe_dump(api_pipeline_config(base_url, **kwargs), sort_keys=False))
    load_config(path)
    return path
