"""TRL training wrappers run for real on the tiny random model: SFT, reward model, GRPO/RLOO, scoring."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rd_pipeline.config import LaunchConfig, LoraConfig, RewardModelConfig, RlConfig, SftConfig
from rd_pipeline.training import RewardScorer, pairwise_accuracy, train_reward_model, train_rl, train_sft
from rd_pipeline.training.metrics import loss_metrics, step_values
from rd_pipeline.training.records import check_records


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _sft_examples(n: int) -> list[dict]:
    return [
        {
            "prompt": _user(f"What is {i} + {i}?"),
            "completion": _assistant(f"{i} + {i} = {2 * i}. The answer is {2 * i}."),
        }
        for i in range(n)
    ]


def _pairs(n: int, start: int = 0) -> list[dict]:
    pairs = []
    for i in range(start, start + n):
        answer = 3 * i + 7
        pairs.append(
            {
                "prompt": _user(f"What is {i} times 3 plus 7?"),
                "chosen": _assistant(f"{i} * 3 = {3 * i}, plus 7 is {answer}. The answer is {answer}."),
                "rejected": _assistant(f"about {answer + 5}"),
                "margin": 0.25,
            }
        )
    return pairs


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(directory / "model.safetensors"), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def _assert_finite_metrics(metrics: dict, *keys: str) -> None:
    for key in ("train_loss", "steps", "examples", "runtime_s", *keys):
        assert key in metrics, key
        assert isinstance(metrics[key], int | float) and math.isfinite(metrics[key]), (key, metrics[key])


@pytest.fixture(scope="module")
def reward_model_dir(tiny_base: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rm") / "reward_model"
    cfg = RewardModelConfig(max_steps=6, batch_size=4, learning_rate=3e-3, max_length=128)
    metrics = train_reward_model(tiny_base, _pairs(12), _pairs(6, start=40), cfg, out, seed=0)
    return out, metrics


def test_sft_full_fine_tune_writes_a_loadable_changed_checkpoint(tiny_base: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sft"
    cfg = SftConfig(max_steps=4, batch_size=2, learning_rate=1e-3, max_length=128)
    metrics = train_sft(tiny_base, _sft_examples(8), cfg, out, seed=0)

    _assert_finite_metrics(metrics, "first_loss", "final_loss")
    assert metrics["steps"] == 4 and metrics["examples"] == 8 and metrics["examples_used"] == 8
    assert metrics["final_loss"] < metrics["first_loss"]
    assert not (out.parent / "sft.partial").exists()
    base_weights, new_weights = _weights(Path(tiny_base)), _weights(out)
    assert base_weights.keys() == new_weights.keys()
    assert any(not torch.equal(base_weights[k], new_weights[k]) for k in base_weights)

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    input_ids = tokenizer.apply_chat_template(
        _user("What is 3 + 3?"), add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    generated = model.generate(input_ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > input_ids.shape[1]


def test_sft_lora_is_merged_into_plain_weights(tiny_base: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "sft_lora"
    cfg = SftConfig(
        max_steps=3, batch_size=2, learning_rate=5e-3, lora=LoraConfig(enabled=True, r=4, alpha=8)
    )
    metrics = train_sft(tiny_base, _sft_examples(6), cfg, out, seed=0)

    _assert_finite_metrics(metrics)
    assert metrics["lora"] is True
    weights = _weights(out)
    assert not any("lora" in key for key in weights)
    assert weights.keys() == _weights(Path(tiny_base)).keys()
    assert not (out / "adapter_config.json").exists()
    base = _weights(Path(tiny_base))
    changed = [k for k in base if not torch.equal(base[k], weights[k])]
    assert changed and all("proj" in key for key in changed)  # only LoRA-targeted linear layers move
    assert type(AutoModelForCausalLM.from_pretrained(out)).__name__ == "LlamaForCausalLM"


def test_sft_rejects_empty_and_malformed_examples(tiny_base: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no SFT example given"):
        train_sft(tiny_base, [], SftConfig(max_steps=1), tmp_path / "x")
    bad = _sft_examples(3)
    del bad[1]["completion"]
    with pytest.raises(ValueError, match=r"SFT example #1 has no field 'completion'"):
        train_sft(tiny_base, bad, SftConfig(max_steps=1), tmp_path / "x")
    bad = _sft_examples(3)
    bad[2]["completion"] = [{"role": "user", "content": "wrong role"}]
    with pytest.raises(ValueError, match=r"#2: field 'completion' message 0 has role 'user'"):
        train_sft(tiny_base, bad, SftConfig(max_steps=1), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_reward_model_trains_scores_and_reports_heldout_accuracy(reward_model_dir: tuple[Path, dict]) -> None:
    from transformers import AutoModelForSequenceClassification

    out, metrics = reward_model_dir
    _assert_finite_metrics(metrics, "heldout_accuracy", "heldout_mean_gap", "final_loss")
    assert metrics["steps"] == 6 and metrics["heldout_pairs"] == 6 and metrics["margin_used"] is True
    assert 0.0 <= metrics["heldout_accuracy"] <= 1.0

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    with RewardScorer(str(out)) as scorer:
        recomputed = pairwise_accuracy(scorer, _pairs(6, start=40))
        assert recomputed["accuracy"] == metrics["heldout_accuracy"]
        assert recomputed["mean_gap"] == pytest.approx(metrics["heldout_mean_gap"], abs=1e-5)


def test_reward_scorer_is_order_and_batch_invariant(reward_model_dir: tuple[Path, dict]) -> None:
    out, _ = reward_model_dir
    conversations = [p["prompt"] + p["chosen"] for p in _pairs(5)] + [
        p["prompt"] + p["rejected"] for p in _pairs(5)
    ]
    with RewardScorer(str(out)) as scorer:
        batched = scorer.score(conversations, batch_size=16)
        one_by_one = [scorer.score([c], batch_size=1)[0] for c in conversations]
        reversed_scores = scorer.score(conversations[::-1], batch_size=3)[::-1]
    assert len(batched) == 10 and all(math.isfinite(s) for s in batched)
    assert batched == pytest.approx(one_by_one, abs=1e-4)
    assert batched == pytest.approx(reversed_scores, abs=1e-4)
    assert len(set(round(s, 6) for s in batched)) > 1
    with pytest.raises(RuntimeError, match="closed"):
        scorer.score(conversations)


def test_reward_scorer_scores_each_distinct_conversation_once(reward_model_dir: tuple[Path, dict]) -> None:
    out, _ = reward_model_dir
    distinct = [p["prompt"] + p["chosen"] for p in _pairs(3)]
    conversations = [distinct[0], distinct[1], distinct[0], distinct[2], distinct[1], distinct[0]]
    rows: list[int] = []
    with RewardScorer(str(out)) as scorer:
        scorer.model.register_forward_hook(
            lambda _module, args, kwargs, _out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
        )
        scores = scorer.score(conversations, batch_size=2)
        alone = scorer.score(distinct, batch_size=2)
    assert sum(rows) == 3 + 3  # each distinct conversation once, in both calls
    assert scores == [alone[0], alone[1], alone[0], alone[2], alone[1], alone[0]]


def test_reward_model_lora_keeps_a_trained_score_head(tiny_base: str, tmp_path: Path) -> None:
    out = tmp_path / "rm_lora"
    cfg = RewardModelConfig(max_steps=3, batch_size=4, learning_rate=3e-3, lora=LoraConfig(enabled=True, r=4))
    metrics = train_reward_model(tiny_base, _pairs(8), [], cfg, out, seed=0)
    _assert_finite_metrics(metrics)
    assert metrics["heldout_accuracy"] is None and metrics["heldout_pairs"] == 0
    weights = _weights(out)
    assert "score.weight" in weights and not any("lora" in key or "modules_to_save" in key for key in weights)
    with RewardScorer(str(out)) as scorer:
        assert all(math.isfinite(s) for s in scorer.score([p["prompt"] + p["chosen"] for p in _pairs(3)]))


def test_reward_model_rejects_bad_pairs(tiny_base: str, tmp_path: Path) -> None:
    cfg = RewardModelConfig(max_steps=1)
    with pytest.raises(ValueError, match="no reward training pair given"):
        train_reward_model(tiny_base, [], [], cfg, tmp_path / "x")
    partial = _pairs(3)
    partial[2]["margin"] = None
    with pytest.raises(ValueError, match=r"reward training pair #2: field 'margin'"):
        train_reward_model(tiny_base, partial, [], cfg, tmp_path / "x")
    heldout = _pairs(2)
    del heldout[0]["rejected"]
    with pytest.raises(ValueError, match=r"held-out reward pair #0 has no field 'rejected'"):
        train_reward_model(tiny_base, _pairs(2), heldout, cfg, tmp_path / "x")
    too_long = RewardModelConfig(max_steps=1, max_length=16)
    with pytest.raises(ValueError, match="longer than reward_model.max_length=16"):
        train_reward_model(tiny_base, _pairs(2), [], too_long, tmp_path / "x")


@pytest.mark.parametrize(("algorithm", "lora"), [("grpo", False), ("rloo", True)])
def test_rl_trains_against_the_reward_model(
    algorithm: str, lora: bool, tiny_base: str, reward_model_dir: tuple[Path, dict], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    reward_dir, _ = reward_model_dir
    out = tmp_path / f"rl_{algorithm}"
    cfg = RlConfig(
        algorithm=algorithm,
        max_steps=2,
        batch_size=4,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-3,
        lora=LoraConfig(enabled=lora, r=4),
    )
    prompts = [{"prompt": _user(f"What is {i} times 3 plus 7?")} for i in range(4)]
    metrics = train_rl(tiny_base, str(reward_dir), prompts, cfg, out, seed=0)

    _assert_finite_metrics(metrics, "reward_start", "reward_end", "mean_completion_length")
    assert metrics["algorithm"] == algorithm and metrics["steps"] == 2 and len(metrics["rewards"]) == 2
    # KL penalty against the starting policy by default, logged per step with the mean reward
    assert metrics["beta"] == 0.05 and len(metrics["kls"]) == 2 and all(map(math.isfinite, metrics["kls"]))
    assert metrics["kls"][0] == pytest.approx(0.0, abs=1e-5)  # the first step's policy is the reference
    assert [set(step) >= {"step", "loss", "reward", "kl"} for step in metrics["per_step"]] == [True, True]
    assert [step["kl"] for step in metrics["per_step"]] == metrics["kls"]
    assert 0 < metrics["mean_completion_length"] <= 8
    weights = _weights(out)
    assert not any("lora" in key for key in weights)
    base = _weights(Path(tiny_base))
    assert any(not torch.equal(base[k], weights[k]) for k in base)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generate(torch.tensor([[1, 5, 9]]), max_new_tokens=3, do_sample=False).shape[1] > 3


def test_rl_rejects_bad_settings_before_loading_models(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"batch_size \(6\) must be a multiple of num_generations \(4\)"):
        RlConfig(batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match="no RL prompt given"):
        train_rl("/nonexistent", "/nonexistent", [], RlConfig(), tmp_path / "x")
    with pytest.raises(ValueError, match=r"RL prompt #0: field 'prompt' message 0 has role 'assistant'"):
        train_rl("/nonexistent", "/nonexistent", [{"prompt": _assistant("x")}], RlConfig(), tmp_path / "x")


def test_log_history_metrics() -> None:
    history = [
        {"loss": 2.0, "reward": 0.1, "step": 1},
        {"loss": float("nan"), "reward": 0.2, "step": 2},
        {"loss": 1.0, "reward": 0.4, "step": 3},
        {"train_loss": 1.5, "train_runtime": 3.2, "step": 3},
    ]
    metrics = loss_metrics(history)
    assert metrics == {"train_loss": 1.5, "first_loss": 2.0, "final_loss": 1.0, "trainer_runtime_s": 3.2}
    assert step_values(history, "reward") == [0.1, 0.2, 0.4]
    assert loss_metrics(history[:3])["train_loss"] == pytest.approx(1.5)  # mean of finite step losses
    assert loss_metrics([])["train_loss"] is None


def test_check_records_names_the_record_and_field() -> None:
    fields = {"prompt": ("user",)}
    check_records([{"prompt": _user("ok")}], "item", fields)
    with pytest.raises(ValueError, match=r"item #0 must be a dict"):
        check_records(["text"], "item", fields)
    with pytest.raises(ValueError, match=r"item #1: field 'prompt' must be a non-empty list"):
        check_records([{"prompt": _user("ok")}, {"prompt": []}], "item", fields)
    with pytest.raises(
        ValueError, match=r"item #0: field 'prompt' message 0 must be a dict with a string 'content'"
    ):
        check_records([{"prompt": [{"role": "user", "content": 3}]}], "item", fields)


def _changed_tensors(base_dir: Path, trained_dir: Path) -> tuple[list[str], list[str]]:
    """The tensors both checkpoints hold, and those of them that did not train: unchanged, or (outside the
    embedding, whose unused token rows get no gradient) with under 90% of their elements changed."""
    base, trained = _weights(base_dir), _weights(trained_dir)
    shared = sorted(base.keys() & trained.keys())
    untrained = []
    for key in shared:
        moved = (base[key].to(trained[key].dtype) != trained[key]).float().mean().item()
        if moved == 0 or ("embed" not in key and moved < 0.9):
            untrained.append(f"{key} ({moved:.0%} changed)")
    return shared, untrained


BF16 = LaunchConfig(mixed_precision="bf16")  # what `auto` resolves to on a bf16-capable GPU


def test_bf16_sft_updates_every_weight_at_a_tiny_learning_rate(tiny_base: str, tmp_path: Path) -> None:
    """bf16 autocast over fp32 weights: one step at lr 1e-6 moves every tensor (pure bf16 weights would not)."""
    out = tmp_path / "sft_bf16"
    cfg = SftConfig(max_steps=1, batch_size=4, learning_rate=1e-6, max_length=128, launch=BF16)
    metrics = train_sft(tiny_base, _sft_examples(4), cfg, out, seed=0)
    assert metrics["mixed_precision"] == "bf16"
    shared, unchanged = _changed_tensors(Path(tiny_base), out)
    assert len(shared) > 10 and unchanged == []
    assert all(t.dtype == torch.float32 for t in _weights(out).values())


def test_bf16_reward_model_updates_every_weight_at_a_tiny_learning_rate(
    tiny_base: str, tmp_path: Path
) -> None:
    out = tmp_path / "rm_bf16"
    cfg = RewardModelConfig(max_steps=1, batch_size=4, learning_rate=1e-6, max_length=128, launch=BF16)
    train_reward_model(tiny_base, _pairs(4), [], cfg, out, seed=0)
    shared, unchanged = _changed_tensors(Path(tiny_base), out)
    assert len(shared) > 10 and unchanged == []


def test_bf16_rl_updates_every_weight_at_a_tiny_learning_rate(
    tiny_base: str, reward_model_dir: tuple[Path, dict], tmp_path: Path
) -> None:
    reward_dir, _ = reward_model_dir
    out = tmp_path / "rl_bf16"
    cfg = RlConfig(
        max_steps=1, batch_size=4, num_generations=2, max_completion_length=8, learning_rate=1e-6, launch=BF16
    )
    prompts = [{"prompt": _user(f"What is {i} times 3 plus 7?")} for i in range(2)]
    train_rl(tiny_base, str(reward_dir), prompts, cfg, out, seed=0)
    shared, unchanged = _changed_tensors(Path(tiny_base), out)
    assert len(shared) > 10 and unchanged == []


@pytest.mark.parametrize("trainer", ["sft", "reward_model", "rl"])
def test_gradient_accumulation_and_checkpointing_reach_every_trainer(
    trainer: str, tiny_base: str, reward_model_dir: tuple[Path, dict], tmp_path: Path
) -> None:
    settings = {
        "max_steps": 1,
        "batch_size": 2,
        "gradient_accumulation_steps": 2,
        "gradient_checkpointing": True,
    }
    out = tmp_path / trainer
    if trainer == "sft":
        metrics = train_sft(tiny_base, _sft_examples(4), SftConfig(**settings), out)
    elif trainer == "reward_model":
        metrics = train_reward_model(tiny_base, _pairs(4), [], RewardModelConfig(**settings), out)
    else:
        cfg = RlConfig(**settings, num_generations=2, max_completion_length=8)
        prompts = [{"prompt": _user(f"What is {i} times 3 plus 7?")} for i in range(2)]
        metrics = train_rl(tiny_base, str(reward_model_dir[0]), prompts, cfg, out)
        assert metrics["completions"] == 4
    assert metrics["steps"] == 1 and metrics["global_batch_size"] == 4
    assert metrics["gradient_accumulation_steps"] == 2 and metrics["gradient_checkpointing"] is True


def test_a_fresh_reward_head_is_expected_but_other_missing_weights_are_named(
    tiny_base: str, tmp_path: Path
) -> None:
    """Loading a causal LM as a reward model adds a new score head: no loading report for that, but a checkpoint
    that lacks one of its own weights is still reported, naming the weight."""
    import logging

    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification

    from rd_pipeline.training.loading import load_model
    from rd_pipeline.training.precision import choose_precision

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    collect = Collect()
    library = logging.getLogger("transformers")
    library.addHandler(collect)
    try:
        precision = choose_precision("no")
        model = load_model(tiny_base, AutoModelForSequenceClassification, precision, num_labels=1)
        assert model.config.num_labels == 1
        assert collect.messages == []

        damaged = tmp_path / "damaged"
        shutil.copytree(tiny_base, damaged)
        weights = load_file(damaged / "model.safetensors")
        lost = "model.layers.1.mlp.down_proj.weight"
        del weights[lost]
        save_file(weights, damaged / "model.safetensors", metadata={"format": "pt"})
        load_model(str(damaged), AutoModelForSequenceClassification, precision, num_labels=1)
    finally:
        library.removeHandler(collect)
    assert len(collect.messages) == 1
    assert lost in collect.messages[0] and "score.weight" not in collect.messages[0]
