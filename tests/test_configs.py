"""The shipped recipes stay valid, and a bad key or value names itself."""

from pathlib import Path

import pytest

from agents.errors import DuetError
from duet.configfile import load_config
from graph.config import AgentConfig

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs").glob("agent-*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipes_validate(recipe):
    assert isinstance(load_config(AgentConfig, recipe), AgentConfig)


def test_overrides_win_over_the_file_and_unset_flags_are_ignored():
    config = load_config(AgentConfig, RECIPES[0], {"limits.max_calls": 1, "coder.max_repairs": None})
    assert config.limits.max_calls == 1 and config.coder.max_repairs == 2


@pytest.mark.parametrize(
    ("text", "named"),
    [("requester: {temprature: 0.5}\n", "requester.temprature"), ("sandbox: {timeout_s: -1}\n", "sandbox.timeout_s"), ("- a list\n", "mapping")],
)
def test_bad_files_name_the_problem(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DuetError, match=named.replace(".", r"\.")):
        load_config(AgentConfig, path)
