"""Two- and three-step word problems on 9-11 digit numbers, in the manner of the published big-value GSM8K test (its
questions are multi-step; big_value's templates are mostly one operation). Each template has three wordings, one
drawn per question, and its answer is the chain of its worked steps, exact.

reasoning-gym's `gsm_symbolic` cannot serve: its generators draw small numbers under per-template constraints, and
scaling them breaks those constraints (its answers are recomputed from the small draws), so these templates are new.
"""

from __future__ import annotations

from fractions import Fraction
from random import Random

from training.big_value import Template, big, big_int, make_item, split_stream
from training.worked_steps import add, chain, divide, multiply, subtract

SPLITS = ("train", "validation", "test")


def _earn_spend(rng: Random) -> dict[str, Fraction]:
    a, b = big_int(rng), big_int(rng)  # books and liters come whole
    return {"a": a, "b": b, "c": Fraction(rng.randint(10**8, int(min(a + b, 10**11)) - 1))}


def _nested(rng: Random) -> dict[str, Fraction]:
    return {"a": big_int(rng), "b": Fraction(rng.randint(2, 60)), "c": Fraction(rng.randint(2, 60))}


def _share_then_spend(rng: Random) -> dict[str, Fraction]:
    people = rng.randint(3, 40)
    each = rng.randint(-(-10**8 // people), (10**11 - 1) // people)  # a 9-11 digit total
    return {"total": Fraction(each * people), "people": Fraction(people), "c": Fraction(rng.randint(10**6, each - 1))}


def _rise_then_fall(rng: Random) -> dict[str, Fraction]:
    a = Fraction(rng.randint(10**6, 10**9 - 1) * 100)  # 9-11 digits in whole hundreds: a whole percentage of it is whole
    return {"a": a, "percent": Fraction(rng.randint(2, 60)), "c": Fraction(rng.randint(10**6, int(a) // 2))}


def _two_rates(rng: Random) -> dict[str, Fraction]:
    return {"a": big_int(rng), "b": big_int(rng), "count": Fraction(rng.randint(2, 90))}


def _buy_with_discount(rng: Random) -> dict[str, Fraction]:
    a, count = big(rng), rng.randint(2, 400)
    return {"a": a, "count": Fraction(count), "c": Fraction(rng.randint(10**5, int(a)))}


TEMPLATES = [
    Template(
        "earn_spend",
        ("{name} had {a} dollars, earned {b} dollars more and then spent {c} dollars. How many dollars does {name} have now?",
         "A reservoir held {a} liters of water. Rain added {b} liters, and then the town used {c} liters. How many liters are in the reservoir now?",
         "A library owned {a} books. It bought {b} new books and gave away {c} old ones. How many books does the library own now?"),
        _earn_spend,
        lambda v: chain(add(v["a"], v["b"]), (subtract, v["c"])),
    ),
    Template(
        "nested_groups",
        ("A warehouse has {a} crates. Each crate holds {b} boxes, and each box holds {c} pencils. How many pencils are in the warehouse?",
         "A city has {a} buildings with {b} floors each, and every floor has {c} windows. How many windows are there in the city?",
         "{name} prints {a} pages a day, {b} days a week, for {c} weeks. How many pages does {name} print?"),
        _nested,
        lambda v: chain(multiply(v["a"], v["b"]), (multiply, v["c"])),
    ),
    Template(
        "share_then_spend",
        ("{total} dollars are shared equally among {people} cousins, and each cousin then spends {c} dollars. How many dollars does each cousin have left?",
         "A mill packs {total} kilograms of flour equally into {people} trucks. Each truck unloads {c} kilograms at its first stop. How many kilograms are left on each truck?",
         "A charity raised {total} dollars and split it equally among {people} schools. Each school spent {c} dollars on books. How many dollars does each school have left?"),
        _share_then_spend,
        lambda v: chain(divide(v["total"], v["people"]), (subtract, v["c"])),
    ),
    Template(
        "rise_then_fall",
        ("A town had {a} residents. The number grew by {percent} percent, and then {c} residents moved away. How many residents does the town have now?",
         "A stock was worth {a} dollars. Its value rose by {percent} percent and then fell by {c} dollars. How many dollars is it worth now?",
         "A farm harvested {a} kilograms of grain last year. This year it harvested {percent} percent more, but {c} kilograms spoiled. How many kilograms are left from this year's harvest?"),
        _rise_then_fall,
        lambda v: chain(multiply(v["a"], 1 + v["percent"] / 100), (subtract, v["c"])),
    ),
    Template(
        "two_rates",
        ("Two pipes fill a tank, one with {a} liters an hour and the other with {b} liters an hour. How many liters do they fill together in {count} hours?",
         "{name} sells {a} tickets on Saturday and {b} tickets on Sunday every weekend. How many tickets does {name} sell in {count} weekends?",
         "A farm picks {a} apples in the morning and {b} apples in the afternoon each day. How many apples does it pick in {count} days?"),
        _two_rates,
        lambda v: chain(add(v["a"], v["b"]), (multiply, v["count"])),
    ),
    Template(
        "buy_with_discount",
        ("One tractor costs {a} dollars. A farm buys {count} tractors and gets a discount of {c} dollars. How many dollars does the farm pay?",
         "A ticket costs {a} dollars. A club buys {count} tickets and pays part with a voucher worth {c} dollars. How many dollars does the club still pay?",
         "Each shipment weighs {a} kilograms. After {count} shipments arrive, {c} kilograms are sold. How many kilograms remain?"),
        _buy_with_discount,
        lambda v: chain(multiply(v["a"], v["count"]), (subtract, v["c"])),
    ),
]


def generate(n: int, seed: int, split: str | None = None) -> list[dict]:
    rng = split_stream("big-value-steps", split, seed, SPLITS)
    prefix = f"big-value-steps-{split or 'all'}-{seed}"
    return [make_item(rng, index, TEMPLATES, source="big-value-steps", prefix=prefix) for index in range(n)]
