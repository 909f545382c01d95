"""Known-answer experiment: does the pipeline learn, measured against gold answers?

A small verifiable task ("Which is larger, 37 or 52?", answered "The answer is 52.") in the GSM8K file format,
so the real benchmark code prompts, extracts and grades it. Two tiny Llama models with a digit-level tokenizer
are first trained here with a plain supervised loop on problems that are not benchmark prompts: the teacher
until its sampled (temperature 1) accuracy reaches a noisy level, the base student for fewer steps. Then the
real pipeline runs on a fresh ``RD_HOME`` through Dagster (``materialize_graph``, as ``rd materialize`` does):
teacher samples, majority-vote labels, SFT, student samples, reward pairs, reward model, GRPO, evaluation.
Everything is then measured against the gold answers:

- majority-vote label accuracy vs single-sample accuracy of the teacher;
- student accuracy (greedy, held-out eval prompts): base, SFT, RL, and the teacher;
- reward-model pairwise accuracy on gold (correct, incorrect) response pairs of prompts held out of reward
  training, and the pipeline's own held-out accuracy (against pseudo-labels);
- mean reward and accuracy of the SFT and RL students on held-out prompts.

Prints a table and writes ``bench-results/known_answer[_<size>].json``. Seeded.

    python scripts/known_answer.py [--size small|full] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in the trainers

from rd_pipeline.benchmarks import get_benchmark, is_item_correct  # noqa: E402
from rd_pipeline.benchmarks.math_prompt import math_prompt  # noqa: E402
from rd_pipeline.models import CHAT_TEMPLATE, build_tiny_llama  # noqa: E402

NUMBERS = range(10, 100)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PRETRAIN_LEARNING_RATE = 3e-3


@dataclass(frozen=True)
class Size:
    """How big one run of the experiment is."""

    train_prompts: int
    eval_prompts: int
    teacher_n: int
    student_n: int
    sft_steps: int
    rm_steps: int
    rl_steps: int
    teacher_target: float  # stop the teacher's pre-training at this sampled accuracy
    student_target: float  # and the base student's at this one
    max_pretrain_steps: int


SIZES = {
    "small": Size(96, 48, 8, 12, 40, 60, 12, 0.45, 0.15, 1500),
    "full": Size(256, 128, 10, 30, 120, 150, 40, 0.5, 0.15, 3000),
}


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def question(self) -> str:
        return f"Which is larger, {self.a} or {self.b}?"

    @property
    def answer(self) -> int:
        return max(self.a, self.b)

    @property
    def response(self) -> str:
        return f"The answer is {self.answer}."


def split_problems(size: Size, seed: int) -> tuple[list[Problem], list[Problem], list[Problem]]:
    """Benchmark train prompts, benchmark eval prompts, and a disjoint pool for pre-training the models."""
    problems = [Problem(a, b) for a in NUMBERS for b in NUMBERS if a != b]
    random.Random(seed).shuffle(problems)
    train = problems[: size.train_prompts]
    held = problems[size.train_prompts : size.train_prompts + size.eval_prompts]
    pool = problems[size.train_prompts + size.eval_prompts :]
    return train, held, pool


# ---------------------------------------------------------------------------------------------------- models


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
    probe, train = pool[:64], pool[64:]
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
        if step % 25 == 0 or step == max_steps:
            accuracy = sampled_accuracy(model, tokenizer, probe, 1.0, seed + step)
            print(f"  pre-training step {step}: sampled accuracy {accuracy:.2f}", file=sys.stderr, flush=True)
            while pending and (accuracy >= pending[0][1] or step == max_steps):
                name = pending.pop(0)[0]
                model.save_pretrained(out / name)
                tokenizer.save_pretrained(out / name)
                reached[name] = {"steps": step, "probe_sampled_accuracy": accuracy}
    return reached


def make_models(work: Path, size: Size, pool: list[Problem], seed: int) -> dict[str, Any]:
    """Train one model, saving the base student when it is weak and the teacher when it is noisy but better."""
    import torch

    torch.set_num_threads(1)  # tiny models: more threads only contend, on a shared CPU by far
    tokenizer = build_tokenizer(pool)
    model = build_model(tokenizer, seed)
    targets = {"student": size.student_target, "teacher": size.teacher_target}
    return pretrain(model, tokenizer, pool, targets, size.max_pretrain_steps, seed, work)


# ------------------------------------------------------------------------------------------------- pipeline


def write_benchmark(directory: Path, train: list[Problem], held: list[Problem]) -> None:
    """GSM8K's own file format: JSON Lines with a question and an answer ending in ``#### N``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, problems in (("train.jsonl", train), ("test.jsonl", held)):
        lines = [
            json.dumps({"question": p.question, "answer": f"{p.response}\n#### {p.answer}"}) for p in problems
        ]
        (directory / name).write_text("\n".join(lines) + "\n")


