"""Issue 17's data: splits that never share a stream or a held-out template, two-step big-value problems with exact
answers, and cold-start demonstrations written from the rows' own worked steps."""

import json
import re
import subprocess
import sys
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from random import Random

import pytest

from agents.errors import DuetError
from agents.protocol import parse_requester_segment
from tests.test_cli import duet
from training import big_value, big_value_steps, big_value_words
from training.data import generate
from training.demonstrations import coder_pairs, demonstration
from training.sft import split_response
from training.worked_steps import Step, steps_of

REPORTED = Path(__file__).parents[1] / "reports/embedded-default/data/big-value.jsonl"

# The two-step templates' answers, written apart from their steps, in Decimal.
INDEPENDENT_STEPS = {
    "earn_spend": lambda v: v["a"] - v["c"] + v["b"],
    "nested_groups": lambda v: v["a"] * (v["b"] * v["c"]),
    "share_then_spend": lambda v: (v["total"] - v["c"] * v["people"]) / v["people"],
    "rise_then_fall": lambda v: v["a"] + v["a"] * v["percent"] / 100 - v["c"],
    "two_rates": lambda v: v["a"] * v["count"] + v["b"] * v["count"],
    "buy_with_discount": lambda v: v["count"] * v["a"] - v["c"],
}


def test_without_a_split_the_generator_writes_the_reported_questions():
    """The committed reports' questions (seed 0) are still what `duet data make big-value --seed 0` writes."""
    reported = [json.loads(line) for line in REPORTED.read_text().splitlines()]
    made = big_value.generate(len(reported), 0)
    for row in made:
        row["metadata"].pop("steps")
    assert made == reported


def test_held_out_templates_never_appear_outside_their_split():
    assert len(big_value.HELD_OUT) == 2 and set(big_value.HELD_OUT) < {t.name for t in big_value.TEMPLATES}
    for split in ("train", "validation", "test"):
        templates = {row["metadata"]["template"] for row in big_value.generate(400, 1, split)}
        assert not templates & set(big_value.HELD_OUT)
        assert templates == {t.name for t in big_value.TEMPLATES} - set(big_value.HELD_OUT)
    assert {row["metadata"]["template"] for row in big_value.generate(200, 1, "held-out")} == set(big_value.HELD_OUT)


@pytest.mark.parametrize("generator", [big_value.generate, big_value_steps.generate, big_value_words.generate])
def test_splits_are_seeded_and_share_no_question(generator):
    splits = {split: generator(300, 1, split) for split in ("train", "validation", "test")}
    assert generator(300, 1, "train") == splits["train"]
    assert generator(300, 2, "train") != splits["train"]
    questions = [{row["question"] for row in rows} for rows in splits.values()]
    assert all(len(q) == 300 for q in questions)  # no question twice within a split either
    assert not (questions[0] & questions[1] or questions[0] & questions[2] or questions[1] & questions[2])
    ids = [row["id"] for rows in splits.values() for row in rows]
    assert len(set(ids)) == len(ids)


def test_unknown_splits_and_splits_of_other_generators_are_one_line_errors():
    with pytest.raises(DuetError, match="unknown split 'held-out' for big-value-steps; choose one of: train, validation, test"):
        generate("big-value-steps", 3, 0, "held-out")
    with pytest.raises(DuetError, match="--split applies to big-value, big-value-steps, big-value-words only"):
        generate("arithmetic", 3, 0, "test")


@pytest.mark.parametrize("seed", range(10))
def test_two_step_answers_are_exact_and_checked_independently(seed):
    rows = big_value_steps.generate(60, seed, "test")
    assert {row["metadata"]["template"] for row in rows} == set(INDEPENDENT_STEPS)
    for row in rows:
        values = {k: Decimal(v) for k, v in row["metadata"]["values"].items()}
        with localcontext() as context:
            context.prec = 80
            expected = INDEPENDENT_STEPS[row["metadata"]["template"]](values)
        assert Decimal(row["answer"]) == expected and expected > 0, row
        assert len(row["metadata"]["steps"]) == 2
        for text in row["metadata"]["values"].values():
            assert text in row["question"]
        big = [v for v in row["metadata"]["values"].values() if len(v.replace(".", "")) >= 9]
        assert big and all(9 <= len(v.replace(".", "")) <= 11 for v in big)
        assert "{" not in row["question"]


def test_every_wording_of_every_two_step_template_is_drawn():
    drawn = {(row["metadata"]["template"], row["metadata"]["wording"]) for row in big_value_steps.generate(600, 0, "train")}
    assert drawn == {(t.name, w) for t in big_value_steps.TEMPLATES for w in range(3)}


# The one-step wordings' answers, written apart from their steps.
INDEPENDENT_WORDS = {
    "words_add": lambda v: v["a"] + v["b"],
    "words_subtract": lambda v: v["a"] - v["b"],
    "words_multiply": lambda v: v["a"] * v["count"],
    "words_divide": lambda v: v["total"] / v["people"],
}


