"""Resumable training: the trainer saves its state every ``save_every_steps`` steps next to the checkpoint it
is training, a re-run of the same training resumes from it, and the setting leaves data versions alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rd_pipeline.config import (
    LaunchConfig,
    LoraConfig,
    RewardModelConfig,
    RlConfig,
    SftConfig,
    load_preset,
    versioned_dump,
)
from rd_pipeline.steps.checkpoints import LINEAGE_FILE, checkpoint_dir, train_once
from rd_pipeline.steps.context import StepContext
from rd_pipeline.training import train_reward_model, train_rl, train_sft
from rd_pipeline.training.launch import launch_command, prepare_job, run_training_job
from rd_pipeline.training.precision import Precision
from rd_pipeline.training.resume import RESUME_KEY_FILE, prepare_trainer_dir, saved_state, trainer_state_dir
from rd_pipeline.training.trainer_args import common_trainer_args
from rd_pipeline.training.worker import _step_reporter

CPU = Precision(use_cpu=True, bf16=False, fp16=False, dtype=torch.float32)


def _sft_examples(n: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "completion": [{"role": "assistant", "content": f"{i} + {i} = {2 * i}. The answer is {2 * i}."}],
        }
        for i in range(n)
    ]


def _pairs(n: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} times 3 plus 7?"}],
            "chosen": [{"role": "assistant", "content": f"{3 * i} plus 7 is {3 * i + 7}."}],
            "rejected": [{"role": "assistant", "content": f"about {3 * i + 12}"}],
        }
        for i in range(n)
    ]


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(directory / "model.safetensors"), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def _assert_same_steps(resumed: list[dict], uninterrupted: list[dict]) -> None:
    assert [row["step"] for row in resumed] == [row["step"] for row in uninterrupted]
    for mine, theirs in zip(resumed, uninterrupted, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-4), mine["step"]


def _max_difference(a: Path, b: Path) -> float:
    first, second = _weights(a), _weights(b)
    assert first.keys() == second.keys()
    return max((first[key] - second[key]).abs().max().item() for key in first)


class Interrupted(RuntimeError):
    pass


def _interrupt_before_step(step: int):
    """A callback that fails as step ``step`` begins, the way a killed run stops: after the state saved at the
    step before it, with nothing else written."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step - 1:
                raise Interrupted(f"interrupted before step {step}")

    return Interrupt()


# Section hashes of the presets, which save_every_steps leaves as they were (sft and reward_model: since their
# validation settings, which change the checkpoint, and in smol since its shorter training; rl: since
# reward_reference_responses, which changes the reward, and in smol since its shorter training).
HASHES_BEFORE = {
    "tiny": {"sft": "cd892e85b147e45f", "reward_model": "beac400ede80a4b4", "rl": "a80dd5fc27e005e9"},
    "smol": {"sft": "65371ae2a31d6c9f", "reward_model": "35453d634c129d93", "rl": "fa0d2eb9f4cb2ff9"},
}


@pytest.mark.parametrize("preset", sorted(HASHES_BEFORE))
def test_presets_hash_as_before_save_every_steps_existed(preset: str) -> None:
    config = load_preset(preset)
    assert {section: config.section_hash(section) for section in HASHES_BEFORE[preset]} == HASHES_BEFORE[
        preset
    ]


def test_save_every_steps_leaves_versions_unchanged_other_settings_do_not() -> None:
    config = load_preset("tiny")
    for section in ("sft", "reward_model", "rl"):
        changed = config.model_copy(
            update={section: getattr(config, section).model_copy(update={"save_every_steps": 7})}
        )
        assert getattr(changed, section).save_every_steps == 7
        assert changed.section_hash(section) == config.section_hash(section)
        assert versioned_dump(getattr(changed, section)) == versioned_dump(getattr(config, section))
        assert "save_every_steps" in getattr(changed, section).model_dump()  # the worker still gets it
    other = config.model_copy(update={"sft": config.sft.model_copy(update={"learning_rate": 3e-5})})
    assert other.section_hash("sft") != config.section_hash("sft")


