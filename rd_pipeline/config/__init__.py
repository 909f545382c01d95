"""The pipeline's one configuration: a pydantic model loaded from YAML or a named preset.

The sections live in modules by theme (``generation``, ``benchmarks``, ``labeling``, ``training``,
``evaluation``, ``tracking``, ``pipeline``); ``loading`` reads files and presets, ``versioning`` says what data
versions hash. Every public name is importable from here.
"""

from rd_pipeline.config.benchmarks_sections import (
    ALL_BENCHMARKS,
    DEFAULT_EVAL_SIZE,
    DEFAULT_TRAIN_SIZE,
    EVAL_ONLY_BENCHMARKS,
    EVALUATED_IN_FULL,
    OPEN_ENDED_BENCHMARKS,
    BenchmarkConfig,
    InstructionSourceConfig,
)
from rd_pipeline.config.evaluation_sections import MODEL_ROLES, ChecksConfig, EvalConfig, JudgeAuditConfig
from rd_pipeline.config.generation_sections import (
    DEFAULT_BASE_URL,
    SAMPLING_FIELDS_SENT,
    ApiConfig,
    ModelConfig,
    SamplingConfig,
    StudentSamplingConfig,
    VllmConfig,
)
from rd_pipeline.config.labeling_sections import LabelingConfig
from rd_pipeline.config.loading import (
    PRESETS_DIR,
    load_config,
    load_preset,
    parse_config,
    preset_names,
    resolve_config,
)
from rd_pipeline.config.pipeline import AutomationConfig, PathsConfig, PipelineConfig
from rd_pipeline.config.section import ConfigError, Section
from rd_pipeline.config.tracking_sections import (
    DEFAULT_MLFLOW_EXPERIMENT,
    MlflowTrackingConfig,
    TrackingConfig,
)
from rd_pipeline.config.training_sections import (
    TRAINING_STRATEGIES,
    EpochTrainerConfig,
    LaunchConfig,
    LoraConfig,
    RewardModelConfig,
    RewardSourceConfig,
    RlConfig,
    SftConfig,
    TrainerConfig,
)
from rd_pipeline.config.versioning import UNVERSIONED, versioned_dump

__all__ = [
    "ALL_BENCHMARKS",
    "DEFAULT_BASE_URL",
    "DEFAULT_EVAL_SIZE",
    "DEFAULT_MLFLOW_EXPERIMENT",
    "DEFAULT_TRAIN_SIZE",
    "EVALUATED_IN_FULL",
    "EVAL_ONLY_BENCHMARKS",
    "MODEL_ROLES",
    "OPEN_ENDED_BENCHMARKS",
    "PRESETS_DIR",
    "SAMPLING_FIELDS_SENT",
    "TRAINING_STRATEGIES",
    "UNVERSIONED",
    "ApiConfig",
    "AutomationConfig",
    "BenchmarkConfig",
    "ChecksConfig",
    "ConfigError",
    "EpochTrainerConfig",
    "EvalConfig",
    "InstructionSourceConfig",
    "JudgeAuditConfig",
    "LabelingConfig",
    "LaunchConfig",
    "LoraConfig",
    "MlflowTrackingConfig",
    "ModelConfig",
    "PathsConfig",
    "PipelineConfig",
    "RewardModelConfig",
    "RewardSourceConfig",
    "RlConfig",
    "SamplingConfig",
    "Section",
    "SftConfig",
    "StudentSamplingConfig",
    "TrackingConfig",
    "TrainerConfig",
    "VllmConfig",
    "load_config",
    "load_preset",
    "parse_config",
    "preset_names",
    "resolve_config",
    "versioned_dump",
]
