"""examples/k8s: its definitions load with the k8s executor, heavy steps ask for their GPUs through op tags, and its
instance and executor settings are valid for dagster-k8s. Nothing here talks to a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed (pip install 'rd-pipeline[k8s]')")

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "k8s"

# Loads the example's definitions in a fresh process (op tags are computed from the config at import) and prints
# the executor, each asset's GPU tags as dagster-k8s reads them, and the config errors of the executor settings.
PROBE = textwrap.dedent(
    """
    import importlib.util, json
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor
    from dagster_k8s.job import get_user_defined_k8s_config

    spec = importlib.util.spec_from_file_location("rd_k8s_definitions", "examples/k8s/definitions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    job = module.defs.resolve_implicit_global_asset_job_def()
    gpus = {}
    for asset in module.defs.assets:
        tags = asset.op.tags
        limits = get_user_defined_k8s_config(tags).container_config.get("resources", {}).get("limits", {})
        gpus[asset.key.to_user_string()] = [tags.get("rd/gpus"), limits.get("nvidia.com/gpu")]
    checked = validate_config(k8s_job_executor.config_schema.config_type, module.STEP_POD_SETTINGS)
    print(json.dumps({
        "executor": job.executor_def.name,
        "assets": len(job.asset_layer.executable_asset_keys),
        "gpus": gpus,
        "executor_errors": [error.message for error in checked.errors or []],
    }))
    """
)


def load_example(config_file: Path) -> dict:
    env = dict(os.environ, RD_CONFIG=str(config_file), RD_HOME=str(config_file.parent / "rd"))
    env.pop("RD_PRESET", None)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    return json.loads(probe.stdout.strip().splitlines()[-1])


def test_definitions_load_with_gpu_requests_per_asset(tmp_path: Path) -> None:
    config_file = tmp_path / "k8s.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "teacher": {
                    "ref": "big",
                    "backend": "openai",
                    "api": {"base_urls": ["http://a/v1", "http://b/v1"]},
                },
                "student": {"ref": "tiny-random"},
                "sft": {"launch": {"num_processes": 4}},
                "reward_model": {"launch": {"num_processes": 2}},
            }
        )
    )
    loaded = load_example(config_file)
    assert loaded["executor"] == "rd_k8s_steps" and loaded["executor_errors"] == []
    assert loaded["assets"] == 12  # the whole graph, the observable teacher included
    assert loaded["gpus"] == {
        "benchmark_prompts": [None, None],
        "teacher": [None, None],
        "teacher_responses": ["0", None],  # the teacher is served elsewhere: its pod asks for no GPU
        "pseudo_labels": [None, None],
        "judge_audit": ["0", None],  # its judges default to the teacher, served elsewhere too
        "sft_student": ["4", "4"],
        "student_responses": ["1", "1"],
        "reward_labels": [None, None],
        "reward_model": ["2", "2"],
        "rl_student": ["1", "1"],
        "eval_scores": ["1", "1"],
        "report": [None, None],
    }


def test_instance_config_is_valid_for_dagster_k8s() -> None:
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres.storage import DagsterPostgresStorage

    settings = {"RD_DAGSTER_POSTGRES_URL": "postgresql+psycopg2://u@h/d", "RD_K8S_NAMESPACE": "n"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**settings, "RD_K8S_IMAGE": "i"}.items():
            patch.setenv(name, value)
        config, _ = dagster_instance_config(str(EXAMPLE), "dagster.yaml")
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    launcher = validate_config(K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert launcher.success, [error.message for error in launcher.errors]
    storage = validate_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert storage.success, [error.message for error in storage.errors]
    # The manifests name what the definitions and the instance refer to.
    kinds = {
        (d["kind"], d["metadata"]["name"])
        for d in yaml.safe_load_all((EXAMPLE / "manifests.yaml").read_text())
    }
    assert {("PersistentVolumeClaim", "rd-home"), ("ConfigMap", "rd-pipeline-config")} <= kinds
    assert {("Secret", "rd-pipeline-secrets"), ("ServiceAccount", "rd-pipeline")} <= kinds
