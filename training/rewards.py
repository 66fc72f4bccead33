"""Is an answer right? math-verify for mathematical answers; the generator's own scorer for puzzle answers
(Knights and Knaves statements, Countdown expressions), which have many correct spellings."""

from __future__ import annotations

from functools import cache

from training.data import REASONING_GYM

SCORED_BY_GENERATOR = {"knights-knaves", "countdown"}


def answer_correct(row: dict, answer: str | None) -> bool:
    if answer is None or not answer.strip():
        return False
    if row.get("source") in SCORED_BY_GENERATOR:
        scorer = _generator(row["source"])
        return scorer.score_answer(answer, {"answer": row["answer"], "metadata": row.get("metadata", {})}) >= 1.0
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${row['answer']}$"), parse(f"${answer}$")))
    except Exception:  # noqa: BLE001 - model output is untrusted; an unparseable answer is a wrong answer
        return False


@cache
def _generator(source: str):
    import reasoning_gym

    return reasoning_gym.create_dataset(REASONING_GYM[source], size=1, seed=0)