def test_trainer_saves_its_state_every_save_every_steps_keeping_the_latest() -> None:
    saving = common_trainer_args("out", 0, CPU, save_every_steps=200)
    assert (saving["save_strategy"], saving["save_steps"], saving["save_total_limit"]) == ("steps", 200, 1)
    assert common_trainer_args("out", 0, CPU, save_every_steps=0)["save_strategy"] == "no"
    assert SftConfig().save_every_steps == 200


def test_trainer_state_dir_sits_next_to_the_staged_checkpoint(tmp_path: Path) -> None:
    assert trainer_state_dir(tmp_path / "abc.partial") == tmp_path / "abc.trainer"
    assert trainer_state_dir(tmp_path / "sft") == tmp_path / "sft.trainer"


def test_only_complete_state_of_the_same_training_is_kept(tmp_path: Path) -> None:
    trainer_dir = tmp_path / "v.trainer"
    for step, complete in ((2, True), (4, True), (6, False)):
        (trainer_dir / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (trainer_dir / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (trainer_dir / RESUME_KEY_FILE).write_text(json.dumps({"resume_key": "same"}))

    prepare_trainer_dir(trainer_dir, "same")
    assert saved_state(trainer_dir) == (trainer_dir / "checkpoint-4", 4)
    assert not (trainer_dir / "checkpoint-6").exists()  # half-written by a crash

    prepare_trainer_dir(trainer_dir, "another")
    assert saved_state(trainer_dir) is None
    assert json.loads((trainer_dir / RESUME_KEY_FILE).read_text()) == {"resume_key": "another"}


def test_a_resumed_run_says_so_in_the_dagster_log() -> None:
    from transformers import TrainerControl, TrainerState

    lines: list[str] = []

    class Log:
        def info(self, line: str) -> None:
            lines.append(line)

    class Pipes:
        log = Log()

    reporter = _step_reporter(Pipes())
    for step in (0, 4):
        state = TrainerState(global_step=step, max_steps=6, is_world_process_zero=True)
        reporter.on_train_begin(None, state, TrainerControl())
    assert len(lines) == 1 and lines[0].startswith("resuming from step 4/6")


def test_interrupted_sft_resumes_where_it_stopped_and_ends_like_an_uninterrupted_run(
    tiny_base: str, tmp_path: Path
) -> None:
    examples = _sft_examples(12)
    cfg = SftConfig(max_steps=6, batch_size=2, learning_rate=1e-3, max_length=128, save_every_steps=2)
    uninterrupted = train_sft(
        tiny_base, examples, cfg.model_copy(update={"save_every_steps": 0}), tmp_path / "a"
    )
    assert uninterrupted["resumed_from_step"] == 0

    out = tmp_path / "b.partial"
    with pytest.raises(Interrupted):
        train_sft(tiny_base, examples, cfg, out, callbacks=[_interrupt_before_step(5)])
    trainer_dir = tmp_path / "b.trainer"
    assert sorted(p.name for p in trainer_dir.glob("checkpoint-*")) == ["checkpoint-4"]

    resumed = train_sft(tiny_base, examples, cfg, out)
    assert resumed["resumed_from_step"] == 4
    assert resumed["steps"] == 6
    assert [row["step"] for row in resumed["per_step"]] == [1, 2, 3, 4, 5, 6]
    assert not trainer_dir.exists()
    _assert_same_steps(resumed["per_step"], uninterrupted["per_step"])
    assert resumed["train_loss"] == pytest.approx(uninterrupted["train_loss"], rel=1e-4)
    assert _max_difference(out, tmp_path / "a") < 1e-5


@pytest.mark.parametrize(
    ("settings", "stop_before", "resumed_from"),
    [
        ({"epochs": 2, "save_every_steps": 4}, 10, 8),  # 12 steps over 2 epochs, resumed in the second
        ({"max_steps": 6, "gradient_accumulation_steps": 2, "save_every_steps": 2}, 4, 2),
    ],
)
def test_sft_resumes_mid_epoch_and_with_gradient_accumulation(
    settings: dict, stop_before: int, resumed_from: int, tiny_base: str, tmp_path: Path
) -> None:
    examples = _sft_examples(12)
    cfg = SftConfig(batch_size=2, learning_rate=1e-3, max_length=128, **settings)
    uninterrupted = train_sft(tiny_base, examples, cfg, tmp_path / "a")

    out = tmp_path / "b"
    with pytest.raises(Interrupted):
        train_sft(tiny_base, examples, cfg, out, callbacks=[_interrupt_before_step(stop_before)])
    resumed = train_sft(tiny_base, examples, cfg, out)
    assert resumed["resumed_from_step"] == resumed_from
    assert resumed["steps"] == uninterrupted["steps"] and resumed["epochs"] == uninterrupted["epochs"]
    _assert_same_steps(resumed["per_step"], uninterrupted["per_step"])
    assert resumed["train_loss"] == pytest.approx(uninterrupted["train_loss"], rel=1e-6)
    assert _max_difference(out, tmp_path / "a") < 1e-5


def _fail_at_the_end():
    """A callback that fails once training is over, after the trainer saved its state after the last step and
    before the checkpoint is saved."""
    from transformers import TrainerCallback

    class FailAtTheEnd(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            raise Interrupted("after the last step")

    return FailAtTheEnd()


@pytest.mark.parametrize("lora", [False, True])
def test_a_crash_after_the_last_step_saves_the_checkpoint_from_the_state_without_training(
    lora: bool, tiny_base: str, tmp_path: Path
) -> None:
    """Resuming at the last step would train one step past the end (the trainer checks for the end only after a
    step), so the re-run saves the checkpoint from the state instead, merging a LoRA adapter as usual."""
    examples = _sft_examples(12)
    cfg = SftConfig(
        max_steps=5,
        batch_size=2,
        learning_rate=1e-3,
        max_length=128,
        save_every_steps=2,
        lora=LoraConfig(enabled=lora, r=4, dropout=0.0),
    )
    uninterrupted = train_sft(tiny_base, examples, cfg, tmp_path / "a")

    out = tmp_path / "b"
    with pytest.raises(Interrupted):
        train_sft(tiny_base, examples, cfg, out, callbacks=[_fail_at_the_end()])
    assert saved_state(tmp_path / "b.trainer") == (tmp_path / "b.trainer" / "checkpoint-5", 5)
    resumed = train_sft(tiny_base, examples, cfg, out)
    assert resumed["resumed_from_step"] == 5 and resumed["steps"] == 5
    _assert_same_steps(resumed["per_step"], uninterrupted["per_step"])
    assert _max_difference(out, tmp_path / "a") < 1e-5
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "a").iterdir())
    assert not (tmp_path / "b.trainer").exists()


def test_a_failure_before_any_saved_state_leaves_no_trainer_dir(tiny_base: str, tmp_path: Path) -> None:
    cfg = RewardModelConfig(max_steps=2, max_length=16, save_every_steps=1)
    with pytest.raises(ValueError, match="longer than reward_model.max_length"):
        train_reward_model(tiny_base, _pairs(4), [], cfg, tmp_path / "rm.partial")
    assert not (tmp_path / "rm.trainer").exists()


def test_a_step_trained_again_after_a_crash_resumes_and_records_it_in_the_lineage(
    tiny_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint steps train into ``<version>.partial``; the trainer's state sits in ``<version>.trainer``,
    which survives the crash (the staging directory does not) and is gone once the checkpoint is complete."""
    monkeypatch.setenv("RD_HOME", str(tmp_path))
    ctx = StepContext(load_preset("tiny"), log=lambda line: None)
    cfg = SftConfig(max_steps=6, batch_size=2, learning_rate=1e-3, max_length=128, save_every_steps=2)
    examples = _sft_examples(12)
    versions = checkpoint_dir(ctx, "sft_student", "v1").parent

    def crash(out: Path) -> dict:
        return train_sft(tiny_base, examples, cfg, out, callbacks=[_interrupt_before_step(6)])

    with pytest.raises(Interrupted):
        train_once(ctx, "sft_student", "v1", crash, {})
    assert saved_state(versions / "v1.trainer") == (versions / "v1.trainer" / "checkpoint-4", 4)

    path, metrics, trained = train_once(
        ctx, "sft_student", "v1", lambda out: train_sft(tiny_base, examples, cfg, out), {}
    )
    assert trained and metrics["resumed_from_step"] == 4 and metrics["steps"] == 6
    assert json.loads((path / LINEAGE_FILE).read_text())["metrics"]["resumed_from_step"] == 4
    assert sorted(p.name for p in versions.iterdir()) == ["v1"]


def test_saved_state_of_other_training_is_not_resumed(tiny_base: str, tmp_path: Path) -> None:
    examples = _sft_examples(8)
    cfg = SftConfig(max_steps=4, batch_size=2, learning_rate=1e-3, max_length=128, save_every_steps=2)
    out = tmp_path / "v.partial"
    with pytest.raises(Interrupted):
        train_sft(tiny_base, examples, cfg, out, callbacks=[_interrupt_before_step(3)])
    assert saved_state(tmp_path / "v.trainer") is not None

    other = train_sft(tiny_base, examples, cfg.model_copy(update={"learning_rate": 2e-3}), out)
    assert other["resumed_from_step"] == 0 and other["steps"] == 4
    assert not (tmp_path / "v.trainer").exists()


def test_interrupted_reward_model_resumes(tiny_base: str, tmp_path: Path) -> None:
    cfg = RewardModelConfig(max_steps=4, batch_size=4, learning_rate=3e-3, max_length=128, save_every_steps=2)
    pairs = _pairs(12)
    uninterrupted = train_reward_model(tiny_base, pairs, [], cfg, tmp_path / "a")

    out = tmp_path / "b"
    with pytest.raises(Interrupted):
        train_reward_model(tiny_base, pairs, [], cfg, out, callbacks=[_interrupt_before_step(3)])
    resumed = train_reward_model(tiny_base, pairs, [], cfg, out)
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 4
    assert [row["step"] for row in resumed["per_step"]] == [1, 2, 3, 4]
    _assert_same_steps(resumed["per_step"], uninterrupted["per_step"])
    assert _max_difference(out, tmp_path / "a") < 1e-5
    assert not (tmp_path / "b.trainer").exists()


def test_interrupted_reward_model_resumes_its_validation_and_ships_the_same_best_checkpoint(
    tiny_base: str, tmp_path: Path
) -> None:
    """The validation curve, the best step and its weights are saved with the trainer state: a run interrupted
    after its best evaluation selects and ships what an uninterrupted run does."""
    cfg = RewardModelConfig(
        max_steps=8,
        batch_size=4,
        learning_rate=3e-3,
        max_length=128,
        save_every_steps=2,
        eval_every_steps=2,
        patience=0,
    )
    pairs = _pairs(12)
    # Swapped held-out pairs: training makes their accuracy fall, so an early step is the best.
    heldout = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in _pairs(18)[12:]]
    uninterrupted = train_reward_model(tiny_base, pairs, heldout, cfg, tmp_path / "a")
    assert uninterrupted["validation"]["selected_step"] < 5

    out = tmp_path / "b"
    with pytest.raises(Interrupted):
        train_reward_model(tiny_base, pairs, heldout, cfg, out, callbacks=[_interrupt_before_step(5)])
    resumed = train_reward_model(tiny_base, pairs, heldout, cfg, out)
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 8
    first, second = uninterrupted["validation"], resumed["validation"]
    assert second["selected_step"] == first["selected_step"]
    _assert_same_steps(second["curve"], first["curve"])
    assert resumed["heldout_accuracy"] == uninterrupted["heldout_accuracy"]
    assert _max_difference(out, tmp_path / "a") < 1e-5


def test_interrupted_sft_resumes_its_validation_and_ships_the_same_best_checkpoint(
    tiny_base: str, tmp_path: Path
) -> None:
    """SFT validation (the base student is step 0) is saved with the trainer state like the reward model's: an
    interrupted run selects the same step and ships the same weights as an uninterrupted one. The random model
    never agrees with the vote labels, so both ship the base weights kept at step 0: the resumed run must load
    them from the saved state to put them back at the end."""
    cfg = SftConfig(
        max_steps=6,
        batch_size=2,
        learning_rate=1e-2,
        max_length=128,
        save_every_steps=2,
        eval_every_steps=2,
        patience=0,
        validation_max_new_tokens=8,
    )
    examples = _sft_examples(12)
    item = '{"benchmark": "gsm8k", "item_id": "v", "split": "train", "question": "q", "gold": "1"}'
    validation = [
        {
            "prompt": e["prompt"],
            "benchmark": "gsm8k",
            "prompt_id": f"v{i}",
            "vote_answer": str(2 * i),
            "item": item,
        }
        for i, e in enumerate(_sft_examples(16)[12:], start=12)
    ]
    uninterrupted = train_sft(tiny_base, examples, cfg, tmp_path / "a", validation=validation)

    out = tmp_path / "b"
    with pytest.raises(Interrupted):
        train_sft(tiny_base, examples, cfg, out, callbacks=[_interrupt_before_step(5)], validation=validation)
    resumed = train_sft(tiny_base, examples, cfg, out, validation=validation)
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 6
    first, second = uninterrupted["validation"], resumed["validation"]
    assert [point["step"] for point in second["curve"]] == [0, 2, 4, 6]
    assert second["selected_step"] == first["selected_step"] == 0
    assert second["curve"] == first["curve"]
    assert _max_difference(out, tmp_path / "a") < 1e-5
    assert _max_difference(out, Path(tiny_base)) == 0


@pytest.mark.parametrize(("algorithm", "lora"), [("grpo", False), ("rloo", True)])
def test_interrupted_rl_resumes_with_the_same_samples_and_rewards(
    algorithm: str, lora: bool, tiny_base: str, tmp_path: Path
) -> None:
    """RL resumes with the sampling RNG where it stopped (the same completions and rewards as an uninterrupted
    run), also with LoRA, whose saved state holds the adapter only."""
    reward_model = tmp_path / "rm"
    train_reward_model(tiny_base, _pairs(8), [], RewardModelConfig(max_steps=2, max_length=128), reward_model)
    cfg = RlConfig(
        algorithm=algorithm,
        max_steps=4,
        batch_size=4,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-3,
        save_every_steps=2,
        lora=LoraConfig(enabled=lora, r=4, dropout=0.0),
    )
    prompts = [{"prompt": [{"role": "user", "content": f"What is {i} times 3 plus 7?"}]} for i in range(8)]
    uninterrupted = train_rl(tiny_base, str(reward_model), prompts, cfg, tmp_path / "a")

    out = tmp_path / "b"
    with pytest.raises(Interrupted):
        train_rl(tiny_base, str(reward_model), prompts, cfg, out, callbacks=[_interrupt_before_step(3)])
    resumed = train_rl(tiny_base, str(reward_model), prompts, cfg, out)
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 4
    assert resumed["rewards"] == pytest.approx(uninterrupted["rewards"], rel=1e-5)
    _assert_same_steps(resumed["per_step"], uninterrupted["per_step"])
    assert _max_difference(out, tmp_path / "a") < 1e-5
    assert not (tmp_path / "b.trainer").exists()


def test_interrupted_rl_resumes_its_validation_and_rollouts(tiny_base: str, tmp_path: Path) -> None:
    """RL validation (here by reward-model score: the prompts have no vote labels) and the rollout record are
    saved with the trainer state: an interrupted run selects the same step, ships the same weights and records
    each step's rollouts once."""
    reward_model = tmp_path / "rm"
    train_reward_model(tiny_base, _pairs(8), [], RewardModelConfig(max_steps=2, max_length=128), reward_model)
    cfg = RlConfig(
        max_steps=4,
        batch_size=4,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-2,
        save_every_steps=2,
        eval_every_steps=1,
        patience=0,
        log_rollouts="all",
    )
    prompts = [
        {
            "prompt": [{"role": "user", "content": f"What is {i} times 3 plus 7?"}],
            "benchmark": "gsm8k",
            "prompt_id": f"p{i}",
        }
        for i in range(8)
    ]
    item = '{"benchmark": "gsm8k", "item_id": "v", "split": "train", "question": "q", "gold": "1"}'
    validation = [{**p, "prompt_id": f"v{i}", "item": item} for i, p in enumerate(prompts[:3])]
    uninterrupted = train_rl(
        tiny_base, str(reward_model), prompts, cfg, tmp_path / "a", validation=validation
    )

    out = tmp_path / "b"
    with pytest.raises(Interrupted):
        train_rl(
            tiny_base,
            str(reward_model),
            prompts,
            cfg,
            out,
            callbacks=[_interrupt_before_step(4)],
            validation=validation,
        )
    resumed = train_rl(tiny_base, str(reward_model), prompts, cfg, out, validation=validation)
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 4
    first, second = uninterrupted["validation"], resumed["validation"]
    assert first["selection_metric"] == "mean_reward"
    assert [p["step"] for p in second["curve"]] == [0, 1, 2, 3, 4]
    assert second["selected_step"] == first["selected_step"]
    assert [p["mean_reward"] for p in second["curve"]] == pytest.approx(
        [p["mean_reward"] for p in first["curve"]]
    )
    assert _max_difference(out, tmp_path / "a") < 1e-5
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "a" / "rollouts.jsonl").read_text().splitlines()]
    assert (
        [r["step"] for r in rollouts]
        == [r["step"] for r in expected]
        == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    )
    assert [r["completion"] for r in rollouts] == [r["completion"] for r in expected]


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the launcher and its worker processes at once, as pre-emption of the whole machine would (killing
    the launcher alone also ends them, through their parent-death signal, but only after it is delivered)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    process.kill()
    process.wait()


