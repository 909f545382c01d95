"""Evaluation: accuracy and win rates with 95% intervals, length-controlled win rate, the report."""

from rd_pipeline.evaluation.length_control import length_controlled_win_rate
from rd_pipeline.evaluation.metrics import (
    Estimate,
    accuracy,
    breakdown,
    difference_interval,
    surpass_summary,
    wilson_interval,
    win_rate,
)
from rd_pipeline.evaluation.report import MODEL_ROLES, Report, render_report
from rd_pipeline.evaluation.report_tables import format_table

__all__ = [
    "MODEL_ROLES",
    "Estimate",
    "Report",
    "accuracy",
    "breakdown",
    "difference_interval",
    "format_table",
    "length_controlled_win_rate",
    "render_report",
    "surpass_summary",
    "wilson_interval",
    "win_rate",
]
