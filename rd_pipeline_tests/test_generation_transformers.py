"""The transformers backend and the generator factory, on the tiny random model."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from rd_pipeline.config import ModelConfig
from rd_pipeline.generation import GenerationRequest, SamplingParams, make_generator
from rd_pipeline.generation.transformers_backend import TransformersGenerator, chat_prompt_ids
from rd_pipeline.models import TINY_RANDOM, resolve_model

MAX_NEW = 8


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("rd_home_model")
    resolve_model(TINY_RANDOM, home)
    return home


@pytest.fixture
def rd_home(model_home: Path, tmp_path: Path) -> Path:
    """A fresh RD_HOME (empty journal) sharing the tiny model built once for the module."""
    home = tmp_path / "rd_home"
    (home / "models").mkdir(parents=True)
    shutil.copytree(model_home / "models" / "base", home / "models" / "base")
    return home


def _generator(rd_home: Path, batch_size: int = 8) -> TransformersGenerator:
    generator = make_generator(ModelConfig(ref=TINY_RANDOM, batch_size=batch_size), rd_home, role="teacher")
    assert isinstance(generator, TransformersGenerator)
    return generator


def _requests(n: int = 3, temperature: float = 0.9, seed: int = 0, count: int = 4) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            f"q{i}",
            ({"role": "user", "content": "How many apples? " * (1 + (i * 5) % 4)},),
            SamplingParams(temperature=temperature, n=n, max_new_tokens=MAX_NEW, seed=seed),
        )
        for i in range(count)
    ]


def test_second_call_reads_the_journal_and_never_loads_the_model(rd_home: Path) -> None:
    requests = _requests()
    first = _generator(rd_home)
    completions, stats = first.generate(requests)
    assert stats.samples_generated == 12 and stats.samples_from_journal == 0 and first.loads == 1
    first.close()

    again = _generator(rd_home)
    replayed, replay_stats = again.generate(requests)
    assert again.loads == 0
    assert replay_stats.samples_generated == 0 and replay_stats.backend_requests == 0
    assert replay_stats.samples_from_journal == 12
    assert [c.text for c in replayed] == [c.text for c in completions]
    assert all(c.from_journal for c in replayed)


def test_more_samples_generate_only_the_new_indices(rd_home: Path) -> None:
    generator = _generator(rd_home)
    two, _ = generator.generate(_requests(n=2))
    four, stats = generator.generate(_requests(n=4))
    assert stats.samples_generated == 8 and stats.samples_from_journal == 8
    assert [c.sample_index for c in four] == [0, 1, 2, 3] * 4
    kept = [c for c in four if c.sample_index < 2]
    assert [c.text for c in kept] == [c.text for c in two] and all(c.from_journal for c in kept)
    assert not any(c.from_journal for c in four if c.sample_index >= 2)


def test_same_seed_gives_the_same_samples_in_a_fresh_journal(rd_home: Path, tmp_path: Path) -> None:
    generator = _generator(rd_home)
    first, _ = generator.generate(_requests(seed=7))
    generator.close()
    shutil.rmtree(rd_home / "journal")

    fresh = _generator(rd_home)
    second, stats = fresh.generate(_requests(seed=7))
    assert stats.samples_generated == 12
    assert [c.text for c in second] == [c.text for c in first]
    other_seed, _ = fresh.generate(_requests(seed=8))
    assert [c.text for c in other_seed] != [c.text for c in first]
    # Samples of one prompt differ from each other.
    assert len({c.text for c in first if c.request_id == "q0"}) > 1


def test_greedy_decodes_once_per_prompt_and_repeats_it(rd_home: Path) -> None:
    generator = _generator(rd_home)
    completions, stats = generator.generate(_requests(n=3, temperature=0.0))
    assert stats.samples_generated == 12 and stats.backend_requests == 4
    for request_id in ("q0", "q1", "q2", "q3"):
        assert len({c.text for c in completions if c.request_id == request_id}) == 1
    assert stats.output_tokens == sum(c.output_tokens for c in completions if c.sample_index == 0)


def test_order_and_stats_with_mixed_lengths_temperatures_and_small_batches(rd_home: Path) -> None:
    requests = [*_requests(n=3, temperature=0.8, count=5), *_requests(n=2, temperature=0.0, count=3)]
    # Distinct conversations: a conversation asked twice is decoded once (see the test below).
    requests = [
        GenerationRequest(
            f"r{i}", ({"role": "user", "content": f"{i}. {r.messages[0]['content']}"},), r.params
        )
        for i, r in enumerate(reversed(requests))
    ]
    calls: list[tuple[int, int]] = []
    generator = _generator(rd_home, batch_size=2)
    completions, stats = generator.generate(
        requests, progress=lambda done, total, _: calls.append((done, total))
    )

    assert [(c.request_id, c.sample_index) for c in completions] == [
        (r.request_id, i) for r in requests for i in range(r.params.n)
    ]
    assert [c.temperature for c in completions] == [
        r.params.temperature for r in requests for _ in range(r.params.n)
    ]
    assert stats.samples_requested == stats.samples_generated == 21
    assert stats.backend_requests == 5 * 3 + 3  # greedy prompts decode one sequence each
    prompt_lengths = [len(chat_prompt_ids(generator._tokenizer, r)) for r in requests]
    assert [c.input_tokens for c in completions] == [
        length for r, length in zip(requests, prompt_lengths, strict=True) for _ in range(r.params.n)
    ]
    # Sampled prompts (n=3) need two jobs each at batch size 2; greedy prompts one.
    assert stats.input_tokens == sum(
        length * (2 if r.params.temperature else 1)
        for r, length in zip(requests, prompt_lengths, strict=True)
    )
    decoded = [c for c in completions if c.temperature > 0 or c.sample_index == 0]
    assert stats.output_tokens == sum(c.output_tokens for c in decoded)
    assert all(1 <= c.output_tokens <= MAX_NEW for c in completions)
    assert calls[-1] == (21, 21) and [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) >= 21 // 2


def test_shared_prefill_matches_decoding_each_copy(rd_home: Path) -> None:
    import torch
    from transformers import GenerationConfig

    generator = _generator(rd_home)
    generator.generate(_requests(n=1, count=1))  # loads the model
    prompts = [chat_prompt_ids(generator._tokenizer, r) for r in _requests(count=3)]
    width = max(map(len, prompts))
    ids = torch.zeros((3, width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    config = GenerationConfig(do_sample=False, max_new_tokens=6, min_new_tokens=6, pad_token_id=0)
    with torch.inference_mode():
        shared = generator._generate_with_shared_prefill(ids, mask, 2, config)
        plain = generator._model.generate(
            input_ids=ids.repeat_interleave(2, 0),
            attention_mask=mask.repeat_interleave(2, 0),
            generation_config=config,
        )
    assert shared.shape == plain.shape == (6, width + 6)
    assert torch.equal(shared, plain)


def test_finish_cuts_at_the_first_stop_token(rd_home: Path) -> None:
    generator = _generator(rd_home)
    generator.generate(_requests(n=1, count=1))
    tokenizer = generator._tokenizer
    body = tokenizer.encode("the answer")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in generator._stop_ids
    assert generator._finish([*body, end, 0, 0]) == ("the answer", len(body) + 1)
    assert generator._finish(body) == ("the answer", len(body))


def test_location_overrides_the_reference(rd_home: Path) -> None:
    checkpoint = rd_home / "models" / "base" / TINY_RANDOM
    by_ref = _generator(rd_home)
    by_location = make_generator(ModelConfig(ref="some-hub/model"), rd_home, location=str(checkpoint))
    assert by_location.identity["kind"] == "local" and by_ref.identity["kind"] == "tiny-random"
    assert by_location.identity["fingerprint"] == by_ref.identity["fingerprint"]
    assert by_location.journal.path != by_ref.journal.path


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_says_how_to_install_it(rd_home: Path) -> None:
    with pytest.raises(ImportError, match=r"student model 'tiny-random'.*pip install 'rd-pipeline\[vllm\]'"):
        make_generator(ModelConfig(ref=TINY_RANDOM, backend="vllm"), rd_home, role="student")


def test_log_progress_throttles_lines_and_always_reports_the_end() -> None:
    from rd_pipeline.generation import GenerationStats
    from rd_pipeline.generation.progress import log_progress

    now = [0.0]
    lines: list[str] = []
    report = log_progress(lines.append, "teacher", min_interval_s=10, clock=lambda: now[0])
    for done, at in ((2, 1.0), (4, 5.0), (6, 12.0), (8, 13.0)):
        now[0] = at
        report(
            done,
            8,
            GenerationStats(samples_from_journal=2, samples_generated=done - 2, output_tokens=10 * done),
        )
    assert len(lines) == 3  # t=1 (first), t=12 (10 s later), t=13 (the end)
    assert lines[-1].startswith(
        "teacher: 8/8 samples (2 from journal, 6 generated), 0 input / 80 output tokens"
    )
    assert lines[-1].endswith(f"{6 / 13:.2f} samples/s")


def test_progress_bar_follows_a_real_generation(rd_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rd_pipeline.generation.progress import progress_bar

    generator = _generator(rd_home, batch_size=3)
    with progress_bar("student") as report:
        generator.generate(_requests(n=3, count=2), progress=report)
    assert "student: 100%" in capsys.readouterr().err


def test_a_final_assistant_message_is_continued(model_home: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(TINY_RANDOM, model_home).location)
    params = SamplingParams(temperature=0.0)
    user = {"role": "user", "content": "Rate it."}
    fresh = chat_prompt_ids(tokenizer, GenerationRequest("a", (user,), params))
    prefilled = chat_prompt_ids(
        tokenizer, GenerationRequest("b", (user, {"role": "assistant", "content": "Rating: [["}), params)
    )
    assert tokenizer.decode(fresh).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(prefilled).endswith("<|im_start|>assistant\nRating: [[")


def test_a_prompt_asked_twice_is_decoded_once_and_both_get_the_journaled_samples(rd_home: Path) -> None:
    """Two requests with the same conversation and sampling share journal keys: the samples are decoded once,
    as the API backend does, so a re-run returns exactly what the first run returned."""
    original = _requests(n=2, count=1)[0]
    twin = GenerationRequest("twin", original.messages, original.params)
    generator = _generator(rd_home)
    completions, stats = generator.generate([original, twin])
    assert stats.samples_requested == stats.samples_generated == 4 and stats.backend_requests == 2
    assert [(c.request_id, c.sample_index) for c in completions] == [
        ("q0", 0),
        ("q0", 1),
        ("twin", 0),
        ("twin", 1),
    ]
    assert [c.text for c in completions[:2]] == [c.text for c in completions[2:]]
    replayed, replay_stats = generator.generate([original, twin])
    assert replay_stats.samples_from_journal == 4 and [c.text for c in replayed] == [
        c.text for c in completions
    ]


def test_the_end_of_a_generation_is_reported_once(rd_home: Path) -> None:
    calls: list[tuple[int, int]] = []
    generator = _generator(rd_home, batch_size=2)
    generator.generate(_requests(n=2, count=3), progress=lambda done, total, _: calls.append((done, total)))
    assert calls[0] == (0, 6)
    assert calls[-1] == (6, 6)
    assert calls.count((6, 6)) == 1  # one final line in the run log, not two
    generator.generate(_requests(n=2, count=3), progress=lambda done, total, _: calls.append((done, total)))
    assert calls[-1] == (6, 6) and calls.count((6, 6)) == 2  # all from the journal: reported once
