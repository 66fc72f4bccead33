"""One-operation word problems on 9-11 digit numbers, each operation in four wordings: training data for a requester
that must pick the operation from the words of a question it has not seen.

big_value's templates give each operation one fixed wording, and subtraction none of its own (only as a step of
savings or remaining_after_two), so a cold start on them learns which template asks what, not which words do: the
held-out `sell_some` ("ships out ... How many kilograms are left?") was answered as a product in every run. These
wordings were written after that was seen, and share no four-word sequence with either held-out template (tested),
so the held-out split still asks wordings training never shows.
"""

from __future__ import annotations

from fractions import Fraction
from random import Random

from training.big_value import Template, ordered_pair, even_shares, big, make_item, split_stream
from training.worked_steps import add, divide, multiply, subtract

SPLITS = ("train", "validation", "test")


def _scaled(rng: Random) -> dict[str, Fraction]:
    return {"a": big(rng), "count": Fraction(rng.randint(2, 500))}


TEMPLATES = [
    Template(
        "words_add",
        ("A school had {a} students, and {b} new students joined. How many students does the school have now?",
         "{name} saved {a} dollars last year and {b} dollars this year. How many dollars did {name} save in both years?",
         "A truck carried {a} kilograms of sand in the morning and {b} kilograms in the afternoon. How many kilograms did it carry in all?",
         "A museum had {a} visitors in spring and {b} visitors in summer. How many visitors came in the two seasons together?"),
        lambda rng: {"a": big(rng), "b": big(rng)},
        lambda v: [add(v["a"], v["b"])],
    ),
    Template(
        "words_subtract",
        ("{name} had {a} dollars and spent {b} dollars. How many dollars does {name} have left?",
         "A lake held {a} liters of water. During the summer, {b} liters evaporated. How many liters remain in the lake?",
         "A library owned {a} books and lost {b} of them. How many books does the library own now?",
         "A forest had {a} trees. Loggers cut down {b} of them. How many trees are still standing?"),
        lambda rng: dict(zip(("a", "b"), ordered_pair(rng))),
        lambda v: [subtract(v["a"], v["b"])],
    ),
    Template(
        "words_multiply",
        ("Each box holds {a} marbles. How many marbles are in {count} boxes?",
         "A building has {count} floors with {a} tiles on each floor. How many tiles are in the building?",
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
