"""Training as its own process group under `accelerate launch`: job files, accelerate configs, the worker, 2-process
DDP (gloo) on the CPU against 1 process, and model revisions reaching from_pretrained (offline hub cache)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from rd_pipeline.config import LaunchConfig, LoraConfig, RewardModelConfig, RlConfig, SftConfig
from rd_pipeline.models import resolve_model
from rd_pipeline.training.launch import (
    accelerate_config,
    accelerate_config_yaml,
    launch_command,
    prepare_job,
    run_training_job,
)
from rd_pipeline.training.worker import check_strategy

# The launch record of a 2-process DDP group on this CPU.
TWO_GLOO_PROCESSES = {
    "num_processes": 2,
    "num_machines": 1,
    "strategy": "ddp",
    "accelerate_config_file": None,
    "distributed_type": "MULTI_CPU",
    "backend": "gloo",
}


def _examples(n: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "completion": [{"role": "assistant", "content": f"{i} + {i} = {2 * i}. The answer is {2 * i}."}],
        }
        for i in range(n)
    ]


def _pairs(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} times 3 plus 7?"}],
            "chosen": [{"role": "assistant", "content": f"{i} * 3 = {3 * i}, plus 7 is {3 * i + 7}."}],
            "rejected": [{"role": "assistant", "content": f"about {3 * i + 12}"}],
        }
        for i in range(start, start + n)
    ]


def _sft_job(tmp: Path, base: str, cfg: SftConfig, name: str, revision: str | None = None):
    settings = {"base": base, "revision": revision, "seed": 0, "config": cfg.model_dump(mode="json")}
    return prepare_job(
        "sft", tmp / f"job_{name}", tmp / name, cfg.launch, settings, {"examples": _examples(16)}
    )


def _rm_job(tmp: Path, base: str, cfg: RewardModelConfig, name: str):
    settings = {"base": base, "seed": 0, "config": cfg.model_dump(mode="json")}
    records = {"train_pairs": _pairs(16), "heldout_pairs": _pairs(4, start=50)}
    return prepare_job("reward_model", tmp / f"job_{name}", tmp / name, cfg.launch, settings, records)


def _rl_job(tmp: Path, base: str, reward_model: Path, cfg: RlConfig, name: str):
    """An RL job as ``make_rl_student`` prepares it: the policy to start from, the reward model, the prompts."""
    settings = {
        "base": base,
        "reward_model": str(reward_model),
        "seed": 0,
        "config": cfg.model_dump(mode="json"),
    }
    prompts = [{"prompt": [{"role": "user", "content": f"What is {i} times 3 plus 7?"}]} for i in range(8)]
    return prepare_job("rl", tmp / f"job_{name}", tmp / name, cfg.launch, settings, {"prompts": prompts})


def test_accelerate_configs_per_strategy() -> None:
    ddp = accelerate_config("ddp", num_processes=8)
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["num_processes"] == 8
    assert accelerate_config("ddp")["distributed_type"] == "NO"
    fsdp = accelerate_config("fsdp2", num_processes=8)
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_version"] == 2
    assert fsdp["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    for stage in (2, 3):
        zero = yaml.safe_load(accelerate_config_yaml(f"zero{stage}", num_processes=16, num_machines=2))
        assert zero["distributed_type"] == "DEEPSPEED" and zero["deepspeed_config"]["zero_stage"] == stage
        assert zero["num_machines"] == 2
    assert accelerate_config("zero3")["deepspeed_config"]["zero3_save_16bit_model"] is True
    with pytest.raises(ValueError, match="unknown training strategy 'tp'"):
        accelerate_config("tp")


def test_launch_settings_are_checked_and_reach_the_command(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of num_machines"):
        LaunchConfig(num_processes=3, num_machines=2, main_process_ip="10.0.0.1", main_process_port=29500)
    with pytest.raises(ValueError, match="needs main_process_ip and main_process_port"):
        LaunchConfig(num_processes=4, num_machines=2)
    cfg = SftConfig(launch=LaunchConfig(num_processes=2))
    job = _sft_job(tmp_path, "/models/base", cfg, "sft")
    command = launch_command(job)
    launcher = command.index("accelerate.commands.launch")  # after the guard that ends it with its starter
    assert command[launcher - 2 : launcher + 1] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[-3:] == ["-m", "rd_pipeline.training.worker", str(job.job_dir)]
    written = yaml.safe_load((job.job_dir / "accelerate.yaml").read_text())
    assert written["distributed_type"] == "MULTI_GPU" and written["num_processes"] == 2
    assert len((job.job_dir / "examples.jsonl").read_text().splitlines()) == 16
    missing = LaunchConfig(accelerate_config_file=str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match="nope.yaml does not exist"):
        _sft_job(tmp_path, "/models/base", SftConfig(launch=missing), "sft2")


def test_failed_training_names_the_job_and_shows_its_output(tmp_path: Path) -> None:
    job = _sft_job(tmp_path, str(tmp_path / "no-such-model"), SftConfig(max_steps=1), "sft")
    with pytest.raises(RuntimeError, match=r"training sft failed \(exit code 1, job .*job_sft\)") as raised:
        run_training_job(job, log=lambda line: None)
    # The worker's own error leads the message, however much the launcher printed after it.
    assert "no-such-model" in str(raised.value).splitlines()[0]


def test_failed_training_under_dagster_pipes_says_why(tmp_path: Path) -> None:
    from rd_pipeline.defs.assets.trained import pipes_launcher
    from rd_pipeline.defs.logs import error_text

    job = _sft_job(tmp_path, str(tmp_path / "no-such-model"), SftConfig(max_steps=1), "sft")

    @dg.asset
    def trained(context):  # unannotated: Dagster refuses a string annotation
        return dg.MaterializeResult(metadata={"metrics": pipes_launcher(context)(job)})

    result = dg.materialize([trained], raise_on_error=False)
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    # The step's own error (what the Dagster UI shows for the step), not only its external process's report.
    message = error_text(failure.step_failure_data.error)
    assert message.startswith("training sft failed (job ") and "no-such-model" in message


def test_pipes_launch_returns_the_metrics_the_worker_wrote_without_its_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training group whose Pipes materialization report never arrives (lost on a loaded machine) still gives
    the step the metrics its worker wrote to the job directory."""
    import rd_pipeline.training.launch as launch
    from rd_pipeline.defs.assets.trained import pipes_launcher

    job = _sft_job(tmp_path, "unused", SftConfig(max_steps=1), "sft")
    worker = (
        "import json, sys\n"
        "from dagster_pipes import open_dagster_pipes\n"
        "with open_dagster_pipes() as pipes:\n"
        "    pipes.log.info('trained')\n"
        f"    open({str(job.job_dir / 'result.json')!r}, 'w').write(json.dumps({{'steps': 1, 'final_loss': 0.5}}))\n"
    )
    monkeypatch.setattr(launch, "launch_command", lambda _job: [sys.executable, "-c", worker])
    returned: list[dict] = []

    @dg.asset
    def trained(context):  # unannotated: Dagster refuses a string annotation
        returned.append(pipes_launcher(context)(job))
        return dg.MaterializeResult()

    assert dg.materialize([trained]).success
    assert returned == [{"steps": 1, "final_loss": 0.5}]


