"""The tables of ``rd.duckdb``: each table's columns and DuckDB types, and the Arrow schema rows are written with."""

from __future__ import annotations

import pyarrow as pa


def _response_columns(version_column: str) -> dict[str, str]:
    """Sampled responses: one row per (prompt, temperature, sample index), with the version of the model."""
    return {
        "benchmark": "VARCHAR",
        "prompt_id": "VARCHAR",
        "temperature": "DOUBLE",
        "sample_index": "INTEGER",
        "response": "VARCHAR",
        "input_tokens": "INTEGER",
        "output_tokens": "INTEGER",
        version_column: "VARCHAR",
    }


def _validation_columns(version_column: str) -> dict[str, str]:
    """A validation curve: the greedy answers to a stage's held-out prompts at one step, for one benchmark."""
    return {
        "benchmark": "VARCHAR",
        version_column: "VARCHAR",
        "step": "INTEGER",
        "agreement": "DOUBLE",  # greedy answers that equal the vote label, over labelled prompts
        "agreement_n": "INTEGER",
        # open-ended prompts (SFT): the judge's preference of the greedy answer over the base student's, both
        # orders, ties and disagreeing orders as half; 0.5 at step 0 (the base student) by construction
        "win_rate": "DOUBLE",
        "win_n": "INTEGER",
        "gold_accuracy": "DOUBLE",  # a monitor only, never used for selection
        "gold_n": "INTEGER",
        "mean_reward": "DOUBLE",  # the reward model's raw score (RL only)
        "mean_length": "DOUBLE",
        "kl": "DOUBLE",  # mean training KL to the SFT student since the previous validation (RL only)
        "prompts": "INTEGER",
        "selected": "BOOLEAN",
    }


