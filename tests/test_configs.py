"""The shipped recipes stay valid, and a bad key or value names itself."""

from pathlib import Path

import pytest

from agents.errors import DuetError
from duet.configfile import load_config, parse_overrides
from graph.config import AgentConfig
from training.config import GRPORunConfig, SFTRunConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(CONFIGS.glob("agent-*.yaml"))
TRAINING = {"sft": SFTRunConfig, "grpo": GRPORunConfig}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipes_validate(recipe):
    assert isinstance(load_config(AgentConfig, recipe), AgentConfig)


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("*-sft.yaml")) + sorted(CONFIGS.glob("*-grpo.yaml")), ids=lambda p: p.name)
def test_training_recipes_validate(recipe):
    kind = recipe.stem.rsplit("-", 1)[1]
    assert isinstance(load_config(TRAINING[kind], recipe), TRAINING[kind])


def test_overrides_win_over_the_file():
    config = load_config(AgentConfig, RECIPES[0], {"limits.max_calls": 1})
    assert config.limits.max_calls == 1 and config.coder.max_repairs == 2


def test_set_overrides_keep_their_types_and_name_bad_keys():
    recipe = CONFIGS / "cpu-demo-grpo.yaml"
    config = load_config(GRPORunConfig, recipe, parse_overrides(["grpo.beta=0.01", "grpo.bf16=true", "data.train=[a.jsonl, b.jsonl]"]))
    assert config.grpo.beta == 0.01 and config.grpo.bf16 is True and [source.path for source in config.data.train] == ["a.jsonl", "b.jsonl"]
    with pytest.raises(DuetError, match=r"grpo\.betta"):
        load_config(GRPORunConfig, recipe, parse_overrides(["grpo.betta=0.01"]))
    with pytest.raises(DuetError, match=r"grpo\.beta"):
        load_config(GRPORunConfig, recipe, parse_overrides(["grpo.beta=lots"]))
    with pytest.raises(DuetError, match="KEY=VALUE"):
        parse_overrides(["grpo.beta"])


def test_a_group_must_fit_whole_on_each_process():
    with pytest.raises(DuetError, match="multiple of num_generations"):
        load_config(GRPORunConfig, CONFIGS / "cpu-demo-grpo.yaml", {"grpo.num_generations": 3})


@pytest.mark.parametrize(
    ("text", "named"),
    [("requester: {temprature: 0.5}\n", "requester.temprature"), ("sandbox: {timeout_s: -1}\n", "sandbox.timeout_s"), ("- a list\n", "mapping")],
)
def test_bad_files_name_the_problem(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DuetError, match=named.replace(".", r"\.")):
        load_config(AgentConfig, path)
