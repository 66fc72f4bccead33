"""The default backend: a transformers causal LM with its own continuously batched decoding loop.

Why not `model.generate`: rows need their own stop strings, temperatures and token budgets, text must stream per row,
and each sampled token's log-probability is kept for training. Why continuous batching: in the graph, a row that
closes a request early must not wait for the longest row of its batch before its coder call and its next segment can
run. Between two decoding steps, finished rows leave the batch (their KV cache is dropped) and new requests join it
(prefilled, then merged into the cache with left padding), so the requester and coder calls of many questions keep
one batch busy.

Why a prefix cache: every requester prompt starts with the same system prompt and worked examples, and the G samples
of a training question share their whole prompt. The keys and values of the longest prompt prefilled last are kept,
and a joining row that begins with some of the same tokens starts from them: only the rest of its prompt is run.
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from agents.backends.attention import use_grouped_sdpa
from agents.backends.base import Backend, Generation, GenerationRequest, SamplingParams
from agents.backends.batching import on_caller_loop
from agents.backends.detokenize import IncrementalText, first_stop
from agents.tokenizing import encode_text


@dataclass
class _Row:
    request: GenerationRequest
    deliver: callable
    text: IncrementalText
    generator: torch.Generator | None = None
    logprobs: list[float] = field(default_factory=list)


MIN_SHARED_PREFIX = 16  # tokens; below this, reusing keys and values saves less than it costs


@dataclass
class _Prefix:
    """Keys and values of one prompt, per layer, each of shape (1, heads, tokens, dim), and the version of the
    weights that computed them: after an optimizer step (training shares these weights) they are stale."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    weights: int


@dataclass
class _Batch:
    """Rows being decoded together. `cache` holds keys and values of shape (rows, heads, columns, dim); `attention`
    marks real columns (prompts are left-padded); `logits` are each row's next-token scores."""

    rows: list[_Row]
    cache: object
    attention: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor


