"""Is a final answer right? Pure judging rules, with no process or clock handling (training/answer_checker.py runs
them in a worker process under a time limit, because sympy can take unbounded time on hostile input).

Model output is untrusted: nothing here executes it, and judging never raises on it.

- **Countdown** (`source == "countdown"`): the answer is parsed as arithmetic by a small whitelisting parser (integer
  literals, binary + - * /, unary signs, parentheses; LaTeX `\\times`, `\\cdot`, `\\div` and `×` `÷` accepted) and
  evaluated with exact fractions. Right when the multiset of literals equals `metadata["numbers"]` and the value
  equals `metadata["target"]`, the generator's own rule; division by zero is wrong.
- **Knights and Knaves** (`source == "knights-knaves"`): reasoning-gym's own scorer (string handling only), full
  credit only: every inhabitant's role as in the gold answer, in any order.
- **Numeric gold answers** (a decimal such as `169829311.68`, or exact LaTeX such as `\\frac{1}{2}`): the answer must be
  a number, compared exactly, never within a float tolerance, because the big-value benchmark is about exact big
  numbers: arithmetic that evaluates to the gold value (`48213 \\times 9123`, `2^{10}`, `439847199 + 0`, `\\sqrt{...}`)
  is an expression, not a number, and wrong; so is a fraction that still reduces (`\\frac{2}{4}`, `\\frac{8}{1}`). A
  number is a decimal in ASCII digits (leading zeros allowed: `007` is 7; a base subscript such as `204_5` is not a
  decimal) or a fraction of two integers in lowest terms with a denominator above 1 (`\\frac{1}{3}`, `\\dfrac13`,
  `-7/4`, `\\frac{-7}{4}`, `-\\frac{7}{4}`). Its spelling may vary without changing its value: thousands separators
  between groups of three digits (`1,234`, `1{,}234`, `1\\,234`, `1 234`, `16,\\!386`), a leading `$` or `\\$`,
  trailing zeros, a trailing period, a trailing unit (`\\text{...}` and kin without digits, `\\mbox{ cm}^2`, `%`,
  `^\\circ`, or plain words such as `dollars`), a wrapper round the whole number (`\\text{5}`, `\\textbf{5}`,
  `\\mathbf{5}`, `\\num{5}`, `\\boxed{5}`, `(5)`), and `x = ` before it (one variable equal to a number; `x = 2 + 3` is
  arithmetic). Scale words (`12 million`) change the value, so they are not units. Only regular expressions read a
  number (sympy never sees it), so the common check stays fast.
- **Opt-in expressions**: a row whose `metadata["accept_expressions"]` (see `ACCEPT_EXPRESSIONS_KEY`) is true judges
  an answer that is not a number by its exact value instead: it is converted with latex2sympy (the converter
  math-verify uses) and right only if it is an exact rational equal to the gold value; anything holding a float
  (`1.5\\times10^{3}`) is not exact and is wrong.
- **Opt-in tolerance**: a row whose `metadata["answer_tolerance"]` (see `TOLERANCE_KEY`) is a non-negative number
  accepts a numeric answer within that *relative* distance of a numeric gold answer:
  |answer - gold| <= answer_tolerance * |gold|. It has no effect on symbolic gold answers.
- **Symbolic gold answers** (`x^2+1`, `\\sqrt{2}`, intervals, sets): math-verify decides, with `\\mathrm{e}` written `e`
  first (math-verify would drop it as a unit). tests/test_answers_math_verify.py holds these rules against
  math-verify's own test cases.

Answers longer than `MAX_ANSWER_CHARS`, or (outside Countdown) nested deeper than `MAX_NESTING` brackets, are wrong
without being parsed: sympy's LaTeX parser is exponential in brace depth.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from fractions import Fraction
from functools import cache
from math import gcd

from pydantic import BaseModel, ConfigDict, Field

from agents.arithmetic import NotArithmetic, parse_arithmetic

TOLERANCE_KEY = "answer_tolerance"
ACCEPT_EXPRESSIONS_KEY = "accept_expressions"
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
        return judge_math(answer, str(row["answer"]), tolerance_of(metadata), accepts_expressions(metadata))
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

def judge_countdown(answer: str, metadata: dict) -> Verdict:
    if "numbers" not in metadata or "target" not in metadata:
        raise InvalidRow("the row has no Countdown numbers and target in its metadata")
    try:
        expression = parse_arithmetic(answer)
    except NotArithmetic as error:
        return wrong(str(error))
    numbers = [int(n) for n in metadata["numbers"]]
    if Counter(expression.literals) != Counter(numbers):
        return wrong(f"uses {_listed(expression.literals)} but the numbers are {_listed(numbers)}")
    try:
        value = expression.value()
    except ZeroDivisionError:
        return wrong("division by zero")
    target = Fraction(str(metadata["target"]))
    return RIGHT if value == target else wrong(f"equals {value}, not the target {target}")


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

_TEXT_COMMANDS = r"text|textnormal|textrm|textbf|textit|textup|textsf|mbox|mathrm|mathbf|mathit"
_WRAPPER = re.compile(rf"\\(?:{_TEXT_COMMANDS}|boxed|num)\s*\{{(.*)\}}|\\left\s*\((.*)\\right\s*\)|\((.*)\)", re.DOTALL)
_CONSTANT = r"(?:e|i|pi)"  # `5 e`, `5\mathrm{e}` are 5e, not 5 in some unit
_TRAILING_UNIT = re.compile(  # a unit's text holds no digits: `5\text{0}` is not 5
    rf"(?:\\(?:{_TEXT_COMMANDS})\s*\{{(?!\s*{_CONSTANT}\s*\}})[^{{}}0-9]*\}}(?:\^\{{?[0-9]\}}?)?|\\?%|(?<=\s)(?!{_CONSTANT}$)[A-Za-z]+"
    rf"|\^\s*\{{?\s*\\circ\s*\}}?|°"
    r"|\\[ ,;!]?|\\quad|~|\.|\$)$"
)
_SCALE_WORD = re.compile(r"(?i)\b(?:hundred|thousand|million|billion|trillion)s?\b")  # a value, not a unit
_VARIABLE = re.compile(r"^[A-Za-z]\s*=\s*")
_SEPARATOR = r"(?:,|\{,\}|\\,| )"
_DECIMAL = re.compile(rf"[-+]?(?:[1-9][0-9]{{0,2}}(?:{_SEPARATOR}[0-9]{{3}})+|[0-9]*)(?:\.[0-9]*)?")
_FRACTION = re.compile(  # \frac13 is LaTeX for \frac{1}{3}: an argument is a braced group or one character
    r"(?P<sign>[-+]?)\s*(?:\\[dtc]?frac\s*(?:\{\s*(?P<numerator>-?[0-9]+)\s*\}|(?P<short_numerator>[0-9]))"
    r"\s*(?:\{\s*(?P<denominator>[0-9]+)\s*\}|(?P<short_denominator>[0-9]))"
    r"|(?P<slash_numerator>[0-9]+)\s*/\s*(?P<slash_denominator>[0-9]+))"
)
_UPRIGHT_CONSTANT = re.compile(r"\\mathrm\s*\{\s*([ei])\s*\}")  # e and i set upright
_OPERATION = re.compile(r"[-+*/^=!×÷·]|\\[A-Za-z]+|[0-9]\s+[0-9]")


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


def accepts_expressions(metadata: dict) -> bool:
    """Whether the row opts into judging an expression by its exact value (`2^{10}` for 1024)."""
    value = metadata.get(ACCEPT_EXPRESSIONS_KEY, False)
    if not isinstance(value, bool):
        raise InvalidRow(f"the row's metadata {ACCEPT_EXPRESSIONS_KEY} must be true or false, not {value!r}")
    return value


def spelled_number(text: str) -> Fraction | None:
    """The exact value of `text` when it is a number, in one of the spellings of the module docstring: a decimal or a
    fraction of two integers in lowest terms; None for anything else, an expression included. Regular expressions
    only (no sympy): this is the hot path of every numeric check. `1e999999999` is not a number: it would be a
    billion digits."""
    text = re.sub(r"\\!\s*", "", text.replace("−", "-"))  # `16,\!386` is LaTeX for 16,386
    if _SCALE_WORD.search(text):
        return None
    text = _bare(_VARIABLE.sub("", _bare(text), count=1))
    if _DECIMAL.fullmatch(text) and re.search(r"[0-9]", text):
        return Fraction(re.sub(_SEPARATOR, "", text))
    return fraction_value(text)


def _bare(text: str) -> str:
    """`text` without what changes its spelling but not its value: wrappers, trailing units, a leading $."""
    while True:
        shorter = re.sub(r"^(?:\\\$|\$)\s*", "", _TRAILING_UNIT.sub("", _unwrapped(text.strip())).strip())
        if shorter == text:
            return text
        text = shorter


def _unwrapped(text: str) -> str:
    """The inside of `\\text{...}`, `\\mathbf{...}`, `\\boxed{...}`, `(...)` and kin when they wrap all of `text`;
    `\\text{1}+\\text{2}` is not wrapped (its inside, `1}+\\text{2`, is unbalanced)."""
    match = _WRAPPER.fullmatch(text)
    if not match:
        return text
    inside = next(group for group in match.groups() if group is not None)
    for opening, closing in ("{}", "()"):
        depth = 0
        for char in inside:
            depth += (char == opening) - (char == closing)
            if depth < 0:
                return text
        if depth:
            return text
    return inside


def fraction_value(text: str) -> Fraction | None:
    """`\\frac{-7}{4}`, `-\\dfrac{7}{4}`, `\\frac13` or `-7/4`: two integer literals in lowest terms with a
    denominator above 1, the way an exact number is written; `\\frac{2}{4}` or `\\frac{8}{1}` is arithmetic."""
    match = _FRACTION.fullmatch(text)
    if not match:
        return None
    numerator = int(match["numerator"] or match["short_numerator"] or match["slash_numerator"])
    denominator = int(match["denominator"] or match["short_denominator"] or match["slash_denominator"])
    if (match["sign"] and numerator < 0) or denominator < 2 or gcd(numerator, denominator) != 1:
        return None
    return Fraction(-numerator if match["sign"] == "-" else numerator, denominator)


def exact_value(latex: str) -> Fraction | None:
    """The exact rational value of LaTeX (`\\frac{3}{2}`, `2^{10}`, `x = 5`), or None when it has symbols, floats,
    or powers too large to evaluate: for gold answers, and for answers on rows that accept expressions. The whole
    text must parse: math-verify's own `parse` would find the 9 in `9**9**9**9`, so this calls its LaTeX converter
    directly."""
    import sympy
    from latex2sympy2_extended import latex2sympy

    if re.search(r"[0-9]\s*_", latex):  # `204_5` is a base-5 numeral; latex2sympy would read it as 204
        return None
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
    """The exact value of a number or of exact arithmetic: its spelling first (fast), then exact LaTeX."""
    value = spelled_number(text)
    if value is not None:
        return value
    try:
        return exact_value(text)
    except Exception:  # noqa: BLE001 - latex2sympy raises many types on text that is not LaTeX mathematics
        return None


def judge_math(answer: str, gold: str, tolerance: Fraction | None = None, accept_expressions: bool = False) -> Verdict:
    """A numeric gold answer wants a number of the same value (exact arithmetic only on a row that opts in); any other
    gold answer goes to math-verify."""
    gold_value = number_value(gold)  # the gold answer is trusted: `2^{10}` as gold means 1024
    if gold_value is None:
        return _judge_symbolic(answer, gold)
    value = number_value(answer) if accept_expressions else spelled_number(answer)
    if value is None:
        return wrong("not an exact number" if accept_expressions else _not_a_number(answer))
    if value == gold_value:
        return RIGHT
    if tolerance is not None and abs(value - gold_value) <= tolerance * abs(gold_value):
        return RIGHT
    return wrong("a different number from the gold answer" + (f" (beyond the relative tolerance {float(tolerance):g})" if tolerance else ""))


def _not_a_number(answer: str) -> str:
    shown = answer.strip() if len(answer.strip()) <= 60 else answer.strip()[:57] + "..."
    if re.search(r"[0-9]", answer) and _OPERATION.search(answer.strip().lstrip("+-−")):
        return f"an expression, not a number ({shown})"
    return "not a number"


def _judge_symbolic(answer: str, gold: str) -> Verdict:
    """math-verify's verdict. `\\mathrm{e}` is first written `e`: math-verify drops `\\mathrm{...}` as a unit, which
    reads `1 - \\frac{1}{\\mathrm{e}}` as 1 and would accept `1` for it."""
    from math_verify import parse, verify

    gold, answer = (_UPRIGHT_CONSTANT.sub(r"\1", text) for text in (gold, answer))
    # no math-verify timeouts: they use signal.alarm; the caller's worker process bounds the time instead
    same = verify(parse(f"${gold}$", parsing_timeout=None), parse(f"${answer}$", parsing_timeout=None), timeout_seconds=None)
    return RIGHT if same else wrong("not equivalent to the gold answer")


def load_judges() -> None:
    """Import and warm up what judging needs, so a worker's first check does not spend its time limit on imports."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that its own timeouts are off, on purpose
    _knights_knaves_scorer()
    judge({"answer": "x^2+1"}, "x^2+1")
    judge({"answer": "2^{10}", "metadata": {ACCEPT_EXPRESSIONS_KEY: True}}, "2^{10}")
