"""The grid's summary: every figure per setting with its interval over seeds, the targets, the markdown tables."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rd_pipeline.cli.known_answer.report import TARGET_RL_KEEPS, TARGET_RM, TARGET_SFT, TARGET_VOTE, fmt, mark
from rd_pipeline.cli.known_answer.stats import mean_interval

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
    (
        "likelihood_base",
        "base student's log-likelihood, held-out gold pairs",
        _field("likelihood_gold_pair_accuracy", "base_student"),
    ),
    (
        "likelihood_sft",
        "SFT student's log-likelihood, held-out gold pairs",
        _field("likelihood_gold_pair_accuracy", "sft_student"),
    ),
    (
        "likelihood_teacher",
        "teacher's log-likelihood, held-out gold pairs",
        _field("likelihood_gold_pair_accuracy", "teacher"),
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
        summary[key] = mean_interval([float(v) for v in values])
    return summary


def setting_targets(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> dict[str, tuple]:
    """The targets of one setting: {name: (pass, the numbers)}; pass is None when a figure is missing."""

    def above(key: str, threshold: float = 0.0, use_low: bool = False) -> tuple[bool | None, str]:
        s = summary[key]
        if s["mean"] is None:
            return None, "-"
        bound = s["low"] if use_low else s["mean"]
        ok = None if bound is None else bound > threshold
        return ok, f"{s['mean']:+.3f} [{fmt(s['low'])}, {fmt(s['high'])}]"

    highs = [run["figures"]["rl_minus_sft"]["high"] for run in runs]
    keeps = None if not highs or None in highs else all(h >= 0 for h in highs)
    sft_highs = [(run["figures"].get("sft_minus_base") or {}).get("high") for run in runs]
    sft_keeps = None if not sft_highs or None in sft_highs else all(h >= 0 for h in sft_highs)
    rm = summary["rm_gold"]
    return {
        TARGET_VOTE: above("vote_minus_single"),
        TARGET_SFT: above("sft_minus_base"),
        f"{TARGET_RL_KEEPS}, every seed": (
            keeps,
            "upper bounds " + ", ".join(fmt(h) for h in highs),
        ),
        "RL beats SFT (interval over seeds above 0)": above("rl_minus_sft", use_low=True),
        "shipped SFT not below base beyond its 95% interval, every seed": (
            sft_keeps,
            "upper bounds " + ", ".join(fmt(h) for h in sft_highs),
        ),
        TARGET_RM: (None if rm["mean"] is None else rm["mean"] >= 0.7, fmt(rm["mean"])),
    }


def _cell(s: dict[str, Any], digits: int = 3) -> str:
    if s["mean"] is None:
        return "-"
    if s["low"] is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {(s['high'] - s['low']) / 2:.{digits}f}"


Setting = tuple[str, str]  # (teacher, reward setting)

PER_SEED_HEAD = [
    "| seed | teacher | rewards | single | vote | teacher greedy | base | SFT | SFT - base | SFT validation "
    "base -> SFT (step) | RL | RL - SFT | RM gold | reward SFT -> RL | validation SFT -> RL (step) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


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
        *_figure_rows(heads, settings, summaries),
        "",
        *_target_rows(heads, settings, groups, summaries),
        "",
        "Per seed (RL - SFT with its paired 95% interval over eval prompts):",
        "",
        *PER_SEED_HEAD,
        *(_seed_row(run, t, r) for t, r in settings for run in groups[(t, r)]),
    ]
    problems = [
        f"seed {r['seed']} teacher {r['teacher']}: {r['error']}" for r in grid["results"] if r.get("error")
    ]
    if problems:
        lines += ["", "Not measured:", *(f"- {p}" for p in problems)]
    return "\n".join(lines)


def _figure_rows(heads: list[str], settings: list[Setting], summaries: dict[Setting, dict]) -> list[str]:
    """The table of every figure (rows) per setting (columns)."""
    lines = ["| figure | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for key, label, _ in FIGURES:
        lines.append(
            f"| {label} | "
            + " | ".join(_cell(summaries[s][key], 1 if key == "val_step" else 3) for s in settings)
            + " |"
        )
    return lines


def _target_rows(
    heads: list[str], settings: list[Setting], groups: dict[Setting, list], summaries: dict[Setting, dict]
) -> list[str]:
    """The table of the targets per setting, and whether RL beat SFT in at least one setting."""
    lines = ["| target | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    checks = {s: setting_targets(groups[s], summaries[s]) for s in settings}
    for name in next(iter(checks.values()), {}):
        cells = [f"{mark(checks[s][name][0]).strip() or '-'} {checks[s][name][1]}" for s in settings]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rl_wins = [s for s in settings if checks[s]["RL beats SFT (interval over seeds above 0)"][0]]
    lines += [
        "",
        f"RL beats SFT with the interval over seeds above 0 in at least one setting: "
        f"{'pass (' + '; '.join(f'{t}, {r}' for t, r in rl_wins) + ')' if rl_wins else 'MISS'}",
    ]
    return lines


def _seed_row(run: dict[str, Any], t: str, r: str) -> str:
    """One run's row of the per-seed table."""
    f = run["figures"]
    acc, d, v = f["accuracy"], f["rl_minus_sft"], f.get("rl_validation") or {}
    sd, sv = f.get("sft_minus_base") or {}, f.get("sft_validation") or {}
    return (
        f"| {run['seed']} | {t} | {r} | {fmt(f['teacher_single_sample_accuracy'])} | "
        f"{fmt(f['vote_label_accuracy'])} | {fmt(acc['teacher'])} | {fmt(acc['base_student'])} | "
        f"{fmt(acc['sft_student'])} | {fmt(sd.get('mean'))} [{fmt(sd.get('low'))}, "
        f"{fmt(sd.get('high'))}] | {fmt(sv.get('start_agreement'))} -> "
        f"{fmt(sv.get('selected_agreement'))} ({fmt(sv.get('selected_step'))}) | "
        f"{fmt(acc['rl_student'])} | {fmt(d['mean'])} "
        f"[{fmt(d['low'])}, {fmt(d['high'])}] | {fmt(f['reward_model_gold_pair_accuracy'])} | "
        f"{fmt(f['mean_reward']['sft_student'])} -> {fmt(f['mean_reward']['rl_student'])} | "
        f"{fmt(v.get('start_agreement'))} -> {fmt(v.get('selected_agreement'))} "
        f"({fmt(v.get('selected_step'))}) |"
    )
