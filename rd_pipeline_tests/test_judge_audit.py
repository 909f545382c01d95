"""judge_audit: the audit metrics on judges of known behaviour, its checks, and the asset on the tiny preset."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence

import dagster as dg
import pytest

from rd_pipeline.config import parse_config
from rd_pipeline.defs.checks import check_specs
from rd_pipeline.evaluation import render_report
from rd_pipeline.evaluation.judge_audit import (
    AuditPair,
    AuditResponse,
    audit_findings,
    audited_responses,
    pairwise_metrics,
    pointwise_metrics,
    select_audit_pairs,
)
from rd_pipeline.generation.base import Completion, GenerationRequest, GenerationStats, Generator
from rd_pipeline.labeling.judge import judge_pairwise, judge_pointwise
from rd_pipeline.steps.check_registry import evaluate_checks
from rd_pipeline.steps.report import audit_thresholds

BASE = {"teacher": {"ref": "tiny-random"}, "student": {"ref": "tiny-random"}}
AUDITED = ("benchmark_prompts", "teacher_responses", "judge_audit")
_FENCED_A = re.compile(r"<<<RESPONSE A \w+>>>\n(.*?)\n<<<END RESPONSE A", re.S)
_FENCED_B = re.compile(r"<<<RESPONSE B \w+>>>\n(.*?)\n<<<END RESPONSE B", re.S)
_FENCED = re.compile(r"<<<RESPONSE \w+>>>\n(.*?)\n<<<END RESPONSE", re.S)


class RuleJudge(Generator):
    """A judge that decides by rule: ``prefer(a, b)`` gives the pairwise verdict, ``rate(response)`` the rating."""

    def __init__(self, prefer: Callable[[str, str], str], rate: Callable[[str], float]) -> None:
        self.prefer, self.rate = prefer, rate

    @property
    def identity(self) -> dict[str, str]:
        return {"backend": "rule"}

    def _answer(self, request: GenerationRequest) -> str:
        content = request.messages[1]["content"]
        if "RESPONSE A" in content:
            a, b = _FENCED_A.search(content).group(1), _FENCED_B.search(content).group(1)
            return f"Verdict: [[{self.prefer(a, b)}]]"
        return f"Rating: [[{self.rate(_FENCED.search(content).group(1)):g}]]"

    def generate(self, requests: Sequence[GenerationRequest], progress=None):
        completions = [Completion(r.request_id, 0, 0.0, self._answer(r), 0, 0) for r in requests]
        return completions, GenerationStats(samples_requested=len(requests), samples_generated=len(requests))


def _responses() -> list[AuditResponse]:
    """Six prompts, each with a correct and an incorrect response of different lengths (either may be longer)."""
    responses = []
    for p in range(6):
        correct_text = f"the answer is {p}" + " indeed" * (2 * p % 5)
        wrong_text = f"the answer is {p + 100}" + " surely" * ((p + 1) % 4)
        responses.append(AuditResponse(f"q{p}/1", f"q{p}", f"question {p}", correct_text, True))
        responses.append(AuditResponse(f"q{p}/2", f"q{p}", f"question {p}", wrong_text, False))
    return responses


def _audit(judge: Generator, pairs: list[AuditPair], gold: bool = True) -> dict[tuple[str, str], object]:
    pairwise, _ = judge_pairwise(
        judge, [(p.key, p.first.instruction, p.first.response, p.second.response) for p in pairs], 16
    )
    pointwise, _ = judge_pointwise(
        judge, [(r.key, r.instruction, r.response) for r in audited_responses(pairs)], 16
    )
    metrics = pairwise_metrics(pairs, pairwise, gold) + pointwise_metrics(pairs, pointwise, 7.0, gold)
    return {(m.mode, m.metric): m.estimate for m in metrics}


def _is_correct(text: str) -> bool:
    return not re.search(r"\d{3}", text)


def test_a_judge_that_always_prefers_the_first_position():
    pairs = select_audit_pairs(_responses(), max_pairs=6)
    audit = _audit(RuleJudge(lambda a, b: "A", lambda r: 5), pairs)
    bias, consistency = audit[("pairwise", "position_bias")], audit[("pairwise", "swap_consistency")]
    assert bias.value == 1.0 and bias.n == 12  # both orders of six pairs
    assert consistency.value == 0.0 and consistency.n == 6
    assert 0.0 < bias.ci_low < 1.0 and bias.ci_high == 1.0  # a Wilson interval, not a point
    assert audit[("pairwise", "gold_agreement")].value == 0.5  # every pair ends in a tie
    assert (
        audit[("pairwise", "verdict_text")].value == 1.0 and audit[("pairwise", "verdict_none")].value == 0.0
    )


def test_a_judge_that_always_prefers_the_longer_response():
    pairs = select_audit_pairs(_responses(), max_pairs=6)
    lengths = {len(p.first.response) - len(p.second.response) > 0 for p in pairs}
    assert lengths == {True, False}, "the pairs must be longer on either side"
    judge = RuleJudge(lambda a, b: "A" if len(a) > len(b) else "B", lambda r: 1 + len(r) / 10)
    audit = _audit(judge, pairs)
    assert audit[("pairwise", "length_bias")].value == pytest.approx(1.0)
    assert audit[("pointwise", "length_bias")].value == pytest.approx(1.0)
    assert math.isnan(audit[("pairwise", "length_bias")].ci_low)  # a correlation, no Wilson interval
    assert audit[("pairwise", "swap_consistency")].value == 1.0
    assert audit[("pairwise", "position_bias")].value == 0.5


def test_a_judge_that_knows_the_gold_answers():
    pairs = select_audit_pairs(_responses(), max_pairs=6)
    judge = RuleJudge(lambda a, b: "A" if _is_correct(a) else "B", lambda r: 9 if _is_correct(r) else 2)
    audit = _audit(judge, pairs)
    for metric in (("pairwise", "gold_agreement"), ("pointwise", "gold_auc"), ("pointwise", "gold_accuracy")):
        assert audit[metric].value == 1.0 and audit[metric].n > 0, metric
    assert audit[("pointwise", "gold_accuracy")].n == 12


def test_a_judge_that_never_gives_a_verdict():
    pairs = select_audit_pairs(_responses(), max_pairs=3)
    audit = _audit(RuleJudge(lambda a, b: "maybe", lambda r: 0), pairs)
    assert (
        audit[("pairwise", "verdict_none")].value == 1.0 and audit[("pointwise", "verdict_none")].value == 1.0
    )
    assert audit[("pairwise", "swap_consistency")].n == 0
    assert math.isnan(audit[("pairwise", "gold_agreement")].value)
    assert audit[("pairwise", "gold_agreement")].n_excluded == 3


def test_open_ended_audits_have_no_gold_metrics():
    responses = [AuditResponse(r.key, r.prompt_id, r.instruction, r.response, None) for r in _responses()]
    pairs = select_audit_pairs(responses, max_pairs=4)
    assert len(pairs) == 4 and all(p.gold_preference is None for p in pairs)
    audit = _audit(RuleJudge(lambda a, b: "A", lambda r: 5), pairs, gold=False)
    assert not {metric for _, metric in audit} & {"gold_agreement", "gold_auc", "gold_accuracy"}


def test_pair_selection_is_bounded_gold_first_and_order_independent():
    responses = _responses() + [
        AuditResponse("q0/3", "q0", "question 0", "the answer is 0", True),  # same text as q0/1: never paired
        AuditResponse("q9/1", "q9", "question 9", "one", None),
        AuditResponse("q9/2", "q9", "question 9", "two", None),
    ]
    pairs = select_audit_pairs(responses, max_pairs=7)
    assert len(pairs) == 7
    assert [p.gold_preference is not None for p in pairs] == [True] * 6 + [False]
    assert len({p.first.prompt_id for p in pairs}) == 7  # one pair per prompt before a second from any
    shuffled = list(responses)
    random.Random(1).shuffle(shuffled)
    assert select_audit_pairs(shuffled, max_pairs=7) == pairs
    assert select_audit_pairs(responses, max_pairs=0) == []


def _weak_judge_metadata() -> dict:
    return {
        "pairs": 8,
        "gold_pairs": 2,
        "worst_swap_consistency": 0.0,
        "worst_position_bias": 1.0,
        "worst_gold_agreement": 0.5,
        "worst_length_bias": 0.1,
    }


def test_checks_warn_on_a_weak_judge_and_block_only_when_configured():
    warned = parse_config({**BASE, "checks": {"enforce": True}})
    outcomes = {o.name: o for o in evaluate_checks("judge_audit", _weak_judge_metadata(), warned)}
    assert {name for name, o in outcomes.items() if not o.passed} == {
        "judge_swap_consistency",
        "judge_position_bias",
        "judge_gold_agreement",
    }
    assert not any(o.blocking or o.refuses_commit for o in outcomes.values())
    assert not any(spec.blocking for spec in check_specs("judge_audit", warned))

    blocking = parse_config({**BASE, "checks": {"enforce": True, "judge_audit_blocking": True}})
    refused = {
        o.name for o in evaluate_checks("judge_audit", _weak_judge_metadata(), blocking) if o.refuses_commit
    }
    assert refused == {"judge_swap_consistency", "judge_position_bias", "judge_gold_agreement"}
    assert all(spec.blocking for spec in check_specs("judge_audit", blocking))

    unmeasured = {"pairs": 0, "train_prompts": 0, "evaluation_only": True}
    assert all(o.passed for o in evaluate_checks("judge_audit", unmeasured, blocking))


def _latest_metadata(instance: dg.DagsterInstance, partition: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("judge_audit"), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"no materialization of judge_audit[{partition}]"
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


def _dump(rows: list[dict]) -> list[str]:
    return sorted(repr(sorted(row.items())) for row in rows)


def _row(benchmark: str, mode: str, metric: str, value: float, n: int) -> dict:
    return {
        "benchmark": benchmark,
        "judge_role": "labeling",
        "judge_ref": "tiny-random",
        "judge_version": "v",
        "mode": mode,
        "metric": metric,
        "value": value,
        "ci_low": 0.0,
        "ci_high": 0.32,
        "n": n,
        "teacher_version": "t",
    }


def test_the_report_has_a_judge_audit_section_that_names_a_weak_judge(tmp_path):
    rows = [
        _row("gsm8k", "pairwise", "swap_consistency", 0.0, 8),
        _row("gsm8k", "pairwise", "position_bias", 0.0, 16),
        _row("gsm8k", "pairwise", "gold_agreement", 0.5, 2),
        _row("gsm8k", "pairwise", "verdict_probability", 1.0, 16),
    ]
    thresholds = audit_thresholds(parse_config(BASE))
    findings = audit_findings(rows, thresholds)
    assert findings == [
        "labeling judge tiny-random on gsm8k (pairwise): same verdict in both orders on 0% of pairs",
        "labeling judge tiny-random on gsm8k (pairwise): the first-shown response wins 0% of verdicts",
        "labeling judge tiny-random on gsm8k (pairwise): prefers the correct response on 50% of gold pairs",
    ]
    scores = [
        {"benchmark": "gsm8k", "model_role": "teacher", "model_version": "t", "metric": "accuracy",
         "value": 0.5, "ci_low": 0.1, "ci_high": 0.9, "n": 4},
    ]  # fmt: skip
    report = render_report(scores, tmp_path, judge_audit=rows, judge_audit_findings=findings)
    section = report.markdown.split("## Judge audit", 1)[1]
    assert "| gsm8k | labeling: `tiny-random` | pairwise | 50% ±16 (n=2) |" in section
    assert "probability 100%" in section and findings[2] in section
