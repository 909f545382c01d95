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

Writes ``bench-results/known_answer_grid[_<task>].json`` under the current directory and prints a markdown table
for the README.
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
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rd_pipeline.cli import known_answer as ka

CHART = Path("docs") / "images" / "rl_validation_curve.png"  # under the current directory

# (key, label, value of one run's figures); differences are per seed, then averaged
Figure = tuple[str, str, Callable[[dict[str, Any]], float | None]]


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _field(*keys: str) -> Callable[[dict[str, Any]], Any]:
    """The figure at ``keys`` (nested), None where a level is missing."""

    def value(figures: dict[str, Any]) -> Any:
        for key in keys:
            figures = (figures or {}).get(key)
        return figures

    return value


def _minus(a: Callable, b: Callable) -> Callable[[dict[str, Any]], float | None]:
    return lambda f: _diff(a(f), b(f))


SINGLE, VOTE = _field("teacher_single_sample_accuracy"), _field("vote_label_accuracy")
TEACHER, BASE = _field("accuracy", "teacher"), _field("accuracy", "base_student")
SFT, RL = _field("accuracy", "sft_student"), _field("accuracy", "rl_student")
REWARD_SFT, REWARD_RL = _field("mean_reward", "sft_student"), _field("mean_reward", "rl_student")

FIGURES: list[Figure] = [
    ("teacher_single", "teacher single-sample accuracy (train prompts)", SINGLE),
    ("vote", "majority-vote label accuracy", VOTE),
    ("vote_minus_single", "vote - single", _minus(VOTE, SINGLE)),
    ("teacher_greedy", "teacher accuracy (greedy, eval)", TEACHER),
    ("base", "base student accuracy", BASE),
    ("sft", "SFT student accuracy", SFT),
    ("rl", "RL student accuracy", RL),
    ("sft_minus_base", "SFT - base", _minus(SFT, BASE)),
    ("rl_minus_sft", "RL - SFT", _field("rl_minus_sft", "mean")),
    ("rl_minus_teacher", "RL - teacher (greedy)", _minus(RL, TEACHER)),
    ("rm_gold", "reward model, held-out gold pairs", _field("reward_model_gold_pair_accuracy")),
    (
        "rm_pseudo",
        "reward model, held-out pseudo-label pairs",
        _field("reward_model_heldout_accuracy_pseudo_labels"),
    ),
    ("reward_sft", "mean reward, SFT (eval)", REWARD_SFT),
    ("reward_rl", "mean reward, RL (eval)", REWARD_RL),
    ("reward_rl_minus_sft", "mean reward RL - SFT", _minus(REWARD_RL, REWARD_SFT)),
    ("val_sft", "RL validation agreement, step 0 (SFT)", _field("rl_validation", "start_agreement")),
    ("val_rl", "RL validation agreement, shipped step", _field("rl_validation", "selected_agreement")),
    ("val_step", "RL shipped step", _field("rl_validation", "selected_step")),
    ("sft_val_base", "SFT validation agreement, step 0 (base)", _field("sft_validation", "start_agreement")),
    ("sft_val", "SFT validation agreement, shipped step", _field("sft_validation", "selected_agreement")),
    ("sft_val_step", "SFT shipped step", _field("sft_validation", "selected_step")),
]


# ------------------------------------------------------------------------------------------------- running


