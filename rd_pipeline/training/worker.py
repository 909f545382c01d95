"""The training process: ``accelerate launch ... -m rd_pipeline.training.worker JOB_DIR`` runs this in every
process of the group. Each process trains its share; the main process writes ``result.json`` and, when the
launch came from Dagster (``PipesSubprocessClient``), reports logs, per-step metrics and the checkpoint through
Dagster Pipes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rd_pipeline.config import LaunchConfig, RewardModelConfig, RlConfig, SftConfig
from rd_pipeline.memory import keep_mmap_threshold_fixed
from rd_pipeline.training.guard import die_with_parent
from rd_pipeline.training.launch import RESULT_FILE, read_job, record_worker_error

TENSORBOARD_DIR_ENV = "TENSORBOARD_LOGGING_DIR"  # where transformers' TensorBoard callback writes
STEP_KEYS = ("loss", "reward", "kl", "accuracy", "grad_norm", "learning_rate")
# What accelerate must have set up for each strategy; ddp runs as MULTI_GPU, MULTI_CPU or NO as it finds.
STRATEGY_DISTRIBUTED_TYPES = {"fsdp2": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def _pipes() -> Iterator[Any]:
    """Dagster Pipes on the main process of a Pipes launch; None otherwise."""
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if not (_is_main_process() and DAGSTER_PIPES_CONTEXT_ENV_VAR in os.environ):
        yield None
        return
    with open_dagster_pipes() as pipes:
        yield pipes


def _step_reporter(pipes: Any):
    """A trainer callback that sends each logged step's metrics to the Dagster log, and the step training
    resumed from when it resumed from saved trainer state."""
    from transformers import TrainerCallback

    class StepReporter(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if pipes is not None and state.is_world_process_zero and state.global_step > 0:
                pipes.log.info(
                    f"resuming from step {state.global_step}/{state.max_steps} (trainer state saved by an "
                    "interrupted run of the same training)"
                )

        def on_log(self, args, state, control, logs=None, **kwargs):
            if pipes is None or not state.is_world_process_zero or not logs or "train_loss" in logs:
                return
            values = {k: round(v, 6) for k in STEP_KEYS if isinstance(v := logs.get(k), int | float)}
            pipes.log.info(f"step {state.global_step}/{state.max_steps}: {json.dumps(values)}")

    return StepReporter()


def check_strategy(launch: LaunchConfig, distributed_type: str) -> None:
    """Fail when accelerate did not set up the launch's strategy instead of training without it: accelerate
    turns an FSDP config into plain DDP (MULTI_CPU) when the processes run on a CPU."""
    expected = None if launch.accelerate_config_file else STRATEGY_DISTRIBUTED_TYPES.get(launch.strategy)
    if expected is None or distributed_type == expected:
        return
    hint = (
        " accelerate shards with FSDP only on GPUs; on a CPU use strategy ddp, zero2 or zero3."
        if launch.strategy == "fsdp2" and distributed_type in ("MULTI_CPU", "NO")
        else ""
    )
    raise RuntimeError(
        f"strategy {launch.strategy} needs accelerate's distributed type {expected}, but the process group "
        f"was set up as {distributed_type}.{hint}"
    )


def _strategy_check(launch: LaunchConfig):
    """A trainer callback that checks the strategy once the trainer has prepared the model, before step 1."""
    from accelerate.state import AcceleratorState
    from transformers import TrainerCallback

    class StrategyCheck(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            check_strategy(launch, str(AcceleratorState().distributed_type).split(".")[-1])

    return StrategyCheck()


def _reporting(settings: dict[str, Any]) -> list[str]:
    """The integrations the trainer reports to (``settings["report_to"]``); TensorBoard writes its event files
    to ``settings["tensorboard_dir"]`` (transformers reads the directory from the environment)."""
    report_to = list(settings.get("report_to") or [])
    if "tensorboard" in report_to and settings.get("tensorboard_dir"):
        os.environ[TENSORBOARD_DIR_ENV] = settings["tensorboard_dir"]
    return report_to


def _train(job: dict[str, Any], callbacks: list[Any]) -> dict[str, Any]:
    """Run the job's trainer (``job["kind"]``: sft, reward_model or rl) on its records and settings."""
    settings, records = job["settings"], job["records"]
    shared = {
        "out_dir": Path(job["out_dir"]),
        "seed": settings["seed"],
        "callbacks": callbacks,
        "report_to": _reporting(settings),
    }
    if job["kind"] == "sft":
        from rd_pipeline.training.base_comparison import JudgeSettings, pairwise_judge
        from rd_pipeline.training.sft import train_sft

        judge = settings.get("judge")
        return train_sft(
            settings["base"],
            records["examples"],
            SftConfig.model_validate(settings["config"]),
            revision=settings.get("revision"),
            validation=records.get("validation", []),
            judge=pairwise_judge(JudgeSettings.from_json(judge), settings["seed"]) if judge else None,
            **shared,
        )
    if job["kind"] == "reward_model":
        from rd_pipeline.training.reward import train_reward_model

        return train_reward_model(
            settings["base"],
            records["train_pairs"],
            records["heldout_pairs"],
            RewardModelConfig.model_validate(settings["config"]),
            revision=settings.get("revision"),
            **shared,
        )
    if job["kind"] == "rl":
        from rd_pipeline.training.rl import train_rl

        return train_rl(
            settings["base"],
            settings["reward_model"],
            records["prompts"],
            RlConfig.model_validate(settings["config"]),
            validation=records.get("validation", []),
            reference=records.get("reference", []),
            **shared,
        )
    raise ValueError(f"unknown training job kind {job['kind']!r}")


def launch_record(launch: LaunchConfig) -> dict[str, Any]:
    """How the group actually ran: processes, machines, strategy, distributed type and backend."""
    from accelerate import PartialState

    state = PartialState()
    return {
        "num_processes": state.num_processes,
        "num_machines": launch.num_machines,
        "strategy": launch.strategy if not launch.accelerate_config_file else None,
        "accelerate_config_file": launch.accelerate_config_file,
        "distributed_type": str(state.distributed_type).split(".")[-1],
        "backend": state.backend,
    }


def _report(pipes: Any, out_dir: Path, metrics: dict[str, Any]) -> None:
    if pipes is None:
        return
    pipes.log.info(f"checkpoint saved to {out_dir}")
    pipes.report_asset_materialization(
        metadata={
            "checkpoint": {"raw_value": str(out_dir), "type": "path"},
            "metrics": {"raw_value": metrics, "type": "json"},
        }
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m rd_pipeline.training.worker JOB_DIR", file=sys.stderr)
        return 2
    die_with_parent()  # end with the launcher: torch starts workers in sessions of their own
    keep_mmap_threshold_fixed()  # freed tensors go back to the OS (see rd_pipeline.memory)
    job_dir = Path(argv[0])
    job = read_job(job_dir)
    launch = LaunchConfig.model_validate(job["launch"])
    with _pipes() as pipes:
        try:
            metrics = _train(job, [_strategy_check(launch), _step_reporter(pipes)])
        except Exception as error:
            record_worker_error(job_dir, error)
            raise
        if _is_main_process():
            metrics["launch"] = launch_record(launch)
            staging = job_dir / (RESULT_FILE + ".partial")
            staging.write_text(json.dumps(metrics, indent=2, default=str))
            staging.rename(job_dir / RESULT_FILE)
            _report(pipes, Path(job["out_dir"]), metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
