"""How far an LLM judge can be trusted: its verdicts on response pairs measured against gold and against itself.

The audit judges pairs of responses to the same prompt, pairwise (in both orders) and pointwise (each response
rated alone), and measures:

- ``gold_agreement`` (pairwise): on (correct, incorrect) pairs, the share the judge decides for the correct
  response, a tie counting half;
- ``gold_auc`` (pointwise): on the same pairs, the share in which the correct response is rated above the
  incorrect one, a tie counting half: the AUC of the ratings over the pairs of one prompt;
- ``gold_accuracy`` (pointwise): the share of rated responses whose rating is on the right side of the labelling
  threshold (``labeling.judge_good_score``: at or above it when correct, below it when not);
- ``swap_consistency`` (pairwise): the share of pairs whose two orders lean the same way;
- ``position_bias`` (pairwise): the share of verdicts (each order counts) that favour the response shown first,
  a tie counting half; 0.5 is unbiased, 1.0 a judge that always picks the first;
- ``length_bias`` (both): Kendall's tau-b between the judge's lean and the length difference over the pairs,
  (pairs where the longer response is favoured - pairs where the shorter is) / sqrt(pairs with a lean x pairs of
  unequal length); 1.0 is a judge that always favours the longer response, 0 none, -1 the shorter;
- ``verdict_<path>`` (both): the share of verdicts obtained from the judge's probabilities, its text, a retry,
  or not at all (see ``rd_pipeline.labeling.judge``).

Shares come with 95% Wilson intervals (``rd_pipeline.evaluation.metrics``); ``length_bias`` has none.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rd_pipeline.evaluation.metrics import Estimate, accuracy, win_rate
from rd_pipeline.labeling.judge import PairwiseJudgment, PointwiseJudgment
from rd_pipeline.labeling.judge_prompts import VERDICT_PATHS

PAIRWISE_GOLD_METRICS = ("gold_agreement",)
POINTWISE_GOLD_METRICS = ("gold_auc", "gold_accuracy")


@dataclass(frozen=True)
class AuditResponse:
    """A response that may be audited: its key, prompt, text, and whether it is correct (None: unknown)."""

    key: str
    prompt_id: str
    instruction: str
    response: str
    correct: bool | None


@dataclass(frozen=True)
class AuditPair:
    """Two different responses to one prompt; ``gold_preference`` is 1.0 when the first is the correct one of a
    (correct, incorrect) pair, 0.0 when the second is, None when gold does not decide between them."""

    key: str
    first: AuditResponse
    second: AuditResponse

    @property
    def gold_preference(self) -> float | None:
        if (
            self.first.correct is None
            or self.second.correct is None
            or self.first.correct == self.second.correct
        ):
            return None
        return 1.0 if self.first.correct else 0.0


@dataclass(frozen=True)
class AuditMetric:
    """One measured property of a judge in one mode (``pairwise`` or ``pointwise``)."""

    mode: str
    metric: str
    estimate: Estimate


def _prompt_rank(seed: int, prompt_id: str) -> str:
    return hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()


def _prompt_pairs(responses: Sequence[AuditResponse]) -> tuple[list[AuditPair], list[AuditPair]]:
    """One prompt's disjoint pairs of different texts: (correct, incorrect) pairs, then the other pairs."""
    distinct: dict[str, AuditResponse] = {}
    for response in sorted(responses, key=lambda r: r.key):
        distinct.setdefault(response.response, response)
    unique = list(distinct.values())
    correct = [r for r in unique if r.correct is True]
    incorrect = [r for r in unique if r.correct is False]
    gold = [_ordered(a, b) for a, b in zip(correct, incorrect, strict=False)]
    used = {r.key for pair in gold for r in (pair.first, pair.second)}
    rest = [r for r in unique if r.key not in used]
    other = [_ordered(rest[i], rest[i + 1]) for i in range(0, len(rest) - 1, 2)]
    return gold, other