def run_grid(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every (seed, teacher) run of the grid, ``args.jobs`` at a time; returns the collected results."""
    teachers = ka.parse_targets(args.teachers)
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
        "reward_settings": {name: ka.REWARD_SETTINGS[name] for name in args.rewards.split(",")},
        "jobs": args.jobs,
        "wall_s": round(time.perf_counter() - started, 1),
        "results": results,
    }


# ----------------------------------------------------------------------------------------------- summaries


def runs_by_setting(grid: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Measured runs per (teacher, reward setting), each with its seed, in seed order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for result in grid["results"]:
        for run in result.get("runs", []):
            groups[(run["teacher"], run["rewards"])].append({**run, "seed": result["seed"]})
    return {key: sorted(runs, key=lambda r: r["seed"]) for key, runs in groups.items()}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and 95% t interval over seeds of every figure."""
    summary = {}
    for key, _, value in FIGURES:
        values = [v for v in (value(run["figures"]) for run in runs) if v is not None]
        summary[key] = ka.mean_interval([float(v) for v in values])
    return summary


def setting_targets(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> dict[str, tuple]:
    """The targets of one setting: {name: (pass, the numbers)}; pass is None when a figure is missing."""

    def above(key: str, threshold: float = 0.0, use_low: bool = False) -> tuple[bool | None, str]:
        s = summary[key]
        if s["mean"] is None:
            return None, "-"
        bound = s["low"] if use_low else s["mean"]
        ok = None if bound is None else bound > threshold
        return ok, f"{s['mean']:+.3f} [{ka.fmt(s['low'])}, {ka.fmt(s['high'])}]"

    highs = [run["figures"]["rl_minus_sft"]["high"] for run in runs]
    keeps = None if not highs or None in highs else all(h >= 0 for h in highs)
    sft_highs = [(run["figures"].get("sft_minus_base") or {}).get("high") for run in runs]
    sft_keeps = None if not sft_highs or None in sft_highs else all(h >= 0 for h in sft_highs)
    rm = summary["rm_gold"]
    return {
        ka.TARGET_VOTE: above("vote_minus_single"),
        ka.TARGET_SFT: above("sft_minus_base"),
        f"{ka.TARGET_RL_KEEPS}, every seed": (
            keeps,
            "upper bounds " + ", ".join(ka.fmt(h) for h in highs),
        ),
        "RL beats SFT (interval over seeds above 0)": above("rl_minus_sft", use_low=True),
        "shipped SFT not below base beyond its 95% interval, every seed": (
            sft_keeps,
            "upper bounds " + ", ".join(ka.fmt(h) for h in sft_highs),
        ),
        ka.TARGET_RM: (None if rm["mean"] is None else rm["mean"] >= 0.7, ka.fmt(rm["mean"])),
    }


def _cell(s: dict[str, Any], digits: int = 3) -> str:
    if s["mean"] is None:
        return "-"
    if s["low"] is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {(s['high'] - s['low']) / 2:.{digits}f}"


def markdown(grid: dict[str, Any]) -> str:
    """The README's tables: figures per setting (mean ± 95% half-width over seeds), targets, per-seed rows."""
    groups = runs_by_setting(grid)
    teachers, rewards = list(grid["teacher_targets"]), list(grid.get("reward_settings") or {})
    settings = sorted(
        groups,
        key=lambda k: (teachers.index(k[0]), rewards.index(k[1]) if k[1] in rewards else len(rewards), k[1]),
    )
    summaries = {key: summarise(groups[key]) for key in settings}
    heads = [f"teacher {t} ({grid['teacher_targets'][t]:g}), {r}" for t, r in settings]
    seeds = ", ".join(str(s) for s in grid["seeds"])
    lines = [
        f"Known-answer task `{grid['task']}`, size `{grid['size']}`, seeds {seeds}: mean ± half-width of the 95% "
        "t interval over seeds (df = seeds - 1). Accuracies on held-out eval prompts are greedy; the teacher's "
        "single-sample accuracy is over its samples at every temperature.",
        "",
        "| figure | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for key, label, _ in FIGURES:
        lines.append(
            f"| {label} | "
            + " | ".join(_cell(summaries[s][key], 1 if key == "val_step" else 3) for s in settings)
            + " |"
        )
    lines += ["", "| target | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    checks = {s: setting_targets(groups[s], summaries[s]) for s in settings}
    for name in next(iter(checks.values()), {}):
        cells = [f"{ka.mark(checks[s][name][0]).strip() or '-'} {checks[s][name][1]}" for s in settings]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rl_wins = [s for s in settings if checks[s]["RL beats SFT (interval over seeds above 0)"][0]]
    lines += [
        "",
        f"RL beats SFT with the interval over seeds above 0 in at least one setting: "
        f"{'pass (' + '; '.join(f'{t}, {r}' for t, r in rl_wins) + ')' if rl_wins else 'MISS'}",
        "",
        "Per seed (RL - SFT with its paired 95% interval over eval prompts):",
        "",
        "| seed | teacher | rewards | single | vote | teacher greedy | base | SFT | SFT - base | SFT validation "
        "base -> SFT (step) | RL | RL - SFT | RM gold | reward SFT -> RL | validation SFT -> RL (step) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t, r in settings:
        for run in groups[(t, r)]:
            f = run["figures"]
            acc, d, v = f["accuracy"], f["rl_minus_sft"], f.get("rl_validation") or {}
            sd, sv = f.get("sft_minus_base") or {}, f.get("sft_validation") or {}
            lines.append(
                f"| {run['seed']} | {t} | {r} | {ka.fmt(f['teacher_single_sample_accuracy'])} | "
                f"{ka.fmt(f['vote_label_accuracy'])} | {ka.fmt(acc['teacher'])} | {ka.fmt(acc['base_student'])} | "
                f"{ka.fmt(acc['sft_student'])} | {ka.fmt(sd.get('mean'))} [{ka.fmt(sd.get('low'))}, "
                f"{ka.fmt(sd.get('high'))}] | {ka.fmt(sv.get('start_agreement'))} -> "
                f"{ka.fmt(sv.get('selected_agreement'))} ({ka.fmt(sv.get('selected_step'))}) | "
                f"{ka.fmt(acc['rl_student'])} | {ka.fmt(d['mean'])} "
                f"[{ka.fmt(d['low'])}, {ka.fmt(d['high'])}] | {ka.fmt(f['reward_model_gold_pair_accuracy'])} | "
                f"{ka.fmt(f['mean_reward']['sft_student'])} -> {ka.fmt(f['mean_reward']['rl_student'])} | "
                f"{ka.fmt(v.get('start_agreement'))} -> {ka.fmt(v.get('selected_agreement'))} "
                f"({ka.fmt(v.get('selected_step'))}) |"
            )
    problems = [
        f"seed {r['seed']} teacher {r['teacher']}: {r['error']}" for r in grid["results"] if r.get("error")
    ]
    if problems:
        lines += ["", "Not measured:", *(f"- {p}" for p in problems)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- the chart


def validation_curves(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured run that has an RL validation curve: {seed, teacher, rewards, validation}."""
    return [
        {"seed": run["seed"], "teacher": t, "rewards": r, "validation": run["figures"]["rl_validation"]}
        for (t, r), runs in runs_by_setting(grid).items()
        for run in runs
        if (run["figures"].get("rl_validation") or {}).get("curve")
    ]


def plot_validation_curve(grid: dict[str, Any], out: Path = CHART, teacher: str | None = None,
                          rewards: str | None = None) -> Path | None:  # fmt: skip
    """Plot the RL validation curves of one setting (the first with a curve, or ``teacher`` and ``rewards``):
    mean reward and agreement with the vote labels per step for every seed, the shipped step marked. Returns
    the image's path, or None (saying so) when no run recorded a curve."""
    curves = [
        c
        for c in validation_curves(grid)
        if (teacher is None or c["teacher"] == teacher) and (rewards is None or c["rewards"] == rewards)
    ]
    if not curves:
        print(
            "no RL validation curve found: the rl_student lineage metrics of these runs hold no "
            "metrics['validation']['curve'] (the pipeline that made them did not record one)"
        )
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher, rewards = curves[0]["teacher"], curves[0]["rewards"]
    curves = [c for c in curves if c["teacher"] == teacher and c["rewards"] == rewards]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, curve in enumerate(curves):
        v, color = curve["validation"], colors[i % len(colors)]
        points = v["curve"]
        steps = [p["step"] for p in points]
        label = f"seed {curve['seed']}"
        start = points[0]["mean_reward"] if points[0]["step"] == 0 else None
        rewards_ = [
            None if r is None or start is None else r - start for r in (p["mean_reward"] for p in points)
        ]
        top.plot(steps, rewards_, "o-", color=color, label=label)
        bottom.plot(steps, [p["agreement"] for p in points], "o-", color=color, label=f"{label}: agreement")
        if any(p.get("gold_accuracy") is not None for p in points):
            bottom.plot(steps, [p.get("gold_accuracy") for p in points], ":", color=color, alpha=0.7)
        selected = v.get("selected_step")
        if selected is not None:
            for axis in (top, bottom):
                axis.axvline(selected, color=color, linestyle="--", alpha=0.5)
            chosen = [p for p in points if p["step"] == selected]
            if chosen:
                bottom.plot([selected], [chosen[0]["agreement"]], "*", color=color, markersize=14)
    top.set_ylabel("mean reward-model score\nminus step 0's")
    top.set_title(
        f"RL validation on held-out train prompts ({grid['task']}, teacher {teacher}, rewards {rewards})\n"
        "step 0 = SFT student; dashed line and star = shipped step",
        fontsize=10,
    )
    top.legend(fontsize=8)
    bottom.set_ylabel("agreement with vote labels\n(dotted: gold accuracy, monitor)")
    bottom.set_xlabel("RL optimizer step")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")
    return out


# ------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(ka.TASKS), default="larger")
    parser.add_argument("--size", choices=sorted(ka.SIZES), default="grid")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--teachers", default=",".join(f"{k}={v:g}" for k, v in ka.TEACHER_TARGETS.items()))
    parser.add_argument("--rewards", default=",".join(ka.REWARD_SETTINGS))
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each one thread)")
    parser.add_argument("--work", type=Path, help="work directory to keep (default: a temporary one)")
    parser.add_argument(
        "--out", type=Path, help="JSON (default: ./bench-results/known_answer_grid[_TASK].json)"
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
        suffix = "" if args.task == "larger" else f"_{args.task}"
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
