"""The command line as a user runs it: a subprocess, its exit code, its output."""

import json
import os
import subprocess
import sys

import pytest

STATUSES = {"answered", "no_answer", "limit", "error"}


def duet(*args, stdin=None, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "duet.cli", *args],
        input=stdin, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    for fragment in fragments:
        assert fragment in lines[0]


def test_ask_json_on_tiny_models(tiny_dir, other_tiny_dir):
    result = duet("ask", "What is 2 + 2?", "--requester", str(tiny_dir), "--coder", str(other_tiny_dir), "--json", "--max-calls", "1")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["question"] == "What is 2 + 2?" and record["status"] in STATUSES - {"error"}, record["error"]
    assert set(record) >= {"question", "answer", "status", "calls"}
    for call in record["calls"]:
        assert set(call) >= {"request", "code", "output", "error"}


def test_bad_spec_is_one_line_and_exit_1():
    assert_one_line_error(duet("ask", "q", "--coder", "nonsense spec"), "openai:BASE_URL#MODEL")


def test_unreachable_server_is_one_line_and_exit_1():
    assert_one_line_error(duet("ask", "q", "--coder", "openai:http://127.0.0.1:9/v1#x"), "cannot reach")


def test_mistyped_config_key_is_named(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("limits:\n  max_call: 3\n")
    assert_one_line_error(duet("ask", "q", "--config", str(config)), "limits.max_call")


def test_chat_keeps_history_swaps_coder_resets_and_resumes(tiny_dir, other_tiny_dir, tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text("requester: {max_segment_tokens: 12}\n")
    env = {"DUET_DATA_DIR": str(tmp_path / "data"), "LANGGRAPH_STRICT_MSGPACK": "true"}
    common = ["--thread", "maths", "--requester", str(tiny_dir), "--coder", str(tiny_dir), "--config", str(config)]
    first = duet("chat", *common, stdin=f"What is 1 + 1?\n/coder {other_tiny_dir}\nAnd 2 + 2?\n/quit\n", env=env)
    assert first.returncode == 0, first.stderr
    assert "0 earlier exchanges" in first.stdout and f"coder is now {other_tiny_dir}" in first.stdout
    assert "status:" in first.stdout

    resumed = duet("chat", *common, stdin="/reset\n", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "unregistered type" not in resumed.stderr and "Blocked" not in resumed.stderr  # strict deserialization loads it
    assert "2 earlier exchanges" in resumed.stdout and "What is 1 + 1?" in resumed.stdout and "history cleared" in resumed.stdout

    after_reset = duet("chat", *common, stdin="/quit\n", env=env)
    assert "0 earlier exchanges" in after_reset.stdout


def test_chat_reports_a_bad_coder_swap_and_goes_on(tiny_dir, tmp_path):
    env = {"DUET_DATA_DIR": str(tmp_path)}
    result = duet("chat", "--requester", str(tiny_dir), "--coder", str(tiny_dir), stdin="/coder nonsense!\n/quit\n", env=env)
    assert result.returncode == 0 and "error:" in result.stdout and "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_ask_on_the_embedded_model_end_to_end():
    """The README's first command, as JSON: every call's output is what its program really prints."""
    from agents.sandbox import Sandbox

    result = duet("ask", "What is 48213 * 9123?", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] in STATUSES - {"error"}, record["error"]
    for call in record["calls"]:
        if call["code"] and call["output"] is not None:
            assert Sandbox().run(call["code"]).stdout == call["output"]


@pytest.mark.slow
def test_ask_streams_labelled_steps_on_the_embedded_model():
    result = duet("ask", "What is 48213 * 9123?")
    assert result.returncode == 0, result.stderr
    assert "reasoning" in result.stdout and "status:" in result.stdout


async def test_coder_spec_swaps_in_a_different_model(tiny_dir, other_tiny_dir, tokenizer):
    """With the coder spec pointing at another model, the programs come from that model and not from the requester's.
    The requester is scripted so that it certainly asks."""
    from agents.backends.transformers_local import TransformersBackend
    from agents.coder import Coder
    from agents.requester import Requester
    from graph.build import Team
    from graph.run import run_question
    from tests.scripted import ScriptedBackend

    team = Team(str(tiny_dir), str(other_tiny_dir))
    team.requester = Requester(ScriptedBackend(tokenizer, ["<request>multiply 6 by 7</request>", "\\boxed{42}"]))
    try:
        state = await run_question(team.graph(), "What is 6 * 7?", team.config)
    finally:
        await team.aclose()
    reply = state.calls[0].attempts[0].reply
    swapped = await Coder(TransformersBackend.load(str(other_tiny_dir))).write("multiply 6 by 7")
    same_as_requester = await Coder(TransformersBackend.load(str(tiny_dir))).write("multiply 6 by 7")
    assert reply == swapped and reply != same_as_requester


def test_a_weak_sandbox_is_announced_in_one_line_when_a_command_starts(monkeypatch):
    """ask, chat, eval and data filter read their settings through agent_config; train and sft warn the same way."""
    import io

    import duet.cli
    from agents.sandbox import isolation

    shown = io.StringIO()
    monkeypatch.setattr(duet.cli.err_console, "file", shown)
    monkeypatch.setattr(duet.cli.err_console, "width", 60)
    monkeypatch.setattr(isolation, "detect_isolation", lambda: isolation.host_isolation(root=False))
    duet.cli.agent_config(None, None)
    lines = shown.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: sandbox isolation is only 'rlimits'")
    monkeypatch.setattr(isolation, "detect_isolation", lambda: isolation.Isolation(**{**isolation.host_isolation(root=True).model_dump(), "level": "namespaces"}))
    duet.cli.agent_config(None, None)
    assert shown.getvalue().strip().splitlines() == lines  # nothing more at the namespaces level
