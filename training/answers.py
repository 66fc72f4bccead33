"""Is a final answer right? Pure judging rules, with no process or clock handling (training/answer_checker.py runs
them in a worker process under a time limit, because sympy can take unbounded time on hostile input).

Model output is untrusted: nothing here executes it, and judging never raises on it.

- **Countdown** (`source == "countdown"`): the answer is parsed as arithmetic by a small whitelisting parser (integer
  literals, binary + - * /, unary signs, parentheses; LaTeX `\\times`, `\\cdot`, `\\div` and `×` `÷` accepted) and
  evaluated with exact fractions. Right when the multiset of literals equals `metadata["numbers"]` and the value
  equals `metadata["target"]`, the generator's own rule; division by zero is wrong.
- **Knights and Knaves** (`source == "knights-knaves"`): reasoning-gym's own scorer (string handling only), full
  credit only: every inhabitant's role as in the gold answer, in any order.
- **Numeric gold answers** (a decimal such as `169829311.68`, or exact LaTeX such as `\\frac{1}{2}`): compared
  exactly, never within a float tolerance, because the big-value benchmark is about exact big numbers. The answer may
  be spelled with thousands separators (`1,234` or `1{,}234`), a leading `$` or `\\$`, trailing zeros, a trailing
  period, a trailing unit (`\\text{...}`, `\\mbox{...}`, `%`, or plain words such as `dollars`); those change its
  spelling, not its value; scale words (`12 million`) change the value, so they are not units. An answer in exact
  LaTeX (`\\frac{3}{2}`, `x = 5`) is converted with latex2sympy (the converter math-verify uses) and accepted only if
  it is an exact rational equal to the gold value; anything holding a float (`1.5\\times10^{3}`) is not an exact
  number and is wrong.
- **Opt-in tolerance**: a row whose `metadata["answer_tolerance"]` (see `TOLERANCE_KEY`) is a non-negative number
  accepts a numeric answer within that *relative* distance of a numeric gold answer:
  |answer - gold| <= answer_tolerance * |gold|. It has no effect on symbolic gold answers.
- **Symbolic gold answers** (`x^2+1`, `\\sqrt{2}`, intervals, sets): math-verify decides, as before.

Answers longer than `MAX_ANSWER_CHARS`, or (outside Countdown) nested deeper than `MAX_NESTING` brackets, are wrong
without being parsed: sympy's LaTeX parser is exponential in brace depth.
"""

from __future__ import annotations

import ast
import logging
import re
from collections import Counter
from fractions import Fraction
from functools import cache

from pydantic import BaseModel, ConfigDict, Field

TOLERANCE_KEY = "answer_tolerance"
MAX_ANSWER_CHARS = 1_000
MAX_NESTING = 8
MAX_EXPONENT = 10_000  # an exact answer's powers stay small; 9^{9^{9}} is not evaluated


class Verdict(BaseModel):
    """The judgement of one answer, with the reason when it is wrong, so a report can show why."""

    model_config = ConfigDict(frozen=True)

    correct: bool
    reason: str | None = Field(None, description="why the answer was judged wrong; None when it is right")


RIGHT = Verdict(correct=True)


class InvalidRow(ValueError):
    """The dataset row, not the answer, is at fault (missing Countdown numbers, a malformed tolerance)."""


def wrong(reason: str) -> Verdict:
    return Verdict(correct=False, reason=reason)


