"""`rd experiment known-answer-grid`: the known-answer experiment over seeds x teacher accuracies x RL reward
settings, with intervals.

Runs ``rd experiment known-answer`` (``python -m rd_pipeline.cli.known_answer``) once per (seed, teacher), each in
its own process (``--jobs`` at a time, each with one thread); a run pre-trains the seed's models once (shared by
its teachers, behind a lock), runs the pipeline for the first reward setting and then again in the same
``RD_HOME`` for each further one (only the RL student is retrained). Then it summarises per setting (teacher x
reward setting):

- mean and 95% interval over seeds of every figure: a t interval over the per-seed values (n = seeds,
  df = seeds - 1), written "mean ± half-width";
- the per-seed rows;
- the targets, pass or MISS with their numbers:
  vote labels beat single samples (mean over seeds of vote - single above 0);
  the SFT student beats the base student (mean of SFT - base above 0);
  the shipped RL student is never below SFT beyond its interval, in every seed (the per-seed interval is the
  paired t interval of per-prompt correctness differences over the held-out eval prompts);
  RL beats SFT: the mean of RL - SFT over seeds with its interval above 0, in at least one setting;
  the reward model reaches 0.7 on held-out gold pairs (mean over seeds).

Writes ``bench-results/known_answer_grid[_<task>][_<size>].json`` under the current directory and prints a
markdown table for the README.
``--chart`` plots the RL validation curve (agreement with vote labels and mean reward per step, the selected
step marked) from the rl_student lineage figures to ``docs/images/rl_validation_curve.png`` (under the current
directory: run it from the repository root to update the chart the docs show).

    rd experiment known-answer-grid [--task larger] [--size grid] [--seeds 0,1,2] [--jobs 2]
        [--teachers weak,strong] [--rewards paper,combined] [--work DIR] [--chart] [--from-json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rd_pipeline.cli.known_answer.experiment import parse_targets
from rd_pipeline.cli.known_answer.grid_chart import CHART, plot_validation_curve
from rd_pipeline.cli.known_answer.grid_summary import markdown
from rd_pipeline.cli.known_answer.task import REWARD_SETTINGS, SIZES, TASKS, TEACHER_TARGETS


def run_grid(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every (seed, teacher) run of the grid, ``args.jobs`` at a time; returns the collected results."""
    teachers = parse_targets(args.teachers)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "results").mkdir(parents=True, exist_ok=True)
    all_teachers = ",".join(f"{name}={acc:g}" for name, acc in teachers.items())
    # teacher-major order: runs that start together pre-train different seeds
    jobs = [(seed, teacher) for teacher in teachers for seed in args.seeds]

    def run(job: tuple[int, str]) -> dict[str, Any]:
        seed, teacher = job
        name = f"seed{seed}_{teacher}"
        out = work / "results" / f"{name}.json"
        command = [
            sys.executable, "-m", "rd_pipeline.cli.known_answer", "--task", args.task, "--size", args.size,
            "--seed", str(seed), "--teachers", all_teachers, "--only", teacher, "--rewards", args.rewards,
            "--keep", str(work / f"seed{seed}"), "--out", str(out),
        ]  # fmt: skip
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        started = time.perf_counter()
        print(f"  start {name}", flush=True)
        with open(work / "logs" / f"{name}.log", "w") as log:
            done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        wall_s = round(time.perf_counter() - started, 1)
        print(f"  done  {name} in {wall_s} s (exit {done.returncode})", flush=True)
        if done.returncode != 0:
            return {"seed": seed, "teacher": teacher, "error": f"exit {done.returncode}", "wall_s": wall_s}
        return {**json.loads(out.read_text()), "wall_s": wall_s}

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run, jobs))
    return {
        "task": args.task,
        "size": args.size,
        "seeds": args.seeds,
        "teacher_targets": teachers,
        "reward_settings": {name: REWARD_SETTINGS[name] for name in args.rewards.split(",")},
        "jobs": args.jobs,
        "wall_s": round(time.perf_counter() - started, 1),
        "results": results,
    }


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="larger")
    parser.add_argument("--size", choices=sorted(SIZES), default="grid")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--teachers", default=",".join(f"{k}={v:g}" for k, v in TEACHER_TARGETS.items()))
    parser.add_argument("--rewards", default=",".join(REWARD_SETTINGS))
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each one thread)")
    parser.add_argument("--work", type=Path, help="work directory to keep (default: a temporary one)")
    parser.add_argument(
        "--out", type=Path, help="JSON (default: ./bench-results/known_answer_grid[_TASK][_SIZE].json)"
    )
    parser.add_argument("--from-json", type=Path, help="summarise (and chart) a grid JSON instead of running")
    parser.add_argument("--chart", action="store_true", help=f"plot the RL validation curve to {CHART}")
    parser.add_argument(
        "--chart-setting", help="TEACHER,REWARDS of the chart (default: the first with a curve)"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        grid = json.loads(args.from_json.read_text())
    else:
        if args.work:
            grid = run_grid(args, args.work.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="rd-known-answer-grid-") as work:
                grid = run_grid(args, Path(work))
        grid["markdown"] = markdown(grid)
        suffix = ("" if args.task == "larger" else f"_{args.task}") + (
            "" if args.size == "full" else f"_{args.size}"
        )
        out = args.out or Path("bench-results") / f"known_answer_grid{suffix}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(grid, indent=2, default=str))
        print(f"wrote {out}; grid wall time {grid['wall_s']} s with {grid['jobs']} jobs")
    print(markdown(grid))
    if args.chart:
        teacher, rewards = (
            (args.chart_setting.split(",") + [None])[:2] if args.chart_setting else (None, None)
        )
        plot_validation_curve(grid, CHART, teacher, rewards)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