def _make_hub_cache(cache: Path, base: str) -> None:
    """An offline Hugging Face cache holding rdtest/tiny at two revisions: main (2 layers), small (1 layer)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    repo = cache / "models--rdtest--tiny"
    for revision, commit, layers in (("main", "a" * 40, 2), ("small", "b" * 40, 1)):
        snapshot = repo / "snapshots" / commit
        shutil.copytree(base, snapshot)
        if layers == 1:
            config = AutoConfig.from_pretrained(base)
            config.num_hidden_layers = 1
            AutoModelForCausalLM.from_config(config).save_pretrained(snapshot)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / revision).write_text(commit)


def test_revision_reaches_from_pretrained_in_training(
    tiny_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The student's revision selects the weights SFT starts from (tokenizer, model, and the LoRA merge base)."""
    cache = tmp_path / "hub"
    _make_hub_cache(cache, tiny_base)
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # for the training processes
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at import in this one
    resolved = resolve_model("rdtest/tiny", tmp_path, "small")
    assert (resolved.kind, resolved.location) == ("hub", "rdtest/tiny")
    assert resolved.revision in ("small", "b" * 40)  # the revision, or the commit the cache maps it to
    cfg = SftConfig(max_steps=1, batch_size=4, max_length=128, lora=LoraConfig(enabled=True, r=2))
    job = _sft_job(tmp_path, resolved.location, cfg, "sft", revision=resolved.revision)
    metrics = run_training_job(job, log=lambda line: None)
    assert metrics["steps"] == 1
    trained = json.loads((tmp_path / "sft" / "config.json").read_text())
    assert trained["num_hidden_layers"] == 1  # main has 2


