"""Tools that need no model and run offline. Each takes the request as the requester wrote it (untrusted text) and
returns the answer as text, or raises ToolInputError with a sentence that tells the requester how to ask instead.
Each docstring is the tool's description on its card in the requester's prompt, so it says how to ask.

The work is done by well-kept libraries (pint for units, python-dateutil for dates, sympy for factorisation, roman
for numerals) or by the whitelisting parser the answer checker uses (agents/arithmetic.py): nothing here calls eval.
"""

from __future__ import annotations

import re
from datetime import date
from fractions import Fraction
from functools import cache

from agents.arithmetic import NotArithmetic, parse_arithmetic
from agents.errors import first_line

MAX_DIGITS = 40  # a number the factoriser is given; sympy factors 40 digits in well under a second unless unlucky
DECIMAL_PLACES = 10


class ToolInputError(ValueError):
    """The request could not be read; the message goes back to the requester as the tool's error."""


def calculator(request: str) -> str:
    """Exact math on numbers: sums, differences, products and quotients with + - * / and parentheses, never rounded.
    Write only the expression, for example
    <request tool="calculator">48213 * 9123</request> or <request tool="calculator">(1250.5 - 312) / 4</request>."""
    try:
        expression = parse_arithmetic(_expression_in(request), decimals=True)
        return show_number(expression.value())
    except NotArithmetic as error:
        raise ToolInputError(f"{error}; write only the expression, such as 48213 * 9123") from error
    except ZeroDivisionError as error:
        raise ToolInputError("division by zero") from error


def _expression_in(request: str) -> str:
    """The expression itself, when the request wraps it in words ("compute 3 * 4", "3 * 4 = ?")."""
    text = request.strip().rstrip("?=. ").strip()
    text = re.sub(r"(?i)^(?:please\s+)?(?:compute|calculate|evaluate|what is|work out)\s*:?\s*", "", text)
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,234 is a thousands separator here


def show_number(value: Fraction) -> str:
    """An exact value as the answer checker reads it: an integer, a terminating decimal, or a fraction in lowest terms
    followed by its rounded decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    if terminates(value):
        places = 0
        while (value * 10**places).denominator != 1:
            places += 1
        return _decimal(value, places)
    return f"{value.numerator}/{value.denominator} (about {_decimal(value, DECIMAL_PLACES).rstrip('0')})"


def terminates(value: Fraction) -> bool:
    """Whether the value has a finite decimal expansion (its denominator has no prime factor but 2 and 5)."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


def _decimal(value: Fraction, places: int) -> str:
    scaled = round(abs(value) * 10**places)
    whole, fraction = divmod(scaled, 10**places)
    return f"{'-' if value < 0 else ''}{whole}.{fraction:0{places}d}"


# --- units ---------------------------------------------------------------------------------------------------------

_CONVERSION = re.compile(r"(?is)^(?:convert\s+)?(?P<quantity>.+?)\s+(?:in|to|into|as)\s+(?P<unit>[^?]+?)[?.\s]*$")
_HOW_MANY = re.compile(r"(?is)^how\s+many\s+(?P<unit>.+?)\s+(?:are|is)\s+(?:there\s+)?in\s+(?P<quantity>[^?]+?)[?.\s]*$")
_POWER = re.compile(r"(?:\*\*|\^)\s*\(?\s*([-+]?\d+)")
MAX_UNIT_POWER = 4  # m^2, cm^3, s^-2: a larger power is no unit anyone converts, and pint takes for ever on km**99999999
_QUANTITY = re.compile(r"^\s*(?P<number>[-+]?[0-9][0-9,]*(?:\.[0-9]+)?|[-+]?\.[0-9]+)\s*(?P<unit>.+?)\s*$", re.DOTALL)


@cache
def unit_registry():
    import pint

    return pint.UnitRegistry(non_int_type=Fraction)


def units(request: str) -> str:
    """Converts a quantity between units of length, mass, time, volume, area, speed, temperature, energy and more
    (km, mile, foot, inch, kg, lb, ounce, liter, gallon, km/h, m/s, degC, degF). Write the quantity and the unit to
    convert to, for example <request tool="units">5 miles in km</request> or
    <request tool="units">72 degF to degC</request>."""
    import pint

    match = _HOW_MANY.match(request.strip()) or _CONVERSION.match(request.strip())
    quantity = match and _QUANTITY.match(match["quantity"])
    if not quantity:
        raise ToolInputError("write a quantity and the unit to convert to, such as: 5 miles in km")
    if any(abs(int(power)) > MAX_UNIT_POWER for power in _POWER.findall(request)) or len(quantity["number"]) > MAX_DIGITS:
        raise ToolInputError(f"units have powers up to {MAX_UNIT_POWER} and numbers up to {MAX_DIGITS} digits, such as: 5 m^2 in cm^2")
    registry = unit_registry()
    try:
        value = Fraction(quantity["number"].replace(",", ""))
        converted = registry.Quantity(value, _unit_name(quantity["unit"])).to(_unit_name(match["unit"]))
    except pint.errors.DimensionalityError as error:
        raise ToolInputError(f"cannot convert {error.units1} to {error.units2}: they measure different things") from error
    except (pint.errors.PintError, AttributeError, TypeError, ValueError, SyntaxError, KeyError) as error:
        raise ToolInputError(f"unknown unit ({first_line(error) or type(error).__name__}); use names such as km, mile, kg, lb, degC, degF, hour") from error
    return f"{show_number(Fraction(converted.magnitude))} {_unit_text(converted.units)}".strip()


