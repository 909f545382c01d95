"""rd-pipeline on Kubernetes: the same asset graph, each step its own pod through dagster-k8s.

Load with ``dagster dev -f examples/k8s/definitions.py`` (or a code location in a Dagster Helm deployment) after
``pip install 'rd-pipeline[k8s]'``. The asset graph, resources and automation are rd-pipeline's own
(``rd_pipeline.defs``); this file only adds the executor. Heavy steps already carry a ``dagster-k8s/config`` op
tag asking for the ``nvidia.com/gpu`` count their step needs under the loaded config (see
``rd_pipeline.defs.gpus.gpu_op_tags``), which the executor below turns into each step pod's resource requests.

The cluster-specific names (namespace, image, the RD_HOME volume claim, the config map with RD_CONFIG and the
secret with API keys and the PostgreSQL URL) come from environment variables so that nothing here names a real
cluster; the defaults match the manifests in this folder.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_k8s import k8s_job_executor

from rd_pipeline.defs import build_definitions

RD_HOME = "/rd-home"  # the shared volume every step pod mounts: rd.duckdb, journal, models, reports

STEP_POD_SETTINGS = {
    "job_namespace": os.environ.get("RD_K8S_NAMESPACE", "rd-pipeline"),
    "job_image": os.environ.get("RD_K8S_IMAGE", "registry.example.com/rd-pipeline:latest"),
    "image_pull_policy": "IfNotPresent",
    "env_config_maps": ["rd-pipeline-config"],  # RD_CONFIG / RD_PRESET, RD_HOME, DAGSTER_HOME
    "env_secrets": ["rd-pipeline-secrets"],  # OPENAI_API_KEY, RD_DAGSTER_POSTGRES_URL
    "volumes": [
        {"name": "rd-home", "persistentVolumeClaim": {"claimName": os.environ.get("RD_K8S_PVC", "rd-home")}}
    ],
    "volume_mounts": [{"name": "rd-home", "mountPath": RD_HOME}],
    "max_concurrent": int(os.environ.get("RD_K8S_MAX_CONCURRENT", "8")),
    # Every step pod: CPU and memory; GPU steps add nvidia.com/gpu from their own dagster-k8s/config op tag.
    "step_k8s_config": {
        "container_config": {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}}},
        "pod_spec_config": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        },
    },
}

defs = dg.Definitions.merge(
    build_definitions(),
    dg.Definitions(executor=k8s_job_executor.configured(STEP_POD_SETTINGS, name="rd_k8s_steps")),
)
