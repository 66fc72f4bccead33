"""One-operation word problems on 9-11 digit numbers, each operation in four wordings: training data for a requester
that must pick the operation from the words of a question it has not seen.

big_value's templates each have one fixed wording, and its one one-step subtraction (`sell_some`) is held out, so a
cold start on them learns which template asks what, not which words do: the held-out `sell_some` ("ships out ... How
many kilograms are left?") was answered as a product in every run. These wordings were written after that was seen,
and share no four-word sequence with either held-out template (tested), so the held-out split still asks wordings
training never shows. Every quantity is an amount (dollars, liters, kilograms, meters), so the cents that `big`
sometimes draws always make sense.
"""

from __future__ import annotations

from fractions import Fraction
from random import Random

from training.big_value import Template, big, even_shares, make_item, ordered_pair, split_stream
from training.worked_steps import add, divide, multiply, subtract

SPLITS = ("train", "validation", "test")


def _scaled(rng: Random) -> dict[str, Fraction]:
    return {"a": big(rng), "count": Fraction(rng.randint(2, 500))}


TEMPLATES = [
    Template(
        "words_add",
        ("A school's fund had {a} dollars, and donors gave {b} dollars more. How many dollars does the fund have now?",
         "{name} saved {a} dollars last year and {b} dollars this year. How many dollars did {name} save in both years?",
         "A truck carried {a} kilograms of sand in the morning and {b} kilograms in the afternoon. How many kilograms did it carry in all?",
         "A river carried {a} liters of water past the dam in spring and {b} liters in summer. How many liters passed in the two seasons together?"),
        lambda rng: {"a": big(rng), "b": big(rng)},
        lambda v: [add(v["a"], v["b"])],
    ),
    Template(
        "words_subtract",
        ("{name} had {a} dollars and spent {b} dollars. How many dollars does {name} have left?",
         "A lake held {a} liters of water. During the summer, {b} liters evaporated. How many liters remain in the lake?",
         "A road is {a} meters long, and {b} meters of it are paved. How many meters are not paved yet?",
         "A mine produced {a} kilograms of copper, and {b} kilograms were sold. How many kilograms were not sold?"),
        lambda rng: dict(zip(("a", "b"), ordered_pair(rng))),
        lambda v: [subtract(v["a"], v["b"])],
    ),
    Template(
        "words_multiply",
        ("Each barrel holds {a} liters of oil. How many liters are in {count} barrels?",
         "A building has {count} floors, and painting each floor costs {a} dollars. How many dollars does painting all the floors cost?",
         "A farm has {count} fields, and each field yields {a} kilograms of corn. How many kilograms do all the fields yield?",
         "A ticket costs {a} dollars. How many dollars do {count} tickets cost?"),
        _scaled,
        lambda v: [multiply(v["a"], v["count"])],
    ),
    Template(
        "words_divide",
        ("{total} dollars are split equally among {people} teams. How many dollars does each team get?",
         "A baker divides {total} grams of flour equally into {people} bags. How many grams go into each bag?",
         "{total} liters of juice are poured equally into {people} barrels. How many liters are in each barrel?",
         "A company pays {total} dollars in equal parts to {people} suppliers. How many dollars does each supplier receive?"),
        even_shares,
        lambda v: [divide(v["total"], v["people"])],
    ),
]


def generate(n: int, seed: int, split: str | None = None) -> list[dict]:
    rng = split_stream("big-value-words", split, seed, SPLITS)
    prefix = f"big-value-words-{split or 'all'}-{seed}"
    return [make_item(rng, index, TEMPLATES, source="big-value-words", prefix=prefix) for index in range(n)]
