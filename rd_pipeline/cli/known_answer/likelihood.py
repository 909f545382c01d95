"""What the models already know about the held-out gold pairs: how often a causal LM's own likelihood ranks the
gold-correct response above the gold-wrong one. Set beside the reward model's accuracy on the same pairs, it tells
a reward model that could not learn from one that did not use what the policy it starts from knows."""

from __future__ import annotations

from collections.abc import Sequence

from rd_pipeline.cli.known_answer.stats import mean_or_none

Conversation = list[dict[str, str]]


def mean_response_logprob(model, tokenizer, conversation: Conversation) -> float:
    """Mean log-probability per token of the conversation's last (assistant) message given the messages before
    it, both rendered with the tokenizer's chat template."""
    import torch

    prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(conversation, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    ids = torch.tensor([tokenizer(full, add_special_tokens=False).input_ids])
    if ids.shape[1] <= len(prompt_ids):
        raise ValueError(f"the response adds no tokens to the prompt: {conversation[-1]['content']!r}")
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    positions = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)  # those that predict a response token
    return logprobs[positions, ids[0, positions + 1]].double().mean().item()


def likelihood_pair_accuracy(
    model_dir: str, pairs: Sequence[tuple[Conversation, Conversation]]
) -> float | None:
    """Share of (correct, wrong) conversation pairs whose correct response the causal LM at ``model_dir`` gives
    the higher mean log-probability per token (ties count as wrong); None without pairs."""
    if not pairs:
        return None
    from transformers import AutoModelForCausalLM

    from rd_pipeline.training.loading import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    cache: dict[str, float] = {}

    def score(conversation: Conversation) -> float:
        key = repr(conversation)
        if key not in cache:
            cache[key] = mean_response_logprob(model, tokenizer, conversation)
        return cache[key]

    return mean_or_none([float(score(correct) > score(wrong)) for correct, wrong in pairs])
