"""The rd command's own logic: run planning, selection errors, and messages when nothing exists yet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from rd_pipeline.cli import main
from rd_pipeline.defs import build_definitions
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.defs.run import plan_runs
from rd_pipeline.generation.journal import Journal, JournalCorruptError
from rd_pipeline.store import Store


def test_runs_group_partitioned_assets_per_partition():
    runs = plan_runs(
        build_definitions(PipelineResource(preset="tiny")),
        ["benchmark_prompts", "teacher_responses", "sft_student", "eval_scores", "report"],
        ["gsm8k", "mmlu_pro"],
    )
    assert runs == [
        (["benchmark_prompts", "teacher_responses"], "gsm8k"),
        (["benchmark_prompts", "teacher_responses"], "mmlu_pro"),
        (["sft_student"], None),
        (["eval_scores"], "gsm8k"),
        (["eval_scores"], "mmlu_pro"),
        (["report"], None),
    ]


def test_unknown_asset_is_refused():
    with pytest.raises(ValueError, match=r"unknown asset\(s\) \['teacher_answers'\]"):
        plan_runs(build_definitions(PipelineResource(preset="tiny")), ["teacher_answers"], ["gsm8k"])


def test_report_and_lineage_before_any_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("RD_HOME", str(tmp_path))
    assert main(["report", "--preset", "tiny"]) == 1
    assert "no eval scores yet" in capsys.readouterr().err
    assert main(["lineage", "rl_student", "--preset", "tiny"]) == 1
    assert "no materialization of rl_student" in capsys.readouterr().err


def test_bad_config_exits_2_with_the_field(tmp_path: Path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("teacher: {ref: tiny-random}\n")
    assert main(["report", "--config", str(path)]) == 2
    assert "student: Field required" in capsys.readouterr().err


def test_shipped_instance_config_matches_the_one_rd_installs():
    root = Path(__file__).resolve().parents[1]
    packaged = root / "rd_pipeline" / "defs" / "dagster_instance.yaml"
    assert (root / "dagster.yaml").read_text() == packaged.read_text()
    assert "pools" in packaged.read_text() and "run_retries" in packaged.read_text()


# ------------------------------------------------------------------------------------------ failures, one line


def _one_line(err: str) -> str:
    """The only line `rd` printed to stderr (Dagster's beta notices aside)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "Stack Trace" not in err, err
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--select", "benchmark_prompts,teacher_answers", "unknown asset 'teacher_answers' in --select"),
        ("--partition", "gsm8", "unknown partition 'gsm8' in --partition (did you mean gsm8k?)"),
    ],
)
def test_misspelled_name_exits_2_before_the_teacher_is_observed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, option: str, value: str, expected: str
):
    monkeypatch.setenv("RD_HOME", str(tmp_path))
    assert main(["materialize", "--preset", "tiny", option, value]) == 2
    assert expected in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "dagster").exists()  # no Dagster instance, no observation, no model


