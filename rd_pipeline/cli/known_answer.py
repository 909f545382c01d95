"""Known-answer experiment: does the pipeline learn, measured against gold answers?

A small verifiable task in the GSM8K file format, so the real benchmark code prompts, extracts and grades it.
Tasks (``--task``): ``larger`` ("Which is larger, 37 or 52?", answered "The answer is 52."), ``smaller`` and
``sum`` ("What is 23 + 41?", with numbers below 50). Tiny Llama models with a digit-level BPE tokenizer are
first trained here with a plain supervised loop on problems that are not benchmark prompts; one model is
saved along the way as the weak base student and as each noisy teacher, when its sampled (temperature 1)
accuracy on a probe set first reaches the target of each (``TEACHER_TARGETS``: a weaker and a stronger
teacher). Then, for each teacher, the real pipeline runs on a fresh ``RD_HOME`` through Dagster
(``materialize_graph``, as ``rd materialize`` does): teacher samples, majority-vote labels, SFT, student
samples, reward pairs, reward model, RL, evaluation. It then runs again in the same ``RD_HOME`` for each
further RL reward setting (``REWARD_SETTINGS``: the paper's reward-model-only reward, and the reward model
combined with agreement with the majority vote); only the RL student is retrained and evaluated again.

Sampling follows the paper's shape: the teacher samples ``teacher_n`` responses per prompt at each of
``TEMPERATURES`` (3 x 3 = 9, about 10 per prompt), the SFT student ``student_n`` at each (10 x 3 = 30).
Evaluation decodes greedily (the pipeline's ``eval.temperature`` 0) on held-out eval prompts, the teacher too.

Everything is measured against the gold answers:

- majority-vote label accuracy vs single-sample accuracy of the teacher (all its samples, and per temperature);
- accuracy (greedy, held-out eval prompts) of the teacher, the base, SFT and RL students; for RL minus SFT a
  95% interval over the eval prompts: the mean paired difference of per-prompt correctness with a t interval
  (prompt-level paired t interval; the same prompts are answered by both students);
- reward-model pairwise accuracy on gold (correct, incorrect) response pairs of prompts held out of reward
  training, and the pipeline's own held-out accuracy (against pseudo-labels);
- mean reward-model score and accuracy of the SFT and RL students on held-out prompts;
- RL's validation curve from the shipped checkpoint's lineage (agreement with vote labels on validation
  prompts per step, step 0 being the SFT student, and the selected step), when the pipeline records it.

Prints a table per (teacher, reward setting) and writes ``bench-results/known_answer[_<task>][_<size>].json``
under the current directory.
Seeded. ``rd experiment known-answer-grid`` runs it over seeds and teachers and summarises with intervals.

    rd experiment known-answer [--task larger|smaller|sum] [--size small|grid|full] [--seed 0]
        [--teachers weak,strong] [--rewards paper,combined] [--keep DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in the trainers

from rd_pipeline.benchmarks import get_benchmark, is_item_correct
from rd_pipeline.benchmarks.math_prompt import math_prompt
from rd_pipeline.locks import held_lock
from rd_pipeline.models import CHAT_TEMPLATE, build_tiny_llama

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PRETRAIN_LEARNING_RATE = 3e-3
PROBE_EVERY_STEPS = 10
PROBE_PROBLEMS = 96

TEMPERATURES = (0.6, 0.8, 1.0)
"""Teacher and student sample ``n`` responses per prompt at each of these."""

STUDENT_TARGET = 0.15
"""The base student is the pre-trained model when its sampled accuracy on the probe first reaches this."""

TEACHER_TARGETS = {"weak": 0.4, "strong": 0.65}
"""Named teachers: the pre-trained model when its sampled (temperature 1) probe accuracy first reaches each."""

REWARD_SETTINGS: dict[str, dict[str, Any]] = {
    "paper": {"rewards": [{"source": "reward_model", "weight": 1.0}]},
    "combined": {
        "rewards": [{"source": "reward_model", "weight": 1.0}, {"source": "vote_agreement", "weight": 1.0}]
    },
}
"""RL reward settings, each a set of ``rl`` config fields; the first is run first, the others reuse its
teacher samples, labels, SFT student and reward model."""

ROLES = ("teacher", "base_student", "sft_student", "rl_student")


# ------------------------------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class Task:
    """A two-number question with one right whole-number answer."""

    name: str
    numbers: range
    template: str  # the question, with {a} and {b}
    solve: Callable[[int, int], int]
    distinct: bool  # only pairs of different numbers


TASKS = {
    "larger": Task("larger", range(10, 100), "Which is larger, {a} or {b}?", max, True),
    "smaller": Task("smaller", range(10, 100), "Which is smaller, {a} or {b}?", min, True),
    "sum": Task("sum", range(1, 50), "What is {a} + {b}?", lambda a, b: a + b, False),
}


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    task: str = "larger"

    @property
    def question(self) -> str:
        return TASKS[self.task].template.format(a=self.a, b=self.b)

    @property
    def answer(self) -> int:
        return TASKS[self.task].solve(self.a, self.b)

    @property
    def response(self) -> str:
        return f"The answer is {self.answer}."


@dataclass(frozen=True)
class Size:
    """How big one run of the experiment is (sample counts are per prompt and temperature)."""

    train_prompts: int
    eval_prompts: int
    teacher_n: int
    student_n: int
    sft_steps: int
    rm_steps: int
    rl_steps: int
    rl_eval_every: int  # RL validation cadence, in optimizer steps
    max_pretrain_steps: int


SIZES = {
    "small": Size(96, 48, 3, 10, 40, 60, 12, 3, 2500),
    "grid": Size(128, 96, 3, 10, 60, 80, 20, 4, 3000),
    "full": Size(256, 128, 3, 10, 120, 150, 40, 5, 4000),
}


def split_problems(task: str, size: Size, seed: int) -> tuple[list[Problem], list[Problem], list[Problem]]:
    """Benchmark train prompts, benchmark eval prompts, and a disjoint pool for pre-training the models."""
    spec = TASKS[task]
    problems = [
        Problem(a, b, task) for a in spec.numbers for b in spec.numbers if not (spec.distinct and a == b)
    ]
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


# ------------------------------------------------------------------------------------------------- pipeline


def write_benchmark(directory: Path, train: list[Problem], held: list[Problem]) -> None:
    """GSM8K's own file format: JSON Lines with a question and an answer ending in ``#### N``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, problems in (("train.jsonl", train), ("test.jsonl", held)):
        lines = [
            json.dumps({"question": p.question, "answer": f"{p.response}\n#### {p.answer}"}) for p in problems
        ]
        (directory / name).write_text("\n".join(lines) + "\n")


