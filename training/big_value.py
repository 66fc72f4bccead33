"""Big-value word problems in the spirit of the published big-value GSM test: GSM-style templates whose quantities are
9-11 digit integers or decimals, with the answer computed exactly (Fractions) from the same numbers.

Only templates whose answer is a chain of arithmetic steps on their quantities are here (`training.worked_steps`), so
every answer is recomputed, never guessed, and each row carries its worked steps. Divisions are arranged to come out
even, and decimal answers are written out exactly (they terminate, because every divisor is built from 2s and 5s or
divides evenly).

Splits: `split=None` draws from every template with the seed alone (the data of the committed reports). A named split
draws from its own random stream (the split's name and the seed), so train, validation and test never share a
stream; train, validation and test draw from every template but the two of `HELD_OUT`, which only the `held-out`
split asks, so a report can say how far a skill travels to a wording training never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from random import Random

from agents.errors import DuetError
from training.worked_steps import Step, add, chain, divide, multiply, render, subtract

NAMES = ["Ava", "Liam", "Noah", "Emma", "Mia", "Omar", "Priya", "Chen", "Sofia", "Lucas"]


@dataclass(frozen=True)
class Template:
    """`text` is a wording, or several (one is drawn per question); `steps` solves it from the drawn values."""

    name: str
    text: str | tuple[str, ...]
    draw: Callable[[Random], dict[str, Fraction]]
    steps: Callable[[dict[str, Fraction]], list[Step]]

    @property
    def wordings(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text


def big_int(rng: Random) -> Fraction:
    digits = rng.randint(9, 11)
    return Fraction(rng.randint(10 ** (digits - 1), 10**digits - 1))


def big_decimal(rng: Random) -> Fraction:
    """A 9-11 digit number with 2 decimal places, e.g. 48213907.55."""
    return big_int(rng) / 100


def big(rng: Random) -> Fraction:
    return big_int(rng) if rng.random() < 0.7 else big_decimal(rng)


def ordered_pair(rng: Random) -> tuple[Fraction, Fraction]:
    first, second = big(rng), big(rng)
    return (first, second) if first >= second else (second, first)


def even_shares(rng: Random) -> dict[str, Fraction]:
    """A 9-11 digit total that the number of people divides evenly."""
    people = rng.randint(3, 40)
    digits = rng.randint(9, 11)
    total = rng.randint(10 ** (digits - 1) + people, 10**digits - 1)
    return {"total": Fraction(total - total % people), "people": Fraction(people)}


def _budget(rng: Random) -> dict[str, Fraction]:
    """An 11-digit amount and two 9-digit expenses, so the rest is positive; all in cents when decimal."""
    scale = 100 if rng.random() < 0.3 else 1
    return {
        "a": Fraction(rng.randint(10**10, 10**11 - 1), scale),
        "b": Fraction(rng.randint(10**8, 10**9 - 1), scale),
        "c": Fraction(rng.randint(10**8, 10**9 - 1), scale),
    }


TEMPLATES = [
    Template(
        "buy_more",
        "{name} has {a} stamps and buys {b} more. How many stamps does {name} have now?",
        lambda rng: {"a": big_int(rng), "b": big_int(rng)},
        lambda v: [add(v["a"], v["b"])],
    ),
    Template(
        "sell_some",
        "A warehouse holds {a} kilograms of rice. It ships out {b} kilograms. How many kilograms are left?",
        lambda rng: dict(zip(("a", "b"), ordered_pair(rng))),
        lambda v: [subtract(v["a"], v["b"])],
    ),
    Template(
        "daily_rate",
        "A factory makes {a} bolts every day. How many bolts does it make in {days} days?",
        lambda rng: {"a": big_int(rng), "days": Fraction(rng.randint(2, 365))},
        lambda v: [multiply(v["a"], v["days"])],
    ),
    Template(
        "product",
        "A field has {a} rows with {b} plants in each row. How many plants are in the field?",
        lambda rng: {"a": big_int(rng), "b": big_int(rng)},
        lambda v: [multiply(v["a"], v["b"])],
    ),
    Template(
        "savings",
        "{name} earns {a} dollars a month and spends {b} dollars a month. How many dollars does {name} save in {months} months?",
        lambda rng: {**dict(zip(("a", "b"), ordered_pair(rng))), "months": Fraction(rng.randint(2, 36))},
        lambda v: chain(subtract(v["a"], v["b"]), (multiply, v["months"])),
    ),
    Template(
        "equal_shares",
        "{total} coins are shared equally among {people} people. How many coins does each person get?",
        even_shares,
        lambda v: [divide(v["total"], v["people"])],
    ),
    Template(
        "percent_increase",
        "A company's revenue was {a} dollars. It grew by {percent} percent. What is the new revenue in dollars?",
        lambda rng: {"a": big(rng), "percent": Fraction(rng.randint(1, 99))},
        lambda v: [multiply(v["a"], 1 + v["percent"] / 100)],
    ),
    Template(
        "two_legs",
        "A ship sails {a} meters, then {b} meters, then {c} meters. How many meters does it sail in total?",
        lambda rng: {"a": big(rng), "b": big(rng), "c": big(rng)},
        lambda v: [add(v["a"], v["b"], v["c"])],
    ),
    Template(
        "remaining_after_two",
        "{name} had {a} dollars, paid {b} dollars for a house and {c} dollars for a car. How many dollars are left?",
        lambda rng: _budget(rng),
        lambda v: chain(subtract(v["a"], v["b"]), (subtract, v["c"])),
    ),
    Template(
        "price_times_count",
        "One machine costs {a} dollars. How many dollars do {count} machines cost?",
        lambda rng: {"a": big_decimal(rng), "count": Fraction(rng.randint(2, 500))},
        lambda v: [multiply(v["a"], v["count"])],
    ),
]


def render_quantity(value: Fraction) -> str:
    """Quantities are whole numbers or amounts in cents, written with both decimals (6625707.30)."""
    if value.denominator == 1:
        return str(value.numerator)
    cents = value * 100
    assert cents.denominator == 1, "quantities are drawn in whole cents"
    whole, part = divmod(abs(cents.numerator), 100)
    return f"{'-' if value < 0 else ''}{whole}.{part:02d}"


HELD_OUT = ("daily_rate", "sell_some")
"""Never in the train, validation or test splits: a multiplication and a subtraction in wordings training never
shows (the same operations are trained on in other templates and in big-value-steps). Chosen before any run."""

SPLITS = ("train", "validation", "test", "held-out")


def make_item(rng: Random, index: int, templates: Sequence[Template] = TEMPLATES, source: str = "big-value", prefix: str = "big-value") -> dict:
    template = templates[rng.randrange(len(templates))]
    several = len(template.wordings) > 1  # a single wording draws nothing, so the seeds of the committed reports still hold
    wording = rng.randrange(len(template.wordings)) if several else 0
    values = template.draw(rng)
    words = {key: render_quantity(value) for key, value in values.items()}
    question = template.wordings[wording].format(name=rng.choice(NAMES), **words)
    steps = template.steps(values)
    return {
        "id": f"{prefix}-{index}",
        "question": question,
        "answer": render(steps[-1].value),
        "source": source,
        "metadata": {"template": template.name, "values": words, "steps": [step.as_json() for step in steps],
                     **({"wording": wording} if several else {})},
    }


def split_stream(name: str, split: str | None, seed: int, splits: Sequence[str] = SPLITS) -> Random:
    """The seed's own stream (split None, as before splits existed), or one per split."""
    if split is None:
        return Random(seed)
    if split not in splits:
        raise DuetError(f"unknown split {split!r} for {name}; choose one of: {', '.join(splits)}")
    return Random(f"{name}/{split}/{seed}")


def templates_of(split: str | None) -> list[Template]:
    if split is None:
        return TEMPLATES
    return [t for t in TEMPLATES if (t.name in HELD_OUT) == (split == "held-out")]


def generate(n: int, seed: int, split: str | None = None) -> list[dict]:
    rng = split_stream("big-value", split, seed)
    prefix = "big-value" if split is None else f"big-value-{split}-{seed}"
    return [make_item(rng, index, templates_of(split), prefix=prefix) for index in range(n)]
