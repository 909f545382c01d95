"""How the teacher's responses are labelled and paired for the reward model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rd_pipeline.config.section import Section, share_field


class LabelingConfig(Section):
    """How the teacher's responses are labelled (majority vote or judge) and paired for the reward model."""

    min_vote_share: float = share_field(0.5, "share of valid answers the majority answer needs to be a label")
    min_valid_votes: int = Field(
        default=2, ge=1, description="valid (parsable) answers a prompt needs before its vote counts"
    )
    judge_good_score: float = Field(
        default=7.0, description="judge score at or above which a response is good"
    )
    pair_min_score_gap: float = Field(
        default=2.0, ge=0, description="judged prompts: smallest judge-score gap that makes a reward pair"
    )
    max_pairs_per_prompt: int = Field(default=4, ge=1, description="reward pairs kept per prompt")
    pair_policy: Literal["balanced", "random"] = Field(
        default="balanced",
        description=(
            "which (good, bad) pairs become reward pairs. 'balanced': teacher-over-student pairs only as many "
            "as student-over-teacher pairs, plus same-source pairs, alternating chosen-teacher and "
            "chosen-student pairs, so the response's source never predicts the preference. 'random': any "
            "pairs (with a strong teacher and weak student, 'chosen' is then mostly the teacher's)"
        ),
    )
    pair_margin: Literal["vote_share", "none"] = Field(
        default="vote_share",
        description="the margin a pair's preference must be learned with (-log sigmoid(r_chosen - r_rejected - "
        "margin)). 'vote_share': on voted prompts the prompt's majority vote share (how sure its labels are; 0 "
        "when unknown), on judged prompts the judge-score gap / 9. 'none': no margin (plain Bradley-Terry)",
    )
    heldout_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="share of prompts whose pairs are held out of reward training; the reward model validates "
        "on them (best checkpoint, early stop) and its check's Wilson bound counts them",
    )
    judge_max_new_tokens: int = Field(default=256, ge=1, description="longest judge verdict, in tokens")
