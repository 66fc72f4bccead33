"""The tool-question generators: seeded, every tool its share, and gold answers that the tools themselves confirm."""

import re
from fractions import Fraction

import pytest

from agents.tools.builtin import BUILTIN
from training.answers import judge
from training.data import GENERATORS, generate


@pytest.mark.parametrize("name", ["tools", "unseen-tools"])
def test_the_same_seed_gives_the_same_questions_and_another_seed_others(name):
    assert name in GENERATORS
    assert generate(name, 40, 3) == generate(name, 40, 3)
    assert [r["question"] for r in generate(name, 40, 3)] != [r["question"] for r in generate(name, 40, 4)]


def test_every_tool_gets_its_share_and_each_row_names_one():
    rows = generate("tools", 80, 1)
    assert {tool: sum(r["metadata"]["tool"] == tool for r in rows) for tool in ("calculator", "units", "dates", "coder")} == dict.fromkeys(
        ("calculator", "units", "dates", "coder"), 20)
    assert {r["metadata"]["tool"] for r in generate("unseen-tools", 10, 1)} == {"primes", "roman"}


def _numbers(text: str) -> list[Fraction]:
    return [Fraction(n) for n in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?", text)]


@pytest.mark.parametrize("name", ["tools", "unseen-tools"])
def test_the_gold_answers_are_what_the_tools_compute(name):
    """The generator computes its answers from its own values (dates with datetime, factors by multiplying primes,
    conversions with pint's exact fractions); each row's request, parsed from text by its tool, must give the same
    number."""
    for row in generate(name, 60, 5):
        meta, gold = row["metadata"], Fraction(row["answer"])
        assert judge(row, row["answer"]).correct
        if meta["tool"] == "coder":
            continue
        reply = BUILTIN[meta["tool"]](meta["request"])
        if meta["template"] == "day_of_month":
            assert int(reply[8:10]) == gold, (row, reply)
        elif meta["template"] == "largest_prime_factor":
            assert max(Fraction(p.split("^")[0]) for p in reply.split("=")[1].split("*")) == gold
        elif meta["template"] == "distinct_prime_factors":
            assert len(reply.split("=")[1].split("*")) == gold
        elif meta["template"] == "roman_length":
            assert len(reply.split("= ")[1]) == gold
        elif "answer_tolerance" in meta:
            approximate = float(re.search(r"about (-?[\d.]+)", reply)[1])
            assert abs(approximate - float(gold)) <= 1e-6 * abs(float(gold)), (row, reply)
        else:
            assert gold in _numbers(reply), (row, reply)


def test_an_answer_that_is_only_close_is_wrong_unless_the_row_allows_a_tolerance():
    rows = generate("tools", 60, 2)
    exact = next(r for r in rows if r["metadata"]["tool"] == "units" and "answer_tolerance" not in r["metadata"])
    assert not judge(exact, str(float(exact["answer"]) * (1 + 1e-4))).correct
    tolerant = next(r for r in rows if "answer_tolerance" in r["metadata"])
    assert judge(tolerant, str(float(tolerant["answer"]) * (1 + 1e-7))).correct
    assert not judge(tolerant, str(float(tolerant["answer"]) * (1 + 1e-4))).correct