def pipeline_config(work: Path, size: Size, seed: int) -> dict[str, Any]:
    return {
        "teacher": {"ref": str(work / "teacher"), "batch_size": 64},
        "student": {"ref": str(work / "student"), "batch_size": 64},
        "benchmarks": [
            {
                "name": "gsm8k",
                "source": "local",
                "path": str(work / "benchmark"),
                "train_size": size.train_prompts,
                "eval_size": size.eval_prompts,
            }
        ],
        "sampling": {"n": size.teacher_n, "temperatures": [1.0], "max_new_tokens": 8, "seed": seed},
        "student_sampling": {"n": size.student_n},
        "labeling": {
            "min_vote_share": 0.5,
            "min_valid_votes": 2,
            "max_pairs_per_prompt": 8,
            "heldout_fraction": 0.25,
        },
        "sft": {"max_steps": size.sft_steps, "learning_rate": 1e-3, "batch_size": 16, "max_length": 96},
        "reward_model": {
            "max_steps": size.rm_steps,
            "learning_rate": 1e-3,
            "batch_size": 16,
            "max_length": 96,
        },
        "rl": {
            "algorithm": "grpo",
            "max_steps": size.rl_steps,
            "learning_rate": 2e-4,
            "batch_size": 16,
            "num_generations": 4,
            "max_completion_length": 8,
            "temperature": 1.0,
        },
        "eval": {"max_new_tokens": 8},
        "checks": {"enforce": False},
        "paths": {"rd_home": str(work / "rd_home")},
    }


def run_pipeline(config_file: Path) -> list[str]:
    """Materialize every asset through Dagster; returns the names of failed runs' steps (empty on success)."""
    from rd_pipeline.config import load_config
    from rd_pipeline.defs.resources import PipelineResource
    from rd_pipeline.defs.run import materialize_graph

    config = load_config(config_file)
    os.environ["RD_HOME"] = str(config.rd_home())
    os.environ["RD_CONFIG"] = str(config_file)
    results = materialize_graph(config, PipelineResource(config_file=str(config_file)), log_level="WARNING")
    return [
        event.step_key or ""
        for result in results
        if not result.success
        for event in result.all_events
        if event.is_step_failure
    ]