def judge(row: dict, answer: str | None) -> Verdict:
    """The verdict on `answer` (a `\\boxed{}` content) for a dataset row {"answer", "source", "metadata"}."""
    if not isinstance(answer, str) or not answer.strip():
        return wrong("no answer")
    if len(answer) > MAX_ANSWER_CHARS:
        return wrong(f"answer too long ({len(answer)} characters; the limit is {MAX_ANSWER_CHARS})")
    metadata = row.get("metadata") or {}
    try:
        if row.get("source") == "countdown":
            return judge_countdown(answer, metadata)
        if row.get("source") == "knights-knaves":
            return judge_knights_knaves(answer, str(row["answer"]))
        if nesting_depth(answer) > MAX_NESTING:
            return wrong(f"answer nested more than {MAX_NESTING} brackets deep")
        return judge_math(answer, str(row["answer"]), tolerance_of(metadata))
    except InvalidRow as error:
        return wrong(str(error))
    except Exception as error:  # noqa: BLE001 - model output is untrusted; what cannot be judged is wrong
        return wrong(f"cannot judge the answer ({type(error).__name__})")


def nesting_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")}]":
            depth = max(depth - 1, 0)
    return deepest


# --- Countdown ---------------------------------------------------------------------------------------------------

_LATEX_OPERATORS = {"\\times": "*", "\\cdot": "*", "\\div": "/", "×": "*", "÷": "/", "\\left": "", "\\right": ""}
_ARITHMETIC_CHARS = re.compile(r"[0-9+\-*/()\s]+")
_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def judge_countdown(answer: str, metadata: dict) -> Verdict:
    if "numbers" not in metadata or "target" not in metadata:
        raise InvalidRow("the row has no Countdown numbers and target in its metadata")
    expression = answer.strip().strip("$")
    for latex, operator in _LATEX_OPERATORS.items():
        expression = expression.replace(latex, operator)
    if not _ARITHMETIC_CHARS.fullmatch(expression):
        return wrong("not an arithmetic expression of integers with + - * / and parentheses")
    try:
        tree = ast.parse(expression.strip(), mode="eval")  # parsing only: nothing is evaluated by Python
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return wrong("not a well-formed arithmetic expression")
    literals = []
    for node in ast.walk(tree.body):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            literals.append(node.value)
        elif not isinstance(node, (ast.BinOp, ast.UnaryOp, *_BINARY, ast.USub, ast.UAdd)):
            return wrong(f"{type(node).__name__} is not allowed in a Countdown answer")
    numbers = [int(n) for n in metadata["numbers"]]
    if Counter(literals) != Counter(numbers):
        return wrong(f"uses {_listed(literals)} but the numbers are {_listed(numbers)}")
    try:
        value = _evaluate(tree.body)
    except ZeroDivisionError:
        return wrong("division by zero")
    target = Fraction(str(metadata["target"]))
    return RIGHT if value == target else wrong(f"equals {value}, not the target {target}")


def _evaluate(node: ast.expr) -> Fraction:
    """Exact value of a whitelisted tree (only literals, + - * / and unary signs reach here)."""
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))


def _listed(numbers: list[int]) -> str:
    return ", ".join(map(str, sorted(numbers))) or "no numbers"


# --- Knights and Knaves ------------------------------------------------------------------------------------------


def judge_knights_knaves(answer: str, gold: str) -> Verdict:
    full_credit = _knights_knaves_scorer().score_answer(answer, {"answer": gold, "metadata": {}}) >= 1.0
    return RIGHT if full_credit else wrong("not every inhabitant has the gold answer's role")


@cache
def _knights_knaves_scorer():
    import reasoning_gym

    return reasoning_gym.create_dataset("knights_knaves", size=1, seed=0)


# --- Numbers and mathematics -------------------------------------------------------------------------------------

_TRAILING_UNIT = re.compile(
    r"(?:\\(?:text|mbox|textrm|mathrm)\s*\{[^{}]*\}|\\?%|(?<=\s)[A-Za-z]+|\\[ ,;!]?|\\quad|~|\.|\$)$"
)
_SCALE_WORD = re.compile(r"(?i)\b(?:hundred|thousand|million|billion|trillion)s?\b")  # a value, not a unit
_SEPARATOR = r"(?:,|\{,\}|\\,)"
_DECIMAL = re.compile(rf"[-+]?(?:\d{{1,3}}(?:{_SEPARATOR}\d{{3}})+|\d*)(?:\.\d*)?")