@pytest.mark.slow
def test_killed_two_process_sft_job_resumes_and_matches_an_uninterrupted_run(
    tiny_base: str, tmp_path: Path
) -> None:
    """A 2-process DDP group is killed (SIGKILL, launcher and workers) once it has saved its state; the same job
    run again resumes from that step and ends with the weights and per-step losses of an uninterrupted run."""
    launch = LaunchConfig(num_processes=2)
    cfg = SftConfig(
        max_steps=60, batch_size=2, learning_rate=1e-3, max_length=128, save_every_steps=5, launch=launch
    )
    examples = {"examples": _sft_examples(64)}

    def job(name: str, config: SftConfig):
        settings = {"base": tiny_base, "revision": None, "seed": 0, "config": config.model_dump(mode="json")}
        return prepare_job(
            "sft", tmp_path / f"job_{name}", tmp_path / f"{name}.partial", launch, settings, examples
        )

    killed = job("v", cfg)
    trainer_dir = tmp_path / "v.trainer"
    process = subprocess.Popen(
        launch_command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while process.poll() is None and saved_state(trainer_dir) is None:
            time.sleep(0.005)
        assert process.poll() is None, "the job finished before it could be killed"
    finally:
        _kill_group(process)
    saved = saved_state(trainer_dir)
    assert saved is not None and 0 < saved[1] < 60

    resumed = run_training_job(job("v", cfg), log=lambda line: None)
    uninterrupted = run_training_job(
        job("u", cfg.model_copy(update={"save_every_steps": 0})), log=lambda line: None
    )
    assert resumed["resumed_from_step"] == saved[1] and resumed["steps"] == 60
    assert uninterrupted["resumed_from_step"] == 0
    _assert_same_steps(resumed["per_step"], uninterrupted["per_step"])
    assert _max_difference(tmp_path / "v.partial", tmp_path / "u.partial") < 1e-5
    assert not trainer_dir.exists()