@pytest.mark.slow
def test_two_processes_match_one_process_for_sft_and_reward_model(tiny_base: str, tmp_path: Path) -> None:
    """DDP over 2 gloo processes (per-process batch 2) against 1 process (batch 4): same global batches, so the
    same losses and gradient norms, with full fine-tuning and with LoRA (adapters initialised alike whatever the
    process count); the checkpoints load and the metrics record the launch. LoRA runs without dropout: its masks
    are drawn per process for that process's batch, so with dropout the runs differ from step 1's gradient on."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    lora = LoraConfig(enabled=True, dropout=0.0)
    results, timings = {}, {}
    for processes in (1, 2):
        launch = LaunchConfig(num_processes=processes)
        shared = {"max_steps": 4, "batch_size": 4 // processes, "learning_rate": 1e-3, "max_length": 128}
        for kind, job in (
            ("sft", _sft_job(tmp_path, tiny_base, SftConfig(**shared, launch=launch), f"sft{processes}")),
            (
                "rm",
                _rm_job(tmp_path, tiny_base, RewardModelConfig(**shared, launch=launch), f"rm{processes}"),
            ),
            (
                "sft_lora",
                _sft_job(
                    tmp_path, tiny_base, SftConfig(**shared, launch=launch, lora=lora), f"sft_lora{processes}"
                ),
            ),
            (
                "rm_lora",
                _rm_job(
                    tmp_path,
                    tiny_base,
                    RewardModelConfig(**shared, launch=launch, lora=lora),
                    f"rm_lora{processes}",
                ),
            ),
        ):
            started = time.perf_counter()
            results[kind, processes] = run_training_job(job, log=lambda line: None)
            timings[kind, processes] = time.perf_counter() - started
    for kind in ("sft", "rm", "sft_lora", "rm_lora"):
        one, two = results[kind, 1], results[kind, 2]
        assert two["launch"] == TWO_GLOO_PROCESSES
        assert one["launch"]["num_processes"] == 1 and one["steps"] == two["steps"] == 4
        assert one["lora"] is two["lora"] is kind.endswith("_lora")
        one_losses = [step["loss"] for step in one["per_step"]]
        two_losses = [step["loss"] for step in two["per_step"]]
        one_norms = [step["grad_norm"] for step in one["per_step"]]
        two_norms = [step["grad_norm"] for step in two["per_step"]]
        assert len(one_losses) == 4 and two_losses == pytest.approx(one_losses, rel=1e-4, abs=1e-5)
        assert two_norms == pytest.approx(one_norms, rel=1e-4, abs=1e-5)
        print(
            f"{kind}: 1 process {timings[kind, 1]:.1f}s, 2 processes {timings[kind, 2]:.1f}s, "
            f"max loss difference {max(abs(a - b) for a, b in zip(one_losses, two_losses, strict=True)):.2e}, "
            f"max grad norm difference {max(abs(a - b) for a, b in zip(one_norms, two_norms, strict=True)):.2e}"
        )
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "sft2").config.num_hidden_layers == 2
    reward = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm2")
    assert reward.config.num_labels == 1
    assert results["rm", 2]["heldout_pairs"] == 4 and results["rm", 2]["heldout_accuracy"] is not None
    merged = {p: AutoModelForCausalLM.from_pretrained(tmp_path / f"sft_lora{p}").state_dict() for p in (1, 2)}
    assert max((merged[1][k] - merged[2][k]).abs().max().item() for k in merged[1]) < 1e-5


@pytest.mark.slow
def test_rl_runs_with_two_processes(tiny_base: str, tmp_path: Path) -> None:
    """GRPO over 2 gloo processes (per-process batch 2: one group of 2 completions of one prompt each) against 1
    process (batch 4: both groups), and RLOO with LoRA over 2 processes, against a reward model trained first: the
    runs finish, the checkpoints load and changed, the launch is recorded, reward and KL are logged for every step.

    TRL gives every process the same prompt order and splits each step's prompts between the processes, so both
    GRPO runs see the same prompts per step (2 prompts, 4 completions; TRL's sampler, not checked here). Losses
    and rewards are not compared: each process samples its completions with its own seed (TRL seeds generation
    per process), so the completions, and with them rewards, advantages and losses, differ from 1 process from
    the first step. What does not depend on the samples is compared: steps, global batch, completions scored,
    and step 1's KL, 0 since the policy is still its reference."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    reward_cfg = RewardModelConfig(max_steps=2, batch_size=4, learning_rate=1e-3, max_length=128)
    run_training_job(_rm_job(tmp_path, tiny_base, reward_cfg, "rm"), log=lambda line: None)
    base = load_file(Path(tiny_base) / "model.safetensors")
    results, timings = {}, {}
    for name, algorithm, lora, processes in (
        ("grpo1", "grpo", False, 1),
        ("grpo2", "grpo", False, 2),
        ("rloo_lora2", "rloo", True, 2),
    ):
        cfg = RlConfig(
            algorithm=algorithm,
            max_steps=2,
            batch_size=4 // processes,
            num_generations=2,
            max_completion_length=8,
            learning_rate=1e-3,
            lora=LoraConfig(enabled=lora, r=4),
            launch=LaunchConfig(num_processes=processes),
        )
        started = time.perf_counter()
        results[name] = run_training_job(
            _rl_job(tmp_path, tiny_base, tmp_path / "rm", cfg, name), log=lambda line: None
        )
        timings[name] = time.perf_counter() - started
        metrics = results[name]
        assert metrics["algorithm"] == algorithm and metrics["lora"] is lora
        assert metrics["launch"]["num_processes"] == processes
        assert (metrics["steps"], metrics["global_batch_size"], metrics["completions"]) == (2, 4, 8)
        assert [step["step"] for step in metrics["per_step"]] == [1, 2]
        for step in metrics["per_step"]:  # per_step keeps finite values only
            assert {"loss", "reward", "kl"} <= set(step), step
        assert metrics["kls"][0] == pytest.approx(0.0, abs=1e-6) and len(metrics["rewards"]) == 2
        assert 0 < metrics["mean_completion_length"] <= 8
        model = AutoModelForCausalLM.from_pretrained(tmp_path / name)
        assert model.config.num_hidden_layers == 2
        trained = load_file(tmp_path / name / "model.safetensors")
        assert not any("lora" in key for key in trained)
        assert any(not torch.equal(base[key], trained[key]) for key in base if key in trained)
    for name in ("grpo2", "rloo_lora2"):
        assert results[name]["launch"] == TWO_GLOO_PROCESSES
    assert results["grpo1"]["launch"]["distributed_type"] == "NO"
    print(", ".join(f"{name} {seconds:.1f}s" for name, seconds in timings.items()))


def test_check_strategy_names_a_strategy_accelerate_did_not_set_up() -> None:
    check_strategy(LaunchConfig(num_processes=2), "MULTI_CPU")
    check_strategy(LaunchConfig(), "NO")
    check_strategy(LaunchConfig(num_processes=2, strategy="fsdp2"), "FSDP")
    check_strategy(LaunchConfig(num_processes=2, strategy="zero3"), "DEEPSPEED")
    with pytest.raises(RuntimeError, match="strategy fsdp2 needs .* FSDP, but .* MULTI_CPU.* only on GPUs"):
        check_strategy(LaunchConfig(num_processes=2, strategy="fsdp2"), "MULTI_CPU")
    with pytest.raises(RuntimeError, match="strategy zero2 needs .* DEEPSPEED, but .* MULTI_GPU"):
        check_strategy(LaunchConfig(num_processes=2, strategy="zero2"), "MULTI_GPU")
    own_file = LaunchConfig(num_processes=2, strategy="fsdp2", accelerate_config_file="/cfg.yaml")
    check_strategy(own_file, "MULTI_CPU")  # a config file of one's own replaces the strategy


def test_fsdp2_on_a_cpu_fails_instead_of_training_as_ddp(tiny_base: str, tmp_path: Path) -> None:
    """accelerate sets up FSDP only on GPUs: on a CPU the fsdp2 config would train as plain DDP over gloo
    (MULTI_CPU) while the lineage says fsdp2, so the workers stop before the first step."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback")
    cfg = SftConfig(
        max_steps=1, batch_size=2, max_length=128, launch=LaunchConfig(num_processes=2, strategy="fsdp2")
    )
    job = _sft_job(tmp_path, tiny_base, cfg, "sft")
    output: list[str] = []
    with pytest.raises(RuntimeError, match="training sft failed"):
        run_training_job(job, log=output.append)
    assert "strategy fsdp2 needs accelerate's distributed type FSDP, but" in "\n".join(output)
    assert not any("'loss'" in line for line in output)  # stopped before the first step
    assert not (tmp_path / "sft").exists()


def test_main_process_loads_whole_models_under_zero3(tiny_base: str, tmp_path: Path) -> None:
    """The LoRA merge and held-out scoring load models on the main process alone: under ZeRO-3 transformers
    would build them with deepspeed.zero.Init, a collective the other processes never join (a hang)."""
    from accelerate.utils.deepspeed import HfDeepSpeedConfig
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.integrations import is_deepspeed_zero3_enabled
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    from rd_pipeline.training.reward import _heldout_metrics
    from rd_pipeline.training.saving import BaseModelRef, _merge_adapter
    from rd_pipeline.training.stage import TrainedRun

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    adapter, reward = tmp_path / "adapter", tmp_path / "reward"
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    get_peft_model(model, PeftLoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    AutoModelForSequenceClassification.from_pretrained(tiny_base, num_labels=1).save_pretrained(reward)
    tokenizer.save_pretrained(reward)
    run = TrainedRun(history=[], batches={}, steps=0, epochs=None, examples_used=0, main_process=True)

    # What a trainer in a zero3 group leaves registered with transformers (accelerate's class: transformers'
    # own needs deepspeed installed).
    zero3 = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    set_hf_deepspeed_config(zero3)
    try:
        assert is_deepspeed_zero3_enabled()
        base = BaseModelRef(tiny_base, None, AutoModelForCausalLM, {})
        _merge_adapter(adapter, base, tokenizer, tmp_path / "merged")
        assert _heldout_metrics(run, reward, _pairs(2))["heldout_pairs"] == 2
        assert is_deepspeed_zero3_enabled()  # the trainer's setting is back for the rest of the run
    finally:
        unset_hf_deepspeed_config()
        del zero3
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "merged").config.num_hidden_layers == 2


@pytest.mark.slow
def test_deepspeed_zero2_and_zero3_on_the_cpu_match_ddp(tiny_base: str, tmp_path: Path) -> None:
    """DeepSpeed ZeRO-2 and ZeRO-3 over 2 gloo processes on the CPU (per-process batch 2) against DDP at the same
    global batch: the same losses, a checkpoint that loads, the launch recorded as DEEPSPEED. ZeRO-3 covers the
    LoRA merge and the reward model's held-out scoring, which load whole models on the main process alone.
    With LoRA the reference is 2 DDP processes: 1 process starts from other random LoRA weights."""
    pytest.importorskip("deepspeed")
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    def job(kind: str, lora: bool, strategy: str, processes: int):
        launch = LaunchConfig(num_processes=processes, strategy=strategy)
        settings = dict(max_steps=4, batch_size=4 // processes, learning_rate=1e-3, max_length=128)
        name = f"{kind}{'_lora' if lora else ''}_{strategy}_{processes}"
        if kind == "rm":
            return _rm_job(tmp_path, tiny_base, RewardModelConfig(**settings, launch=launch), name)
        cfg = SftConfig(**settings, lora=LoraConfig(enabled=lora, r=2), launch=launch)
        return _sft_job(tmp_path, tiny_base, cfg, name)

    for kind, lora, strategy, reference_processes in (
        ("sft", False, "zero2", 1),
        ("sft", True, "zero3", 2),
        ("rm", False, "zero3", 1),
    ):
        results, timings = {}, {}
        for run, (strat, processes) in (("ddp", ("ddp", reference_processes)), ("zero", (strategy, 2))):
            started = time.perf_counter()
            prepared = job(kind, lora, strat, processes)
            results[run] = run_training_job(prepared, log=lambda line: None)
            timings[run] = time.perf_counter() - started
        ddp, zero = results["ddp"], results["zero"]
        assert zero["launch"]["strategy"] == strategy and zero["launch"]["num_processes"] == 2
        assert (zero["launch"]["distributed_type"], zero["launch"]["backend"]) == ("DEEPSPEED", "gloo")
        ddp_losses = [step["loss"] for step in ddp["per_step"]]
        zero_losses = [step["loss"] for step in zero["per_step"]]
        assert len(ddp_losses) == 4 and zero_losses == pytest.approx(ddp_losses, rel=1e-3, abs=1e-4)
        checkpoint = prepared.out_dir
        if kind == "rm":
            assert AutoModelForSequenceClassification.from_pretrained(checkpoint).config.num_labels == 1
            assert zero["heldout_accuracy"] == ddp["heldout_accuracy"] and zero["heldout_pairs"] == 4
        else:
            assert AutoModelForCausalLM.from_pretrained(checkpoint).config.num_hidden_layers == 2
            assert not checkpoint.with_name(checkpoint.name + ".adapter").exists()
        print(
            f"{kind} lora={lora} {strategy}: ddp {reference_processes} process(es) {timings['ddp']:.1f}s, "
            f"{strategy} 2 processes {timings['zero']:.1f}s, max loss difference "
            f"{max(abs(a - b) for a, b in zip(ddp_losses, zero_losses, strict=True)):.2e}"
        )


def test_rd_accelerate_config_prints_a_ready_file() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "rd_pipeline.cli", "accelerate-config", "zero3", "--num-processes", "8"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    config = yaml.safe_load(printed)
    assert config["distributed_type"] == "DEEPSPEED" and config["deepspeed_config"]["zero_stage"] == 3
    assert config["num_processes"] == 8