# ---------------------------------------------------------------------------------------------- measurement


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def measure(config_file: Path) -> dict[str, Any]:
    """Every figure of the experiment, from the pipeline's store and checkpoints, against the gold answers."""
    from rd_pipeline.config import load_config
    from rd_pipeline.labeling.pairs import pair_split
    from rd_pipeline.steps.checkpoints import checkpoint_dir, read_lineage
    from rd_pipeline.steps.context import StepContext
    from rd_pipeline.steps.prompts import row_to_item
    from rd_pipeline.training.scoring import RewardScorer

    config = load_config(config_file)
    ctx = StepContext(config)
    store = ctx.store
    bench = get_benchmark("gsm8k")
    items = {row["prompt_id"]: row_to_item(row) for row in store.read("benchmark_prompts", "gsm8k")}
    prompts = {row["prompt_id"]: row["prompt"] for row in store.read("benchmark_prompts", "gsm8k")}

    teacher_rows = store.read("teacher_responses", "gsm8k")
    single = [is_item_correct(items[r["prompt_id"]], r["response"]) for r in teacher_rows]
    votes = {
        r["prompt_id"]: r["prompt_answer"]
        for r in store.read("pseudo_labels", "gsm8k")
        if r["prompt_labelled"]
    }
    vote_correct = [bench.answers_equal(answer, items[pid].gold) for pid, answer in votes.items()]
    train_prompts = {r["prompt_id"] for r in teacher_rows}

    scores = {(r["model_role"], r["metric"]): r for r in store.read("eval_scores", "gsm8k")}
    eval_rows = store.read("eval_responses", "gsm8k")
    by_role: dict[str, list[dict]] = defaultdict(list)
    for row in eval_rows:
        by_role[row["model_role"]].append(row)

    rm_record = ctx.upstream_version("reward_model")
    rm_path = checkpoint_dir(ctx, "reward_model", rm_record["data_version"])
    rm_metrics = read_lineage(rm_path).get("metrics", {})
    rl_record = ctx.upstream_version("rl_student")
    rl_metrics = read_lineage(checkpoint_dir(ctx, "rl_student", rl_record["data_version"])).get("metrics", {})
    gold_pairs = heldout_gold_pairs(store, items, prompts, config.labeling.heldout_fraction, pair_split)
    with RewardScorer(str(rm_path)) as scorer:
        chosen = scorer.score([p[0] for p in gold_pairs])
        rejected = scorer.score([p[1] for p in gold_pairs])
    gold_rm_accuracy = _mean([float(c > r) for c, r in zip(chosen, rejected, strict=True)])

    def accuracy_of(role: str) -> float | None:
        row = scores.get((role, "accuracy"))
        return None if row is None else row["value"]

    def mean_reward(role: str) -> float | None:
        return _mean([r["reward_score"] for r in by_role[role] if r["reward_score"] is not None])

    reward_labels = ctx.upstream_version("reward_labels", "gsm8k")
    pairs = store.read("reward_pairs", "gsm8k")
    return {
        "train_prompts": len(train_prompts),
        "eval_prompts": len({r["prompt_id"] for r in eval_rows}),
        "teacher_samples": len(teacher_rows),
        "student_samples": len(store.read("student_responses", "gsm8k")),
        "teacher_single_sample_accuracy": _mean([float(c) for c in single]),
        "vote_label_accuracy": _mean([float(c) for c in vote_correct]),
        "vote_label_coverage": len(votes) / len(train_prompts) if train_prompts else None,
        "accuracy": {
            role: accuracy_of(role) for role in ("teacher", "base_student", "sft_student", "rl_student")
        },
        "mean_reward": {
            role: mean_reward(role) for role in ("teacher", "base_student", "sft_student", "rl_student")
        },
        "reward_pairs": len(pairs),
        "reward_model_heldout_accuracy_pseudo_labels": rm_metrics.get("heldout_accuracy"),
        "reward_model_heldout_pairs": rm_metrics.get("heldout_pairs"),
        "reward_model_gold_pair_accuracy": gold_rm_accuracy,
        "reward_model_gold_pairs": len(gold_pairs),
        "rl_reward_start": rl_metrics.get("reward_start"),
        "rl_reward_end": rl_metrics.get("reward_end"),
        "reward_labels_version": reward_labels["data_version"],
    }


def heldout_gold_pairs(store, items, prompts, heldout_fraction, pair_split) -> list[tuple[list, list]]:
    """(gold-correct, gold-wrong) conversations from teacher and student responses to prompts held out of
    reward training (the pipeline's own held-out split), distinct texts only."""
    responses: dict[str, set[str]] = defaultdict(set)
    for table in ("teacher_responses", "student_responses"):
        for row in store.read(table, "gsm8k"):
            if pair_split("gsm8k", row["prompt_id"], heldout_fraction) == "heldout":
                responses[row["prompt_id"]].add(row["response"])
    pairs = []
    for prompt_id, texts in sorted(responses.items()):
        good = sorted(t for t in texts if is_item_correct(items[prompt_id], t))
        bad = sorted(t for t in texts if not is_item_correct(items[prompt_id], t))
        for g, b in ((g, b) for g in good for b in bad):
            user = {"role": "user", "content": prompts[prompt_id]}
            pairs.append(
                ([user, {"role": "assistant", "content": g}], [user, {"role": "assistant", "content": b}])
            )
    return pairs


# --------------------------------------------------------------------------------------------------- report


