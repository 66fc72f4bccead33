"""duet's graph served the LangGraph way: `langgraph dev` loads the factory that langgraph.json names, and the
LangGraph SDK runs questions on a thread, streaming the same step events `duet ask` shows."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client

ROOT = Path(__file__).resolve().parents[1]
LANGGRAPH = Path(sys.executable).with_name("langgraph")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tiny_dir, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("requester: {max_segment_tokens: 12}\nlimits: {max_calls: 1, max_total_tokens: 40}\n")
    port = free_port()
    env = {**os.environ, "DUET_REQUESTER": str(tiny_dir), "DUET_CODER": str(tiny_dir), "DUET_CONFIG": str(config), "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [str(LANGGRAPH), "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload", "--config", str(ROOT / "langgraph.json")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{url}/ok", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, 9)
        process.wait()


async def test_the_server_runs_questions_on_a_thread_and_streams_their_steps(server, tokenizer):
    client = get_client(url=server)
    [assistant] = await client.assistants.search(graph_id="duet")
    thread = await client.threads.create()
    custom, values = [], []
    async for part in client.runs.stream(thread["thread_id"], assistant["assistant_id"], input={"question": "What is 2 + 2?"}, stream_mode=["custom", "values"]):
        assert part.event != "error", part.data
        (custom if part.event == "custom" else values if part.event == "values" else []).append(part.data)
    assert custom[0]["event"] == "reasoning" and custom[-1]["event"] == "status"
    final = (await client.threads.get_state(thread["thread_id"]))["values"]
    assert values[-1] == final and final["status"] == custom[-1]["text"] in ("answered", "no_answer", "limit")
    segments = final["trajectory"]["segments"]
    assert [s["source"] for s in segments][:2] == ["prompt", "requester"] and "answer" in final
    streamed = "".join(e["text"] for e in custom if e["event"] == "reasoning")
    assert streamed == tokenizer.decode(segments[1]["token_ids"], skip_special_tokens=True)

    # a second question on the same thread starts afresh and sees the first in its history
    await client.runs.wait(thread["thread_id"], assistant["assistant_id"], input={"question": "And 3 + 3?"})
    second = (await client.threads.get_state(thread["thread_id"]))["values"]
    assert second["question"] == "And 3 + 3?" and [h["question"] for h in second["history"]] == ["What is 2 + 2?", "And 3 + 3?"]
    assert "What is 2 + 2?" in second["trajectory"]["segments"][0]["text"] and second["sampling_seed"] != final["sampling_seed"]
