"""Generation: one ``Generator`` interface, three backends, and ``make_generator`` to pick one from config."""

from __future__ import annotations

import logging
from pathlib import Path

from rd_pipeline.config import ModelConfig
from rd_pipeline.generation.base import (
    Completion,
    GenerationRequest,
    GenerationStats,
    Generator,
    Message,
    ProgressCallback,
    SamplingParams,
)
from rd_pipeline.generation.journal import Journal
from rd_pipeline.generation.loop import JournaledGenerator

__all__ = [
    "Completion",
    "GenerationRequest",
    "GenerationStats",
    "Generator",
    "Journal",
    "Message",
    "ProgressCallback",
    "SamplingParams",
    "make_generator",
]


def make_generator(
    model: ModelConfig,
    rd_home: Path,
    location: str | None = None,
    role: str = "model",
    journal_salt: str = "",
) -> Generator:
    """The generator for ``model``'s backend, journaled under ``rd_home/journal``.

    ``location`` (e.g. a trained student's checkpoint) replaces ``model.ref`` for the local backends.
    ``role`` (teacher, student, judge, ...) only names the model in error messages. A ``journal_salt`` gives its
    samples journal keys of their own (see ``JournaledGenerator.journal_salt``).
    """
    generator = _backend_generator(model, Path(rd_home), location, role)
    if journal_salt:
        generator.journal_salt = journal_salt
    return generator


def _backend_generator(
    model: ModelConfig, rd_home: Path, location: str | None, role: str
) -> JournaledGenerator:
    """The journaled generator of ``model``'s backend (see ``make_generator``)."""
    if model.backend == "openai":
        from rd_pipeline.generation.openai_backend import OpenAIGenerator

        if location is not None:
            raise ValueError(
                f"{role} uses the openai backend, which serves a remote model: it cannot load {location}"
            )
        return OpenAIGenerator(model, rd_home / "journal")

    from rd_pipeline.models import resolve_model

    if model.backend == "vllm":
        from rd_pipeline.generation.vllm_backend import VllmGenerator, vllm_available, vllm_identity

        if vllm_available():
            resolved = resolve_model(location or model.ref, rd_home, model.revision)
            return VllmGenerator(
                resolved, model, Journal.for_identity(rd_home, vllm_identity(resolved, model))
            )
        model = _without_vllm(model, role)

    if model.backend == "transformers":
        from rd_pipeline.generation.transformers_backend import TransformersGenerator, transformers_identity

        resolved = resolve_model(location or model.ref, rd_home, model.revision)
        return TransformersGenerator(
            resolved, model, Journal.for_identity(rd_home, transformers_identity(resolved, model))
        )

    raise ValueError(f"{role} model {model.ref!r}: unknown generation backend {model.backend!r}")


def _without_vllm(model: ModelConfig, role: str) -> ModelConfig:
    """``model`` on the transformers backend when vLLM is missing and fallback is allowed; else ImportError."""
    from rd_pipeline.generation.vllm_backend import VLLM_MISSING

    if not model.vllm.fallback_to_transformers:
        raise ImportError(f"{role} model {model.ref!r}: {VLLM_MISSING}")
    logging.getLogger(__name__).warning(
        "%s model %r: %s; generating with the transformers backend instead (set vllm.fallback_to_transformers: "
        "false to fail instead)",
        role,
        model.ref,
        VLLM_MISSING,
    )
    return model.model_copy(update={"backend": "transformers"})
