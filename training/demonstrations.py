"""Demonstrations for the cold start, written from a generated row's worked steps (`metadata["steps"]`): one request
(or, in the inline mode, one program) per step, each result as a right program prints it, then the boxed answer.

They replace sampling the untrained model for its few right runs, which kept 23 of 320 and nearly all of one template
(reports/cpu-demo): the steps are the data's own, so every template of the train split is shown, and none of the
held-out ones, whose rows are never in the split the demonstrations are written from.
"""

from __future__ import annotations

import re
from fractions import Fraction

from training.worked_steps import Step, render, steps_of

WHAT = {"add": "the sum", "subtract": "the difference", "multiply": "the product", "divide": "the quotient"}
CLAUSE_BREAKS = re.compile(r"(?<=[.?!])\s+|,\s+(?:and\s+)?|\s+and\s+|\s+but\s+")
NUMBER = re.compile(r"\d+(?:\.\d+)?(?:\s+percent)?")


def cited_clause(question: str, step: Step) -> str | None:
    """The clause of the question that holds the step's last number there ("It ships out 5 kilograms"), so that a
    demonstration names the words an operation comes from instead of leaving the model to key on the question's last
    sentence. A percentage counts as the factor the generators write for it (12 percent as 1.12); None when no operand
    is the question's (a step on earlier results only)."""
    wanted = set(step.operands)
    found = None
    for clause in CLAUSE_BREAKS.split(question):
        for token in NUMBER.findall(clause):
            number = Fraction(token.split()[0])
            if (1 + number / 100 if token.endswith("percent") else number) in wanted:
                found = clause
    return found.rstrip(".?!") if found else None


def demonstration(row: dict, mode: str, cite: bool = False) -> dict:
    """{"question", "response"}, the trace format `traces.demonstrations` reads; `mode` is request or inline; `cite`
    puts the clause each step comes from before it (`cited_clause`)."""
    parts = []
    for index, step in enumerate(steps_of(row)):
        lead = "I need" if index == 0 else "Now I need"
        clause = cited_clause(row["question"], step) if cite else None
        if clause:
            lead = f'From "{clause}", {lead.replace("Now", "now")}'
        call = f"<request>{step.request()}</request>" if mode == "request" else f"<code>\n```python\n{step.program()}\n```\n</code>"
        parts.append(f"{lead} {WHAT[step.operation]}.\n{call}\n<result>\n{render(step.value)}\n</result>\n")
    return {"question": row["question"], "response": "".join(parts) + f"The answer is \\boxed{{{row['answer']}}}.", "id": row.get("id")}


def coder_pairs(row: dict) -> list[dict]:
    """A coder's training pairs, one per worked step: the request as the demonstrations ask it, and the program that
    prints its exact value (Decimal where a float would print 792190451.9499999, which the embedded coder writes)."""
    return [{"id": f"{row.get('id')}/{index}", "question": row["question"], "request": step.request(), "program": step.program()}
            for index, step in enumerate(steps_of(row))]
