"""Real vLLM on the CPU: its OpenAI-compatible server on 127.0.0.1, and in-process vLLM.

vLLM lives in its own environment (`make vllm-env`, path in DUET_VLLM_PYTHON) because it pins its own stack. Under CI
a missing environment is a failure, not a skip.
"""

import json
import os
import socket
import subprocess
import time

import httpx
import pytest

from agents.backends.base import GenerationRequest, SamplingParams
from agents.models import load_backend
from graph.build import Team
from graph.config import AgentConfig
from graph.run import run_question

pytestmark = pytest.mark.slow
VLLM_PYTHON = os.environ.get("DUET_VLLM_PYTHON")
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}


def require_vllm():
    if not VLLM_PYTHON:
        if os.environ.get("CI"):
            pytest.fail("DUET_VLLM_PYTHON is not set; CI runs these tests through `make test`")
        pytest.skip("vLLM environment not set up; run `make test` (or set DUET_VLLM_PYTHON)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(embedded_dir, tmp_path_factory):
    require_vllm()
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    command = [
        VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(embedded_dir), "--served-model-name", "smol",
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "4096", "--enforce-eager",
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **VLLM_ENV})
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"vLLM server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("vLLM server did not start within 240 s")
        yield f"openai:{base}#smol"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


async def test_server_chat_and_token_level_generation(server, tiny_backend):
    backend = load_backend(server)
    assert backend.tokenizer is not None  # found through the model folder the server reports
    reply = await backend.chat([{"role": "user", "content": "Say hello."}], SamplingParams(max_new_tokens=12))
    assert reply.strip()
    ids = backend.encode_chat([{"role": "user", "content": "Count: one two three four"}])
    free, = await backend.generate([GenerationRequest(ids, SamplingParams(max_new_tokens=16))])
    assert backend.tokenizer.decode(free.token_ids) == free.text and len(free.logprobs) == len(free.token_ids)
    words = [w for w in free.text.split() if w.isalpha()]
    stop = words[1] if len(words) > 1 else free.text.strip()[:2]
    stopped, short = await backend.generate(
        [GenerationRequest(ids, SamplingParams(max_new_tokens=16, stop=[stop])), GenerationRequest(ids, SamplingParams(max_new_tokens=3))]
    )
    assert stopped.finish_reason == "stop" and stopped.text.endswith(stop) and len(stopped.token_ids) < len(free.token_ids)
    assert short.finish_reason == "length" and short.token_ids == free.token_ids[:3]
    await backend.aclose()


async def test_server_greedy_tokens_match_the_transformers_backend(server, embedded_dir):
    from agents.backends.transformers_local import TransformersBackend

    served, local = load_backend(server), TransformersBackend.load(str(embedded_dir))
    ids = local.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    params = SamplingParams(max_new_tokens=8)
    [remote] = await served.generate([GenerationRequest(ids, params)])
    [mine] = await local.generate([GenerationRequest(ids, params)])
    assert remote.token_ids == mine.token_ids
    assert remote.logprobs == pytest.approx(mine.logprobs, abs=1e-2)
    await served.aclose()


async def test_graph_with_the_served_model_as_coder_and_as_requester(server, tokenizer):
    from agents.sandbox import Sandbox

    config = AgentConfig.model_validate({"limits": {"max_calls": 2}})
    for requester in ("default", server):
        team = Team(requester, server, config)
        state = await run_question(team.graph(), "What is 48213 * 9123?", config)
        await team.aclose()
        assert state.status in {"answered", "no_answer", "limit"}, state.error
        trajectory = state.trajectory
        assert tokenizer.decode(trajectory.token_ids) == trajectory.transcript
        assert sum(trajectory.loss_mask) == trajectory.count("requester")
        for call in state.calls:
            if call.code and call.output is not None:
                assert (await Sandbox().arun(call.code)).stdout == call.output


def test_in_process_vllm_runs_the_same_graph(tmp_path):
    """`duet ask --requester vllm:default --coder vllm:default`: one engine, shared by both roles."""
    require_vllm()
    config = tmp_path / "vllm.yaml"
    config.write_text("backends: {vllm_engine: {enforce_eager: true, max_model_len: 4096}}\nlimits: {max_calls: 2}\n")
    result = subprocess.run(
        [VLLM_PYTHON, "-m", "duet.cli", "ask", "What is 48213 * 9123?", "--requester", "vllm:default", "--coder", "vllm:default", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=400, env={**os.environ, **VLLM_ENV},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout)
    assert record["status"] in {"answered", "no_answer", "limit"}, record["error"]
    assert record["tokens"]["requester"] > 0


LOGPROB_SCRIPT = '''
import asyncio, json, sys
import torch
from transformers import AutoModelForCausalLM
from agents.backends.base import GenerationRequest, SamplingParams
from agents.backends.vllm_local import VLLMBackend

if __name__ == "__main__":
    backend = VLLMBackend.load(sys.argv[1], enforce_eager=True, max_model_len=1024, dtype="float32")
    ids = backend.encode_chat([{"role": "user", "content": "Write a short poem about numbers."}])
    requests = [GenerationRequest(ids, SamplingParams(max_new_tokens=24, temperature=0.7, top_p=0.9, seed=seed)) for seed in (1, 2)]
    requests.append(GenerationRequest(ids, SamplingParams(max_new_tokens=8)))
    generations = asyncio.run(backend.generate(requests))
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
    gaps = []
    for request, generation in zip(requests, generations):
        full = torch.tensor([request.prompt_ids + generation.token_ids])
        with torch.no_grad():
            logits = model(full).logits[0, len(request.prompt_ids) - 1 : -1].float()
        expected = torch.log_softmax(logits / (request.params.temperature or 1.0), -1)
        expected = expected.gather(-1, torch.tensor(generation.token_ids)[:, None]).squeeze(-1)
        gaps.append(float((torch.tensor(generation.logprobs) - expected).abs().max()))
    print(json.dumps({"gaps": gaps, "lengths": [len(g.token_ids) for g in generations]}))
'''


def test_in_process_vllm_records_log_probabilities_before_top_p(embedded_dir, tmp_path):
    """At temperature 0.7 and top_p 0.9 the recorded values are log_softmax(logits / 0.7), not the renormalised
    nucleus (which would be off by up to -log 0.9 per token), and greedy rows are log_softmax(logits)."""
    require_vllm()
    script = tmp_path / "logprobs.py"
    script.write_text(LOGPROB_SCRIPT)
    result = subprocess.run([VLLM_PYTHON, str(script), str(embedded_dir)], capture_output=True, text=True, timeout=400, env={**os.environ, **VLLM_ENV})
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(length > 0 for length in measured["lengths"])
    assert max(measured["gaps"]) < 2e-3, measured
