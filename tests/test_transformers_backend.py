"""The default backend's decoding loop, checked against transformers itself on a tiny random-weight model."""

import asyncio

import pytest
import torch

from agents.backends.base import GenerationRequest, SamplingParams
from tests.conftest import TEST_DEVICE


def prompt(backend, text):
    return backend.encode_chat([{"role": "user", "content": text}])


async def test_greedy_matches_transformers_generate(tiny_backend):
    ids = prompt(tiny_backend, "hello there")
    [generation] = await tiny_backend.generate([GenerationRequest(ids, SamplingParams(max_new_tokens=12))])
    inputs = torch.tensor([ids], device=tiny_backend.model.device)
    reference = tiny_backend.model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=12, do_sample=False)
    expected = reference[0, len(ids) :].tolist()
    assert len(expected) == 12 and generation.token_ids == expected
    assert generation.text == tiny_backend.tokenizer.decode(generation.token_ids)


async def test_batched_rows_equal_single_rows_despite_padding(tiny_backend):
    prompts = [prompt(tiny_backend, text) for text in ["a", "a much longer question about numbers", "mid length"]]
    params = SamplingParams(max_new_tokens=8)
    together = await tiny_backend.generate([GenerationRequest(p, params) for p in prompts])
    alone = [(await tiny_backend.generate([GenerationRequest(p, params)]))[0] for p in prompts]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]


