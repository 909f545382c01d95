"""Known-answer experiment: does the pipeline learn, measured against gold answers?

Runs the pipeline per teacher and reward setting and measures each run (`rd experiment known-answer`)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rd_pipeline.cli.known_answer.measurement import measure
from rd_pipeline.cli.known_answer.pipeline_run import pipeline_config, run_pipeline
from rd_pipeline.cli.known_answer.pretraining import prepare
from rd_pipeline.cli.known_answer.report import table, targets
from rd_pipeline.cli.known_answer.task import (
    REWARD_SETTINGS,
    SIZES,
    TASKS,
    TEACHER_TARGETS,
    TEMPERATURES,
    Size,
)


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
