"""KV-cache and padding helpers of the transformers backend: left-padded prompt batches, the model's cache
argument, an empty dynamic cache that grows in chunks."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any


def left_padded(prompts: Sequence[list[int]], pad_id: int) -> tuple[Any, Any]:
    """The prompts left-padded to the longest: ``(input_ids, attention_mask)`` as long tensors on the CPU."""
    import torch

    rows, width = len(prompts), max(len(ids) for ids in prompts)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    return input_ids, attention


def cache_arguments(model: Any) -> tuple[str, dict[str, int]]:
    """The name of the model's KV-cache argument (``cache`` or ``past_key_values``, by transformers release)
    and ``{"logits_to_keep": 1}`` where its forward can keep only the last position's logits."""
    parameters = inspect.signature(model.forward).parameters
    cache_name = "cache" if "cache" in parameters else "past_key_values"
    return cache_name, {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}


def new_dynamic_cache(model: Any) -> Any:
    """An empty ``DynamicCache`` for the model whose full-attention layers grow in chunks
    (``rd_pipeline.generation.slack_cache``; older transformers releases take no config)."""
    from transformers import DynamicCache

    from rd_pipeline.generation.slack_cache import use_slack_layers

    try:
        cache = DynamicCache(config=model.config)
    except TypeError:
        cache = DynamicCache()
    return use_slack_layers(cache)
