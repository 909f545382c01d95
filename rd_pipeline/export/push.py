"""Upload an exported folder to the Hugging Face hub (or any endpoint that speaks its API, set by
``HF_ENDPOINT``), with the token from ``HF_TOKEN``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rd_pipeline.export.facts import ExportError

DEFAULT_ENDPOINT = "https://huggingface.co"


class PushError(ExportError):
    """An upload that could not be made: no token, or the hub refused or could not be reached."""


@dataclass(frozen=True)
class HubTarget:
    """Where a push goes: the repository, its endpoint and the token to write with."""

    repo_id: str
    endpoint: str
    token: str


def hub_target(repo_id: str) -> HubTarget:
    """The push target from the environment: ``HF_TOKEN`` (required) and ``HF_ENDPOINT`` (optional)."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise PushError(
            f"--push {repo_id}: HF_TOKEN is not set; export a Hugging Face write token as HF_TOKEN"
        )
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or DEFAULT_ENDPOINT
    return HubTarget(repo_id, endpoint, token)


def push_folder(folder: Path, target: HubTarget, private: bool) -> str:
    """Create the model repository (if needed) and upload every file of ``folder`` in one commit.
    Returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=target.endpoint, token=target.token)
    try:
        api.create_repo(target.repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=target.repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message="Upload model exported by rd-pipeline",
        )
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "no status"
        raise PushError(
            f"the hub at {target.endpoint} refused the upload to {target.repo_id}: HTTP {status} "
            f"({_reason(status)})"
        ) from None
    except (OSError, ValueError) as error:  # connection refused, timeouts, a malformed answer
        message = " ".join(str(error).split())[:200]
        raise PushError(
            f"could not upload to {target.repo_id} at {target.endpoint}: {type(error).__name__}: {message}"
        ) from None
    return commit.commit_url


def _reason(status: int | str) -> str:
    reasons = {
        401: "the token in HF_TOKEN is not valid",
        403: "the token in HF_TOKEN may not write to this repository",
        404: "no such repository or namespace",
    }
    return reasons.get(status, "see the hub's answer") if isinstance(status, int) else "no answer"
