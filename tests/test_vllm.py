"""Real vLLM on the CPU: its OpenAI-compatible server on 127.0.0.1, and in-process vLLM.

vLLM lives in its own environment (`make vllm-env`, path in DUET_VLLM_PYTHON) because it pins its own stack. Under CI
a missing environment is a failure, not a skip.
"""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from agents.backends.base import GenerationRequest, SamplingParams
from agents.models import load_backend
from graph.build import Team
from graph.config import AgentConfig
from graph.run import run_question

pytestmark = pytest.mark.slow
VLLM_PYTHON = os.environ.get("DUET_VLLM_PYTHON")
REPO = Path(__file__).resolve().parents[1]
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


WEIGHT_PUSH_SCRIPT = '''
import asyncio, json, sys
import torch
from agents.backends.base import GenerationRequest, SamplingParams
from agents.backends.transformers_local import TransformersBackend
from agents.backends.vllm_local import VLLMBackend
from agents.models import load_causal_lm


async def greedy(backend, prompts):
    generations = await backend.generate([GenerationRequest(p, SamplingParams(max_new_tokens=12)) for p in prompts])
    return [g.token_ids for g in generations]


async def main(folder):
    engine = VLLMBackend.load(folder, enforce_eager=True, max_model_len=512, dtype="float32")
    model, tokenizer = load_causal_lm(folder, "float32", "cpu")
    local = TransformersBackend(model, tokenizer, name="tiny")
    prompts = [local.encode_chat([{"role": "user", "content": q}]) for q in ("What is 2 + 2?", "Name a prime number.", "Count to five.")]
    result = {"vllm_before": await greedy(engine, prompts), "transformers_before": await greedy(local, prompts)}
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    engine.load_weights([(name, tensor.detach()) for name, tensor in model.state_dict().items()])
    result |= {"vllm_after": await greedy(engine, prompts), "transformers_after": await greedy(local, prompts)}
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
'''


def test_vllm_generates_as_transformers_does_before_and_after_a_weight_push(vllm_tiny_dir, tmp_path):
    """Greedy tokens of the vLLM rollout engine equal the transformers backend's on the same weights; after the
    trainer changes the weights and pushes them, vLLM's next generation equals the changed model's (and differs
    from before, so a push that did nothing would fail)."""
    require_vllm()
    script = tmp_path / "push.py"
    script.write_text(WEIGHT_PUSH_SCRIPT)
    result = subprocess.run([VLLM_PYTHON, str(script), str(vllm_tiny_dir)], capture_output=True, text=True, timeout=400,
                            env={**os.environ, **VLLM_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["vllm_before"] == measured["transformers_before"]
    assert measured["vllm_after"] == measured["transformers_after"]
    assert measured["vllm_after"] != measured["vllm_before"]


@pytest.mark.parametrize(("lora", "learning_rate"), [(None, 0.002), ({"r": 8, "lora_alpha": 16}, 0.003)], ids=["full", "lora"])
def test_duet_train_with_a_vllm_requester_pushes_each_update_and_learns(vllm_tiny_dir, tmp_path, lora, learning_rate):
    """GRPO steps with vLLM as the rollout engine: the reward a random model can reach rises (it would not if vLLM
    kept sampling the initial weights), each step logs the push and the importance-sampling correction, and the saved
    checkpoint is not the initial model. With LoRA the engine serves the base model and each update as an adapter."""
    import yaml

    from training.data import generate, write_jsonl

    require_vllm()
    questions = tmp_path / "questions.jsonl"
    write_jsonl(generate("big-value", 8, seed=3), questions)
    recipe = {
        "model": {"requester": f"vllm:{vllm_tiny_dir}", "coder": str(vllm_tiny_dir), "lora": lora},
        "data": {"train": [str(questions)], "order": "file"},
        "rewards": {"weights": {"answer": 1.0, "format": 0.0, "even": 1.0}, "functions": {"even": "tests.toy_rewards:first_token_even"}},
        "grpo": {"output_dir": str(tmp_path / "run"), "max_steps": 5, "num_generations": 8, "per_device_train_batch_size": 8,
                 "gradient_accumulation_steps": 2, "learning_rate": learning_rate, "lr_scheduler_type": "constant", "temperature": 0.5,
                 "save_steps": 5, "seed": 5, "report_to": ["none"]},
        "agent": {"requester": {"max_segment_tokens": 1}, "limits": {"max_total_tokens": 1, "max_calls": 0},
                  "backends": {"vllm_engine": {"enforce_eager": True, "max_model_len": 512, "dtype": "float32"}}},
    }
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    result = subprocess.run([VLLM_PYTHON, "-m", "duet.cli", "train", str(config)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, **VLLM_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = [row["reward"] for row in rows]
    assert len(rows) == 5 and max(rewards[1:]) >= rewards[0] + 0.3, rewards
    assert all("time/weight_sync" in row for row in rows)
    updated = [row for row in rows if row["dropped_groups"] < 2]
    assert updated[0]["step"] == 1 and len(updated) >= 2 and all(row["sampling/importance_sampling_ratio/mean"] > 0 for row in updated)
    # after the first update, vLLM's sampling log-probabilities still equal the trainer's recomputation with the
    # updated weights: the push reached the engine (a stale engine would be off by the update, grad norms of 30+)
    assert all(row["logprob_mismatch/max"] < 1e-2 for row in updated), [row["logprob_mismatch/max"] for row in updated]
    from safetensors.torch import load_file

    checkpoint = tmp_path / "run" / "checkpoint-latest"
    if lora:
        assert any(tensor.abs().sum() > 0 for name, tensor in load_file(checkpoint / "adapter_model.safetensors").items() if "lora_B" in name)
    else:
        before, after = load_file(vllm_tiny_dir / "model.safetensors"), load_file(checkpoint / "model.safetensors")
        assert any(not before[name].equal(after[name]) for name in before)
