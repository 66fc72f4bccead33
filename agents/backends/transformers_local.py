"""The default backend: a transformers causal LM with its own batched decoding loop.

Why not `model.generate`: rows need their own stop strings, temperatures and token budgets, finished rows should leave
the batch (their KV cache is dropped), text must stream per row, and each sampled token's log-probability is kept for
training. The loop below does exactly that and nothing more.
"""

from __future__ import annotations

import threading

import torch

from agents.backends.base import Backend, Generation, GenerationRequest
from agents.backends.batching import BatchingQueue
from agents.backends.detokenize import IncrementalText, first_stop
from agents.errors import DuetError


class TransformersBackend(Backend):
    def __init__(self, model, tokenizer, name: str, max_batch_size: int = 32, seed: int = 0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self._eos_ids = _eos_ids(model, tokenizer)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self._eos_ids))
        self._rng = torch.Generator().manual_seed(seed)
        self._lock = threading.Lock()
        self._queue = BatchingQueue(self._generate_batch, max_batch_size)

    @classmethod
    def load(cls, source: str, dtype: str = "float32", device: str = "cpu", **options) -> TransformersBackend:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging

        logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype)).to(device)
        except OSError as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DuetError(f"cannot load model {source!r} ({first_line}); give a local folder, a cached hub id, or 'default'") from error
        return cls(model, tokenizer, name=source, **options)

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        return await self._queue.submit(requests)

    def _generate_batch(self, requests: list[GenerationRequest]) -> list[Generation]:
        with self._lock, torch.inference_mode():
            return self._decode(requests)

    def _decode(self, requests: list[GenerationRequest]) -> list[Generation]:
        device = self.model.device
        width = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((len(requests), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            input_ids[row, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            attention[row, width - len(request.prompt_ids) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        temperatures = torch.tensor([r.params.temperature for r in requests], device=device)
        top_ps = torch.tensor([r.params.top_p for r in requests], device=device)

        from transformers import DynamicCache

        cache = DynamicCache()
        texts = [IncrementalText(self.tokenizer) for _ in requests]
        logprobs: list[list[float]] = [[] for _ in requests]
        results: list[Generation | None] = [None] * len(requests)
        active = list(range(len(requests)))
        step_ids, step_positions = input_ids, positions
        while active:
            logits = self.model(
                input_ids=step_ids, attention_mask=attention, position_ids=step_positions, past_key_values=cache, use_cache=True
            ).logits[:, -1, :].float()
            tokens, token_logprobs = self._sample(logits, temperatures, top_ps)
            still_active = []
            for slot, row in enumerate(active):
                request, text, token = requests[row], texts[row], int(tokens[slot])
                delta = text.push(token)
                logprobs[row].append(float(token_logprobs[slot]))
                if delta and request.on_text is not None:
                    request.on_text(delta)
                stop = first_stop(text.text, delta, request.params.stop) if delta else None
                if token in self._eos_ids:
                    results[row] = self._finish(text, logprobs[row], "eos")
                elif stop is not None:
                    results[row] = self._finish(text, logprobs[row], "stop", stop)
                elif len(text.ids) >= request.params.max_new_tokens:
                    results[row] = self._finish(text, logprobs[row], "length")
                else:
                    still_active.append(slot)
            if len(still_active) < len(active):
                keep = torch.tensor(still_active, dtype=torch.long, device=device)
                cache.batch_select_indices(keep)
                attention, tokens, temperatures, top_ps = attention[keep], tokens[keep], temperatures[keep], top_ps[keep]
                step_positions = step_positions[keep]
                active = [active[slot] for slot in still_active]
            attention = torch.cat([attention, torch.ones((len(active), 1), dtype=attention.dtype, device=device)], dim=1)
            step_positions = step_positions[:, -1:] + 1
            step_ids = tokens.unsqueeze(-1)
        return results  # type: ignore[return-value]

    def _sample(self, logits: torch.Tensor, temperatures: torch.Tensor, top_ps: torch.Tensor):
        greedy = temperatures == 0
        scaled = logits / torch.where(greedy, torch.ones_like(temperatures), temperatures).unsqueeze(-1)
        log_probs = torch.log_softmax(scaled, dim=-1)
        tokens = log_probs.argmax(dim=-1)
        if not bool(greedy.all()):
            sorted_lp, order = log_probs.sort(dim=-1, descending=True)
            cumulative = sorted_lp.exp().cumsum(dim=-1)
            outside_nucleus = cumulative - sorted_lp.exp() >= top_ps.unsqueeze(-1)
            filtered = sorted_lp.masked_fill(outside_nucleus, float("-inf"))
            choice = torch.multinomial(filtered.softmax(dim=-1), 1, generator=self._rng).squeeze(-1)
            sampled = order.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
            tokens = torch.where(greedy, tokens, sampled)
        return tokens, log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    def _finish(self, text: IncrementalText, logprobs: list[float], reason: str, stop: str | None = None) -> Generation:
        return Generation(
            token_ids=list(text.ids),
            logprobs=logprobs,
            text=self.tokenizer.decode(text.ids),
            finish_reason=reason,
            stop_string=stop,
        )


def _eos_ids(model, tokenizer) -> set[int]:
    configured = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
