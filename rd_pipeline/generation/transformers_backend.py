"""Local generation with transformers: batched, seeded, resumable through the request journal.

Only samples missing from the journal are generated. The ``n`` samples of a prompt share one prefill (its KV
cache is copied to each sample's row) and are decoded together, prompts are bucketed by token length to cut
left padding, and each finished batch is committed to the journal before the next starts. The model loads on
the first pending sample, so a call whose samples are all journaled never loads it.
"""

from __future__ import annotations

import contextlib
import copy
import gc
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rd_pipeline.config import ModelConfig
from rd_pipeline.generation.base import (
    CandidateProbabilities,
    FollowUp,
    GenerationRequest,
    GenerationStats,
    ScoringRequest,
    local_model_identity,
)
from rd_pipeline.generation.candidates import Scored, journaled_scores
from rd_pipeline.generation.journal import Journal
from rd_pipeline.generation.loop import Batches, JournaledGenerator, JournalRun
from rd_pipeline.generation.sample_jobs import SampleJob, batch_seed, finished_jobs, make_batches, plan_jobs
from rd_pipeline.generation.transformers_cache import cache_arguments, left_padded, new_dynamic_cache
from rd_pipeline.generation.transformers_follow_up import FollowUpKey, plan_follow_ups, score_follow_ups
from rd_pipeline.memory import keep_mmap_threshold_fixed, trim_heap
from rd_pipeline.models import ResolvedModel

# Chat end markers of common templates; any that the tokenizer knows also stops generation.
_CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def transformers_identity(resolved: ResolvedModel, model: ModelConfig) -> dict[str, str]:
    return local_model_identity("transformers", resolved, model)


def chat_prompt_ids(tokenizer: Any, request: GenerationRequest | ScoringRequest) -> list[int]:
    """The token ids of a request's conversation, ending with the assistant turn's opening.

    A conversation that ends with an assistant message is a prefilled reply: the ids end inside that message, so
    the model continues it.
    """
    messages = [dict(m) for m in request.messages]
    prefilled = messages[-1]["role"] == "assistant"
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=not prefilled, continue_final_message=prefilled
    )
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
    return [int(token) for token in ids]


def stop_token_ids(tokenizer: Any, generation_config: Any) -> list[int]:
    """The eos ids of tokenizer and generation config plus any chat end marker in the vocabulary."""
    ids: list[int] = []
    configured = getattr(generation_config, "eos_token_id", None)
    for value in [tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])]:
        if value is not None:
            ids.append(int(value))
    vocab = tokenizer.get_vocab()
    ids += [vocab[token] for token in _CHAT_END_TOKENS if token in vocab]
    if not ids:
        raise ValueError("the tokenizer defines no eos token, so generation would never stop early")
    return sorted(set(ids))


