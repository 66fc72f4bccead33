"""Demonstrations for the cold start, written from a generated row's worked steps (`metadata["steps"]`): one request
(or, in the inline mode, one program) per step, each result as a right program prints it, then the boxed answer.

They replace sampling the untrained model for its few right runs, which kept 23 of 320 and nearly all of one template
(reports/cpu-demo): the steps are the data's own, so every template of the train split is shown, and none of the
held-out ones, whose rows are never in the split the demonstrations are written from.
"""

from __future__ import annotations

from training.worked_steps import render, steps_of

WHAT = {"add": "the sum", "subtract": "the difference", "multiply": "the product", "divide": "the quotient"}


def plan(steps) -> str:
    """The whole solution named before the first step ("I need the sum, then the difference."): a model shown only
    "I need the sum." before each call learned to go on after a one-step question's result (two-step rows follow
    the same opening), so the number of steps is decided while the question is read, not after a result."""
    return f"I need {', then '.join(WHAT[step.operation] for step in steps)}."


def demonstration(row: dict, mode: str) -> dict:
    """{"question", "response"}, the trace format `traces.demonstrations` reads; `mode` is request or inline."""
    steps = steps_of(row)
    parts = []
    for index, step in enumerate(steps):
        lead = plan(steps) if index == 0 else f"Now {WHAT[step.operation]}."
        call = f"<request>{step.request()}</request>" if mode == "request" else f"<code>\n```python\n{step.program()}\n```\n</code>"
        parts.append(f"{lead}\n{call}\n<result>\n{render(step.value)}\n</result>\n")
    return {"question": row["question"], "response": "".join(parts) + f"The answer is \\boxed{{{row['answer']}}}.", "id": row.get("id")}