def _ordered(a: AuditResponse, b: AuditResponse) -> AuditPair:
    first, second = sorted((a, b), key=lambda r: r.key)
    return AuditPair(f"{first.key}|{second.key}", first, second)


def select_audit_pairs(responses: Sequence[AuditResponse], max_pairs: int, seed: int = 0) -> list[AuditPair]:
    """At most ``max_pairs`` pairs of different responses to the same prompt, (correct, incorrect) pairs first.

    Prompts take turns (in an order fixed by ``seed``) so that the pairs spread over as many prompts as they
    can; the selection depends only on the responses, never on their order.
    """
    by_prompt: dict[str, list[AuditResponse]] = defaultdict(list)
    for response in responses:
        by_prompt[response.prompt_id].append(response)
    prompts = sorted(by_prompt, key=lambda prompt_id: _prompt_rank(seed, prompt_id))
    gold_queues, other_queues = [], []
    for prompt_id in prompts:
        gold, other = _prompt_pairs(by_prompt[prompt_id])
        gold_queues.append(gold)
        other_queues.append(other)
    selected = _round_robin(gold_queues) + _round_robin(other_queues)
    return selected[:max_pairs]


def _round_robin(queues: list[list[AuditPair]]) -> list[AuditPair]:
    merged = []
    for depth in range(max((len(q) for q in queues), default=0)):
        merged.extend(queue[depth] for queue in queues if depth < len(queue))
    return merged


def _decided(preference: float) -> float:
    """A preference as a decision: 1.0 for, 0.0 against, 0.5 for a tie."""
    return 1.0 if preference > 0.5 else 0.0 if preference < 0.5 else 0.5


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def gold_agreement(pairs: Sequence[AuditPair], judgments: Sequence[PairwiseJudgment]) -> Estimate:
    """The share of (correct, incorrect) pairs the judge decides for the correct response (ties half)."""
    decisions = []
    for pair, judgment in zip(pairs, judgments, strict=True):
        gold = pair.gold_preference
        if gold is None:
            continue
        if judgment.preference is None:
            decisions.append(None)
        else:
            decision = _decided(judgment.preference)
            decisions.append(decision if gold == 1.0 else 1.0 - decision)
    return win_rate(decisions)


def gold_auc(pairs: Sequence[AuditPair], scores: dict[str, float | None]) -> Estimate:
    """The share of (correct, incorrect) pairs whose correct response is rated higher (ties half)."""
    outcomes: list[float | None] = []
    for pair in pairs:
        gold = pair.gold_preference
        if gold is None:
            continue
        first, second = scores.get(pair.first.key), scores.get(pair.second.key)
        if first is None or second is None:
            outcomes.append(None)
            continue
        decision = _decided(0.5 + (first - second))
        outcomes.append(decision if gold == 1.0 else 1.0 - decision)
    return win_rate(outcomes)


def gold_accuracy(
    responses: Sequence[AuditResponse], scores: dict[str, float | None], good: float
) -> Estimate:
    """The share of rated responses of known correctness whose rating is at or above ``good`` exactly when they
    are correct."""
    agree = [
        (score >= good) == response.correct
        for response in responses
        if response.correct is not None and (score := scores.get(response.key)) is not None
    ]
    return accuracy(agree)


def swap_consistency(judgments: Sequence[PairwiseJudgment]) -> Estimate:
    """The share of pairs with a verdict in both orders whose two orders lean the same way."""
    return accuracy([j.consistent for j in judgments if j.preference is not None])


def position_bias(judgments: Sequence[PairwiseJudgment]) -> Estimate:
    """The share of verdicts, each order counted, that favour the response shown first (ties half)."""
    first_shown: list[float | None] = []
    for j in judgments:
        first_shown.append(None if j.preference_forward is None else _decided(j.preference_forward))
        first_shown.append(None if j.preference_backward is None else _decided(1.0 - j.preference_backward))
    return win_rate(first_shown)


