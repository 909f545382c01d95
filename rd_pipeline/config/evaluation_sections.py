"""How the four models are evaluated, the asset-check thresholds, and the judge audit."""

from __future__ import annotations

from pydantic import Field

from rd_pipeline.config.generation_sections import ModelConfig
from rd_pipeline.config.section import Section, share_field

# The four evaluated models: the teacher, the student before training, after SFT and after RL.
MODEL_ROLES = ("teacher", "base_student", "sft_student", "rl_student")


class EvalConfig(Section):
    """How the four models are evaluated. Generation batch sizes are the models' own (``batch_size``)."""

    temperature: float = Field(default=0.0, ge=0, description="0 = greedy")
    max_new_tokens: int = Field(default=256, ge=1, description="longest evaluated response, in tokens")
    judge: ModelConfig | None = Field(
        default=None,
        description="judge of the AlpacaEval comparisons; defaults to the labelling judge (`judge`, else the "
        "teacher). The report warns when it is one of the evaluated models",
    )


class ChecksConfig(Section):
    """Asset-check thresholds. With ``enforce`` a failed check blocks downstream steps; without, it only warns."""

    enforce: bool = Field(default=True, description="a failed check blocks downstream steps; false: it warns")
    min_label_coverage: float = share_field(0.3, "share of prompts that get a label")
    min_mean_vote_share: float = share_field(0.5, "mean majority share, labelled prompts")
    min_gold_label_accuracy: float = share_field(0.5, "labels vs gold, where gold exists")
    min_reward_model_accuracy: float = share_field(
        0.5,
        "the 95% Wilson lower bound of the reward model's held-out pairwise accuracy must exceed "
        "this (0.5: surely better than chance, which needs e.g. 60 of 100 pairs or 9 of 10 right)",
    )
    min_judge_swap_consistency: float = share_field(
        0.6,
        "judge_audit: share of pairs on which each judge gives the same verdict in both orders",
    )
    max_judge_position_bias: float = share_field(
        0.2,
        "judge_audit: how far each judge's share of first-position wins may stray from 0.5",
    )
    min_judge_gold_agreement: float = share_field(
        0.6,
        "judge_audit: where gold exists, share of (correct, incorrect) pairs each judge decides "
        "for the correct response, pairwise and by its ratings",
    )
    max_judge_length_bias: float = share_field(
        0.5,
        "judge_audit: largest Kendall tau-b between a judge's preference and the length difference",
    )
    judge_audit_blocking: bool = Field(
        default=False,
        description="a failed judge_audit check blocks like the other checks (with enforce); false: it warns",
    )


class JudgeAuditConfig(Section):
    """How the judges are audited (``judge_audit``): how many pairs of teacher responses each one judges."""

    max_pairs: int = Field(
        default=8,
        ge=0,
        description="most pairs of teacher responses (to the same training prompt, (correct, incorrect) pairs "
        "first) each judge compares in both orders and rates one by one, per benchmark; 0 audits nothing",
    )
