"""The whole pipeline's configuration: every section, with the lookups the steps use."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator

from rd_pipeline.config.benchmarks_sections import ALL_BENCHMARKS, BenchmarkConfig
from rd_pipeline.config.evaluation_sections import ChecksConfig, EvalConfig, JudgeAuditConfig
from rd_pipeline.config.generation_sections import ModelConfig, SamplingConfig, StudentSamplingConfig
from rd_pipeline.config.labeling_sections import LabelingConfig
from rd_pipeline.config.section import Section
from rd_pipeline.config.tracking_sections import TrackingConfig
from rd_pipeline.config.training_sections import RewardModelConfig, RlConfig, SftConfig
from rd_pipeline.config.versioning import versioned_value
from rd_pipeline.hashing import short_hash


class AutomationConfig(Section):
    """How often the teacher is observed; a new teacher version re-makes everything downstream."""

    observe_teacher_cron: str = Field(
        default="0 * * * *", description="cron schedule of the teacher observation"
    )
    schedule_running: bool = Field(default=True, description="start the observation schedule switched on")


class PathsConfig(Section):
    """Where the pipeline keeps its state (store, journal, checkpoints)."""

    rd_home: str | None = Field(default=None, description="state directory; defaults to $RD_HOME or ./.rd")


class PipelineConfig(Section):
    """The whole pipeline: models, data, labelling, the three training stages, evaluation and checks."""

    teacher: ModelConfig = Field(description="the model whose responses are distilled")
    student: ModelConfig = Field(description="the base model that is trained (SFT, then RL)")
    judge: ModelConfig | None = Field(
        default=None, description="judge of open-ended responses; defaults to the teacher"
    )
    benchmarks: list[BenchmarkConfig] = Field(
        default_factory=lambda: [BenchmarkConfig(name=name) for name in ALL_BENCHMARKS],
        description="the benchmarks trained and evaluated on; default: all of them",
    )
    sampling: SamplingConfig = Field(
        default=SamplingConfig(), description="how the teacher samples training responses"
    )
    student_sampling: StudentSamplingConfig = Field(
        default=StudentSamplingConfig(),
        description="the student's own sampling settings; unset fields take the teacher's (sampling)",
    )
    labeling: LabelingConfig = Field(default=LabelingConfig(), description="labels and reward pairs")
    sft: SftConfig = Field(default=SftConfig(), description="supervised fine-tuning of the student")
    reward_model: RewardModelConfig = Field(
        default=RewardModelConfig(), description="the reward model trained on preference pairs"
    )
    rl: RlConfig = Field(default=RlConfig(), description="RL of the SFT student against the reward model")
    eval: EvalConfig = Field(default=EvalConfig(), description="evaluation of teacher, base, SFT and RL")
    judge_audit: JudgeAuditConfig = Field(
        default=JudgeAuditConfig(), description="how many response pairs each judge is audited on"
    )
    checks: ChecksConfig = Field(default=ChecksConfig(), description="asset-check thresholds")
    automation: AutomationConfig = Field(default=AutomationConfig(), description="teacher observation")
    paths: PathsConfig = Field(default=PathsConfig(), description="state directories")
    tracking: TrackingConfig = Field(
        default=TrackingConfig(), description="experiment tracking (MLflow, TensorBoard, W&B); default off"
    )

    @model_validator(mode="after")
    def _unique_benchmarks(self) -> PipelineConfig:
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(
                f"benchmarks listed twice: {sorted(n for n in set(names) if names.count(n) > 1)}"
            )
        if not names:
            raise ValueError("at least one benchmark is needed")
        return self

    @model_validator(mode="after")
    def _validation_shares_leave_training_prompts(self) -> PipelineConfig:
        held_out = self.sft.validation_fraction + self.rl.validation_fraction
        if held_out >= 1:
            raise ValueError(
                f"sft.validation_fraction + rl.validation_fraction = {held_out:g} holds out every training prompt "
                "from SFT (the two validation shares are disjoint); their sum must be below 1"
            )
        return self

    @property
    def judge_model(self) -> ModelConfig:
        return self.judge or self.teacher

    @property
    def eval_judge_model(self) -> ModelConfig:
        """The judge of evaluation comparisons: ``eval.judge``, else the labelling judge."""
        return self.eval.judge or self.judge_model

    def student_sampling_settings(self) -> SamplingConfig:
        """The student's sampling: ``student_sampling`` where set, the teacher's ``sampling`` elsewhere."""
        overrides = self.student_sampling.model_dump(exclude_none=True)
        return self.sampling.model_copy(update=overrides)

    @property
    def benchmark_names(self) -> list[str]:
        return [b.name for b in self.benchmarks]

    def benchmark(self, name: str) -> BenchmarkConfig:
        for bench in self.benchmarks:
            if bench.name == name:
                return bench
        raise KeyError(f"benchmark {name!r} is not configured (configured: {self.benchmark_names})")

    def rd_home(self) -> Path:
        return Path(self.paths.rd_home or os.environ.get("RD_HOME") or ".rd").resolve()

    def section_hash(self, *sections: str) -> str:
        """A short stable hash of the named top-level sections (``UNVERSIONED`` fields left out), used in data
        versions."""
        return short_hash({name: versioned_value(getattr(self, name)) for name in sections})
