"""The command line as a user runs it: a subprocess, its exit code, its output."""

import json
import os
import subprocess
import sys

import pytest

STATUSES = {"answered", "no_answer", "limit", "error"}


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def duet(*args, stdin=None, env=None, timeout=300, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "duet.cli", *args], cwd=cwd,
        input=stdin, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **({"PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")} if cwd else {}), **(env or {})},
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


# --- Errors that keep their explanation --------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "fragments"), [
    (["ask", "q", "--mode", "bogus"], ["--mode", "'bogus' is not one of 'request', 'inline'", "duet ask --help"]),
    (["data", "make", "big-value", "--n", "0", "--out", "x.jsonl"], ["--n", "greater than or equal to 1", "duet data make --help"]),
    (["data", "convert", "x.jsonl"], ["Missing option '--out'"]),
    (["eval", "--data", "x.jsonl", "--out", "o", "--concurrency", "0"], ["--concurrency"]),
])
def test_option_errors_typer_raises_are_one_line_and_exit_1(args, fragments):
    assert_one_line_error(duet(*args), *fragments)


def test_a_bad_flag_value_names_the_flag_typed():
    result = duet("ask", "q", "--max-calls", "-1")
    assert_one_line_error(result, "--max-calls -1", "greater than or equal to 0")
    assert "limits.max_calls" not in result.stderr and "AgentConfig" not in result.stderr
    assert_one_line_error(duet("exec", "--memory", "10", __file__), "--memory 10", "256")


def test_a_mistyped_key_suggests_the_nearest_one(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("limits:\n  max_call: 3\n")
    assert_one_line_error(duet("ask", "q", "--config", str(config)), "'limits.max_call' is not a setting", "did you mean limits.max_calls?")
    recipe = os.path.join(REPO, "configs", "cpu-demo-grpo.yaml")
    assert_one_line_error(duet("train", recipe, "--set", "grpo.learning_rat=1e-5"), "--set grpo.learning_rat=1e-5", "did you mean grpo.learning_rate?")
    config.write_text("limits: {max_calls: 2}\n  oops: 1\n")
    assert_one_line_error(duet("ask", "q", "--config", str(config)), "is not valid YAML", "(line 2)")


def test_eval_compare_names_what_is_missing(tmp_path):
    assert_one_line_error(duet("eval", "compare", str(tmp_path / "nowhere"), str(tmp_path)), str(tmp_path / "nowhere"), "duet eval --out")
    assert_one_line_error(duet("eval", "compare", str(tmp_path), str(tmp_path)), f"{tmp_path} has no report.json")


def test_a_bad_eval_data_mapping_is_one_line():
    assert_one_line_error(duet("eval", "--data", "{path: x.jsonl, nme: main}", "--out", "o"), "--data", "nme", "path, name, split")


def recipes_in(folder):
    """The CPU demo recipes in a fresh folder, where neither their data nor the SFT checkpoint exists yet."""
    import shutil

    (folder / "configs").mkdir()
    for name in ("cpu-demo-sft.yaml", "cpu-demo-grpo.yaml", "cpu-demo-demonstrations.jsonl"):
        shutil.copy(os.path.join(REPO, "configs", name), folder / "configs" / name)


def test_train_checks_its_inputs_before_loading_anything(tmp_path):
    recipes_in(tmp_path)
    # in-process, to see what was imported by the time the error came
    probe = ("import sys\nfrom duet.cli import app\ntry:\n    app(['train', 'configs/cpu-demo-grpo.yaml'])\nexcept SystemExit as done:\n"
             "    print(done.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": REPO})
    assert result.stdout.split() == ["1", "False", "False"], result.stderr
    line = result.stderr.strip()
    assert "data.train[0]: no data file at data/big-value-train.jsonl" in line and f"current folder, {tmp_path}" in line
    assert "duet data make big-value --n 320 --seed 1 --out data/big-value-train.jsonl" in line  # the command the recipes give
    made = duet("data", "make", "big-value", "--n", "4", "--out", "data/big-value-train.jsonl", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert_one_line_error(duet("train", "configs/cpu-demo-grpo.yaml", cwd=tmp_path),
                          "model.requester: runs/cpu-demo-sft/checkpoint-latest does not exist yet", "run duet sft configs/cpu-demo-sft.yaml first")
    assert_one_line_error(duet("sft", "configs/cpu-demo-sft.yaml", "--set", "traces.demonstrations=gone.jsonl", cwd=tmp_path),
                          "traces.demonstrations: no file at gone.jsonl")


def test_help_shows_each_commands_example_and_the_defaults():
    wide = {"COLUMNS": "400"}
    sft, train = duet("sft", "--help", env=wide).stdout, duet("train", "--help", env=wide).stdout
    assert "--set sft.learning_rate=" in sft and "grpo.beta" not in sft and "--set grpo.beta=0.01" in train
    assert "Default: 4 (limits.max_calls" in duet("ask", "--help", env=wide).stdout
    shown = duet("exec", "--help", env=wide).stdout
    assert "Default: 5 (sandbox.timeout_s)" in shown and "Default: 1024 (sandbox.memory_mb)" in shown
    convert = duet("data", "convert", "--help", env=wide).stdout
    assert "Column that holds the question" in convert and "Column that holds the answer" in convert and "--answer-format" in convert
    evaluate = duet("eval", "--help", env=wide).stdout
    assert "JSONL dataset" not in evaluate and ".parquet" in evaluate and "name: main" in evaluate


def test_a_tools_file_that_is_missing_or_wrong_is_one_line(tmp_path):
    assert_one_line_error(duet("ask", "q", "--tools", str(tmp_path / "none.yaml")), "cannot read tool registry", "none.yaml")
    bad = tmp_path / "tools.yaml"
    bad.write_text("- coder\n- abacus\n")
    assert_one_line_error(duet("ask", "q", "--tools", str(bad)), f"--tools {bad}", "'abacus' is not a built-in tool")
    unimportable = tmp_path / "mine.yaml"
    unimportable.write_text("- coder\n- {name: mine, target: no_such_package.tools:convert}\n")
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "q", "answer": "1"}\n')
    assert_one_line_error(duet("eval", "--data", str(data), "--out", str(tmp_path / "o"), "--tools", str(unimportable)), "tool 'mine': cannot import no_such_package.tools")