class TransformersGenerator(JournaledGenerator):
    """A causal LM run in this process through ``model.generate``."""

    def __init__(self, resolved: ResolvedModel, model: ModelConfig, journal: Journal) -> None:
        self.resolved = resolved
        self.config = model
        self._journal = journal
        self._journal_path = journal.path
        self._identity = transformers_identity(resolved, model)
        self._model: Any = None
        self._tokenizer: Any = None
        self._stop_ids: list[int] = []
        self._pad_id = 0
        self.loads = 0  # how many times the weights were loaded (a no-op re-run loads none)
        self._follow_up: FollowUp | None = None
        # Follow-ups scored on their decode's cache, taken by the score_candidates call that asks for them.
        self._prescored: dict[FollowUpKey, CandidateProbabilities] = {}

    @property
    def identity(self) -> dict[str, str]:
        return dict(self._identity)

    def journal_path(self) -> Path:
        return self._journal_path

    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        keep_mmap_threshold_fixed()  # the model's freed tensors go back to the OS (see rd_pipeline.memory)
        dtype = "auto" if self.config.dtype == "auto" else getattr(torch, self.config.dtype)
        revision = {"revision": self.resolved.revision} if self.resolved.revision else {}
        self._tokenizer = AutoTokenizer.from_pretrained(self.resolved.location, **revision)
        model = AutoModelForCausalLM.from_pretrained(self.resolved.location, dtype=dtype, **revision)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        model.eval()
        self._model = model
        self._stop_ids = stop_token_ids(self._tokenizer, model.generation_config)
        pad = self._tokenizer.pad_token_id
        self._pad_id = int(pad) if pad is not None else self._stop_ids[0]
        self.loads += 1

    def decode(self, run: JournalRun) -> Batches:
        """Decode the pending samples in batches of similar prompt length, loading the model first."""
        self._ensure_loaded()
        jobs = plan_jobs(run.pending, self.config.batch_size)
        prompts = {job.position: chat_prompt_ids(self._tokenizer, job.request) for job in jobs}
        for batch in make_batches(
            jobs, {position: len(ids) for position, ids in prompts.items()}, self.config.batch_size
        ):
            outputs = self._decode_batch(batch, prompts)
            yield finished_jobs(batch, outputs, [len(prompts[job.position]) for job in batch])

    def _decode_batch(
        self, batch: list[SampleJob], prompts: dict[int, list[int]]
    ) -> list[list[tuple[str, int]]]:
        """Decode one batch; per job, its ``(text, output_tokens)`` sequences."""
        import torch
        from transformers import GenerationConfig

        params = batch[0].request.params
        sequences = batch[0].sequences
        input_ids, attention = left_padded([prompts[job.position] for job in batch], self._pad_id)
        width = input_ids.shape[1]
        sampling: dict[str, Any] = (
            {"do_sample": False}
            if batch[0].greedy
            else {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        )
        generation_config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=sequences,
            eos_token_id=self._stop_ids,
            pad_token_id=self._pad_id,
            **sampling,
        )
        device = self._model.device
        input_ids, attention = input_ids.to(device), attention.to(device)
        torch.manual_seed(batch_seed(batch))
        with torch.inference_mode():
            if sequences > 1 and width > 1:
                output = self._generate_with_shared_prefill(
                    input_ids, attention, sequences, generation_config
                )
            elif self._follow_up is not None and batch[0].greedy:
                output = self._generate_and_score_follow_ups(
                    batch, prompts, input_ids, attention, generation_config
                )
            else:
                output = self._model.generate(
                    input_ids=input_ids,
                    attention_mask=attention,
                    generation_config=generation_config,
                    **self._fresh_cache(),
                )
        generated = output[:, width:].tolist()
        return [
            [self._finish(generated[row * sequences + k]) for k in range(sequences)]
            for row in range(len(batch))
        ]

    def _fresh_cache(self) -> dict[str, Any]:
        """``generate``'s cache argument: an empty cache that grows in chunks, not a token at a time."""
        return {cache_arguments(self._model)[0]: new_dynamic_cache(self._model)}

    def _generate_with_shared_prefill(
        self, input_ids: Any, attention: Any, sequences: int, generation_config: Any
    ) -> Any:
        """Prefill each prompt once, copy its KV cache to its ``sequences`` rows, then decode them together.

        Same result as ``num_return_sequences=sequences``, which prefills every copy.
        """
        model = self._model
        cache_name, logits_arg = cache_arguments(model)
        cache = new_dynamic_cache(model)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        model(
            input_ids=input_ids[:, :-1],
            attention_mask=attention[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            **{cache_name: cache},
            **logits_arg,
        )
        cache.batch_repeat_interleave(sequences)
        expanded = copy.copy(generation_config)
        expanded.num_return_sequences = 1
        return model.generate(
            input_ids=input_ids.repeat_interleave(sequences, dim=0),
            attention_mask=attention.repeat_interleave(sequences, dim=0),
            generation_config=expanded,
            **{cache_name: cache},
        )

    @contextlib.contextmanager
    def scoring_follow_ups(self, follow_up: FollowUp) -> Iterator[None]:
        """Score each greedy completion's follow-up on the KV cache its decode leaves (see
        ``rd_pipeline.generation.transformers_follow_up``), for the ``score_candidates`` call that comes next."""
        self._follow_up, self._prescored = follow_up, {}
        try:
            yield
        finally:
            self._follow_up = None

    def _generate_and_score_follow_ups(
        self,
        batch: list[SampleJob],
        prompts: dict[int, list[int]],
        input_ids: Any,
        attention: Any,
        config: Any,
    ) -> Any:
        """Decode a greedy batch keeping its KV cache and score its rows' follow-ups on it; the sequences."""
        keep_cache = copy.copy(config)
        keep_cache.return_dict_in_generate = True
        output = self._model.generate(
            input_ids=input_ids, attention_mask=attention, generation_config=keep_cache, **self._fresh_cache()
        )
        width, cache = input_ids.shape[1], getattr(output, cache_arguments(self._model)[0])
        decoded = output.sequences[:, width:].tolist()
        follow_ups: list[tuple[list[int], tuple[str, ...]] | None] = []
        for job, tokens in zip(batch, decoded, strict=True):
            request = self._follow_up(job.request, self._finish(tokens)[0]) if self._follow_up else None
            follow_ups.append(
                None if request is None else (chat_prompt_ids(self._tokenizer, request), request.candidates)
            )
        rows = plan_follow_ups(
            [prompts[job.position] for job in batch], decoded, follow_ups, cache.get_seq_length() - width
        )
        # One candidate set per cache: the follow-ups of any other are scored by score_candidates as usual.
        rows = [r for r in rows if r.key[1] == rows[0].key[1]]
        if rows:
            tokens = self._candidate_tokens(rows[0].key[1])
            totals = lambda first, kv, mask: self._candidate_totals(first, kv, mask, tokens)  # noqa: E731
            self._prescored |= score_follow_ups(self._model, cache, width, rows, self._pad_id, totals)
        return output.sequences

    def score_candidates(
        self, requests: Sequence[ScoringRequest]
    ) -> tuple[list[CandidateProbabilities | None], GenerationStats]:
        """Exact probabilities of each candidate continuation (all its tokens), journaled; loads the model only
        for requests missing from the journal."""
        return journaled_scores(self.journal, self.journal_identity(), requests, self._score_pending)

    def _score_pending(self, requests: list[ScoringRequest]) -> tuple[list[Scored | None], GenerationStats]:
        """Score requests in batches of ``batch_size`` prompts of similar length sharing a candidate set."""
        self._ensure_loaded()
        stats = GenerationStats()
        prompts = [chat_prompt_ids(self._tokenizer, request) for request in requests]
        scored: list[Scored | None] = [None] * len(requests)
        groups: dict[tuple[str, ...], list[int]] = {}
        for index in sorted(range(len(requests)), key=lambda i: len(prompts[i])):
            found = self._prescored.pop((tuple(prompts[index]), requests[index].candidates), None)
            if found is not None:  # scored on its decode's cache
                scored[index] = Scored(found, len(prompts[index]))
                stats.backend_requests += 1
                stats.input_tokens += len(prompts[index])
                continue
            groups.setdefault(requests[index].candidates, []).append(index)
        for candidates, indices in groups.items():
            for start in range(0, len(indices), self.config.batch_size):
                batch = indices[start : start + self.config.batch_size]
                probabilities = self._continuation_probabilities([prompts[i] for i in batch], candidates)
                for index, found in zip(batch, probabilities, strict=True):
                    scored[index] = Scored(found, len(prompts[index]))
                stats.backend_requests += len(batch)
                stats.input_tokens += sum(len(prompts[i]) for i in batch)
        return scored, stats

    def _continuation_probabilities(
        self, prompts: list[list[int]], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """P(candidate | prompt) for each prompt and candidate: one prefill of the (left-padded) prompts that keeps
        only the last position's logits, then each candidate longer than one token continues every prompt on the
        prompts' shared KV cache, which is cut back to the prompts before the next candidate."""
        import math

        import torch

        tokens = self._candidate_tokens(candidates)
        input_ids, attention = left_padded(prompts, self._pad_id)
        with torch.inference_mode():
            first, cache = self._prefill_last_logprobs(input_ids, attention)
            totals = self._candidate_totals(first, cache, attention, tokens)
        return [
            {candidate: math.exp(total) for candidate, total in zip(candidates, row_totals, strict=True)}
            for row_totals in totals
        ]

    def _candidate_totals(
        self, first: Any, cache: Any, attention: Any, tokens: list[list[int]]
    ) -> list[list[float]]:
        """Per row, each candidate's log-probability: its first token from ``first`` (the last position's
        log-probabilities), its other tokens continuing the rows' ``cache`` (``attention`` covers it)."""
        totals = [[float(first[row, ids[0]]) for ids in tokens] for row in range(first.shape[0])]
        for candidate, ids in enumerate(tokens):
            if len(ids) > 1:
                rest = self._continuation_logprobs(cache, attention, ids)
                for row, logprob in enumerate(rest):
                    totals[row][candidate] += logprob
        return totals

    def _candidate_tokens(self, candidates: Sequence[str]) -> list[list[int]]:
        """Each candidate's token ids, without special tokens; a candidate that encodes to none is an error."""
        tokens = [self._tokenizer.encode(c, add_special_tokens=False) for c in candidates]
        if not all(tokens):
            raise ValueError(f"a candidate encodes to no tokens: {list(candidates)}")
        return tokens

    def _prefill_last_logprobs(self, input_ids: Any, attention: Any) -> tuple[Any, Any]:
        """Prefill the left-padded prompts; return the next-token log-probabilities after each prompt
        (rows x vocabulary) and the prompts' KV cache."""
        import torch

        model, device = self._model, self._model.device
        cache_name, last_only = cache_arguments(model)
        cache = new_dynamic_cache(model)
        output = model(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            position_ids=(attention.cumsum(-1) - 1).clamp(min=0).to(device),
            use_cache=True,
            **last_only,
            **{cache_name: cache},
        )
        return torch.log_softmax(output.logits[:, -1].float(), dim=-1), cache

    def _continuation_logprobs(self, cache: Any, attention: Any, ids: list[int]) -> list[float]:
        """Per prompt, log P(ids[1:] | prompt, ids[0]): the candidate's remaining tokens continue every prompt on
        the prompts' own cache, which is then cut back to the prompts (one cache for all candidates instead of
        a copy per candidate)."""
        import torch

        model, device = self._model, self._model.device
        cache_name, _ = cache_arguments(model)
        rows = attention.shape[0]
        rest = torch.tensor(ids[:-1], dtype=torch.long).repeat(rows, 1)
        output = model(
            input_ids=rest.to(device),
            attention_mask=torch.cat([attention, torch.ones_like(rest)], dim=1).to(device),
            position_ids=(attention.sum(-1)[:, None] + torch.arange(len(ids) - 1)[None, :]).to(device),
            use_cache=True,
            **{cache_name: cache},
        )
        logprobs = torch.log_softmax(output.logits.float(), dim=-1)
        cache.crop(-(len(ids) - 1))  # negative: tokens to remove (every transformers release)
        return [sum(float(logprobs[row, j - 1, ids[j]]) for j in range(1, len(ids))) for row in range(rows)]

    def _finish(self, tokens: list[int]) -> tuple[str, int]:
        """Cut a decoded row at its first stop token; return its text and its count of generated tokens."""
        stops = set(self._stop_ids)
        end = next((i for i, token in enumerate(tokens) if token in stops), None)
        body = tokens if end is None else tokens[:end]
        text = self._tokenizer.decode(body, skip_special_tokens=True)
        return text, len(tokens) if end is None else end + 1

    def close(self) -> None:
        """Free the model's memory and close the journal (it reopens if generate() is called again)."""
        self._prescored = {}
        if self._model is not None:
            self._model = None
            self._tokenizer = None
            gc.collect()
            trim_heap()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass
        super().close()
