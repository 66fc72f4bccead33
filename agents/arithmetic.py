"""A whitelisting parser for arithmetic, evaluated with exact fractions: Python's `ast` only parses the text, and only
literals, + - * /, unary signs and parentheses are evaluated. Shared by the Countdown judge (integer literals) and the
calculator tool (decimal literals too), so untrusted text is never handed to `eval`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

LATEX_OPERATORS = {"\\times": "*", "\\cdot": "*", "\\div": "/", "×": "*", "÷": "/", "−": "-", "\\left": "", "\\right": ""}
MAX_CHARS = 1_000
_INTEGER_CHARS = re.compile(r"[0-9+\-*/()\s]+")
_DECIMAL_CHARS = re.compile(r"[0-9.+\-*/()\s]+")
_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


class NotArithmetic(ValueError):
    """The text is not an arithmetic expression of the allowed kind; the message says why, for the one who wrote it."""


@dataclass(frozen=True)
class Arithmetic:
    """A whitelisted expression: its tree, and the text it was parsed from (a decimal literal is read from its digits,
    so 0.1 is 1/10, not the float nearest to it)."""

    tree: ast.expr
    source: str

    @property
    def literals(self) -> list[int | float]:
        return [node.value for node in ast.walk(self.tree) if isinstance(node, ast.Constant)]

    def value(self) -> Fraction:
        """The exact value. Raises ZeroDivisionError."""
        return _evaluate(self.tree, self.source)


def parse_arithmetic(text: str, decimals: bool = False) -> Arithmetic:
    """`text` as arithmetic, with LaTeX and typographic operators read as + - * /. Raises NotArithmetic."""
    expression = text.strip().strip("$")
    for written, operator in LATEX_OPERATORS.items():
        expression = expression.replace(written, operator)
    allowed = _DECIMAL_CHARS if decimals else _INTEGER_CHARS
    literals = "numbers" if decimals else "integers"
    if len(expression) > MAX_CHARS or not allowed.fullmatch(expression):
        raise NotArithmetic(f"not an arithmetic expression of {literals} with + - * / and parentheses")
    source = expression.strip()
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise NotArithmetic("not a well-formed arithmetic expression") from error
    for node in ast.walk(tree.body):
        if isinstance(node, ast.Constant):
            if type(node.value) is not int and not (decimals and type(node.value) is float):
                raise NotArithmetic(f"{node.value!r} is not a number")
        elif not isinstance(node, (ast.BinOp, ast.UnaryOp, *_BINARY, ast.USub, ast.UAdd)):
            raise NotArithmetic(f"{type(node).__name__} is not allowed in arithmetic")
    return Arithmetic(tree.body, source)


def _evaluate(tree: ast.expr, source: str) -> Fraction:
    if isinstance(tree, ast.Constant):
        return Fraction(ast.get_source_segment(source, tree)) if type(tree.value) is float else Fraction(tree.value)
    if isinstance(tree, ast.UnaryOp):
        operand = _evaluate(tree.operand, source)
        return -operand if isinstance(tree.op, ast.USub) else operand
    return _BINARY[type(tree.op)](_evaluate(tree.left, source), _evaluate(tree.right, source))
