"""Experiment tracking: MLflow runs of the trained models, TensorBoard and W&B reports of the trainers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from rd_pipeline.config.section import Section

DEFAULT_MLFLOW_EXPERIMENT = "rd-pipeline"


class MlflowTrackingConfig(Section):
    """MLflow runs of the trained models (through dagster-mlflow; needs the ``tracking`` extra)."""

    enabled: bool = Field(
        default=False,
        description="log every sft_student, reward_model and rl_student materialization as an MLflow run, and "
        "eval_scores to the run of the model it scores",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (a server such as http://127.0.0.1:5000, or a sqlite:/// store); "
        "default: a local SQLite store, RD_HOME/mlflow/mlflow.db, with artifacts under RD_HOME/mlflow/artifacts",
    )
    experiment_name: str = Field(
        default=DEFAULT_MLFLOW_EXPERIMENT, min_length=1, description="the MLflow experiment the runs go to"
    )


class TrackingConfig(Section):
    """Experiment tracking: MLflow runs of the trained models, and the trainers' own TensorBoard / W&B reports.

    Nothing here changes what is trained: no data version or config hash includes this section."""

    mlflow: MlflowTrackingConfig = Field(
        default=MlflowTrackingConfig(), description="MLflow runs; default off"
    )
    # Not "mlflow": the pipeline logs MLflow itself (``mlflow``), one run per model version, so the trainers' own
    # MLflow callback would only make a second, partial run.
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list,
        description="integrations every trainer reports to (TRL ``report_to``): tensorboard (event files under "
        "RD_HOME/tensorboard/<asset>/<version>) and/or wandb (set WANDB_PROJECT, WANDB_API_KEY or "
        "WANDB_MODE=offline in the environment); default: none",
    )

    @model_validator(mode="after")
    def _listed_once(self) -> TrackingConfig:
        if len(set(self.report_to)) != len(self.report_to):
            raise ValueError(f"report_to lists an integration twice: {self.report_to}")
        return self

    def mlflow_uri(self, rd_home: Path) -> str:
        """The tracking URI runs go to: ``mlflow.tracking_uri``, else the SQLite store under ``rd_home``."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(rd_home / 'mlflow' / 'mlflow.db').as_posix()}"