def pipeline_config(
    work: Path,
    run_dir: Path,
    size: Size,
    seed: int,
    teacher: str,
    rewards: dict[str, Any],
    pair_margin: str = "vote_share",
) -> dict[str, Any]:
    """The pipeline's config for one teacher and one RL reward setting (``rewards``: ``rl`` fields), with the
    reward pairs' ``labeling.pair_margin``."""
    sampling = {"temperatures": list(TEMPERATURES), "max_new_tokens": 8, "seed": seed}
    return {
        "teacher": {"ref": str(work / "models" / f"teacher_{teacher}"), "batch_size": 64},
        "student": {"ref": str(work / "models" / "student"), "batch_size": 64},
        "benchmarks": [
            {
                "name": "gsm8k",
                "source": "local",
                "path": str(work / "benchmark"),
                "train_size": size.train_prompts,
                "eval_size": size.eval_prompts,
            }
        ],
        "sampling": {"n": size.teacher_n, **sampling},
        "student_sampling": {"n": size.student_n},
        "labeling": {
            "min_vote_share": 0.5,
            "min_valid_votes": 2,
            "max_pairs_per_prompt": 8,
            "heldout_fraction": 0.25,
            "pair_margin": pair_margin,
        },
        "sft": {
            "max_steps": size.sft_steps,
            "learning_rate": 1e-3,
            "batch_size": 16,
            "max_length": 96,
            "eval_every_steps": max(1, size.sft_steps // 6),
            "validation_max_new_tokens": 8,
        },
        "reward_model": {
            "max_steps": size.rm_steps,
            "learning_rate": 1e-3,
            "batch_size": 16,
            "max_length": 96,
            "eval_every_steps": max(1, size.rm_steps // 6),
        },
        "rl": {
            "algorithm": "grpo",
            "max_steps": size.rl_steps,
            "learning_rate": 2e-4,
            "batch_size": 16,
            "num_generations": 4,
            "max_completion_length": 8,
            "temperature": 1.0,
            "eval_every_steps": size.rl_eval_every,
            **copy.deepcopy(rewards),
        },
        "eval": {"temperature": 0.0, "max_new_tokens": 8},
        "checks": {"enforce": False},
        "paths": {"rd_home": str(run_dir / "rd_home")},
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

_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t95(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom (table to 10, then a
    Cornish-Fisher expansion around the normal quantile, within 0.003 of the exact value)."""
    if df < 1:
        return math.nan
    if df <= len(_T95):
        return _T95[df - 1]
    z = 1.959963984540054
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_interval(values: list[float]) -> dict[str, Any]:
    """Mean with a 95% t interval (``low``/``high`` None with fewer than two values)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t95(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def paired_difference(a: dict[str, bool], b: dict[str, bool]) -> dict[str, Any]:
    """``a - b`` in accuracy over the prompts both answered, with the 95% paired t interval of the per-prompt
    differences of correctness (each -1, 0 or +1)."""
    shared = sorted(set(a) & set(b))
    return mean_interval([float(a[p]) - float(b[p]) for p in shared])


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def validation_summary(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The validation curve in a checkpoint's lineage metrics (SFT or RL), with step 0 (the model the stage
    started from: the base student for SFT, the SFT student for RL) and the selected step picked out; None when
    the lineage records no curve."""
    found = metrics.get("validation")
    if not isinstance(found, dict) or not found.get("curve"):
        return None
    curve = [
        {
            "step": point.get("step"),
            "agreement": point.get("agreement", point.get("score")),
            "gold_accuracy": point.get("gold_accuracy"),
            "mean_reward": point.get("mean_reward", point.get("reward")),
            "mean_length": point.get("mean_length"),
            "kl": point.get("kl"),
        }
        for point in found["curve"]
    ]
    by_step = {point["step"]: point for point in curve}
    selected = found.get("selected_step")
    start, chosen = by_step.get(0, {}), by_step.get(selected, {})
    return {
        "selection_metric": found.get("selection_metric"),
        "selected_step": selected,
        "stopped_early_at": found.get("stopped_early_at"),
        "prompts": found.get("prompts"),
        "start_agreement": start.get("agreement"),
        "selected_agreement": chosen.get("agreement"),
        "start_gold_accuracy": start.get("gold_accuracy"),
        "selected_gold_accuracy": chosen.get("gold_accuracy"),
        "start_mean_reward": start.get("mean_reward"),
        "selected_mean_reward": chosen.get("mean_reward"),
        "curve": curve,
    }


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
    single = [float(is_item_correct(items[r["prompt_id"]], r["response"])) for r in teacher_rows]
    by_temperature: dict[float, list[float]] = defaultdict(list)
    for row, correct in zip(teacher_rows, single, strict=True):
        by_temperature[row["temperature"]].append(correct)
    votes = {
        r["prompt_id"]: r["prompt_answer"]
        for r in store.read("pseudo_labels", "gsm8k")
        if r["prompt_labelled"]
    }
    vote_correct = [float(bench.answers_equal(answer, items[pid].gold)) for pid, answer in votes.items()]
    train_prompts = {r["prompt_id"] for r in teacher_rows}

    scores = {(r["model_role"], r["metric"]): r for r in store.read("eval_scores", "gsm8k")}
    eval_rows = store.read("eval_responses", "gsm8k")
    by_role: dict[str, list[dict]] = defaultdict(list)
    for row in eval_rows:
        by_role[row["model_role"]].append(row)
    correct_by_role = {
        role: {r["prompt_id"]: bool(r["correct"]) for r in rows} for role, rows in by_role.items()
    }

    rm_record = ctx.upstream_version("reward_model")
    rm_path = checkpoint_dir(ctx, "reward_model", rm_record["data_version"])
    rm_metrics = read_lineage(rm_path).get("metrics", {})
    rl_record = ctx.upstream_version("rl_student")
    rl_metrics = read_lineage(checkpoint_dir(ctx, "rl_student", rl_record["data_version"])).get("metrics", {})
    sft_record = ctx.upstream_version("sft_student")
    sft_metrics = read_lineage(checkpoint_dir(ctx, "sft_student", sft_record["data_version"])).get(
        "metrics", {}
    )
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
        "eval_temperature": config.eval.temperature,
        "teacher_samples": len(teacher_rows),
        "student_samples": len(store.read("student_responses", "gsm8k")),
        "teacher_single_sample_accuracy": _mean(single),
        "teacher_single_sample_accuracy_by_temperature": {
            f"{t:g}": _mean(v) for t, v in sorted(by_temperature.items())
        },
        "vote_label_accuracy": _mean(vote_correct),
        "vote_label_coverage": len(votes) / len(train_prompts) if train_prompts else None,
        "accuracy": {role: accuracy_of(role) for role in ROLES},
        "mean_reward": {role: mean_reward(role) for role in ROLES},
        "rl_minus_sft": paired_difference(
            correct_by_role.get("rl_student", {}), correct_by_role.get("sft_student", {})
        ),
        "reward_pairs": len(pairs),
        "reward_model_heldout_accuracy_pseudo_labels": rm_metrics.get("heldout_accuracy"),
        "reward_model_heldout_pairs": rm_metrics.get("heldout_pairs"),
        "reward_model_gold_pair_accuracy": gold_rm_accuracy,
        "reward_model_gold_pairs": len(gold_pairs),
        "rl_rewards_config": rl_metrics.get("rewards_config"),
        "rl_reward_start": rl_metrics.get("reward_start"),
        "rl_reward_end": rl_metrics.get("reward_end"),
        "rl_validation": validation_summary(rl_metrics),
        "sft_minus_base": paired_difference(
            correct_by_role.get("sft_student", {}), correct_by_role.get("base_student", {})
        ),
        "sft_validation": validation_summary(sft_metrics),
        "rl_student_version": rl_record["data_version"],
        "reward_model_version": rm_record["data_version"],
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

TARGET_VOTE = "vote labels beat single samples"
TARGET_SFT = "SFT student beats base"
TARGET_RL_KEEPS = "RL not below SFT beyond its 95% interval"
TARGET_RL_REWARD = "RL raises mean reward on held-out prompts"
TARGET_RM = "reward model >= 0.7 on held-out gold pairs"


def _greater(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a > b


def targets(figures: dict[str, Any]) -> dict[str, bool | None]:
    """The targets of one run, each True, False, or None when a figure is missing."""
    acc, reward, diff = figures["accuracy"], figures["mean_reward"], figures["rl_minus_sft"]
    rm = figures["reward_model_gold_pair_accuracy"]
    keeps = diff["high"] if diff["high"] is not None else diff["mean"]
    return {
        TARGET_VOTE: _greater(figures["vote_label_accuracy"], figures["teacher_single_sample_accuracy"]),
        TARGET_SFT: _greater(acc["sft_student"], acc["base_student"]),
        TARGET_RL_KEEPS: None if keeps is None else keeps >= 0,
        TARGET_RL_REWARD: _greater(reward["rl_student"], reward["sft_student"]),
        TARGET_RM: None if rm is None else rm >= 0.7,
    }


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def mark(ok: bool | None) -> str:
    return "pass" if ok else "MISS" if ok is False else "  - "


def table(figures: dict[str, Any], checks: dict[str, bool | None]) -> str:
    acc, reward, diff = figures["accuracy"], figures["mean_reward"], figures["rl_minus_sft"]
    by_temperature = ", ".join(
        f"T={t} {fmt(v)}" for t, v in figures["teacher_single_sample_accuracy_by_temperature"].items()
    )
    lines = [
        f"prompts: {figures['train_prompts']} train, {figures['eval_prompts']} held-out eval; samples: "
        f"{figures['teacher_samples']} teacher, {figures['student_samples']} student",
        "",
        f"{'measure':<58} value",
        f"{'teacher single-sample accuracy (train prompts)':<58} "
        f"{fmt(figures['teacher_single_sample_accuracy'])} ({by_temperature})",
        f"{'majority-vote label accuracy (labelled train prompts)':<58} {fmt(figures['vote_label_accuracy'])}",
        f"{'label coverage':<58} {fmt(figures['vote_label_coverage'])}",
        f"{'reward model, held-out gold pairs':<58} {fmt(figures['reward_model_gold_pair_accuracy'])}"
        f" (n={figures['reward_model_gold_pairs']})",
        f"{'reward model, held-out pseudo-label pairs (pipeline)':<58} "
        f"{fmt(figures['reward_model_heldout_accuracy_pseudo_labels'])} "
        f"(n={figures['reward_model_heldout_pairs']})",
        f"{'RL training reward, first -> last step':<58} {fmt(figures['rl_reward_start'])} -> "
        f"{fmt(figures['rl_reward_end'])}",
    ]
    validation = figures["rl_validation"]
    if validation:
        lines.append(
            f"{'RL validation agreement, step 0 (SFT) -> selected step':<58} "
            f"{fmt(validation['start_agreement'])} -> {fmt(validation['selected_agreement'])} "
            f"(step {validation['selected_step']})"
        )
    else:
        lines.append(f"{'RL validation curve':<58} not recorded in the rl_student lineage")
    lines += [
        "",
        f"{'model (greedy, held-out eval prompts)':<38} {'accuracy':>9} {'mean reward':>12}",
        *(f"{role:<38} {fmt(acc[role]):>9} {fmt(reward[role]):>12}" for role in ROLES),
        f"{'RL - SFT accuracy (paired 95% interval)':<38} {fmt(diff['mean']):>9}   "
        f"[{fmt(diff['low'])}, {fmt(diff['high'])}]",
        "",
        *(f"[{mark(ok)}] {name}" for name, ok in checks.items()),
    ]
    return "\n".join(lines)


def run_teacher(
    work: Path,
    size: Size,
    seed: int,
    teacher: str,
    reward_settings: dict[str, dict[str, Any]],
    pair_margin: str = "vote_share",
) -> list[dict[str, Any]]:
    """The pipeline for one teacher, once per reward setting in the same ``RD_HOME``, each measured."""
    import yaml

    run_dir = work / "runs" / f"teacher_{teacher}"
    run_dir.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for name, rewards in reward_settings.items():
        config_file = run_dir / f"config_{name}.yaml"
        data = pipeline_config(work, run_dir, size, seed, teacher, rewards, pair_margin)
        config_file.write_text(yaml.safe_dump(data, sort_keys=False))
        started = time.perf_counter()
        failed = run_pipeline(config_file)
        if failed:
            raise RuntimeError(f"pipeline steps failed: {failed}; see the Dagster logs under {run_dir}")
        figures = measure(config_file)
        checks = targets(figures)
        runs.append(
            {
                "teacher": teacher,
                "rewards": name,
                "pipeline_s": round(time.perf_counter() - started, 1),
                "figures": figures,
                "targets": checks,
                "table": table(figures, checks),
            }
        )
    return runs


def run_experiment(
    work: Path,
    size_name: str = "full",
    seed: int = 0,
    task: str = "larger",
    teachers: dict[str, float] | None = None,
    reward_settings: dict[str, dict[str, Any]] | None = None,
    rm_steps: int | None = None,
    only: list[str] | None = None,
    pair_margin: str = "vote_share",
) -> dict[str, Any]:
    """Pre-train the models, run the pipeline for each teacher ({name: target sampled accuracy}, default
    ``TEACHER_TARGETS``; ``only`` runs some of them, all being pre-trained) and reward setting (default
    ``REWARD_SETTINGS``), measure; returns the JSON-ready result."""
    teachers = dict(TEACHER_TARGETS if teachers is None else teachers)
    reward_settings = dict(REWARD_SETTINGS if reward_settings is None else reward_settings)
    size = SIZES[size_name]
    if rm_steps is not None:
        size = replace(size, rm_steps=rm_steps)
    started = time.perf_counter()
    pretraining = prepare(work, task, size, seed, teachers)
    pretrain_s = time.perf_counter() - started
    chosen = [teacher for teacher in teachers if only is None or teacher in only]
    runs = [
        run
        for teacher in chosen
        for run in run_teacher(work, size, seed, teacher, reward_settings, pair_margin)
    ]
    for run in runs:
        run["teacher_target"] = teachers[run["teacher"]]
    return {
        "task": task,
        "size": size_name,
        "seed": seed,
        "settings": asdict(size),
        "temperatures": list(TEMPERATURES),
        "teacher_targets": teachers,
        "reward_settings": reward_settings,
        "pair_margin": pair_margin,
        "pretraining": pretraining,
        "pretrain_s": round(pretrain_s, 1),
        "pipeline_s": round(time.perf_counter() - started - pretrain_s, 1),
        "runs": runs,
    }


def result_text(result: dict[str, Any]) -> str:
    """Every run's table under a heading naming its teacher and reward setting."""
    parts = []
    for run in result["runs"]:
        head = (
            f"== {result['task']} seed {result['seed']}, teacher {run['teacher']} "
            f"(target {run['teacher_target']:g}), RL rewards {run['rewards']}"
        )
        parts.append(f"{head} ({run['pipeline_s']} s)\n{run['table']}")
    return "\n\n".join(parts)


def parse_targets(text: str) -> dict[str, float]:
    """``weak,strong`` (known names) or ``weak=0.4,strong=0.65``."""
    targets_: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        targets_[name] = float(value) if value else TEACHER_TARGETS[name]
    return targets_


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="larger")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--teachers",
        type=parse_targets,
        help=f"teachers to run, NAME or NAME=ACCURACY, comma-separated (default: {TEACHER_TARGETS})",
    )
    parser.add_argument(
        "--rewards",
        help=f"RL reward settings to run, comma-separated (default: all of {list(REWARD_SETTINGS)})",
    )
    parser.add_argument("--only", help="run only these teachers (comma-separated); all are pre-trained")
    parser.add_argument("--rm-steps", type=int, help="reward-model training steps (default: by size)")
    parser.add_argument(
        "--pair-margin", choices=("vote_share", "none"), default="vote_share", help="labeling.pair_margin"
    )
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    parser.add_argument(
        "--out", type=Path, help="JSON result (default: ./bench-results/known_answer[_TASK][_SIZE].json)"
    )
    args = parser.parse_args(argv)
    settings = (
        {name: REWARD_SETTINGS[name] for name in args.rewards.split(",")} if args.rewards else REWARD_SETTINGS
    )
    options = dict(
        task=args.task,
        teachers=args.teachers,
        reward_settings=settings,
        rm_steps=args.rm_steps,
        only=args.only.split(",") if args.only else None,
        pair_margin=args.pair_margin,
    )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run_experiment(args.keep.resolve(), args.size, args.seed, **options)
    else:
        with tempfile.TemporaryDirectory(prefix="rd-known-answer-") as work:
            result = run_experiment(Path(work), args.size, args.seed, **options)
    print(result_text(result))
    print(f"\npre-training {result['pretrain_s']} s, pipeline {result['pipeline_s']} s")
    suffix = (
        ("" if args.task == "larger" else f"_{args.task}")
        + ("" if args.size == "full" else f"_{args.size}")
        + ("" if args.rm_steps is None else f"_rm{args.rm_steps}")
    )
    out = args.out or Path("bench-results") / f"known_answer{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
