"""Score conversations with a trained reward model (a sequence-classification checkpoint with one output)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rd_pipeline.training.loading import load_tokenizer
from rd_pipeline.training.precision import release_memory
from rd_pipeline.training.records import check_messages

CONVERSATION_ROLES = ("system", "user", "assistant")


class RewardScorer:
    """Scores conversations with a reward model, rendered with its tokenizer's chat template.

    ``RewardScorer(location)`` loads a saved reward model once; ``RewardScorer.of_model`` scores with a model
    already in memory (the one being trained). The text is rendered and tokenized the way TRL's reward and GRPO
    trainers do it, so scores here match the rewards the model was trained on and gives during RL.
    """

    def __init__(self, location: str, max_length: int | None = None) -> None:
        from transformers import AutoModelForSequenceClassification

        tokenizer = load_tokenizer(location)
        model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=1)
        if model.config.num_labels != 1:
            raise ValueError(
                f"{location} is not a reward model: it has {model.config.num_labels} outputs, not 1"
            )
        model.config.pad_token_id = tokenizer.pad_token_id
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._use(location, model.to(device).eval(), tokenizer, max_length)

    @classmethod
    def of_model(cls, model, tokenizer, max_length: int | None = None) -> RewardScorer:
        """A scorer of ``model`` as it is (device, train or eval mode): the caller sets its mode and owns it."""
        scorer = cls.__new__(cls)
        scorer._use("the model in training", model, tokenizer, max_length)
        return scorer

    def _use(self, location: str, model, tokenizer, max_length: int | None) -> None:
        self.location = location
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = next(model.parameters()).device

    def render(self, conversation: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False)

    def score(self, conversations: Sequence[list[dict]], batch_size: int = 16) -> list[float]:
        """One scalar reward per conversation (user + assistant messages), in input order; a conversation that
        renders like an earlier one gets its score without another forward pass."""
        if self.model is None:
            raise RuntimeError(f"reward scorer for {self.location} is closed")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        for index, conversation in enumerate(conversations):
            check_messages(conversation, "conversation", f"#{index}", "messages", CONVERSATION_ROLES)
        rendered = [self.render(conversation) for conversation in conversations]
        unique = list(dict.fromkeys(rendered))
        by_text = dict(zip(unique, self._score_texts(unique, batch_size), strict=True))
        return [by_text[text] for text in rendered]

    def _score_texts(self, texts: list[str], batch_size: int) -> list[float]:
        """One reward per rendered text, in order, in batches of similar length."""
        # Longest first, so each batch holds similar lengths and little padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        scores = [0.0] * len(texts)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            inputs = self.tokenizer(
                [texts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                add_special_tokens=False,
                truncation=self.max_length is not None,
                max_length=self.max_length,
            ).to(self.device)
            with torch.no_grad():  # not inference_mode: a model in training may be scored
                logits = self.model(**inputs).logits[:, 0].float().cpu().tolist()
            for i, value in zip(batch, logits, strict=True):
                scores[i] = value
        return scores

    def close(self) -> None:
        """Free the model's memory; the scorer cannot be used afterwards."""
        self.model = None
        release_memory()

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
