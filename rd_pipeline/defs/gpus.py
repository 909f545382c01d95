"""Heavy steps run on GPUs claimed for them (``rd_pipeline.placement``); the `gpu` pool is sized to the machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.placement import claim_gpus, pool_slots, step_gpus

GPU_POOL = "gpu"
GPUS_TAG = "rd/gpus"
K8S_CONFIG_TAG = "dagster-k8s/config"


def gpu_op_tags(asset: str, config: PipelineConfig) -> dict[str, Any]:
    """Op tags declaring the GPUs a heavy step needs under ``config``.

    ``rd/gpus`` is the count; with one or more, ``dagster-k8s/config`` asks Kubernetes for that many
    ``nvidia.com/gpu`` for the step's pod (read by dagster-k8s's executor, ignored elsewhere).
    """
    need = step_gpus(asset, config)
    tags: dict[str, Any] = {GPUS_TAG: str(need)}
    if need:
        gpus = {"nvidia.com/gpu": str(need)}
        tags[K8S_CONFIG_TAG] = {"container_config": {"resources": {"requests": gpus, "limits": gpus}}}
    return tags


@contextmanager
def placed(context: dg.AssetExecutionContext, config: PipelineConfig) -> Iterator[str | None]:
    """Hold the GPUs the step needs while it runs; yields where it runs ("GPU 0,1", "cpu") or None if light."""
    asset = context.asset_key.to_user_string()
    label = f"{asset}[{context.partition_key}]" if context.has_partition_key else asset
    need = step_gpus(asset, config)
    with claim_gpus(need, config.rd_home(), label=label) as devices:
        if not need:
            yield None
            return
        where = f"GPU {','.join(devices)}" if devices else "cpu"
        context.log.info(f"{label} needs {need} GPU(s); runs on {where}")
        yield where


def size_gpu_pool(instance: dg.DagsterInstance) -> int:
    """Let as many heavy steps run at once as the machine has GPUs (at least one); returns the limit."""
    slots = pool_slots()
    storage = instance.event_log_storage
    if storage.get_concurrency_info(GPU_POOL).slot_count != slots:
        storage.set_concurrency_slots(GPU_POOL, slots)
    return slots
