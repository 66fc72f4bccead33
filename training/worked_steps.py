"""The worked solution of a generated word problem: one arithmetic operation per step, each step's operands the
question's numbers or an earlier step's result, so the solution can be written as a careful solver's requests (one
operation each, which the embedded coder translates reliably; longer expressions it shortens) or as the programs of
the inline mode. Stored in a row's `metadata["steps"]`, so demonstrations are written from the data, never guessed.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from fractions import Fraction

from agents.errors import DuetError

OPERATIONS = {"add": operator.add, "subtract": operator.sub, "multiply": operator.mul, "divide": operator.truediv}
SYMBOLS = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/"}


def render(value: Fraction) -> str:
    """An exact decimal string: 48213 or 48213.5 or -12.25. Only terminating decimals are ever produced here."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    whole, rest = divmod(value.numerator, value.denominator)
    if rest == 0:
        return f"{sign}{whole}"
    digits = []
    remainder = Fraction(rest, value.denominator)
    for _ in range(40):
        remainder *= 10
        digit = int(remainder)
        digits.append(str(digit))
        remainder -= digit
        if remainder == 0:
            return f"{sign}{whole}.{''.join(digits)}"
    raise ValueError(f"{value} does not terminate in 40 decimal places")


@dataclass(frozen=True)
class Step:
    operation: str
    operands: tuple[Fraction, ...]

    @property
    def value(self) -> Fraction:
        result = self.operands[0]
        for operand in self.operands[1:]:
            result = OPERATIONS[self.operation](result, operand)
        return result

    def request(self) -> str:
        """In words, as the demonstrations ask: "subtract 1275 from 1450", "add 5, 7 and 9"."""
        first, *rest = (render(x) for x in self.operands)
        if self.operation == "subtract":
            return f"subtract {' and '.join(rest)} from {first}"
        if self.operation == "add":
            return f"add {', '.join([first, *rest[:-1]])} and {rest[-1]}"
        return f"{self.operation} {first} by {' and then by '.join(rest)}"

    def program(self) -> str:
        """A program that prints the exact value: decimals as Decimal (a float prints 10628368976.119999 for
        44470163.08 * 239), an even division of whole numbers as //."""
        exact = any(x.denominator != 1 for x in self.operands) or self.value.denominator != 1
        literals = [f"Decimal('{render(x)}')" if exact and index == 0 or x.denominator != 1 else render(x) for index, x in enumerate(self.operands)]
        symbol = "//" if self.operation == "divide" and not exact else SYMBOLS[self.operation]
        line = f"print({f' {symbol} '.join(literals)})"
        return f"from decimal import Decimal\n{line}" if exact else line

    def as_json(self) -> dict:
        return {"operation": self.operation, "operands": [render(x) for x in self.operands], "value": render(self.value)}


def add(*operands: Fraction) -> Step:
    return Step("add", operands)


def subtract(*operands: Fraction) -> Step:
    return Step("subtract", operands)


def multiply(*operands: Fraction) -> Step:
    return Step("multiply", operands)


def divide(*operands: Fraction) -> Step:
    return Step("divide", operands)


def chain(first: Step, *rest: tuple) -> list[Step]:
    """Steps that each work on the previous one's result: chain(add(a, b), (subtract, c)) is a + b, then that - c."""
    steps = [first]
    for operation, *operands in rest:
        steps.append(operation(steps[-1].value, *operands))
    return steps


def steps_of(row: dict) -> list[Step]:
    """A row's worked steps, read back from its metadata. Raises DuetError for a row a generator did not write."""
    written = (row.get("metadata") or {}).get("steps")
    if not isinstance(written, list) or not written:
        raise DuetError(f"row {row.get('id', '?')} has no metadata.steps; demonstrations are written from the big-value generators' rows "
                        "(duet data make big-value, big-value-steps or big-value-words)")
    try:
        steps = [Step(step["operation"], tuple(Fraction(x) for x in step["operands"])) for step in written]
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        raise DuetError(f"row {row.get('id', '?')} has malformed metadata.steps ({error!r}); generate the data again") from error
    unknown = sorted({step.operation for step in steps} - set(OPERATIONS))
    if unknown:
        raise DuetError(f"row {row.get('id', '?')} has steps of unknown operations {unknown}; generate the data again")
    try:
        for step in steps:  # every number a step writes must be an exact decimal
            for number in (*step.operands, step.value):
                render(number)
    except (ZeroDivisionError, ValueError) as error:
        raise DuetError(f"row {row.get('id', '?')} has a step with no exact decimal result ({error}); generate the data again") from error
    return steps
