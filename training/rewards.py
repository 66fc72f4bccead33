"""Rewards: is the answer right, is the trajectory well formed, and whatever else a user plugs in, weighted by step.

Is an answer right? The rules are in training/answers.py (exact numbers, Countdown and Knights and Knaves by their
generators' rules, math-verify for symbolic answers); they run in the worker processes of
training/answer_checker.py under a time limit, because judging parses untrusted model output with sympy.
One checker serves the whole process, so evaluation, filtering and training share its warm workers; it starts on the
first check and stops at interpreter exit.
"""

from __future__ import annotations

import asyncio
import importlib
import math
from collections.abc import Callable
from functools import cache

from agents.errors import DuetError
from agents.protocol import FORMAT_VIOLATIONS
from graph.state import AgentState
from training.answer_checker import AnswerChecker
from training.answers import Verdict
from training.config import RewardSettings, ScheduledWeight


@cache
def answer_checker() -> AnswerChecker:
    return AnswerChecker()


def check_answer(row: dict, answer: str | None) -> Verdict:
    return answer_checker().check(row, answer)


async def acheck_answer(row: dict, answer: str | None) -> Verdict:
    return await answer_checker().acheck(row, answer)


RewardFunction = Callable[[dict, AgentState], float]


def format_reward(row: dict, state: AgentState) -> float:
    """1 for a well-formed trajectory: it ended with a boxed answer, every request it opened was closed and not
    empty, and it wrote nothing after the answer; else 0. Right or wrong does not matter here."""
    if state.status != "answered":
        return 0.0
    return 0.0 if FORMAT_VIOLATIONS.intersection(state.problems) else 1.0


def tool_choice_reward(row: dict, state: AgentState) -> float:
    """1 when the run asked at least once and every call went to the tool the row names (`metadata.tool`), else 0;
    0 on rows that name none (a constant within a group, so it moves no advantage)."""
    expected = (row.get("metadata") or {}).get("tool")
    if not expected or not state.calls:
        return 0.0
    return float(all(call.tool == expected for call in state.calls))


def load_reward_function(path: str) -> RewardFunction:
    """`package.module:function`, called with the dataset row and the final graph state, returning a float."""
    module_name, _, attribute = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise DuetError(f"cannot import reward function {path!r} ({type(error).__name__}: {error}); write it as package.module:function") from error
    if not callable(function):
        raise DuetError(f"reward {path!r} is not a function")
    return function


def weight_at(weight: ScheduledWeight, step: int) -> float:
    """A constant, or a schedule of (step, weight) points: linear between points, flat outside them."""
    if not isinstance(weight, list):
        return float(weight)
    if step <= weight[0][0]:
        return float(weight[0][1])
    for (left, low), (right, high) in zip(weight, weight[1:]):
        if step <= right:
            return low + (high - low) * (step - left) / (right - left)
    return float(weight[-1][1])


class RewardScorer:
    """The reward of a rollout: named components, combined with the weights of the current step.

    answer       1 when the final answer is right (the same exact checker as `duet eval`), else 0
    format       format_reward above
    tool_choice  tool_choice_reward above, when the weights name it
    others       the functions named in the config, by import path
    """

    def __init__(self, settings: RewardSettings):
        self.settings = settings
        self.functions: dict[str, RewardFunction] = {"format": format_reward}
        if "tool_choice" in settings.weights:
            self.functions["tool_choice"] = tool_choice_reward
        self.functions.update({name: load_reward_function(path) for name, path in settings.functions.items()})

    async def components(self, rows: list[dict], states: list[AgentState]) -> tuple[list[Verdict], list[dict[str, float]]]:
        """The answer verdicts (for the run's metrics) and each rollout's components."""
        verdicts = await asyncio.gather(*(acheck_answer(row, state.answer) for row, state in zip(rows, states, strict=True)))
        scored = []
        for row, state, verdict in zip(rows, states, verdicts):
            parts = {"answer": float(verdict.correct)}
            for name, function in self.functions.items():
                parts[name] = _checked_float(name, function(row, state))
            scored.append(parts)
        return list(verdicts), scored

    def weights(self, step: int) -> dict[str, float]:
        """The weight of each component at `step` (a component without a weight counts 0)."""
        return {name: weight_at(weight, step) for name, weight in self.settings.weights.items()}

    @staticmethod
    def total(components: dict[str, float], weights: dict[str, float]) -> float:
        return sum(weights.get(name, 0.0) * value for name, value in components.items())


def _checked_float(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise DuetError(f"reward {name!r} returned {value!r}; a reward function must return a number") from error
    if not math.isfinite(number):
        raise DuetError(f"reward {name!r} returned {number}; a reward must be finite")
    return number
