"""`rd export`: a loadable Hugging Face folder, a model card written from lineage, and the upload to a hub.

The fast tests build a state directory the way the pipeline writes one (checkpoints through ``train_once``,
versions through ``StepLineage``, rows through the store) around the tiny random model; the slow test exports
from a real materialization of the tiny graph.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rd_pipeline.cli import main
from rd_pipeline.config import PRESETS_DIR, PipelineConfig, load_config, load_preset
from rd_pipeline.models import resolve_model
from rd_pipeline.steps.checkpoints import train_once
from rd_pipeline.steps.context import StepContext, StepLineage
from rd_pipeline_tests.support.hub_server import HubServer

TEACHER = "teach0000000001"
EXPORT_ENV = ("RD_HOME", "RD_PRESET", "RD_CONFIG", "HF_TOKEN", "HF_ENDPOINT")


@dataclass
class Home:
    """A state directory with one version of each model asset, and what the tests expect from it."""

    rd_home: Path
    config_file: Path
    config: PipelineConfig
    versions: dict[str, str]
    base: Path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in EXPORT_ENV:
        monkeypatch.delenv(key, raising=False)


def _copy_model(base: Path, out: Path) -> None:
    for file in base.iterdir():
        if file.is_file() and not file.name.startswith("."):
            shutil.copy2(file, out / file.name)


def _record_data(ctx: StepContext, benchmark: str, gold: list[str], answers: list[str | None]) -> None:
    """benchmark_prompts, teacher_responses and pseudo_labels of one partition, with usage and versions."""
    train = [
        {
            "benchmark": benchmark,
            "prompt_id": f"t{i}",
            "split": "train",
            "question": f"q{i}",
            "prompt": f"q{i}",
        }
        | {"gold": g, "reference": None, "meta": "{}", "data_version": "p1"}
        for i, g in enumerate(gold)
    ]
    evals = [
        {"benchmark": benchmark, "prompt_id": f"e{i}", "split": "eval", "question": "x", "prompt": "x"}
        | {"gold": None, "reference": None, "meta": "{}", "data_version": "p1"}
        for i in range(2)
    ]
    ctx.store.replace_partition("benchmark_prompts", benchmark, train + evals)
    ctx.record_version("benchmark_prompts", benchmark, f"bp-{benchmark}")
    prompts = ctx.store.latest_version("benchmark_prompts", benchmark)
    StepLineage.of(TEACHER, {"benchmark_prompts": prompts}).record(ctx, "teacher_responses", benchmark, "tr1")
    usage = {
        "benchmark": benchmark,
        "asset": "teacher_responses",
        "run_id": ctx.run_id,
        "model_version": TEACHER,
    }
    ctx.record_usage(
        usage
        | {"samples_generated": 6, "samples_from_journal": 0, "input_tokens": 100, "output_tokens": 50}
        | {"cost_usd": 0.01, "recorded_at": None}
    )
    label_rows = [
        {"benchmark": benchmark, "prompt_id": f"t{i}", "temperature": 0.7, "sample_index": 0}
        | {
            "extracted_answer": a,
            "prompt_answer": a,
            "vote_share": 1.0,
            "valid_votes": 1,
            "judge_score": None,
        }
        | {"prompt_labelled": a is not None, "good": a is not None, "teacher_version": TEACHER}
        | {"label_version": "l1"}
        for i, a in enumerate(answers)
    ]
    ctx.store.replace_partition("pseudo_labels", benchmark, label_rows)
    responses = ctx.store.latest_version("teacher_responses", benchmark)
    StepLineage.of(TEACHER, {"teacher_responses": responses}).record(ctx, "pseudo_labels", benchmark, "pl1")


def _curve(table: str, column: str, version: str, agreements: list[float], selected: int) -> list[dict]:
    return [
        {"benchmark": "gsm8k", column: version, "step": step, "agreement": value, "agreement_n": 3}
        | {"win_rate": None, "win_n": 0}
        | {"gold_accuracy": 0.5, "gold_n": 2, "mean_reward": 0.1 * step, "mean_length": 12.0}
        | {
            "kl": 0.01 * step if table == "rl_validation" else None,
            "prompts": 3,
            "selected": step == selected,
        }
        for step, value in enumerate(agreements)
    ]


def _train(ctx: StepContext, asset: str, version: str, save, lineage: StepLineage, metrics: dict) -> None:
    """A checkpoint through the pipeline's own ``train_once`` (lineage.json with file digests), then its
    version record."""
    section = {"sft_student": "sft", "reward_model": "reward_model", "rl_student": "rl"}[asset]

    def train(out_dir: Path) -> dict:
        save(out_dir)
        return metrics

    checkpoint = lineage.checkpoint("tiny-random", ctx.config.section_hash(section))
    train_once(ctx, asset, version, train, checkpoint)
    lineage.record(ctx, asset, "", version)


def _save_reward_model(base: Path, out: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)  # the new score head
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_home(rd_home: Path) -> Home:
    """sft_student, reward_model and rl_student checkpoints of the tiny model, with their tables."""
    os.environ["RD_HOME"] = str(rd_home)
    rd_home.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    for bench in raw["benchmarks"]:
        if bench["name"] == "gsm8k":  # as if read from the published GSM8K files
            bench.update(source="local", path=str(rd_home / "grade_school_math"))
    config_file = rd_home / "config.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    config = load_config(config_file)
    base = Path(resolve_model("tiny-random", rd_home).location)
    ctx = StepContext(config, run_id="run-data-1")
    _record_data(ctx, "gsm8k", gold=["1", "2", "3"], answers=["1", "2", "4"])  # 2 of 3 agree with gold
    _record_data(ctx, "alpaca_eval", gold=[None, None], answers=[None, None])
    ctx.store.append(
        "api_spend",
        [
            {
                "endpoint": "http://api",
                "model": "t",
                "entry_id": "e1",
                "label": "teacher_responses run run-data-1",
            }
            | {"input_tokens": 100, "output_tokens": 50, "cost_usd": 0.0123, "recorded_at": None},
            {
                "endpoint": "http://api",
                "model": "t",
                "entry_id": "e2",
                "label": "teacher_responses run other-run",
            }
            | {"input_tokens": 1, "output_tokens": 1, "cost_usd": 5.0, "recorded_at": None},
        ],
    )
    labels = {
        f"pseudo_labels[{b}]": ctx.store.latest_version("pseudo_labels", b) for b in ("gsm8k", "alpaca_eval")
    }
    sft_ctx = StepContext(config, run_id="run-sft-1")
    validation = {"validation": {"selected_step": 1}}
    _train(
        sft_ctx,
        "sft_student",
        "sft0000000000001",
        lambda out: _copy_model(base, out),
        StepLineage.of(TEACHER, labels),
        validation,
    )
    sft_ctx.store.replace_partition(
        "sft_validation",
        "gsm8k",
        _curve("sft_validation", "sft_version", "sft0000000000001", [0.3, 0.6, 0.5], 1),
    )
    sft = sft_ctx.store.latest_version("sft_student")
    rm_ctx = StepContext(config, run_id="run-rm-1")
    rm_metrics = {"heldout_accuracy": 0.75, "heldout_pairs": 8}
    _train(
        rm_ctx,
        "reward_model",
        "rm00000000000001",
        lambda out: _save_reward_model(base, out),
        StepLineage.of(TEACHER, {"sft_student": sft}),
        rm_metrics,
    )
    rm = rm_ctx.store.latest_version("reward_model")
    rl_ctx = StepContext(config, run_id="run-rl-1")
    _train(
        rl_ctx,
        "rl_student",
        "rl00000000000001",
        lambda out: _copy_model(base, out),
        StepLineage.of(TEACHER, {"sft_student": sft, "reward_model": rm}),
        {"validation": {"selected_step": 2}},
    )
    rl_ctx.store.replace_partition(
        "rl_validation",
        "gsm8k",
        _curve("rl_validation", "rl_version", "rl00000000000001", [0.6, 0.6, 0.9, 0.7], 2),
    )
    scores = [
        {"benchmark": "gsm8k", "model_role": role, "model_version": version, "metric": "accuracy"}
        | {"value": value, "ci_low": value - 0.2, "ci_high": value + 0.1, "n": 4}
        | {"eval_key": "key0000000000001", "eval_key_parts": "{}"}
        for role, version, value in (
            ("sft_student", "sft0000000000001", 0.5),
            ("rl_student", "rl00000000000001", 0.75),
        )
    ]
    rl_ctx.store.append("eval_scores", scores)
    versions = {
        "sft_student": "sft0000000000001",
        "reward_model": "rm00000000000001",
        "rl_student": "rl00000000000001",
    }
    return Home(rd_home, config_file, config, versions, base)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    saved = os.environ.get("RD_HOME")
    yield build_home(tmp_path_factory.mktemp("rd_home"))
    os.environ.pop("RD_HOME", None) if saved is None else os.environ.__setitem__("RD_HOME", saved)


def _export(home: Home, asset: str, to: Path, *extra: str) -> int:
    os.environ["RD_HOME"] = str(home.rd_home)
    return main(["export", asset, "--to", str(to), "--config", str(home.config_file), *extra])


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------------------ the folder


def test_exported_student_loads_applies_its_chat_template_and_generates(home: Home, tmp_path: Path):
    out = tmp_path / "rl"
    assert _export(home, "rl_student", out) == 0
    assert {"README.md", "lineage.json", "config.json", "model.safetensors", "chat_template.jinja"} <= {
        p.name for p in out.iterdir()
    }
    checkpoint = home.rd_home / "models" / "rl_student" / home.versions["rl_student"]
    assert (out / "lineage.json").read_bytes() == (checkpoint / "lineage.json").read_bytes()
    assert not (out / ".fingerprint.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    text = tokenizer.decode(ids[0])
    assert text.startswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>") and text.endswith("assistant\n")
    generated = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] > ids.shape[1]


def test_export_refuses_a_folder_that_is_not_empty_and_an_asset_never_made(
    home: Home, tmp_path: Path, capsys
):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert _export(home, "sft_student", tmp_path / "busy") == 1
    assert "exists and is not an empty directory" in _one_line(capsys.readouterr().err)
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    os.environ["RD_HOME"] = str(tmp_path / "empty_home")
    assert main(["export", "rl_student", "--to", str(tmp_path / "x"), "--preset", "tiny"]) == 1
    assert "no materialization of rl_student recorded" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def test_reward_model_exports_as_a_sequence_classifier_and_scores(home: Home, tmp_path: Path):
    out = tmp_path / "rm"
    assert _export(home, "reward_model", out) == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    checkpoint = home.rd_home / "models" / "reward_model" / home.versions["reward_model"]
    original = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": answer}], tokenize=False
        )
        for answer in ("5", "The answer is 7, because")
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        scores = model(**batch).logits
        expected = original(**batch).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()
    assert torch.equal(scores, expected)
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-classification"
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.metric_args["n"]) == (
        "pairwise_accuracy",
        0.75,
        8,
    )
    assert 0.4 < result.metric_args["ci95_low"] < 0.75 < result.metric_args["ci95_high"] < 1.0
    assert "Held-out pairwise accuracy: 0.750" in card.text


def test_lora_adapter_checkpoint_is_merged_and_loads_without_peft(tmp_path: Path, monkeypatch):
    from peft import LoraConfig, PeftModel, get_peft_model

    rd_home = tmp_path / "rd_home"
    monkeypatch.setenv("RD_HOME", str(rd_home))
    config = load_preset("tiny")
    base = Path(resolve_model("tiny-random", rd_home).location)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)

    def save_adapter(out: Path) -> None:
        get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(out)
        AutoTokenizer.from_pretrained(base).save_pretrained(out)

    ctx = StepContext(config, run_id="run-lora")
    _train(ctx, "sft_student", "lora000000000001", save_adapter, StepLineage.of(TEACHER, {}), {})
    out = tmp_path / "merged"
    assert main(["export", "sft_student", "--to", str(out), "--preset", "tiny"]) == 0
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    with safe_open(out / "model.safetensors", "pt") as weights:
        assert not [key for key in weights.keys() if "lora" in key]
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    adapter_dir = rd_home / "models" / "sft_student" / "lora000000000001"
    with torch.no_grad():
        exported = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
        with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir)
        expected = with_adapter.eval()(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base).eval()(ids).logits
    assert torch.allclose(exported, expected, atol=1e-5)
    assert not torch.allclose(exported, plain, atol=1e-3)  # the adapter changed the model, and it is in


# ------------------------------------------------------------------------------------------ the card


def test_card_carries_the_scores_and_the_lineage(home: Home, tmp_path: Path):
    out = tmp_path / "rl_card"
    assert _export(home, "rl_student", out) == 0
    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.base_model == "tiny-random"
    assert data.datasets == [
        "openai/gsm8k"
    ]  # alpaca_eval trains on the built-in instructions: no hub dataset
    assert {"rd-pipeline", "distillation", "rl-student"} <= set(data.tags)
    (score,) = data.eval_results
    assert (score.dataset_type, score.metric_type, score.metric_value) == ("openai/gsm8k", "accuracy", 0.75)
    assert score.metric_args == {"ci95_low": 0.55, "ci95_high": 0.85, "n": 4}
    text = card.text
    assert (
        f"teacher version (hash of its identity: backend, model, revision or file hash, sampling, prompt "
        f"template) `{TEACHER}`" in text
    )
    assert "Labelling judge: `tiny-random`" in text
    assert (
        "| gsm8k | `openai/gsm8k` (local); train prompts from `openai/gsm8k` | 3 | 2 | 0.667 (n=3) |" in text
    )
    assert (
        "| alpaca_eval | built-in sample written for rd-pipeline (format of `tatsu-lab/alpaca_eval`) | 2 | 2 | "
        "not measured (open-ended" in text
    )
    assert "Held-out pairwise accuracy: 0.750 (95% Wilson interval" in text
    assert "## RL validation\n\nStep 0 is the SFT student. Selected step: 2." in text
    assert "| 2 | 0.900 (n=3) | 0.500 | 0.200 | 0.0200 | yes |" in text
    assert "## SFT validation\n\nStep 0 is the base student. Selected step: 1." in text
    assert "Total: 300 tokens, $0.0200. API spend ledger (`api_spend`) for these runs: $0.0123." in text
    assert "hash recorded with the checkpoint: this is the config that trained it" in text
    for package in ("rd-pipeline", "torch", "transformers", "trl", "peft", "dagster"):
        assert f"| {package} | " in text


def test_sft_card_says_plainly_what_was_not_measured(home: Home, tmp_path: Path):
    out = tmp_path / "sft_card"
    assert _export(home, "sft_student", out) == 0
    text = ModelCard.load(out / "README.md").text
    assert "## RL validation\n\nNot applicable: this model was not trained by RL." in text
    assert "Held-out pairwise accuracy: not part of this model's lineage." in text
    another = home.config.model_copy(
        update={"sft": home.config.sft.model_copy(update={"learning_rate": 0.5})}
    )
    from rd_pipeline.export import export_model

    exported = export_model(another, "sft_student", tmp_path / "other_config")
    other = (exported.folder / "README.md").read_text()
    assert "so what follows is not the config that trained it" in other


# ------------------------------------------------------------------------------------------ --push


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer()
    yield server
    server.close()


def test_push_uploads_every_file_to_the_hub(home: Home, hub: HubServer, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    out = tmp_path / "pushed"
    assert _export(home, "rl_student", out, "--push", "me/tiny-rl", "--private") == 0
    assert f"pushed {out} to me/tiny-rl at {hub.url}" in capsys.readouterr().out
    assert hub.state.repos["me/tiny-rl"]["visibility"] == "private"
    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert hub.state.files["me/tiny-rl"] == local
    assert {"README.md", "lineage.json", "model.safetensors", "config.json"} <= set(local)
    assert set(hub.state.authorizations) == {"Bearer hf_test_token"}


def test_push_without_a_token_fails_in_one_line_before_any_work(home: Home, tmp_path: Path, capsys):
    out = tmp_path / "no_token"
    assert _export(home, "rl_student", out, "--push", "me/tiny-rl") == 1
    assert "HF_TOKEN is not set" in _one_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("status", [401, 403])
def test_push_refused_by_the_hub_fails_in_one_line(
    home: Home, hub: HubServer, tmp_path: Path, monkeypatch, capsys, status: int
):
    monkeypatch.setenv("HF_TOKEN", "hf_bad")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    hub.state.refuse_with = status
    assert _export(home, "sft_student", tmp_path / "refused", "--push", "me/tiny-sft") == 1
    line = _one_line(capsys.readouterr().err)
    assert f"refused the upload to me/tiny-sft: HTTP {status}" in line and hub.url in line
    assert not hub.state.files
