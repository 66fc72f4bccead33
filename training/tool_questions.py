"""Questions that need different tools, offline, seeded, with exact answers; each row names in `metadata["tool"]` the
tool a careful solver would ask (the `tool_choice` reward and the selection accuracy read it).

`tools` mixes four kinds: big-number arithmetic (calculator), conversions between units (units), intervals between
dates (dates), and counting and string work (coder). `unseen-tools` asks for the two tools the CPU demo keeps out of
training (primes, roman), for the unseen-tool evaluation. Every answer is a number (a date as an answer would be
read by the checker as arithmetic: 2024-03-16 is 2005), and conversions whose exact value does not terminate carry a
relative `answer_tolerance` of 1e-6.
"""

from __future__ import annotations

import string
from datetime import date, timedelta
from fractions import Fraction
from random import Random

from agents.tools.builtin import show_number, terminates, unit_registry

TOLERANCE = 1e-6
NAMES = ["Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas"]
FRUITS = ["apples", "pears", "plums", "lemons", "figs"]


def _calculator(rng: Random) -> tuple[str, Fraction, str, str]:
    a, b = rng.randint(10**5, 10**7), rng.randint(10**3, 10**5)
    kind = rng.randrange(3)
    if kind == 0:
        return f"A factory packs {a} boxes with {b} screws in each. How many screws is that?", Fraction(a * b), f"{a} * {b}", "product"
    if kind == 1:
        name = rng.choice(NAMES)
        return f"{name} had {a} points and lost {b}, then won {a // 3} more. How many points does {name} have now?", Fraction(a - b + a // 3), f"{a} - {b} + {a // 3}", "points"
    return f"What is {a} multiplied by {b}, minus {a}?", Fraction(a * b - a), f"{a} * {b} - {a}", "multiply_subtract"


_CONVERSIONS = [  # (question wording, from unit, to unit, (low, high)) in pint's unit names
    ("A trail is {a} miles long. How long is it in kilometers?", "mile", "km", (3, 400)),
    ("A parcel weighs {a} pounds. What is its weight in kilograms?", "lb", "kg", (2, 900)),
    ("A board is {a} inches long. How many centimeters is that?", "inch", "cm", (5, 500)),
    ("A tank holds {a} US gallons. How many liters is that?", "gallon", "liter", (2, 300)),
    ("A cyclist rides at {a} km/h. What is that speed in meters per second?", "km/h", "m/s", (10, 90)),
    ("The oven is at {a} degrees Fahrenheit. What is that in degrees Celsius?", "degF", "degC", (150, 480)),
]


def _units(rng: Random) -> tuple[str, Fraction, str, str]:
    wording, source, target, (low, high) = _CONVERSIONS[rng.randrange(len(_CONVERSIONS))]
    a = rng.randint(low, high)
    value = Fraction(unit_registry().Quantity(Fraction(a), source).to(target).magnitude)
    return wording.format(a=a), value, f"{a} {source} in {target}", f"{source}_to_{target}".replace("/", "_per_")


def _spelled(day: date, rng: Random) -> str:
    return day.isoformat() if rng.random() < 0.5 else f"{day.strftime('%B')} {day.day}, {day.year}"


def _dates(rng: Random) -> tuple[str, Fraction, str, str]:
    first = date(2020, 1, 1) + timedelta(days=rng.randrange(6 * 365))
    days = rng.randint(20, 900)
    second = first + timedelta(days=days)
    kind = rng.randrange(3)
    if kind == 0:
        return f"How many days are there from {_spelled(first, rng)} to {_spelled(second, rng)}?", Fraction(days), f"days between {first} and {second}", "days_between"
    if kind == 1:
        name = rng.choice(NAMES)
        return (f"{name} started a project on {_spelled(first, rng)} and finished it on {_spelled(second, rng)}. "
                f"How many days did it take?"), Fraction(days), f"days between {first} and {second}", "project_days"
    return (f"What day of the month is it {days} days after {_spelled(first, rng)}?", Fraction(second.day),
            f"{days} days after {first}", "day_of_month")


def _coder(rng: Random) -> tuple[str, Fraction, str, str]:
    kind = rng.randrange(3)
    if kind == 0:
        letter = rng.choice("aeirst")
        word = "".join(rng.choice(letter * 3 + string.ascii_lowercase) for _ in range(rng.randint(9, 16)))
        return f"How many times does the letter {letter} appear in '{word}'?", Fraction(word.count(letter)), f"count the letter {letter} in '{word}'", "letter_count"
    if kind == 1:
        number = rng.randint(10**11, 10**15)
        return f"What is the sum of the digits of {number}?", Fraction(sum(map(int, str(number)))), f"the sum of the digits of {number}", "digit_sum"
    words = [rng.choice(FRUITS) for _ in range(rng.randint(6, 12))]
    fruit = rng.choice(words)
    return f"In the list {', '.join(words)}, how many times is {fruit} written?", Fraction(words.count(fruit)), f"count {fruit} in the list {', '.join(words)}", "word_count"


def _primes(rng: Random) -> tuple[str, Fraction, str, str]:
    import sympy

    factors = [sympy.prime(rng.randint(5, 400)) for _ in range(rng.randint(2, 4))]
    number = 1
    for factor in factors:
        number *= factor
    if rng.random() < 0.5:
        return f"What is the largest prime factor of {number}?", Fraction(max(factors)), f"{number}", "largest_prime_factor"
    return f"How many distinct prime factors does {number} have?", Fraction(len(set(factors))), f"{number}", "distinct_prime_factors"


def _roman(rng: Random) -> tuple[str, Fraction, str, str]:
    import roman

    number = rng.randint(40, 3999)
    numeral = roman.toRoman(number)
    if rng.random() < 0.5:
        return f"Which number does the Roman numeral {numeral} stand for?", Fraction(number), numeral, "from_roman"
    return f"How many letters does the Roman numeral for {number} have?", Fraction(len(numeral)), f"{number}", "roman_length"


KINDS = {
    "tools": {"calculator": _calculator, "units": _units, "dates": _dates, "coder": _coder},
    "unseen-tools": {"primes": _primes, "roman": _roman},
}


def generate(name: str, n: int, seed: int) -> list[dict]:
    """`n` questions of the set `name`, the tools taking turns so every tool has its share."""
    rng = Random(seed)
    kinds = list(KINDS[name].items())
    rows = []
    for index in range(n):
        tool, make = kinds[index % len(kinds)]
        question, value, request, template = make(rng)
        metadata = {"tool": tool, "template": template, "request": request}
        if not terminates(value):
            metadata["answer_tolerance"] = TOLERANCE
        answer = show_number(value) if terminates(value) else f"{float(value):.9f}".rstrip("0")
        rows.append({"id": f"{name}-{seed}-{index}", "question": question, "answer": answer, "source": name, "metadata": metadata})
    return rows

