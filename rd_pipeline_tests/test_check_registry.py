"""Each asset's checks are declared next to its step, and the one registry (``CHECKS``) holds them all, whatever was
imported first."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from rd_pipeline.steps.check_registry import (
    CHECKED_STEP_MODULES,
    CHECKS,
    AssetCheck,
    declare_checks,
    not_empty,
)

CHECKED_ASSETS = [
    "benchmark_prompts",
    "teacher_responses",
    "pseudo_labels",
    "sft_student",
    "student_responses",
    "reward_model",
    "rl_student",
    "eval_scores",
    "judge_audit",
]


def test_a_fresh_interpreter_reading_the_registry_sees_every_assets_checks() -> None:
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from rd_pipeline.steps.check_registry import CHECKS; print(' '.join(CHECKS))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout.split() == CHECKED_ASSETS


@pytest.mark.parametrize("asset", CHECKED_ASSETS)
def test_an_assets_checks_are_declared_in_the_module_of_its_step(asset: str) -> None:
    declaring = [
        name
        for name in CHECKED_STEP_MODULES
        if hasattr(importlib.import_module(name), f"{asset.upper()}_CHECKS")
    ]
    assert len(declaring) == 1, declaring
    module = importlib.import_module(declaring[0])
    assert getattr(module, f"{asset.upper()}_CHECKS") == CHECKS[asset]
    assert any(getattr(step, "__wrapped__", None) for step in vars(module).values()), (
        "no committed step there"
    )
    for check in CHECKS[asset]:
        assert check.evaluate.__module__ in (module.__name__, "rd_pipeline.steps.check_registry"), check.name


def test_checks_declared_outside_the_step_modules_are_refused() -> None:
    check = AssetCheck("not_empty", True, "has rows", not_empty)
    with pytest.raises(ValueError, match="declared in elsewhere.steps, which is not in CHECKED_STEP_MODULES"):
        declare_checks("benchmark_prompts", [check], "elsewhere.steps")
    assert CHECKS["benchmark_prompts"][0].description == "the partition has prompts"
