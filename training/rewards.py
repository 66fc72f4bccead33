"""Is an answer right? The rules are in training/answers.py (exact numbers, Countdown and Knights and Knaves by their
generators' rules, math-verify for symbolic answers); they run in the worker processes of
training/answer_checker.py under a time limit, because judging parses untrusted model output with sympy.

One checker serves the whole process, so evaluation, filtering and training share its warm workers; it starts on the
first check and stops at interpreter exit.
"""

from __future__ import annotations

from functools import cache

from training.answer_checker import AnswerChecker
from training.answers import Verdict


@cache
def answer_checker() -> AnswerChecker:
    return AnswerChecker()


def check_answer(row: dict, answer: str | None) -> Verdict:
    return answer_checker().check(row, answer)


async def acheck_answer(row: dict, answer: str | None) -> Verdict:
    return await answer_checker().acheck(row, answer)
