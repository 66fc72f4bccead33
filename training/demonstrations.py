"""Demonstrations for the cold start, written from a generated row's worked steps (`metadata["steps"]`): one request
(or, in the inline mode, one program) per step, each result as a right program prints it, then the boxed answer.

They replace sampling the untrained model for its few right runs, which kept 23 of 320 and nearly all of one template
(reports/cpu-demo): the steps are the data's own, so every template of the train split is shown, and none of the
held-out ones, whose rows are never in the split the demonstrations are written from.
"""

from __future__ import annotations

from training.worked_steps import render, steps_of

WHAT = {"add": "the sum", "subtract": "the difference", "multiply": "the product", "divide": "the quotient"}


def demonstration(row: dict, mode: str) -> dict:
    """{"question", "response"}, the trace format `traces.demonstrations` reads; `mode` is request or inline."""
    parts = []
    for index, step in enumerate(steps_of(row)):
        lead = "I need" if index == 0 else "Now I need"
        call = f"<request>{step.request()}</request>" if mode == "request" else f"<code>\n```python\n{step.program()}\n```\n</code>"
        parts.append(f"{lead} {WHAT[step.operation]}.\n{call}\n<result>\n{render(step.value)}\n</result>\n")
    return {"question": row["question"], "response": "".join(parts) + f"The answer is \\boxed{{{row['answer']}}}.", "id": row.get("id")}


def coder_pairs(row: dict) -> list[dict]:
    """A coder's training pairs, one per worked step: the request as the demonstrations ask it, and the program that
    prints its exact value (Decimal where a float would print 792190451.9499999, which the embedded coder writes)."""
    return [{"id": f"{row.get('id')}/{index}", "question": row["question"], "request": step.request(), "program": step.program()}
            for index, step in enumerate(steps_of(row))]
