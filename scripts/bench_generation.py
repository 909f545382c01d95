"""Sampling throughput of the transformers backend against plain ``model.generate`` and a per-sample loop.

All three do the same kind of work on SmolLM2-135M-Instruct: chat prompts, ``n`` samples each, ``max_new_tokens``
new tokens, temperature 0.7. The machine limit is the measured fp32 matmul rate divided by 2 x parameters (the
forward cost of one token). Ours and plain generate alternate for ``--rounds`` rounds; the best round of each
counts, which limits the effect of other load on the machine. Writes ``bench-results/generation.json``.

    python scripts/bench_generation.py [--prompts 16] [--n 4] [--max-new-tokens 64] [--threads N]

Other processes on the machine distort the numbers (the JSON records the load average); with fewer free cores
than torch threads, ``--threads`` set to the free cores avoids threads waiting on each other.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rd_pipeline.config import ModelConfig
from rd_pipeline.generation.base import GenerationRequest, SamplingParams
from rd_pipeline.generation.journal import Journal
from rd_pipeline.generation.transformers_backend import TransformersGenerator
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


def bench_ours(resolved, prompts: int, n: int, max_new: int, batch_size: int) -> dict:
    """Our backend on a fresh journal, so every sample is generated."""
    requests = [
        GenerationRequest(
            f"q{i}",
            ({"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},),
            SamplingParams(temperature=TEMPERATURE, n=n, max_new_tokens=max_new, seed=i // len(QUESTIONS)),
        )
        for i in range(prompts)
    ]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per batch (prompts x samples)")
    parser.add_argument("--loop-samples", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--rd-home", default=os.environ.get("RD_HOME", ".rd"))
    parser.add_argument("--out", default="bench-results/generation.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]

    resolved = resolve_model(SMOLLM2, Path(args.rd_home).resolve())
    tokenizer = AutoTokenizer.from_pretrained(resolved.location, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(resolved.location, dtype=torch.float32).eval()
    parameters = sum(p.numel() for p in model.parameters())
    flops = measure_matmul_flops()

    ours, plain = [], []
    for _ in range(args.rounds):
        ours.append(bench_ours(resolved, args.prompts, args.n, args.max_new_tokens, args.batch_size))
        plain.append(
            bench_plain(model, tokenizer, args.prompts, args.n, args.max_new_tokens, args.batch_size)
        )
    loop = _rates(bench_loop(model, tokenizer, args.loop_samples, args.max_new_tokens))
    best_ours = _rates(min(ours, key=lambda r: r["seconds"]))
    best_plain = _rates(min(plain, key=lambda r: r["seconds"]))
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
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    print(f"{'path':<18}{'seconds':>9}{'samples':>9}{'tokens':>8}{'samples/s':>11}{'tokens/s':>10}")
    for name, row in (("ours", best_ours), ("plain generate", best_plain), ("per-sample loop", loop)):
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
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