def _unit_text(unit) -> str:
    """`km`, `m / s`, `cm^2`, by the units' symbols. pint's own `~` format fails on the Fraction powers that exact
    magnitudes bring (a TypeError on m^2)."""
    registry = unit_registry()
    shown = {True: [], False: []}
    for name, power in unit._units.items():
        power = Fraction(power)
        symbol = registry.get_symbol(name)
        shown[power > 0].append(symbol if abs(power) == 1 else f"{symbol}^{abs(power)}")
    text = " * ".join(shown[True]) or "1"
    return f"{text} / {' / '.join(shown[False])}" if shown[False] else ("" if text == "1" else text)


def _unit_name(text: str) -> str:
    """Unit names as people write them: a plural, a degree sign, a trailing article-free phrase."""
    text = text.strip().rstrip("?.").replace("°", "deg").replace("degrees ", "deg")
    return re.sub(r"(?i)^(?:an?|the)\s+", "", text)


# --- dates ---------------------------------------------------------------------------------------------------------

_ISO = re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b")
_SHIFT = re.compile(r"(?i)(?P<amount>\d+)\s*(?P<unit>day|week|month|year)s?\s+(?P<direction>after|before|from|later than|earlier than|since)")
_PLUS = re.compile(r"(?i)(?P<direction>plus|minus|\+|-)\s*(?P<amount>\d+)\s*(?P<unit>day|week|month|year)s?\b")


def dates(request: str) -> str:
    """Calendar arithmetic on dates written YYYY-MM-DD (or 'March 3, 2024'): the days between two dates, the date a
    number of days, weeks, months or years after or before a date, and the weekday of a date. For example
    <request tool="dates">days between 2024-01-05 and 2024-03-01</request>,
    <request tool="dates">45 days after 2024-01-31</request> or <request tool="dates">weekday of 2024-07-04</request>."""
    from dateutil.relativedelta import relativedelta

    found = _dates_in(request)
    shift = _SHIFT.search(request) or _PLUS.search(request)
    if len(found) >= 2:
        first, second = found[:2]
        days = (second - first).days
        return f"{days} days from {first.isoformat()} to {second.isoformat()}"
    if len(found) == 1 and shift:
        amount = int(shift["amount"])
        backwards = shift["direction"].lower() in ("before", "earlier than", "minus", "-")
        try:
            moved = found[0] + relativedelta(**{f"{shift['unit'].lower()}s": -amount if backwards else amount})
        except (OverflowError, ValueError) as error:
            raise ToolInputError(f"the date falls outside the calendar's years 1 to 9999 ({error})") from error
        return f"{moved.isoformat()} ({moved.strftime('%A')})"
    if len(found) == 1:
        return f"{found[0].isoformat()} is a {found[0].strftime('%A')}"
    raise ToolInputError("write one or two dates as YYYY-MM-DD, such as: days between 2024-01-05 and 2024-03-01")


def _dates_in(request: str) -> list[date]:
    """ISO dates first; otherwise the date dateutil finds in each part of 'between A and B' / 'from A to B'."""
    from dateutil import parser

    try:
        iso = [date.fromisoformat(_padded(text)) for text in _ISO.findall(request)]
    except ValueError as error:
        raise ToolInputError(f"not a date on the calendar ({error})") from error
    if iso:
        return iso
    found = []
    for part in re.split(r"(?i)\b(?:and|to|until|till)\b", request):
        if not re.search(r"\d", part):
            continue
        try:
            found.append(parser.parse(_SHIFT.sub("", _PLUS.sub("", part)), fuzzy=True).date())
        except (ValueError, OverflowError):
            continue
    return found


def _padded(text: str) -> str:
    year, month, day = text.split("-")
    return f"{year}-{int(month):02d}-{int(day):02d}"


# --- tools the CPU demo holds out of training (the unseen-tool evaluation) ----------------------------------------

def primes(request: str) -> str:
    """Factorises a whole number into its prime factors (prime factorization). Write the number, for example <request tool="primes">360</request>;
    the reply lists each prime factor with its exponent, such as 360 = 2^3 * 3^2 * 5."""
    import sympy

    numbers = re.findall(r"\d[\d,]*", request)
    if not numbers:
        raise ToolInputError("write the whole number to factorise, such as 360")
    text = numbers[-1].replace(",", "")
    if len(text) > MAX_DIGITS:
        raise ToolInputError(f"the number has more than {MAX_DIGITS} digits")
    number = int(text)
    if number < 2:
        raise ToolInputError("only whole numbers from 2 up have a prime factorisation")
    factors = sympy.factorint(number)
    shown = " * ".join(f"{p}^{e}" if e > 1 else str(p) for p, e in sorted(factors.items()))
    return f"{number} = {shown}"


def roman(request: str) -> str:
    """Converts between Roman numerals and whole numbers from 1 to 3999, both ways. Write the number or the numeral,
    for example <request tool="roman">1994</request> or <request tool="roman">MCMXCIV</request>."""
    import roman as numerals

    numeral = re.search(r"\b[MDCLXVI]+\b", request)
    number = re.search(r"\d+", request)
    try:
        if numeral and not number:
            return f"{numeral[0]} = {numerals.fromRoman(numeral[0])}"
        if number:
            return f"{number[0]} = {numerals.toRoman(int(number[0]))}"
    except numerals.RomanError as error:
        raise ToolInputError(str(error)) from error
    raise ToolInputError("write a whole number such as 1994 or a Roman numeral such as MCMXCIV")



BUILTIN = {"calculator": calculator, "units": units, "dates": dates, "primes": primes, "roman": roman}
