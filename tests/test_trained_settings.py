"""A checkpoint remembers the settings it was trained under (few-shot examples, mode, segment length, limits), and
`ask`, `eval` and `train` use them unless the user sets them: resolved once, by graph.build.as_trained."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.errors import DuetError
from duet.configfile import load_config
from graph.build import Team, as_trained
from graph.config import AgentConfig
from training.data import write_jsonl

REPO = Path(__file__).resolve().parents[1]
TRAINED = {"requester": {"few_shot": False, "mode": "inline", "max_segment_tokens": 64}, "limits": {"max_calls": 2, "max_total_tokens": 256}}


def checkpoint(folder: Path, remembered: dict, weights: Path | None = None) -> Path:
    """A folder duet.json marks as trained under `remembered`: a copy of `weights`, or only a config.json (enough
    for what a checkpoint remembers, which is read without loading anything)."""
    if weights is not None:
        shutil.copytree(weights, folder)
    else:
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    (folder / "duet.json").write_text(json.dumps({"base": None, **remembered}))
    return folder


def limits_of(agent: AgentConfig) -> tuple:
    return agent.limits.max_calls, agent.limits.max_total_tokens, agent.requester.max_segment_tokens


def test_what_a_checkpoint_remembers_is_used_unless_the_user_set_it(tmp_path):
    spec = str(checkpoint(tmp_path / "ckpt", TRAINED))
    resolved = as_trained(AgentConfig(), spec)
    assert limits_of(resolved) == (2, 256, 64) and resolved.requester.few_shot is False and resolved.requester.mode == "inline"

    # set in a config file (max_calls at its default value, few_shot null: unset) and on the command line
    file = tmp_path / "agent.yaml"
    file.write_text("limits: {max_calls: 4}\nrequester: {few_shot: null, temperature: 0.5}\n")
    given = load_config(AgentConfig, file, {"requester.max_segment_tokens": 256})
    mixed = as_trained(given, spec)
    assert limits_of(mixed) == (4, 256, 256) and mixed.requester.few_shot is False and mixed.requester.temperature == 0.5

    # resolved once: resolving again, even for another checkpoint (an SFT teacher), changes nothing
    other = str(checkpoint(tmp_path / "other", {"requester": {"few_shot": True, "mode": "request", "max_segment_tokens": 9}, "limits": {"max_calls": 7, "max_total_tokens": 99}}))
    assert as_trained(resolved, spec) == resolved and as_trained(resolved, other) == resolved and as_trained(mixed, other) == mixed


def test_checkpoints_from_before_limits_were_remembered_and_other_models_keep_the_defaults(tmp_path):
    old = str(checkpoint(tmp_path / "old", {"requester": {"few_shot": False, "mode": "request"}}))
    resolved = as_trained(AgentConfig(), old)
    assert limits_of(resolved) == (4, 1536, 256) and resolved.requester.few_shot is False
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    config = load_config(AgentConfig, None, {"limits.max_calls": 3})
    for spec in (str(plain), "default", "openai:http://127.0.0.1:1/v1#m", "org/model"):
        assert as_trained(config, spec) is config


def test_a_broken_duet_json_is_one_line_naming_the_setting(tmp_path):
    bad = str(checkpoint(tmp_path / "bad", {"limits": {"max_calls": -1}}))
    with pytest.raises(DuetError, match=r"bad limits\.max_calls .*set that value yourself"):
        as_trained(AgentConfig(), bad)
    assert limits_of(as_trained(load_config(AgentConfig, None, {"limits.max_calls": 1}), bad)) == (1, 1536, 256)  # set: not read
    garbled = tmp_path / "garbled"
    checkpoint(garbled, {})
    (garbled / "duet.json").write_text("{not json")
    with pytest.raises(DuetError, match="cannot read .*duet.json"):
        as_trained(AgentConfig(), str(garbled))


def test_a_team_runs_under_the_remembered_limits_and_a_flag_wins(tmp_path, tiny_dir):
    spec = str(checkpoint(tmp_path / "ckpt", {"requester": {"few_shot": False, "mode": "request", "max_segment_tokens": 5}, "limits": {"max_calls": 0, "max_total_tokens": 5}}, tiny_dir))
    team = Team(spec, str(tiny_dir))
    assert limits_of(team.config) == (0, 5, 5) and team.requester.settings.max_segment_tokens == 5
    flagged = Team(spec, str(tiny_dir), load_config(AgentConfig, None, {"limits.max_calls": 4}, flags={"limits.max_calls": "--max-calls 4"}))
    assert limits_of(flagged.config) == (4, 5, 5)

    asked = subprocess.run([sys.executable, "-m", "duet", "ask", "What is 2 + 2?", "--requester", spec, "--coder", str(tiny_dir), "--json"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert asked.returncode == 0, asked.stderr
    tokens = json.loads(asked.stdout)["tokens"]
    assert 0 < tokens["requester"] + tokens["inserted"] <= 5  # untrained limits would let it write 256 tokens


def test_the_eval_report_names_the_limits_it_ran_under(tmp_path, tiny_dir):
    spec = str(checkpoint(tmp_path / "ckpt", {"requester": {"few_shot": False, "mode": "request", "max_segment_tokens": 4}, "limits": {"max_calls": 0, "max_total_tokens": 4}}, tiny_dir))
    data = tmp_path / "questions.jsonl"
    write_jsonl([{"id": "a", "question": "What is 2 + 2?", "answer": "4"}], data)

    def run_eval(out: Path, *extra: str) -> str:
        result = subprocess.run([sys.executable, "-m", "duet", "eval", "--data", str(data), "--out", str(out), "--requester", spec, "--coder", str(tiny_dir),
                                 "--modes", "coder", *extra], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert all(json.loads(line)["tokens"] <= 4 + ("--config" in extra) * 8 for line in (out / "records.jsonl").read_text().splitlines())
        return (out / "report.md").read_text()

    report = run_eval(tmp_path / "remembered")
    assert "Limits: at most 0 requests and 4 tokens per question" in report and "4 tokens per requester segment" in report
    assert json.loads((tmp_path / "remembered" / "report.json").read_text())["limits"] == {"max_calls": 0, "max_total_tokens": 4, "max_segment_tokens": 4}
    assert "max_total_tokens: 4" in (tmp_path / "remembered" / "agent.yaml").read_text()  # the reproduce command repeats them

    given = tmp_path / "given.yaml"
    given.write_text("limits: {max_calls: 4, max_total_tokens: 12}\nrequester: {max_segment_tokens: 12}\n")
    report = run_eval(tmp_path / "given", "--config", str(given))
    assert "Limits: at most 4 requests and 12 tokens per question" in report and "12 tokens per requester segment" in report