def test_one_step_wordings_are_exact_and_every_wording_is_drawn():
    rows = big_value_words.generate(400, 3, "train")
    drawn = {(row["metadata"]["template"], row["metadata"]["wording"]) for row in rows}
    assert drawn == {(t.name, w) for t in big_value_words.TEMPLATES for w in range(4)}
    for row in rows:
        values = {k: Decimal(v) for k, v in row["metadata"]["values"].items()}
        expected = INDEPENDENT_WORDS[row["metadata"]["template"]](values)
        assert Decimal(row["answer"]) == expected and expected > 0, row
        assert all(text in row["question"] for text in row["metadata"]["values"].values()) and "{" not in row["question"]


def _four_word_runs(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z']+|\{\w+\}", text.lower())
    return {tuple(words[i : i + 4]) for i in range(len(words) - 3)}


def test_the_one_step_wordings_share_no_four_words_with_a_held_out_template():
    """So the held-out split still asks wordings training never shows, though these were written after seeing it."""
    held_out = set().union(*(_four_word_runs(w) for t in big_value.TEMPLATES if t.name in big_value.HELD_OUT for w in t.wordings))
    for template in big_value_words.TEMPLATES:
        for wording in template.wordings:
            assert not _four_word_runs(wording) & held_out, wording


def _rows():
    return big_value.generate(60, 5, "train") + big_value_steps.generate(60, 5, "train")


def test_steps_chain_to_the_answer():
    for row in _rows():
        steps = steps_of(row)
        assert steps[-1].value == Fraction(row["answer"])
        for earlier, later in zip(steps, steps[1:]):
            assert later.operands[0] == earlier.value  # each step works on the previous result


def test_every_step_program_prints_its_exact_value():
    """Run in a fresh interpreter: Decimal where a float would print 10628368976.119999, // where a division is even."""
    steps = [step for row in _rows() for step in steps_of(row)]
    steps += [Step("multiply", (Fraction("44470163.08"), Fraction(239))), Step("divide", (Fraction(98765432100), Fraction(8))),
              Step("divide", (Fraction(98765432100), Fraction(4)))]
    printed = subprocess.run([sys.executable, "-c", "\n".join(step.program() for step in steps)], capture_output=True, text=True, check=True)
    lines = printed.stdout.splitlines()
    assert len(lines) == len(steps)
    for step, line in zip(steps, lines):
        assert Fraction(line) == step.value, (step, line)
    assert "float" not in printed.stdout and "e+" not in printed.stdout


def test_requests_name_their_operation_and_operands():
    assert Step("subtract", (Fraction(1450), Fraction(1275))).request() == "subtract 1275 from 1450"
    assert Step("add", (Fraction(5), Fraction(7), Fraction("9.5"))).request() == "add 5, 7 and 9.5"
    assert Step("multiply", (Fraction(30692252886), Fraction("1.66"))).request() == "multiply 30692252886 by 1.66"
    assert Step("divide", (Fraction(96), Fraction(8))).request() == "divide 96 by 8"


@pytest.mark.parametrize("cite", [False, True])
@pytest.mark.parametrize("mode", ["request", "inline"])
def test_demonstrations_follow_the_protocol_and_the_worked_steps(mode, cite):
    for row in _rows():
        trace = demonstration(row, mode, cite)
        pieces = split_response(trace["response"])
        steps = steps_of(row)
        requester = [p["text"] for p in pieces if p["source"] == "requester"]
        inserted = [p["text"] for p in pieces if p["source"] == "inserted"]
        assert len(requester) == len(steps) + 1 and len(inserted) == len(steps)
        for text, result, step in zip(requester, inserted, steps):
            turn = parse_requester_segment(text, mode)
            assert turn.problems == []
            assert (turn.request == step.request()) if mode == "request" else (turn.code == step.program())
            assert Fraction(result.strip().removeprefix("<result>").removesuffix("</result>").strip()) == step.value
        final = parse_requester_segment(requester[-1], mode)
        assert final.kind == "answer" and final.problems == [] and final.answer == row["answer"]


def test_cited_demonstrations_quote_the_clause_that_holds_each_steps_number():
    for row in _rows():
        pieces = [p["text"] for p in split_response(demonstration(row, "request", cite=True)["response"]) if p["source"] == "requester"]
        for text, step in zip(pieces, steps_of(row)):
            clause = re.match(r'From "([^"]+)", (?:now )?I need the ', text).group(1)
            assert clause in row["question"] and not clause.endswith((".", "?")) and not clause.startswith("and ")
            numbers = [Fraction(n) for n in re.findall(r"\d+(?:\.\d+)?", clause)]
            percents = [1 + Fraction(n) / 100 for n in re.findall(r"(\d+) percent", clause)]
            assert set(numbers + percents) & set(step.operands), (clause, step)
        assert "From" not in pieces[-1]


def test_a_cited_clause_is_the_words_of_the_operation_not_the_questions_last_sentence():
    rng = Random(0)
    sell = big_value.make_item(rng, 0, [t for t in big_value.TEMPLATES if t.name == "sell_some"])
    shipped = re.search(r"ships out (\S+) kilograms", sell["question"]).group(1)
    assert f'From "It ships out {shipped} kilograms", I need the difference.' in demonstration(sell, "request", cite=True)["response"]
    buy = big_value.make_item(rng, 0, [t for t in big_value.TEMPLATES if t.name == "buy_more"])
    bought = re.search(r"buys (\d+) more", buy["question"]).group(1)
    assert f'From "buys {bought} more", I need the sum.' in demonstration(buy, "request", cite=True)["response"]
    assert "From" not in demonstration(buy, "request")["response"]


def test_demonstrations_cli_writes_traces_and_refuses_rows_without_steps(tmp_path):
    train = tmp_path / "train.jsonl"
    steps = tmp_path / "steps.jsonl"
    assert duet("data", "make", "big-value", "--split", "train", "--n", "5", "--seed", "1", "--out", str(train)).returncode == 0
    assert duet("data", "make", "big-value-steps", "--split", "train", "--n", "5", "--seed", "1", "--out", str(steps)).returncode == 0
    out = tmp_path / "demos.jsonl"
    made = duet("data", "demonstrations", str(train), str(steps), "--n", "3", "--mode", "inline", "--out", str(out))
    assert made.returncode == 0, made.stderr
    traces = [json.loads(line) for line in out.read_text().splitlines()]
    rows = [json.loads(line) for path in (train, steps) for line in path.read_text().splitlines()[:3]]
    assert [t["question"] for t in traces] == [r["question"] for r in rows] and all("<code>" in t["response"] for t in traces)
    other = tmp_path / "arithmetic.jsonl"
    assert duet("data", "make", "arithmetic", "--n", "2", "--out", str(other)).returncode == 0
    refused = duet("data", "demonstrations", str(other), "--out", str(tmp_path / "x.jsonl"))
    assert refused.returncode == 1 and "has no metadata.steps" in refused.stderr and "Traceback" not in refused.stderr
    split = duet("data", "make", "arithmetic", "--split", "test", "--n", "2", "--out", str(other))
    assert split.returncode == 1 and "--split applies to big-value, big-value-steps, big-value-words only" in split.stderr


def test_coder_pairs_are_the_demonstrations_requests_and_programs_that_print_their_values():
    rows = _rows()
    pairs = [pair for row in rows for pair in coder_pairs(row)]
    pieces = [p for row in rows for p in split_response(demonstration(row, "request")["response"]) if p["source"] == "requester"]
    asked = [parse_requester_segment(p["text"], "request").request for p in pieces]
    assert [pair["request"] for pair in pairs] == [request for request in asked if request is not None]
    assert len({pair["id"] for pair in pairs}) == len(pairs)
    printed = subprocess.run([sys.executable, "-c", "\n".join(pair["program"] for pair in pairs)], capture_output=True, text=True, check=True)
    assert [Fraction(line) for line in printed.stdout.splitlines()] == [step.value for row in rows for step in steps_of(row)]


def test_coder_pairs_cli_writes_every_step_and_refuses_rows_without_steps(tmp_path):
    steps = tmp_path / "steps.jsonl"
    assert duet("data", "make", "big-value-steps", "--split", "train", "--n", "4", "--seed", "1", "--out", str(steps)).returncode == 0
    out = tmp_path / "pairs.jsonl"
    made = duet("data", "coder-pairs", str(steps), "--n", "3", "--out", str(out))
    assert made.returncode == 0, made.stderr
    rows = [json.loads(line) for line in steps.read_text().splitlines()[:3]]
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(p["question"], p["request"]) for p in pairs] == [(r["question"], s.request()) for r in rows for s in steps_of(r)]
    other = tmp_path / "arithmetic.jsonl"
    assert duet("data", "make", "arithmetic", "--n", "2", "--out", str(other)).returncode == 0
    refused = duet("data", "coder-pairs", str(other), "--out", str(tmp_path / "x.jsonl"))
    assert refused.returncode == 1 and "has no metadata.steps" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("steps", [None, [], [{"operation": "power", "operands": ["2", "3"]}], [{"operation": "add", "operands": ["x"]}],
                                   [{"operation": "divide", "operands": ["5", "0"]}], [{"operation": "add", "operands": ["1/3", "1"]}]])
def test_malformed_steps_are_one_line_errors(steps):
    """Including steps no program could print exactly (a zero divisor, a third), which would otherwise fail deep in
    writing a demonstration."""
    with pytest.raises(DuetError, match="metadata.steps|unknown operations|no exact decimal result"):
        steps_of({"id": "r1", "metadata": {"steps": steps}})