def length_bias(leans: Sequence[float | None], length_differences: Sequence[int]) -> Estimate:
    """Kendall's tau-b between the judge's lean towards the first response of each pair (a preference above 0.5,
    a higher rating) and how much longer that response is; pairs without a verdict are left out."""
    observed = [
        (_sign(lean), _sign(diff))
        for lean, diff in zip(leans, length_differences, strict=True)
        if lean is not None and not math.isnan(lean)
    ]
    leaning = sum(1 for lean, _ in observed if lean)
    unequal = sum(1 for _, diff in observed if diff)
    excluded = len(leans) - len(observed)
    if not leaning or not unequal:
        return Estimate(math.nan, math.nan, math.nan, len(observed), excluded)
    tau = sum(lean * diff for lean, diff in observed) / math.sqrt(leaning * unequal)
    return Estimate(tau, math.nan, math.nan, len(observed), excluded)


def verdict_paths(paths: Sequence[str]) -> dict[str, Estimate]:
    """The share of verdicts obtained each way (see ``rd_pipeline.labeling.judge.VERDICT_PATHS``)."""
    return {path: accuracy([p == path for p in paths]) for path in VERDICT_PATHS}


def _length_difference(pair: AuditPair) -> int:
    return len(pair.first.response) - len(pair.second.response)


def pairwise_metrics(
    pairs: Sequence[AuditPair], judgments: Sequence[PairwiseJudgment], gold: bool
) -> list[AuditMetric]:
    """Every pairwise metric of a judge over the audited pairs; the gold ones only where ``gold`` exists."""
    estimates = {
        "swap_consistency": swap_consistency(judgments),
        "position_bias": position_bias(judgments),
        "length_bias": length_bias(
            [None if j.preference is None else j.preference - 0.5 for j in judgments],
            [_length_difference(p) for p in pairs],
        ),
    }
    if gold:
        estimates = {"gold_agreement": gold_agreement(pairs, judgments), **estimates}
    paths = [path for j in judgments for path in j.paths]
    estimates |= {f"verdict_{path}": e for path, e in verdict_paths(paths).items()}
    return [AuditMetric("pairwise", name, estimate) for name, estimate in estimates.items()]


def pointwise_metrics(
    pairs: Sequence[AuditPair], judgments: Sequence[PointwiseJudgment], good_score: float, gold: bool
) -> list[AuditMetric]:
    """Every pointwise metric of a judge that rated each response of the audited pairs (``judgments`` keyed by
    response key); the gold ones only where ``gold`` exists."""
    scores = {j.key: j.score for j in judgments}
    leans = []
    for pair in pairs:
        first, second = scores.get(pair.first.key), scores.get(pair.second.key)
        leans.append(None if first is None or second is None else first - second)
    estimates = {"length_bias": length_bias(leans, [_length_difference(p) for p in pairs])}
    if gold:
        rated = [r for pair in pairs for r in (pair.first, pair.second)]
        estimates = {
            "gold_auc": gold_auc(pairs, scores),
            "gold_accuracy": gold_accuracy(rated, scores, good_score),
            **estimates,
        }
    estimates |= {f"verdict_{path}": e for path, e in verdict_paths([j.path for j in judgments]).items()}
    return [AuditMetric("pointwise", name, estimate) for name, estimate in estimates.items()]


def audited_responses(pairs: Sequence[AuditPair]) -> list[AuditResponse]:
    """Each response of the pairs once, in pair order."""
    seen: dict[str, AuditResponse] = {}
    for pair in pairs:
        for response in (pair.first, pair.second):
            seen.setdefault(response.key, response)
    return list(seen.values())


_TABLE_METRICS = (
    ("gold_agreement", "gold agreement"),
    ("gold_auc", "gold AUC"),
    ("gold_accuracy", "rating accuracy"),
    ("swap_consistency", "swap consistency"),
    ("position_bias", "first-position wins"),
    ("length_bias", "length tau"),
)


