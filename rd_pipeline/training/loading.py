"""Loading a checkpoint's tokenizer and model for training, and whole-model loading under ZeRO-3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rd_pipeline.training.precision import Precision


def load_tokenizer(location: str, revision: str | None = None):
    """The checkpoint's tokenizer, with a pad token (the eos token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    location: str, auto_class, precision: Precision, revision: str | None = None, **config_overrides: Any
):
    """Load ``location`` (at ``revision``) with ``auto_class`` in the training dtype, on the CPU.

    No device_map: the trainer places the model on its process's device (DDP, FSDP and DeepSpeed need that).
    A ``quantization_config`` of method "gguf" is dropped first: checkpoints converted from GGUF hold plain
    dequantized weights, but the leftover entry would make the trainer refuse full fine-tuning.
    """
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    config = AutoConfig.from_pretrained(location, revision=revision, **config_overrides)
    quantization = getattr(config, "quantization_config", None)
    if isinstance(quantization, dict) and quantization.get("quant_method") == "gguf":
        del config.quantization_config
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its loading report would list the new head; ours below lists the rest
    try:
        model, info = auto_class.from_pretrained(
            location, revision=revision, config=config, dtype=precision.dtype, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    _report_missing_weights(model, info, location)
    return model


def _report_missing_weights(model, info: dict[str, Any], location: str) -> None:
    """Warn about checkpoint weights the model lacks or did not use, apart from its task head: a causal LM loaded
    as a reward model gets a new head (initialised, then trained) and leaves its language-model head unused."""
    from transformers.utils import logging as hf_logging

    prefix = f"{model.base_model_prefix}."

    def own(keys: Any) -> list[str]:
        return sorted(str(key) for key in keys or () if str(key).startswith(prefix))

    missing, unexpected = own(info.get("missing_keys")), own(info.get("unexpected_keys"))
    mismatched = sorted(str(entry[0]) for entry in info.get("mismatched_keys") or ())
    problems = [
        f"{label} {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}"
        for label, keys in (("missing", missing), ("unused", unexpected), ("of another shape", mismatched))
        if keys
    ]
    if problems:
        hf_logging.get_logger("transformers").warning(
            f"{location}: weights {'; '.join(problems)} (newly initialised where missing)"
        )


@contextmanager
def whole_model_loading() -> Iterator[None]:
    """Load whole models in this process alone, also inside a DeepSpeed ZeRO-3 process group.

    Under ZeRO-3 transformers builds every model in ``deepspeed.zero.Init``, which partitions each weight over
    the group as it is created, a collective every process must join: a model loaded by the main process
    alone (the LoRA merge, held-out scoring) would wait for the others forever. Elsewhere this does nothing.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved
