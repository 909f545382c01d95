"""A KV-cache layer that grows in chunks instead of one token at a time (the transformers backend).

transformers' ``DynamicLayer`` concatenates every decoded token's keys and values onto the whole cache, so each
decoding step copies the entire cache of every layer into freshly allocated memory: for a batch of 32 prompts of
600 tokens on SmolLM2-135M, 0.9 GB per token. ``SlackLayer`` keeps the cache in a buffer with room for
``SLACK_TOKENS`` more positions, writes each step's keys and values in place and returns views of the filled part;
the buffer is copied only when it is full, once per ``SLACK_TOKENS`` decoded tokens. Anything that replaces the
layer's tensors (batch selection, repetition, reordering) is picked up at the next update, which then copies them
into a new buffer; cropping keeps the buffer.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

SLACK_TOKENS = 128
"""Positions a layer's buffer holds beyond what it has been asked to store."""


class SlackLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of buffers with room to grow."""

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions after the cached ones; the keys and values of every position so far."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, added = self.get_seq_length(), key_states.shape[-2]
        if not self._holds_buffers(key_states, length + added):
            self._key_buffer = _grown(self.keys if length else None, key_states, length + added)
            self._value_buffer = _grown(self.values if length else None, value_states, length + added)
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[..., length : length + added, :] = key_states
        self._value_buffer[..., length : length + added, :] = value_states
        self.keys = self._key_buffer[..., : length + added, :]
        self.values = self._value_buffer[..., : length + added, :]
        return self.keys, self.values

    def _holds_buffers(self, key_states: torch.Tensor, needed: int) -> bool:
        """Whether the current keys and values are the start of this layer's buffers, which fit ``needed``
        positions of ``key_states``' batch and heads."""
        buffer = self._key_buffer
        if buffer is None or self._value_buffer is None or buffer.shape[-2] < needed:
            return False
        if buffer.shape[:2] != key_states.shape[:2] or buffer.dtype != key_states.dtype:
            return False
        if self.get_seq_length() == 0:
            return True
        return _is_start_of(self.keys, buffer) and _is_start_of(self.values, self._value_buffer)

    def reset(self) -> None:
        """Drop the buffers with the cached positions."""
        self._key_buffer = self._value_buffer = None
        super().reset()


def _is_start_of(view: torch.Tensor, buffer: torch.Tensor) -> bool:
    """Whether ``view`` is ``buffer[..., :n, :]`` for some ``n``."""
    return (
        view.data_ptr() == buffer.data_ptr()
        and view.shape[:2] == buffer.shape[:2]
        and view.shape[-1] == buffer.shape[-1]
        and view.stride() == buffer.stride()
    )


def _grown(cached: torch.Tensor | None, new_states: torch.Tensor, needed: int) -> torch.Tensor:
    """A buffer for ``needed + SLACK_TOKENS`` positions of ``new_states``' batch and heads, starting with
    ``cached``."""
    batch, heads, _, head_dim = new_states.shape
    buffer = new_states.new_empty((batch, heads, needed + SLACK_TOKENS, head_dim))
    if cached is not None:
        buffer[..., : cached.shape[-2], :] = cached
    return buffer


def use_slack_layers(cache: Any) -> Any:
    """The cache with each of its plain ``DynamicLayer`` layers (and any it adds later) a ``SlackLayer``."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        cache.layers = [
            SlackLayer() if type(layer) is DynamicLayer and not layer.is_initialized else layer
            for layer in layers
        ]
    if getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
        cache.layer_class_to_replicate = SlackLayer
    return cache
