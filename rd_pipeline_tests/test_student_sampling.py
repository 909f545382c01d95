"""Student sampling has its own n and temperatures; the teacher's version does not depend on them."""

from __future__ import annotations

import json

import pytest

from rd_pipeline.config import ConfigError, parse_config
from rd_pipeline.models import ensure_tiny_random
from rd_pipeline.steps.check_registry import evaluate_checks
from rd_pipeline.steps.checkpoints import LINEAGE_FILE, checkpoint_dir
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.prompts import make_benchmark_prompts
from rd_pipeline.steps.student_responses import make_student_responses
from rd_pipeline.steps.teacher import version_from_identity

TEACHER_SAMPLING = {"n": 2, "temperatures": [1.0], "max_new_tokens": 4, "top_p": 0.9, "seed": 3}


def _config(rd_home, student_sampling: dict | None = None):
    data = {
        "teacher": {"ref": "tiny-random"},
        "student": {"ref": "tiny-random"},
        "benchmarks": [{"name": "gsm8k", "train_size": 2, "eval_size": 1}],
        "sampling": TEACHER_SAMPLING,
        "paths": {"rd_home": str(rd_home)},
    }
    if student_sampling is not None:
        data["student_sampling"] = student_sampling
    return parse_config(data)


def test_student_sampling_defaults_to_the_teachers_field_by_field(tmp_path):
    assert _config(tmp_path).student_sampling_settings() == _config(tmp_path).sampling
    student = _config(tmp_path, {"n": 30, "temperatures": [0.6, 1.2]}).student_sampling_settings()
    assert (student.n, student.temperatures) == (30, [0.6, 1.2])
    assert (student.max_new_tokens, student.top_p, student.seed) == (4, 0.9, 3)


def test_bad_student_sampling_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="student_sampling.n"):
        _config(tmp_path, {"n": 0})


def test_teacher_version_ignores_student_sampling(tmp_path):
    identity = {"backend": "transformers", "model": "m"}
    plain = version_from_identity(identity, _config(tmp_path))
    assert plain == version_from_identity(identity, _config(tmp_path, {"n": 30, "temperatures": [0.5]}))
    teacher_changed = _config(tmp_path).model_copy(
        update={"sampling": _config(tmp_path).sampling.model_copy(update={"n": 3})}
    )
    assert plain != version_from_identity(identity, teacher_changed)


def _fake_sft_checkpoint(ctx: StepContext) -> None:
    """A real (tiny random) checkpoint registered as the latest sft_student."""
    target = checkpoint_dir(ctx, "sft_student", "sft1")
    ensure_tiny_random(target)
    (target / LINEAGE_FILE).write_text(json.dumps({"asset": "sft_student", "version": "sft1"}))
    ctx.record_version("sft_student", "", "sft1", "teacher-v1")


def test_student_responses_use_student_sampling(tmp_path):
    config = _config(tmp_path, {"n": 3, "temperatures": [0.5, 0.9]})
    ctx = StepContext(config)
    make_benchmark_prompts(ctx, "gsm8k")
    _fake_sft_checkpoint(ctx)
    result = make_student_responses(ctx, "gsm8k")
    rows = ctx.store.read("student_responses", "gsm8k")
    assert len(rows) == result.metadata["rows"] == 2 * 3 * 2
    assert sorted({r["temperature"] for r in rows}) == [0.5, 0.9]
    assert {r["sample_index"] for r in rows} == {0, 1, 2}
    assert all(o.passed for o in evaluate_checks("student_responses", result.metadata, config))
    # Only the student's sampling changes: a new student_responses version (new samples), same teacher version.
    more = _config(tmp_path, {"n": 4, "temperatures": [0.5, 0.9]})
    again = make_student_responses(StepContext(more), "gsm8k")
    assert again.metadata["rows"] == 2 * 4 * 2
    assert again.metadata["samples_from_journal"] == 2 * 3 * 2  # the first three samples are reused
    assert again.data_version != result.data_version
    identity = {"backend": "transformers", "model": "m"}
    assert version_from_identity(identity, more) == version_from_identity(identity, config)