def targets(figures: dict[str, Any]) -> dict[str, bool | None]:
    """The experiment's targets, each True, False, or None when a figure is missing."""
    acc, reward = figures["accuracy"], figures["mean_reward"]

    def check(*values: Any) -> bool:
        return all(v is not None for v in values)

    return {
        "vote labels beat single samples": figures["vote_label_accuracy"]
        > figures["teacher_single_sample_accuracy"]
        if check(figures["vote_label_accuracy"], figures["teacher_single_sample_accuracy"])
        else None,
        "SFT student beats base": acc["sft_student"] > acc["base_student"]
        if check(acc["sft_student"], acc["base_student"])
        else None,
        "reward model >= 0.7 on held-out gold pairs": figures["reward_model_gold_pair_accuracy"] >= 0.7
        if check(figures["reward_model_gold_pair_accuracy"])
        else None,
        "RL raises mean reward on held-out prompts": reward["rl_student"] > reward["sft_student"]
        if check(reward["rl_student"], reward["sft_student"])
        else None,
        "RL keeps accuracy": acc["rl_student"] >= acc["sft_student"]
        if check(acc["rl_student"], acc["sft_student"])
        else None,
    }


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def table(figures: dict[str, Any], checks: dict[str, bool | None]) -> str:
    acc, reward = figures["accuracy"], figures["mean_reward"]
    lines = [
        f"prompts: {figures['train_prompts']} train, {figures['eval_prompts']} held-out eval; samples: "
        f"{figures['teacher_samples']} teacher, {figures['student_samples']} student",
        "",
        f"{'measure':<58} value",
        f"{'teacher single-sample accuracy (train prompts, T=1)':<58} "
        f"{_fmt(figures['teacher_single_sample_accuracy'])}",
        f"{'majority-vote label accuracy (labelled train prompts)':<58} {_fmt(figures['vote_label_accuracy'])}",
        f"{'label coverage':<58} {_fmt(figures['vote_label_coverage'])}",
        f"{'reward model, held-out gold pairs':<58} {_fmt(figures['reward_model_gold_pair_accuracy'])}"
        f" (n={figures['reward_model_gold_pairs']})",
        f"{'reward model, held-out pseudo-label pairs (pipeline)':<58} "
        f"{_fmt(figures['reward_model_heldout_accuracy_pseudo_labels'])} (n={figures['reward_model_heldout_pairs']})",
        f"{'RL training reward, first -> last step':<58} {_fmt(figures['rl_reward_start'])} -> "
        f"{_fmt(figures['rl_reward_end'])}",
        "",
        f"{'model (greedy, held-out eval prompts)':<38} {'accuracy':>9} {'mean reward':>12}",
    ]
    for role in ("teacher", "base_student", "sft_student", "rl_student"):
        lines.append(f"{role:<38} {_fmt(acc[role]):>9} {_fmt(reward[role]):>12}")
    lines.append("")
    lines += [
        f"[{'pass' if ok else 'MISS' if ok is False else '  - '}] {name}" for name, ok in checks.items()
    ]
    return "\n".join(lines)


def run_experiment(
    work: Path, size_name: str, seed: int, teacher_target: float | None = None, rm_steps: int | None = None
) -> dict[str, Any]:
    """Pre-train the two models, run the pipeline, measure; returns the JSON-ready result. ``teacher_target``
    overrides the size's sampled accuracy at which the teacher's pre-training stops."""
    size = SIZES[size_name]
    if teacher_target is not None:
        size = replace(size, teacher_target=teacher_target)
    if rm_steps is not None:
        size = replace(size, rm_steps=rm_steps)
    started = time.perf_counter()
    train, held, pool = split_problems(size, seed)
    made = work / "pretraining.json"  # a kept work directory reuses its models
    if not made.is_file():
        made.write_text(json.dumps(make_models(work, size, pool, seed)))
    pretraining = json.loads(made.read_text())
    pretrain_s = time.perf_counter() - started
    write_benchmark(work / "benchmark", train, held)
    config_file = work / "config.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump(pipeline_config(work, size, seed), sort_keys=False))
    failed = run_pipeline(config_file)
    if failed:
        raise RuntimeError(f"pipeline steps failed: {failed}; see the Dagster logs under {work / 'rd_home'}")
    pipeline_s = time.perf_counter() - started - pretrain_s
    figures = measure(config_file)
    checks = targets(figures)
    return {
        "size": size_name,
        "seed": seed,
        "settings": asdict(size),
        "pretraining": pretraining,
        "figures": figures,
        "targets": checks,
        "pretrain_s": round(pretrain_s, 1),
        "pipeline_s": round(pipeline_s, 1),
        "table": table(figures, checks),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-target", type=float, help="teacher's sampled accuracy (default: by size)")
    parser.add_argument("--rm-steps", type=int, help="reward-model training steps (default: by size)")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    parser.add_argument(
        "--out", type=Path, help="JSON result (default: bench-results/known_answer[_SIZE].json)"
    )
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run_experiment(args.keep.resolve(), args.size, args.seed, args.teacher_target, args.rm_steps)
    else:
        with tempfile.TemporaryDirectory(prefix="rd-known-answer-") as work:
            result = run_experiment(Path(work), args.size, args.seed, args.teacher_target, args.rm_steps)
    print(result["table"])
    print(f"\npre-training {result['pretrain_s']} s, pipeline {result['pipeline_s']} s")
    suffix = (
        ("" if args.size == "full" else f"_{args.size}")
        + ("" if args.teacher_target is None else f"_teacher{args.teacher_target:g}")
        + ("" if args.rm_steps is None else f"_rm{args.rm_steps}")
    )
    out = args.out or REPO_ROOT / "bench-results" / f"known_answer{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