def tolerance_of(metadata: dict) -> Fraction | None:
    """The row's opt-in relative tolerance, or None for exact comparison."""
    value = metadata.get(TOLERANCE_KEY)
    if value is None:
        return None
    try:
        tolerance = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        tolerance = Fraction(-1)
    if isinstance(value, bool) or tolerance < 0:
        raise InvalidRow(f"the row's metadata {TOLERANCE_KEY} must be a non-negative number, not {value!r}")
    return tolerance


def decimal_value(text: str) -> Fraction | None:
    """The exact value of a number written in decimal, with the spelling tolerances of the module docstring; None
    when `text` is not such a number. `1e999999999` is not: it would be a billion digits."""
    text = text.strip().replace("−", "-")
    if _SCALE_WORD.search(text):
        return None
    while True:
        shorter = _TRAILING_UNIT.sub("", text).rstrip()
        if shorter == text:
            break
        text = shorter
    text = re.sub(r"^(?:\\\$|\$)\s*", "", text)
    if not _DECIMAL.fullmatch(text) or not re.search(r"\d", text):
        return None
    return Fraction(re.sub(_SEPARATOR, "", text))


def exact_value(latex: str) -> Fraction | None:
    """The exact rational value of a LaTeX number (`\\frac{3}{2}`, `2^{10}`, `x = 5`), or None when it has symbols,
    floats, or powers too large to evaluate. The whole text must parse: math-verify's own `parse` would find the 9
    in `9**9**9**9`, so this calls its LaTeX converter directly."""
    import sympy
    from latex2sympy2_extended import latex2sympy

    expression = latex2sympy(latex)
    if isinstance(expression, sympy.Eq) and isinstance(expression.lhs, sympy.Symbol):
        expression = expression.rhs
    if not isinstance(expression, sympy.Expr) or expression.free_symbols or expression.has(sympy.Float):
        return None
    if any(not (power.exp.is_Number and abs(power.exp) <= MAX_EXPONENT) for power in expression.atoms(sympy.Pow)):
        return None
    value = expression.doit()
    return Fraction(int(value.p), int(value.q)) if isinstance(value, sympy.Rational) else None


def number_value(text: str) -> Fraction | None:
    """Decimal spelling first (fast and exact), then exact LaTeX."""
    value = decimal_value(text)
    if value is not None:
        return value
    try:
        return exact_value(text)
    except Exception:  # noqa: BLE001 - latex2sympy raises many types on text that is not LaTeX mathematics
        return None


def judge_math(answer: str, gold: str, tolerance: Fraction | None = None) -> Verdict:
    gold_value = number_value(gold)
    if gold_value is None:
        return _judge_symbolic(answer, gold)
    value = number_value(answer)
    if value is None:
        return wrong("not an exact number")
    if value == gold_value:
        return RIGHT
    if tolerance is not None and abs(value - gold_value) <= tolerance * abs(gold_value):
        return RIGHT
    return wrong("a different number from the gold answer" + (f" (beyond the relative tolerance {float(tolerance):g})" if tolerance else ""))


def _judge_symbolic(answer: str, gold: str) -> Verdict:
    from math_verify import parse, verify

    # no math-verify timeouts: they use signal.alarm; the caller's worker process bounds the time instead
    same = verify(parse(f"${gold}$", parsing_timeout=None), parse(f"${answer}$", parsing_timeout=None), timeout_seconds=None)
    return RIGHT if same else wrong("not equivalent to the gold answer")


def load_judges() -> None:
    """Import and warm up what judging needs, so a worker's first check does not spend its time limit on imports."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that its own timeouts are off, on purpose
    _knights_knaves_scorer()
    judge({"answer": "x^2+1"}, "x^2+1")
    judge({"answer": "1.5"}, "\\frac{3}{2}")