class TransformersBackend(Backend):
    def __init__(self, model, tokenizer, name: str, max_batch_size: int = 32, seed: int = 0):
        use_grouped_sdpa(model)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch_size = max_batch_size
        self.context_window = getattr(model.config, "max_position_embeddings", None)
        self._eos_ids = _eos_ids(model, tokenizer)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self._eos_ids))
        self._seeds = random.Random(seed)
        self._inbox: queue.Queue[_Row] = queue.Queue()
        self._engine: threading.Thread | None = None
        self._engine_lock = threading.Lock()
        self._closing = threading.Event()
        self._prefix: _Prefix | None = None

    @classmethod
    def load(cls, source: str, dtype: str = "float32", device: str = "cpu", **options) -> TransformersBackend:
        from agents.models import load_causal_lm

        model, tokenizer = load_causal_lm(source, dtype, device)
        return cls(model, tokenizer, name=source, **options)

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        if self._closing.is_set():
            raise RuntimeError(f"backend {self.name} is closed")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in requests]
        for request, future in zip(requests, futures, strict=True):
            row = _Row(on_caller_loop(request, loop), _resolver(future, loop), IncrementalText(self.tokenizer), self._generator(request.params))
            self._inbox.put(row)
        self._ensure_engine()
        return list(await asyncio.gather(*futures))

    def _generator(self, params: SamplingParams) -> torch.Generator | None:
        """Each sampled row draws from its own generator, on the model's device (CUDA rejects a CPU generator), so
        its tokens do not depend on which other rows share the batch. Rows without a seed take the next one from
        the backend's seeded sequence, which is reproducible for a fixed order of calls."""
        if params.temperature == 0:
            return None
        seed = params.seed if params.seed is not None else self._seeds.getrandbits(63)
        return torch.Generator(device=self.model.device).manual_seed(seed)

    def _ensure_engine(self) -> None:
        with self._engine_lock:
            if self._engine is None or not self._engine.is_alive():
                self._engine = threading.Thread(target=self._serve, name=f"decode:{self.name}", daemon=True)
                self._engine.start()

    def _serve(self) -> None:
        """The engine thread: admit waiting rows, take one decoding step, repeat; exits when there is nothing to do."""
        batch: _Batch | None = None
        with torch.inference_mode():
            while True:
                if self._closing.is_set():
                    for row in (batch.rows if batch else []) + _drain(self._inbox, self._inbox.qsize()):
                        row.deliver(RuntimeError(f"backend {self.name} was closed while generating"))
                    return
                room = self.max_batch_size - (len(batch.rows) if batch else 0)
                waiting = _drain(self._inbox, room)
                if batch is None and not waiting:
                    with self._engine_lock:
                        if self._inbox.empty():
                            self._engine = None
                            return
                    continue
                try:
                    if waiting:
                        batch = _merge(batch, self._prefill(waiting))
                    batch = self._step(batch)
                except Exception as error:  # noqa: BLE001 - every waiting caller gets the failure
                    for row in (batch.rows if batch else []) + waiting:
                        row.deliver(error)
                    batch = None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """The mean over its tokens of the last layer's hidden states, per text, computed one text at a time beside the
        decoding engine (read-only use of the same weights), so no padding enters the mean."""
        return await asyncio.to_thread(self._embed, texts)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        vectors = []
        with torch.inference_mode():
            for text in texts:
                ids = encode_text(self.tokenizer, text) or [self._pad_id]
                output = self.model(input_ids=torch.tensor([ids], device=self.model.device), output_hidden_states=True)
                vectors.append(output.hidden_states[-1][0].float().mean(dim=0).tolist())
        return vectors

    async def aclose(self) -> None:
        """Stop the engine between two steps (callers still waiting get an error) so no thread outlives the loop."""
        self._closing.set()
        engine = self._engine
        if engine is not None:
            await asyncio.to_thread(engine.join)

    def _prefill(self, rows: list[_Row]) -> _Batch:
        """Run the joining rows' prompts. Columns: the reused prefix (shared by every row), then each row's remaining
        prompt tokens, left-padded; positions count only real columns, so padding in the middle changes nothing."""
        from transformers import DynamicCache

        device = self.model.device
        prompts = [row.request.prompt_ids for row in rows]
        prefix = self._reusable_prefix(prompts)
        shared = len(prefix.ids) if prefix else 0
        rests = [ids[shared:] for ids in prompts]
        width = max(len(rest) for rest in rests)
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), shared + width), dtype=torch.long)
        attention[:, :shared] = 1
        for index, rest in enumerate(rests):
            input_ids[index, width - len(rest) :] = torch.tensor(rest)
            attention[index, shared + width - len(rest) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        if prefix is None:
            cache = DynamicCache()
        else:
            cache = DynamicCache(ddp_cache_data=[(k.expand(len(rows), -1, -1, -1).contiguous(), v.expand(len(rows), -1, -1, -1).contiguous()) for k, v in prefix.layers])
        logits = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache, use_cache=True).logits
        self._remember_prefix(prompts, cache, attention)
        return _Batch(rows, cache, attention, attention.sum(-1), logits[:, -1, :].float())

    def _reusable_prefix(self, prompts: list[list[int]]) -> _Prefix | None:
        """The remembered prefix, cut to what every joining prompt shares with it (always leaving each prompt at
        least one token to run, whose logits start its generation)."""
        if self._prefix is None or self._prefix.weights != self._weights_version():
            return None
        shared = min(min(_common_length(self._prefix.ids, ids), len(ids) - 1) for ids in prompts)
        if shared < MIN_SHARED_PREFIX:
            return None
        return _Prefix(self._prefix.ids[:shared], [(k[:, :, :shared], v[:, :, :shared]) for k, v in self._prefix.layers], self._prefix.weights)

    def _remember_prefix(self, prompts: list[list[int]], cache, attention: torch.Tensor) -> None:
        """Keep the longest joining prompt's keys and values (its real columns) for the rows that come next."""
        longest = max(range(len(prompts)), key=lambda index: len(prompts[index]))
        if len(prompts[longest]) < MIN_SHARED_PREFIX:
            return
        columns = attention[longest].nonzero().squeeze(-1)
        layers = [(layer.keys[longest : longest + 1, :, columns], layer.values[longest : longest + 1, :, columns]) for layer in cache.layers]
        self._prefix = _Prefix(list(prompts[longest]), layers, self._weights_version())

    def _weights_version(self) -> int:
        """Changes whenever any parameter is changed in place (an optimizer step, loading a checkpoint)."""
        return sum(parameter._version for parameter in self.model.parameters())

    def _step(self, batch: _Batch) -> _Batch | None:
        """Sample one token per row, retire finished rows, and run the model once for the rest."""
        tokens, token_logprobs = _sample(batch.logits, batch.rows)
        keep = []
        for index, (token, logprob) in enumerate(zip(tokens.tolist(), token_logprobs.tolist(), strict=True)):
            row, params = batch.rows[index], batch.rows[index].request.params
            delta = row.text.push(token)
            row.logprobs.append(logprob)
            if delta and row.request.on_text is not None:
                row.request.on_text(delta)
            stop = first_stop(row.text.text, delta, params.stop) if delta else None
            if token in self._eos_ids:
                row.deliver(self._finish(row, "eos"))
            elif stop is not None:
                row.deliver(self._finish(row, "stop", stop))
            elif len(row.text.ids) >= params.max_new_tokens:
                row.deliver(self._finish(row, "length"))
            else:
                keep.append(index)
        if not keep:
            return None
        if len(keep) < len(batch.rows):
            batch = _select(batch, keep)
            tokens = tokens[keep]
        attention = torch.cat([batch.attention, batch.attention.new_ones((len(keep), 1))], dim=1)
        logits = self.model(
            input_ids=tokens[:, None], attention_mask=attention, position_ids=batch.positions[:, None], past_key_values=batch.cache, use_cache=True
        ).logits
        return _Batch(batch.rows, batch.cache, attention, batch.positions + 1, logits[:, -1, :].float())

    def _finish(self, row: _Row, reason: str, stop: str | None = None) -> Generation:
        ids = list(row.text.ids)
        return Generation(token_ids=ids, logprobs=row.logprobs, text=self.tokenizer.decode(ids), finish_reason=reason, stop_string=stop)


