"""The chunk-growing KV-cache layer holds exactly what transformers' own dynamic layer holds, through every
operation generation and follow-up scoring apply to it, and copies its cache only when the buffer is full."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from rd_pipeline.generation.slack_cache import SLACK_TOKENS, SlackLayer, use_slack_layers


def _states(batch: int, positions: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 2, positions, 4)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def _assert_same(slack: SlackLayer, plain: DynamicLayer) -> None:
    assert slack.get_seq_length() == plain.get_seq_length()
    assert torch.equal(slack.keys, plain.keys)
    assert torch.equal(slack.values, plain.values)


def test_slack_layer_matches_the_dynamic_layer_through_decoding_selection_cropping_and_repetition() -> None:
    slack, plain = SlackLayer(), DynamicLayer()
    seed = 0

    def update(batch: int, positions: int) -> None:
        nonlocal seed
        seed += 1
        keys, values = _states(batch, positions, seed)
        got, want = slack.update(keys, values), plain.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        _assert_same(slack, plain)

    update(3, 7)  # prefill
    for _ in range(SLACK_TOKENS + 5):  # decoding past the first buffer's room
        update(3, 1)
    for layer in (slack, plain):
        layer.batch_select_indices(torch.tensor([2, 0]))
    _assert_same(slack, plain)
    update(2, 1)
    for layer in (slack, plain):
        layer.crop(-4)
    _assert_same(slack, plain)
    update(2, 3)
    for layer in (slack, plain):
        layer.batch_repeat_interleave(2)
    _assert_same(slack, plain)
    update(4, 1)
    for layer in (slack, plain):
        layer.reset()
    assert slack.get_seq_length() == 0
    update(1, 5)


def test_decoding_writes_into_one_buffer_until_it_is_full() -> None:
    layer = SlackLayer()
    layer.update(*_states(2, 10, seed=1))
    start = layer.keys.data_ptr()
    for step in range(SLACK_TOKENS):
        layer.update(*_states(2, 1, seed=2 + step))
        assert layer.keys.data_ptr() == start
    layer.update(*_states(2, 1, seed=0))
    assert layer.keys.data_ptr() != start  # full: copied once into a larger buffer
    assert layer.get_seq_length() == 10 + SLACK_TOKENS + 1


def test_a_cache_built_from_a_config_gets_slack_layers_in_place_of_its_dynamic_ones() -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(num_hidden_layers=3, hidden_size=16, num_attention_heads=2, intermediate_size=32)
    cache = use_slack_layers(DynamicCache(config=config))
    assert [type(layer) for layer in cache.layers] == [SlackLayer] * 3
    lazy = use_slack_layers(DynamicCache())
    keys, values = _states(1, 3, seed=3)
    lazy.update(keys, values, layer_idx=0)
    assert isinstance(lazy.layers[0], SlackLayer)
