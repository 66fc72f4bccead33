"""The judging rules against a respected peer: Math-Verify's own test cases (tests/data/math_verify_cases.json says
where they came from and how each became a gold answer and a boxed answer), and the cases among them, or next to
them, that the checker once got wrong."""

import json
from pathlib import Path

import pytest

from training.answers import judge

CASES = json.loads((Path(__file__).parent / "data" / "math_verify_cases.json").read_text())["cases"]
MIN_AGREEMENT = 0.95


def row(gold: str) -> dict:
    return {"answer": gold, "source": "math-verify", "metadata": {}}


@pytest.mark.parametrize("gold, answer", [
    ("0", "1 000"),  # latex2sympy read digits apart as a product: 1 * 000
    ("0", "7 0"),
    (r"1 - \frac{1}{\mathrm{e}}", "1"),  # math-verify dropped \mathrm{e} as a unit and read the gold answer as 1
    (r"1 - \frac{1}{\mathrm{e}}", r"1 + \frac{1}{\mathrm{e}}"),
])
def test_what_a_careful_exact_grader_rejects_is_wrong(gold, answer):
    assert not judge(row(gold), answer).correct


@pytest.mark.parametrize("gold, answer", [
    (r"\frac{1}{3}", r"\frac13"), (r"\frac{1}{2}", r"\dfrac12"), (r"\frac{1}{2}", r"\tfrac12"), (r"\frac{1}{2}", r"\frac{1}{2} \text{ m}"),
    ("1/3", r"\frac{1}{3} \textbf{meters}"), ("125", r"125\textnormal{ miles}"), ("5", r"\textbf{5}"), ("16386.20", r"\$16,\!386.20"),
    (r"\frac{1}{3}", r"\frac{1}{3}."), ("1000", "1 000"), ("15", r"15\mbox{ cm}^2"), ("90", "90°"), (r"1 - \frac{1}{\mathrm{e}}", r"1 - e^{-1}"),
])
def test_what_a_careful_exact_grader_accepts_is_right(gold, answer):
    assert judge(row(gold), answer).correct


def test_the_checker_agrees_with_math_verify_on_its_own_cases_that_fit_the_protocol():
    """Every case that fits must agree with Math-Verify's expected outcome, unless the data records the disagreement
    (`known_disagreement`, with why); and those may not pass 5%. A case our rule judges differently on purpose is not
    counted: it is excluded, with its reason, in the data."""
    fitting = [case for case in CASES if not case.get("excluded")]
    assert len(fitting) >= 150, "the battery lost its cases"
    assert all(case["gold"] and case["answer"] and isinstance(case["expected"], bool) for case in fitting)
    verdicts = [(case, judge(row(case["gold"]), case["answer"])) for case in fitting]
    disagreements = [(case, verdict) for case, verdict in verdicts if verdict.correct != case["expected"]]
    unexplained = [case for case, _ in disagreements if not case.get("known_disagreement")]
    listed = "\n".join(
        f"{case['file']}:{case['line']} gold {case['gold']!r} answer {case['answer']!r}: Math-Verify {case['expected']}, ours {verdict}"
        for case, verdict in disagreements
    )
    agreement = 1 - len(disagreements) / len(fitting)
    assert agreement >= MIN_AGREEMENT and not unexplained, f"agreement {agreement:.1%} on {len(fitting)} cases; disagreements:\n{listed}"