async def test_logprobs_match_a_full_forward_pass(tiny_backend):
    """Recorded log-probabilities are log_softmax(logits / temperature), before top-p filtering."""
    ids = prompt(tiny_backend, "score me")
    [generation] = await tiny_backend.generate([GenerationRequest(ids, SamplingParams(max_new_tokens=6, temperature=0.7, top_p=0.9, seed=1))])
    full = torch.tensor([ids + generation.token_ids], device=tiny_backend.model.device)
    with torch.no_grad():
        logits = tiny_backend.model(full).logits[0, len(ids) - 1 : -1] / 0.7
    expected = torch.log_softmax(logits.float().cpu(), -1).gather(-1, torch.tensor(generation.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(generation.logprobs), expected, atol=1e-4)


async def test_each_row_honours_its_own_stop_string_and_budget(tiny_backend):
    ids = prompt(tiny_backend, "stop test")
    [free] = await tiny_backend.generate([GenerationRequest(ids, SamplingParams(max_new_tokens=16))])
    assert free.finish_reason == "length" and len(free.token_ids) == 16
    decode = tiny_backend.tokenizer.decode
    stop = next(decode([token]) for token in free.token_ids[2:] if decode([token]).strip())
    at = next(k for k in range(16) if stop in decode(free.token_ids[: k + 1]))
    stopped, short = await tiny_backend.generate(
        [GenerationRequest(ids, SamplingParams(max_new_tokens=16, stop=[stop])), GenerationRequest(ids, SamplingParams(max_new_tokens=3))]
    )
    assert stopped.finish_reason == "stop" and stopped.stop_string == stop
    assert stopped.token_ids == free.token_ids[: at + 1] and stopped.text.endswith(stop)
    assert short.finish_reason == "length" and short.token_ids == free.token_ids[:3]


async def test_concurrent_calls_decode_in_one_batch(tiny_backend, monkeypatch):
    widths = []
    original = tiny_backend._step
    monkeypatch.setattr(tiny_backend, "_step", lambda batch: widths.append(len(batch.rows)) or original(batch))
    ids = prompt(tiny_backend, "batch me")
    results = await asyncio.gather(*(tiny_backend.generate([GenerationRequest(ids, SamplingParams(max_new_tokens=4))]) for _ in range(6)))
    assert max(widths) == 6 and len(widths) <= 5
    assert len({tuple(r[0].token_ids) for r in results}) == 1


async def test_rows_that_join_a_running_batch_decode_as_if_alone(tiny_backend, monkeypatch):
    joined = []
    original = tiny_backend._prefill
    monkeypatch.setattr(tiny_backend, "_prefill", lambda rows: joined.append(len(rows)) or original(rows))
    long_ids, short_ids = prompt(tiny_backend, "a long running row"), prompt(tiny_backend, "late")
    alone_long = (await tiny_backend.generate([GenerationRequest(long_ids, SamplingParams(max_new_tokens=150))]))[0]
    alone_short = (await tiny_backend.generate([GenerationRequest(short_ids, SamplingParams(max_new_tokens=5))]))[0]
    joined.clear()

    async def late():
        await asyncio.sleep(0.05)
        return (await tiny_backend.generate([GenerationRequest(short_ids, SamplingParams(max_new_tokens=5))]))[0]

    running = asyncio.ensure_future(tiny_backend.generate([GenerationRequest(long_ids, SamplingParams(max_new_tokens=150))]))
    short = await late()
    assert not running.done()  # the late row finished while the long one was still decoding
    [long] = await running
    assert joined == [1, 1]
    assert long.token_ids == alone_long.token_ids and short.token_ids == alone_short.token_ids


async def test_a_failing_model_fails_its_callers_not_the_engine(tiny_backend, monkeypatch):
    ids = prompt(tiny_backend, "boom")
    monkeypatch.setattr(tiny_backend, "_prefill", lambda rows: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(RuntimeError, match="out of memory"):
        await tiny_backend.generate([GenerationRequest(ids, SamplingParams(max_new_tokens=3))])
    monkeypatch.undo()
    [generation] = await tiny_backend.generate([GenerationRequest(ids, SamplingParams(max_new_tokens=3))])
    assert len(generation.token_ids) == 3


async def test_streamed_text_adds_up_to_the_generation(tiny_backend):
    pieces = []
    ids = prompt(tiny_backend, "stream")
    [generation] = await tiny_backend.generate([GenerationRequest(ids, SamplingParams(max_new_tokens=10), pieces.append)])
    await asyncio.sleep(0)  # callbacks hop back onto the loop
    assert "".join(pieces) == generation.text


async def test_sampling_is_seeded_and_varies(tiny_dir):
    from agents.backends.transformers_local import TransformersBackend

    first, second = TransformersBackend.load(str(tiny_dir), seed=3, device=TEST_DEVICE), TransformersBackend.load(str(tiny_dir), seed=3, device=TEST_DEVICE)
    ids = prompt(first, "sample")
    params = SamplingParams(max_new_tokens=8, temperature=1.0)
    a = await first.generate([GenerationRequest(ids, params) for _ in range(4)])
    b = await second.generate([GenerationRequest(ids, params) for _ in range(4)])
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert len({tuple(g.token_ids) for g in a}) > 1


async def test_closing_stops_the_engine_and_fails_waiting_callers(tiny_dir):
    from agents.backends.transformers_local import TransformersBackend

    backend = TransformersBackend.load(str(tiny_dir), device=TEST_DEVICE)
    ids = prompt(backend, "long")
    running = asyncio.ensure_future(backend.generate([GenerationRequest(ids, SamplingParams(max_new_tokens=2000))]))
    await asyncio.sleep(0.2)
    await backend.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await running
    assert backend._engine is None or not backend._engine.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        await backend.generate([GenerationRequest(ids, SamplingParams(max_new_tokens=2))])


async def test_a_seeded_row_samples_the_same_tokens_whatever_shares_its_batch(tiny_backend):
    ids = prompt(tiny_backend, "sample me")
    seeded = GenerationRequest(ids, SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=5))
    [alone] = await tiny_backend.generate([seeded])
    others = [GenerationRequest(prompt(tiny_backend, f"other {n}"), SamplingParams(max_new_tokens=6 + n, temperature=1.0, seed=n)) for n in range(3)]
    crowded = await tiny_backend.generate([others[0], seeded, *others[1:]])
    late = asyncio.ensure_future(tiny_backend.generate([GenerationRequest(prompt(tiny_backend, "early"), SamplingParams(max_new_tokens=40, temperature=1.0))]))
    await asyncio.sleep(0.02)
    [joined] = await tiny_backend.generate([seeded])
    await late
    assert alone.token_ids == crowded[1].token_ids == joined.token_ids
    [reseeded] = await tiny_backend.generate([GenerationRequest(ids, seeded.params.model_copy(update={"seed": 6}))])
    assert reseeded.token_ids != alone.token_ids


async def test_a_shared_prompt_prefix_is_run_once_and_changes_nothing(tiny_dir):
    """The second prompt shares its first 40 tokens with the first: only its remaining tokens go through the model,
    and its greedy tokens and log-probabilities are those of a full forward pass over the whole prompt."""
    from agents.backends.transformers_local import TransformersBackend

    backend = TransformersBackend.load(str(tiny_dir), device=TEST_DEVICE)
    shared = prompt(backend, "a long shared system prompt with worked examples " * 4)[:40]
    first, second = shared + [100, 101, 102], shared + [200, 201]
    params = SamplingParams(max_new_tokens=6, temperature=0.7, seed=3)
    await backend.generate([GenerationRequest(first, params)])
    widths = []
    forward = backend.model.forward
    backend.model.forward = lambda *a, **k: widths.append(k["input_ids"].shape[1]) or forward(*a, **k)
    [generation] = await backend.generate([GenerationRequest(second, params)])
    backend.model.forward = forward
    assert widths[0] == 2  # the prefill ran only what the prompt does not share
    full = torch.tensor([second + generation.token_ids], device=backend.model.device)
    with torch.no_grad():
        logits = backend.model(full).logits[0, len(second) - 1 : -1].float().cpu() / 0.7
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(generation.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(generation.logprobs), expected, atol=1e-4)
    await backend.aclose()


def test_grouped_attention_without_copies_gives_sdpas_numbers_and_gradients(tiny_dir):
    """On a left-padded batch (the case that made SDPA copy the cache), logits and gradients equal plain SDPA's."""
    from agents.backends.attention import NAME, use_grouped_sdpa
    from agents.models import load_causal_lm

    model, _ = load_causal_lm(str(tiny_dir), "float32", "cpu")
    ids = torch.randint(5, 1000, (3, 12), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    attention[0, :5] = 0
    attention[2, :2] = 0
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    results = {}
    for implementation in ("sdpa", NAME):
        if implementation == "sdpa":
            model.set_attn_implementation("sdpa")
        else:
            use_grouped_sdpa(model)
        assert model.config._attn_implementation == implementation
        model.zero_grad()
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits
        (logits[attention.bool()].logsumexp(-1).sum()).backward()
        results[implementation] = (logits[attention.bool()].detach(), model.model.layers[0].self_attn.k_proj.weight.grad.clone())
    assert torch.allclose(results["sdpa"][0], results[NAME][0], atol=1e-5)
    assert torch.allclose(results["sdpa"][1], results[NAME][1], atol=1e-5)


async def test_a_weight_update_invalidates_the_shared_prefix(tiny_dir):
    """Training changes the backend's weights in place between rollouts: keys and values computed before must not
    be reused, or the next rollout samples from a mix of old and new weights."""
    from agents.backends.transformers_local import TransformersBackend

    backend = TransformersBackend.load(str(tiny_dir), device=TEST_DEVICE)
    shared = prompt(backend, "a long shared system prompt with worked examples " * 4)[:40]
    params = SamplingParams(max_new_tokens=6)
    await backend.generate([GenerationRequest(shared + [100, 101], params)])
    with torch.no_grad():
        for parameter in backend.model.parameters():
            parameter.mul_(1.5)
    [after_update] = await backend.generate([GenerationRequest(shared + [200, 201], params)])
    fresh = TransformersBackend(backend.model, backend.tokenizer, name="fresh")
    [from_scratch] = await fresh.generate([GenerationRequest(shared + [200, 201], params)])
    assert after_update.token_ids == from_scratch.token_ids and after_update.logprobs == pytest.approx(from_scratch.logprobs, abs=1e-5)
    await backend.aclose()
    await fresh.aclose()