@dataclass(frozen=True)
class AuditThresholds:
    """The levels a trustworthy judge reaches (the judge_audit checks' thresholds)."""

    min_swap_consistency: float
    max_position_bias: float
    min_gold_agreement: float
    max_length_bias: float


def _measured(row: dict[str, Any]) -> bool:
    return bool(row["n"]) and row["value"] is not None and not math.isnan(row["value"])


def _share(row: dict[str, Any] | None) -> str:
    if row is None or not _measured(row):
        return "-"
    if row["metric"] == "length_bias":
        return f"{row['value']:+.2f} (n={row['n']})"
    half = (row["ci_high"] - row["ci_low"]) / 2 if row["ci_low"] is not None else math.nan
    spread = f" ±{100 * half:.0f}" if not math.isnan(half) else ""
    return f"{100 * row['value']:.0f}%{spread} (n={row['n']})"


def _verdicts(rows: dict[str, dict[str, Any]]) -> str:
    parts = [
        f"{path} {100 * rows[f'verdict_{path}']['value']:.0f}%"
        for path in VERDICT_PATHS
        if f"verdict_{path}" in rows and _measured(rows[f"verdict_{path}"])
    ]
    return ", ".join(parts) or "-"


def _by_judge(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, dict[str, Any]]]:
    grouped: dict[tuple[str, str, str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        grouped[(row["benchmark"], row["judge_role"], row["judge_ref"], row["mode"])][row["metric"]] = row
    return dict(sorted(grouped.items()))


def audit_findings(rows: Sequence[dict[str, Any]], thresholds: AuditThresholds) -> list[str]:
    """One line for each judge, benchmark and metric that misses its threshold, with the measured value."""
    findings = []
    for (benchmark, role, ref, mode), metrics in _by_judge(rows).items():
        where = f"{role} judge {ref} on {benchmark} ({mode})"
        for name, row in metrics.items():
            if not _measured(row):
                continue
            value = row["value"]
            if name == "swap_consistency" and value < thresholds.min_swap_consistency:
                findings.append(f"{where}: same verdict in both orders on {100 * value:.0f}% of pairs")
            elif name == "position_bias" and abs(value - 0.5) > thresholds.max_position_bias:
                findings.append(f"{where}: the first-shown response wins {100 * value:.0f}% of verdicts")
            elif name in ("gold_agreement", "gold_auc") and value < thresholds.min_gold_agreement:
                findings.append(f"{where}: prefers the correct response on {100 * value:.0f}% of gold pairs")
            elif name == "length_bias" and abs(value) > thresholds.max_length_bias:
                findings.append(f"{where}: preference follows length (Kendall tau {value:+.2f})")
    return findings


def audit_markdown(rows: Sequence[dict[str, Any]], findings: Sequence[str] = ()) -> str:
    """The report's "Judge audit" section: a table per judge, benchmark and mode, then what falls short."""
    if not rows:
        return ""
    header = ["benchmark", "judge", "mode", *(label for _, label in _TABLE_METRICS), "verdicts"]
    lines = [
        "## Judge audit",
        "",
        "Each judge on pairs of teacher responses to the same training prompt, in both orders and rated alone. "
        "Shares in %, ± half-width of the 95% Wilson interval; first-position wins: 50% is unbiased; length "
        "tau: Kendall's tau-b of preference and length difference (0: none, 1: always the longer).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for (benchmark, role, ref, mode), metrics in _by_judge(rows).items():
        cells = [benchmark, f"{role}: `{ref}`", mode]
        cells += [_share(metrics.get(name)) for name, _ in _TABLE_METRICS]
        cells.append(_verdicts(metrics))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if findings:
        lines += ["Where a judge falls short of the checks' thresholds:", ""] + [f"- {f}" for f in findings]
        lines.append("")
    return "\n".join(lines)