def test_unset_api_key_variable_exits_2_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    api = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "RD_TEST_KEY_NOT_SET"}
    config = tmp_path / "api.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "teacher": {"ref": "api-teacher", "backend": "openai", "api": api},
                "student": {"ref": "tiny-random"},
                "benchmarks": [{"name": "gsm8k", "source": "builtin", "train_size": 2, "eval_size": 1}],
            }
        )
    )
    monkeypatch.setenv("RD_HOME", str(tmp_path / "rd"))
    monkeypatch.delenv("RD_TEST_KEY_NOT_SET", raising=False)
    assert main(["materialize", "--config", str(config)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "teacher.api.api_key_env names $RD_TEST_KEY_NOT_SET, which is not set" in line
    assert not (tmp_path / "rd" / "dagster").exists()


def test_damaged_database_fails_in_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.setenv("RD_HOME", str(tmp_path))
    database = tmp_path / "rd.duckdb"
    database.write_bytes(b"\0not a database\0" * 512)
    damaged = database.read_bytes()
    for command in (
        ["materialize", "--preset", "tiny", "--select", "benchmark_prompts", "--partition", "gsm8k"],
        ["report", "--preset", "tiny"],
        ["lineage", "rl_student", "--preset", "tiny"],
    ):
        assert main(command) == 1, command
        line = _one_line(capsys.readouterr().err)
        assert f"rd: {database} is not a readable DuckDB database" in line
        assert "`rd rebuild`" in line
    assert database.read_bytes() == damaged
    assert not (tmp_path / "dagster").exists() and not (tmp_path / "journal").exists()


def test_damaged_journal_fails_in_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("RD_HOME", str(tmp_path))
    journal = tmp_path / "journal" / "0123456789abcdef.sqlite"
    journal.parent.mkdir()
    journal.write_bytes(b"garbage" * 1000)
    assert main(["materialize", "--preset", "tiny", "--select", "benchmark_prompts"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert f"rd: {journal} is not a readable generation journal" in line and "Move it aside" in line
    assert not (tmp_path / "dagster").exists() and not (tmp_path / "rd.duckdb").exists()
    with pytest.raises(JournalCorruptError, match="file is not a database"):
        Journal(journal)  # what a step opening it meets


def _rd(*args: str, rd_home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RD_CONFIG", "RD_PRESET", "DAGSTER_HOME")}
    env.update(RD_HOME=str(rd_home), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "rd_pipeline.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _tiny_config(path: Path, **sections: object) -> Path:
    config = {
        "teacher": {"ref": "tiny-random"},
        "student": {"ref": "tiny-random"},
        "benchmarks": [{"name": "gsm8k", "source": "builtin", "train_size": 4, "eval_size": 2}],
        "sampling": {"n": 2, "temperatures": [1.0], "max_new_tokens": 8, "seed": 0},
        "labeling": {"min_vote_share": 0.0, "min_valid_votes": 1},
        "sft": {"max_steps": 1, "batch_size": 2, "max_length": 256},
        "reward_model": {"max_steps": 1, "batch_size": 2, "max_length": 256},
        "rl": {"max_steps": 1, "batch_size": 2, "num_generations": 2, "max_completion_length": 8},
        "eval": {"max_new_tokens": 8},
        **sections,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_failed_step_ends_with_one_line_naming_asset_partition_cause_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Each prompt has 2 samples and needs 3 valid votes: no prompt can get a label, whatever the model samples, so
    # label_coverage fails (coverage 0) on every machine, and gold_label_accuracy (nothing labelled) passes.
    config = _tiny_config(
        tmp_path / "strict.yaml",
        labeling={"min_vote_share": 0.0, "min_valid_votes": 3},
        checks={"enforce": True},
    )
    select = "benchmark_prompts,teacher_responses,pseudo_labels"
    result = _rd("materialize", "--config", str(config), "--select", select, rd_home=tmp_path / "rd")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Stack Trace" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("rd: pseudo_labels[gsm8k]: check label_coverage failed (coverage=0.0,")
    assert "nothing was stored" in last
    log = Path(last.rsplit("(full log: ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "rd" / "logs"
    assert "Stack Trace" in log.read_text() and "label_coverage" in log.read_text()
    # The UI still shows which check failed, though nothing was materialized.
    check = dg.AssetCheckKey(dg.AssetKey("pseudo_labels"), "label_coverage")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "rd" / "dagster"))
    with dg.DagsterInstance.from_config(str(tmp_path / "rd" / "dagster")) as instance:
        history = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
    assert history and history[0].evaluation is not None and history[0].evaluation.passed is False


@pytest.mark.slow  # two materializations of a one-benchmark graph: about 2 minutes on 2 cores
def test_rebuild_remakes_every_table_from_the_journal_and_checkpoints(tmp_path: Path):
    rd_home = tmp_path / "rd"
    config = _tiny_config(tmp_path / "c.yaml", checks={"enforce": False})
    first = _rd("materialize", "--config", str(config), "--log-level", "WARNING", rd_home=rd_home)
    assert first.returncode == 0, first.stderr[-3000:]
    store = Store(rd_home / "rd.duckdb")
    tables = {
        t: store.read(t) for t in ("benchmark_prompts", "teacher_responses", "pseudo_labels", "eval_scores")
    }
    lineage = store.latest_version("rl_student")["data_version"]
    checkpoints = sorted(p.relative_to(rd_home) for p in (rd_home / "models").glob("*/*"))
    (rd_home / "rd.duckdb").write_bytes(b"damaged" * 4096)

    rebuilt = _rd("rebuild", "--config", str(config), "--log-level", "WARNING", rd_home=rd_home)

    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "0 generated; every checkpoint reused" in rebuilt.stdout
    assert sum(row["samples_generated"] for row in store.read("generation_usage")) == 0
    assert {t: store.read(t) for t in tables} == tables
    assert store.latest_version("rl_student")["data_version"] == lineage
    assert sorted(p.relative_to(rd_home) for p in (rd_home / "models").glob("*/*")) == checkpoints
    assert len(list(rd_home.glob("rd.duckdb.replaced-*"))) == 1


def test_external_process_failure_is_named_by_its_own_error(tmp_path: Path):
    """A step whose Dagster Pipes subprocess (as a training job is) fails: the line names the child's error, and
    the log file holds the child's traceback."""
    from rd_pipeline.defs.logs import materialize_logged, step_failure

    script = tmp_path / "job.py"
    script.write_text(
        "from dagster_pipes import open_dagster_pipes\n"
        "with open_dagster_pipes():\n"
        "    raise ValueError('num_samples should be a positive integer value, but got num_samples=0')\n"
    )

    @dg.asset
    def sft_student(context):  # noqa: ANN001 (Dagster reads the annotation, which postponed evaluation hides)
        command = [sys.executable, str(script)]
        return dg.PipesSubprocessClient().run(command=command, context=context).get_materialize_result()

    log = tmp_path / "run.log"
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize_logged([sft_student], ["sft_student"], None, instance, {}, {}, {}, log)
        from rd_pipeline.defs.logs import record_failure

        record_failure(result, instance, log)
        line = step_failure(result, instance).line(log)
    assert (
        line.startswith("rd: sft_student failed: ") and "got num_samples=0 (in its external process)" in line
    )
    assert 'job.py", line 3' in log.read_text()


def test_materialize_order_is_the_topological_order_of_the_graph():
    from rd_pipeline.defs.run import materialization_order

    assert materialization_order(build_definitions(PipelineResource(preset="tiny"))) == [
        ("benchmark_prompts", True),
        ("teacher_responses", True),
        ("pseudo_labels", True),
        ("judge_audit", True),
        ("sft_student", False),
        ("student_responses", True),
        ("reward_labels", True),
        ("reward_model", False),
        ("rl_student", False),
        ("eval_scores", True),
        ("report", False),
    ]


def _one_benchmark_config(tmp_path: Path) -> Path:
    from rd_pipeline.config import PRESETS_DIR

    data = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    data["benchmarks"] = [{"name": "gsm8k", "source": "builtin", "train_size": 8, "eval_size": 4}]
    data["paths"] = {"rd_home": str(tmp_path / "rd_home")}
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_partitions_and_plan_come_from_the_config_the_definitions_are_built_with(tmp_path, monkeypatch):
    monkeypatch.setenv("RD_PRESET", "tiny")  # the environment names another config: it must not be used
    monkeypatch.delenv("RD_CONFIG", raising=False)
    definitions = build_definitions(PipelineResource(config_file=str(_one_benchmark_config(tmp_path))))
    partitions = definitions.resolve_assets_def("teacher_responses").partitions_def
    assert partitions.get_partition_keys() == ["gsm8k"]
    assert plan_runs(definitions, ["benchmark_prompts", "report"], ["gsm8k"]) == [
        (["benchmark_prompts"], "gsm8k"),
        (["report"], None),
    ]


def test_resource_resolves_its_config_once(tmp_path):
    path = _one_benchmark_config(tmp_path)
    first = PipelineResource(config_file=str(path)).pipeline_config()
    assert PipelineResource(config_file=str(path)).pipeline_config() is first  # Dagster's copies share it
    data = yaml.safe_load(path.read_text())
    data["benchmarks"].append({"name": "mmlu_pro", "source": "builtin", "train_size": 8, "eval_size": 4})
    path.write_text(yaml.safe_dump(data))
    os.utime(path, ns=(0, 10**18))  # a different modification time, however coarse the file system's clock
    assert PipelineResource(config_file=str(path)).pipeline_config().benchmark_names == ["gsm8k", "mmlu_pro"]


def test_materialize_passes_its_config_explicitly_not_through_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RD_HOME", str(tmp_path))
    monkeypatch.delenv("RD_CONFIG", raising=False)
    monkeypatch.delenv("RD_PRESET", raising=False)
    assert main(["materialize", "--preset", "tiny", "--select", "teacher_answers"]) == 2
    assert "teacher_answers" in capsys.readouterr().err
    assert "RD_PRESET" not in os.environ and "RD_CONFIG" not in os.environ


def _processes_with_env(marker: str) -> list[int]:
    """Pids of live processes whose environment holds `marker` (`rd ui` and everything it started)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def _as_started_by_a_process_that_ignores_sigint_and_blocks_sigterm() -> None:
    """Dispositions and the signal mask are inherited: as when rd is started by such a process (a test runner's
    worker, a job runner)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


@pytest.mark.slow  # starts the Dagster UI: about 30 s on 2 cores
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find the child processes")
def test_rd_ui_stopped_by_sigterm_leaves_no_process_serving(tmp_path: Path):
    import signal
    import socket
    import time

    from rd_pipeline_tests.support.ui_server import free_port

    port, marker = free_port(), f"RD_UI_TEST_MARKER={tmp_path.name}"
    env = {**os.environ, "RD_HOME": str(tmp_path / "rd"), marker.split("=")[0]: marker.split("=")[1]}
    rd = subprocess.Popen(
        [sys.executable, "-m", "rd_pipeline.cli", "ui", "--preset", "tiny", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_as_started_by_a_process_that_ignores_sigint_and_blocks_sigterm,
    )

    def serving() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        deadline = time.monotonic() + 240
        while not serving():
            assert rd.poll() is None, f"rd ui exited with {rd.returncode} before serving"
            assert time.monotonic() < deadline, "rd ui did not serve its port within 240 s"
            time.sleep(0.5)
        assert len(_processes_with_env(marker)) > 1  # rd and dagster dev's processes
        rd.send_signal(signal.SIGTERM)
        exit_status = rd.wait(timeout=60)
        deadline = time.monotonic() + 30
        while (_processes_with_env(marker) or serving()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not serving(), f"port {port} still served after rd ui stopped"
        assert not _processes_with_env(marker), "processes started by rd ui outlived it"
        assert exit_status == 128 + signal.SIGTERM
    finally:
        for pid in _processes_with_env(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
