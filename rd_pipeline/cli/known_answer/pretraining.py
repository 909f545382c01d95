"""Pre-training the task's tiny models: the weak base student and each noisy teacher, saved at its target."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from rd_pipeline.benchmarks.math_prompt import math_prompt
from rd_pipeline.cli.known_answer.task import STUDENT_TARGET, Problem, Size, split_problems, write_benchmark
from rd_pipeline.locks import held_lock
from rd_pipeline.models import CHAT_TEMPLATE, build_tiny_llama

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PRETRAIN_LEARNING_RATE = 3e-3
PROBE_EVERY_STEPS = 10
PROBE_PROBLEMS = 96


def build_tokenizer(problems: list[Problem]):
    """A BPE tokenizer that keeps digits single and may merge across spaces (the fixed instruction text
    becomes a few tokens), with the project's chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    corpus = [f"user\n{math_prompt(p.question)}\nassistant\n{p.response}" for p in problems[:300]]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer, seed: int):
    """The task's small Llama: 2 layers, 64 wide, 4 attention heads, positions for short problems."""
    return build_tiny_llama(tokenizer, num_kv_heads=4, max_positions=128, seed=seed)


def prompt_text(tokenizer, problem: Problem) -> str:
    messages = [{"role": "user", "content": math_prompt(problem.question)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


_ENCODED: dict[tuple[int, Problem], tuple[list[int], list[int]]] = {}


def _encoded(tokenizer, problem: Problem) -> tuple[list[int], list[int]]:
    """Prompt and response token ids of a problem (cached: the chat template is slow next to a tiny model)."""
    key = (id(tokenizer), problem)
    if key not in _ENCODED:
        prompt = tokenizer(prompt_text(tokenizer, problem), add_special_tokens=False).input_ids
        response = tokenizer(f"{problem.response}<|im_end|>\n", add_special_tokens=False).input_ids
        _ENCODED[key] = (prompt, response)
    return _ENCODED[key]


def _batch(tokenizer, problems: list[Problem]):
    """Input ids, attention mask and labels; the loss covers the response and its end token only."""
    import torch

    encoded = [_encoded(tokenizer, problem) for problem in problems]
    width = max(len(p) + len(r) for p, r in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100)
    for row, (prompt, response) in enumerate(encoded):
        full = prompt + response
        ids[row, : len(full)] = torch.tensor(full)
        mask[row, : len(full)] = 1
        labels[row, len(prompt) : len(full)] = torch.tensor(response)
    return ids, mask, labels


def sampled_accuracy(model, tokenizer, problems: list[Problem], temperature: float, seed: int) -> float:
    """Share of problems answered exactly right, one sample each (greedy at temperature 0)."""
    import torch

    model.eval()
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    inputs = tokenizer(
        [prompt_text(tokenizer, p) for p in problems],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature else {"do_sample": False}
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, **sampling)
    texts = tokenizer.batch_decode(out[:, inputs.input_ids.shape[1] :], skip_special_tokens=True)
    model.train()
    return sum(text.strip() == p.response for text, p in zip(texts, problems, strict=True)) / len(problems)


def pretrain(
    model, tokenizer, pool: list[Problem], targets: dict[str, float], max_steps: int, seed: int, out: Path
) -> dict[str, dict[str, float]]:
    """Plain supervised training on pool problems; saves a checkpoint under ``out / name`` the first time the
    sampled accuracy on a probe set reaches each of ``targets`` ({name: accuracy}), weakest first, and stops
    after the last (or at ``max_steps``, saving whatever is left)."""
    import torch

    rng = random.Random(seed)
    probe, train = pool[:PROBE_PROBLEMS], pool[PROBE_PROBLEMS:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LEARNING_RATE)
    model.train()
    pending = sorted(targets.items(), key=lambda item: item[1])
    reached: dict[str, dict[str, float]] = {}
    accuracy, step = 0.0, 0
    while pending and step < max_steps:
        ids, mask, labels = _batch(tokenizer, rng.sample(train, 32))
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % PROBE_EVERY_STEPS == 0 or step == max_steps:
            accuracy = sampled_accuracy(model, tokenizer, probe, 1.0, seed + step)
            print(f"  pre-training step {step}: sampled accuracy {accuracy:.2f}", file=sys.stderr, flush=True)
            while pending and (accuracy >= pending[0][1] or step == max_steps):
                name = pending.pop(0)[0]
                model.save_pretrained(out / name)
                tokenizer.save_pretrained(out / name)
                reached[name] = {"steps": step, "probe_sampled_accuracy": accuracy}
    return reached


def make_models(
    models_dir: Path, size: Size, pool: list[Problem], seed: int, teachers: dict[str, float]
) -> dict[str, Any]:
    """Train one model, saving the base student when it is weak and each teacher when it is noisy but better
    (``models_dir / "student"`` and ``models_dir / "teacher_<name>"``)."""
    import torch

    torch.set_num_threads(1)  # tiny models: more threads only contend, on a shared CPU by far
    tokenizer = build_tokenizer(pool)
    model = build_model(tokenizer, seed)
    targets = {"student": STUDENT_TARGET, **{f"teacher_{name}": acc for name, acc in teachers.items()}}
    return pretrain(model, tokenizer, pool, targets, size.max_pretrain_steps, seed, models_dir)


def prepare(work: Path, task: str, size: Size, seed: int, teachers: dict[str, float]) -> dict[str, Any]:
    """The benchmark files and the pre-trained models of one seed under ``work``, made once: a kept work
    directory (or a second process on the same one, waiting on a lock) reuses them."""
    train, held, pool = split_problems(task, size, seed)
    made = work / "pretraining.json"
    with held_lock(work / "prepare.lock"):
        reached = json.loads(made.read_text()) if made.is_file() else {}
        recorded = {k.removeprefix("teacher_"): v.get("target") for k, v in reached.items() if k != "student"}
        if "student" not in reached or any(recorded.get(name) != acc for name, acc in teachers.items()):
            # one training run meets the targets in order: make every teacher again, the recorded ones too
            wanted = {**recorded, **teachers}
            reached = make_models(work / "models", size, pool, seed, wanted)
            for name, record in reached.items():
                record["target"] = (
                    STUDENT_TARGET if name == "student" else wanted[name.removeprefix("teacher_")]
                )
            made.write_text(json.dumps(reached, indent=2))
        if not (work / "benchmark" / "test.jsonl").is_file():
            write_benchmark(work / "benchmark", train, held)
    return reached