def _sample(logits: torch.Tensor, rows: list[_Row]) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row: argmax when greedy, else a draw from the row's own generator within its top-p nucleus.
    The log-probability kept is that of the temperature-scaled distribution before top-p filtering."""
    temperatures = torch.tensor([row.request.params.temperature for row in rows], device=logits.device)
    greedy = temperatures == 0
    scaled = logits / torch.where(greedy, torch.ones_like(temperatures), temperatures).unsqueeze(-1)
    log_probs = torch.log_softmax(scaled, dim=-1)
    tokens = log_probs.argmax(dim=-1)
    sampled = [index for index, row in enumerate(rows) if row.generator is not None]
    nucleus = [index for index in sampled if rows[index].request.params.top_p < 1.0]
    if nucleus:  # only rows with top_p < 1 need the vocabulary sorted
        top_ps = torch.tensor([rows[index].request.params.top_p for index in nucleus], device=logits.device)
        sorted_lp, order = log_probs[nucleus].sort(dim=-1, descending=True)
        probs = sorted_lp.exp()
        kept = probs.masked_fill(probs.cumsum(dim=-1) - probs >= top_ps.unsqueeze(-1), 0.0)
        for k, index in enumerate(nucleus):
            tokens[index] = order[k, torch.multinomial(kept[k], 1, generator=rows[index].generator)[0]]
    for index in sampled:
        if rows[index].request.params.top_p >= 1.0:
            tokens[index] = torch.multinomial(log_probs[index].exp(), 1, generator=rows[index].generator)[0]
    return tokens, log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _common_length(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def _drain(inbox: queue.Queue, room: int) -> list[_Row]:
    rows = []
    while len(rows) < room:
        try:
            rows.append(inbox.get_nowait())
        except queue.Empty:
            break
    return rows


def _merge(batch: _Batch | None, joining: _Batch) -> _Batch:
    """Stack two batches whose caches have different widths by left-padding the narrower one."""
    if batch is None:
        return joining
    width = max(batch.attention.shape[1], joining.attention.shape[1])
    for old, new in zip(batch.cache.layers, joining.cache.layers, strict=True):
        old.keys = torch.cat([_left_pad(old.keys, width, dim=2), _left_pad(new.keys, width, dim=2)])
        old.values = torch.cat([_left_pad(old.values, width, dim=2), _left_pad(new.values, width, dim=2)])
    attention = torch.cat([_left_pad(batch.attention, width, dim=1), _left_pad(joining.attention, width, dim=1)])
    return _Batch(
        batch.rows + joining.rows, batch.cache, attention, torch.cat([batch.positions, joining.positions]), torch.cat([batch.logits, joining.logits])
    )


def _select(batch: _Batch, keep: list[int]) -> _Batch:
    """Keep some rows, and drop leading columns that are padding for every remaining row."""
    index = torch.tensor(keep, device=batch.attention.device)
    attention = batch.attention[index]
    first_used = int(attention.any(dim=0).nonzero()[0])
    for layer in batch.cache.layers:
        layer.keys = layer.keys[index, :, first_used:]
        layer.values = layer.values[index, :, first_used:]
    return _Batch([batch.rows[i] for i in keep], batch.cache, attention[:, first_used:], batch.positions[index], batch.logits[index])


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    padding = [0, 0] * (tensor.dim() - dim - 1) + [missing, 0]
    return F.pad(tensor, padding)


def _resolver(future: asyncio.Future, loop: asyncio.AbstractEventLoop):
    def deliver(outcome) -> None:
        def settle():
            if future.done():
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        loop.call_soon_threadsafe(settle)

    return deliver


def _eos_ids(model, tokenizer) -> set[int]:
    configured = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