# Every table has a `benchmark` column (the partition key) except where noted.
SCHEMAS: dict[str, dict[str, str]] = {
    "benchmark_prompts": {
        "benchmark": "VARCHAR",
        "prompt_id": "VARCHAR",
        "split": "VARCHAR",
        "question": "VARCHAR",
        "prompt": "VARCHAR",
        "gold": "VARCHAR",
        "reference": "VARCHAR",
        "meta": "VARCHAR",
        "data_version": "VARCHAR",
    },
    "teacher_responses": _response_columns("teacher_version"),
    "pseudo_labels": {
        "benchmark": "VARCHAR",
        "prompt_id": "VARCHAR",
        "temperature": "DOUBLE",
        "sample_index": "INTEGER",
        "extracted_answer": "VARCHAR",
        "prompt_answer": "VARCHAR",
        "vote_share": "DOUBLE",
        "valid_votes": "INTEGER",
        "judge_score": "DOUBLE",
        "prompt_labelled": "BOOLEAN",
        "good": "BOOLEAN",
        "teacher_version": "VARCHAR",
        "label_version": "VARCHAR",
    },
    "student_responses": _response_columns("student_version"),
    "reward_labels": {
        "benchmark": "VARCHAR",
        "prompt_id": "VARCHAR",
        "source": "VARCHAR",
        "temperature": "DOUBLE",
        "sample_index": "INTEGER",
        "response": "VARCHAR",
        "good": "BOOLEAN",
        "judge_score": "DOUBLE",
        "label_version": "VARCHAR",
    },
    "reward_pairs": {
        "benchmark": "VARCHAR",
        "prompt_id": "VARCHAR",
        "prompt": "VARCHAR",
        "chosen": "VARCHAR",
        "rejected": "VARCHAR",
        "margin": "DOUBLE",
        "split": "VARCHAR",
        "label_version": "VARCHAR",
    },
    "eval_responses": {
        "benchmark": "VARCHAR",
        "model_role": "VARCHAR",
        "model_version": "VARCHAR",
        "prompt_id": "VARCHAR",
        "response": "VARCHAR",
        "correct": "BOOLEAN",
        "preference": "DOUBLE",
        "reward_score": "DOUBLE",
    },
    "eval_scores": {
        "benchmark": "VARCHAR",
        "model_role": "VARCHAR",
        "model_version": "VARCHAR",
        "metric": "VARCHAR",
        "value": "DOUBLE",
        "ci_low": "DOUBLE",
        "ci_high": "DOUBLE",
        "n": "INTEGER",
        "eval_key": "VARCHAR",  # the hash of everything the score depends on (rd_pipeline.evaluation.key)
        "eval_key_parts": "VARCHAR",  # JSON: those parts
    },
    "eval_breakdown": {
        "benchmark": "VARCHAR",
        "model_role": "VARCHAR",
        "group_kind": "VARCHAR",
        "group": "VARCHAR",
        "value": "DOUBLE",
        "n": "INTEGER",
    },
    # One row per audited judge (its role: labeling or eval), mode (pairwise, pointwise) and metric.
    "judge_audit": {
        "benchmark": "VARCHAR",
        "judge_role": "VARCHAR",
        "judge_ref": "VARCHAR",
        "judge_version": "VARCHAR",
        "mode": "VARCHAR",
        "metric": "VARCHAR",
        "value": "DOUBLE",
        "ci_low": "DOUBLE",
        "ci_high": "DOUBLE",
        "n": "INTEGER",
        "teacher_version": "VARCHAR",
    },
    # Validation curves: one row per validation and benchmark of an sft_student version (step 0 is the base
    # student) and of an rl_student version (step 0 is the SFT student).
    "sft_validation": _validation_columns("sft_version"),
    "rl_validation": _validation_columns("rl_version"),
    # RL rollouts: one row per completion sampled in training (as many per step as rl.log_rollouts keeps).
    "rl_rollouts": {
        "benchmark": "VARCHAR",
        "rl_version": "VARCHAR",
        "step": "INTEGER",
        "prompt_id": "VARCHAR",
        "completion": "VARCHAR",
        "reward_model": "DOUBLE",  # standardised reward-model score
        "vote_agreement": "DOUBLE",
        "reward": "DOUBLE",  # the weighted sum of the sources
        "advantage": "DOUBLE",
        "length": "INTEGER",
        "truncated": "BOOLEAN",
    },
    "generation_usage": {
        "benchmark": "VARCHAR",
        "asset": "VARCHAR",
        "run_id": "VARCHAR",
        "model_version": "VARCHAR",
        "samples_generated": "INTEGER",
        "samples_from_journal": "INTEGER",
        "input_tokens": "BIGINT",
        "output_tokens": "BIGINT",
        "cost_usd": "DOUBLE",
        "recorded_at": "TIMESTAMP",
    },
    "asset_versions": {
        "benchmark": "VARCHAR",  # '' for unpartitioned assets
        "asset": "VARCHAR",
        "data_version": "VARCHAR",
        "run_id": "VARCHAR",
        "teacher_version": "VARCHAR",
        "upstream": "VARCHAR",  # JSON: upstream asset/partition -> {data_version, run_id}
        "recorded_at": "TIMESTAMP",
    },
    # Not partitioned: money spent per API endpoint and model, one row per answered request (imported from
    # the journals, where each is written with the samples it paid for), and the resets of that spend.
    "api_spend": {
        "endpoint": "VARCHAR",
        "model": "VARCHAR",
        "entry_id": "VARCHAR",
        "label": "VARCHAR",  # which step and run spent it
        "input_tokens": "BIGINT",
        "output_tokens": "BIGINT",
        "cost_usd": "DOUBLE",
        "recorded_at": "TIMESTAMP",
    },
    "api_spend_resets": {
        "endpoint": "VARCHAR",
        "model": "VARCHAR",
        "spent_usd": "DOUBLE",  # what had been spent since the previous reset
        "reset_at": "TIMESTAMP",
    },
}

ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "DOUBLE": pa.float64(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
}
ARROW_SCHEMAS = {
    table: pa.schema([(name, ARROW_TYPES[kind]) for name, kind in columns.items()])
    for table, columns in SCHEMAS.items()
}
