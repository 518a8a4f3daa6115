"""Write `arithmetic.jsonl`: 100 short multi-step arithmetic and unit-conversion word problems with
known numeric answers, the built-in sample set of `qmcp eval` (score it with `--scorer number`).

The problems are generated from a seed, so the file is reproducible byte for byte:

    python examples/eval/make_arithmetic.py            # rewrites examples/eval/arithmetic.jsonl
    python examples/eval/make_arithmetic.py --out x.jsonl --seed 7 --count 20

Each problem takes two or three steps with small whole numbers, so that a small local model
(SmolLM2-135M) has some chance; every answer is a whole number.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 2026
COUNT = 100
HERE = Path(__file__).resolve().parent

_NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivo", "Jia", "Kofi", "Lena"]
_ASK = " Give the final answer as a number."

Problem = tuple[str, int, int]
"""(the question, its answer, how many steps it takes)."""


def _change(rng: random.Random, name: str) -> Problem:
    count, price = rng.randint(2, 6), rng.randint(2, 9)
    bill = next(b for b in (20, 50, 100) if b > count * price)
    text = (
        f"{name} buys {count} notebooks at {price} dollars each and pays with a {bill}-dollar bill. "
        "How many dollars of change does the cashier give back?"
    )
    return text, bill - count * price, 2


def _apples(rng: random.Random, name: str) -> Problem:
    start, bags, per_bag = rng.randint(3, 20), rng.randint(2, 5), rng.randint(3, 8)
    given = rng.randint(1, start)
    text = (
        f"{name} has {start} apples, buys {bags} bags of {per_bag} apples each, then gives away {given}. "
        "How many apples are left?"
    )
    return text, start + bags * per_bag - given, 3


def _walk(rng: random.Random, name: str) -> Problem:
    halves, times = rng.randint(2, 9), rng.randint(2, 4)  # 1 to 4.5 km, in half kilometres
    km = f"{halves // 2}" if halves % 2 == 0 else f"{halves // 2}.5"
    text = f"A path is {km} km long. {name} walks it {times} times. How many meters is that in total?"
    return text, halves * 500 * times, 2


def _film(rng: random.Random, name: str) -> Problem:
    hours, minutes = rng.randint(1, 3), rng.choice([5, 10, 15, 20, 25, 30, 35, 40, 45, 50])
    text = f"A film lasts {hours} hour{'s' if hours > 1 else ''} and {minutes} minutes. How many minutes long is it?"
    return text, hours * 60 + minutes, 2


def _boxes(rng: random.Random, name: str) -> Problem:
    kg, boxes = rng.randint(2, 9), rng.randint(2, 6)
    text = f"One box weighs {kg} kg. How many grams do {boxes} boxes weigh together?"
    return text, kg * boxes * 1000, 2


def _jug(rng: random.Random, name: str) -> Problem:
    liters, poured = rng.randint(2, 5), rng.choice([250, 300, 400, 500, 600, 750])
    text = f"A jug holds {liters} liters of water. {name} pours out {poured} milliliters. How many milliliters are left?"
    return text, liters * 1000 - poured, 2


def _average(rng: random.Random, name: str) -> Problem:
    first, second = rng.randint(4, 20), rng.randint(4, 20)
    third = rng.randint(4, 20)
    third += (-(first + second + third)) % 3  # the average is a whole number
    text = f"{name} scores {first}, {second} and {third} points in three games. What is the average score per game?"
    return text, (first + second + third) // 3, 2


def _speed(rng: random.Random, name: str) -> Problem:
    speed, hours, later = rng.randint(4, 12) * 5, rng.randint(2, 4), rng.randint(2, 6)
    text = (
        f"A car drives {speed * hours} km in {hours} hours. At the same speed, how many km does it drive "
        f"in {later} hours?"
    )
    return text, speed * later, 2


def _celsius(rng: random.Random, name: str) -> Problem:
    celsius = rng.randint(0, 8) * 5
    text = (
        f"The water is at {celsius} degrees Celsius. What is that in degrees Fahrenheit? "
        "(Multiply by 9, divide by 5, then add 32.)"
    )
    return text, celsius * 9 // 5 + 32, 3


def _ribbon(rng: random.Random, name: str) -> Problem:
    meters, cut = rng.randint(2, 6), rng.randint(1, 9) * 10
    text = f"A ribbon is {meters} meters long. {name} cuts off {cut} cm. How many centimeters are left?"
    return text, meters * 100 - cut, 2


def _savings(rng: random.Random, name: str) -> Problem:
    weekly, weeks = rng.randint(3, 12), rng.randint(2, 6)
    spent = rng.randint(1, weekly * weeks - 1)
    text = (
        f"{name} saves {weekly} dollars a week for {weeks} weeks, then spends {spent} dollars. "
        "How many dollars are left?"
    )
    return text, weekly * weeks - spent, 2


def _pages(rng: random.Random, name: str) -> Problem:
    per_day, days = rng.randint(5, 20), rng.randint(2, 7)
    pages = per_day * days + rng.randint(5, 60)
    text = f"A book has {pages} pages. {name} reads {per_day} pages a day for {days} days. How many pages are left to read?"
    return text, pages - per_day * days, 2


KINDS: dict[str, Callable[[random.Random, str], Problem]] = {
    "change": _change,
    "apples": _apples,
    "walk": _walk,
    "film": _film,
    "boxes": _boxes,
    "jug": _jug,
    "average": _average,
    "speed": _speed,
    "celsius": _celsius,
    "ribbon": _ribbon,
    "savings": _savings,
    "pages": _pages,
}
"""Each kind of problem and its generator; they take turns, so every kind appears about as often."""


def make_problems(seed: int = SEED, count: int = COUNT) -> list[dict[str, object]]:
    """`count` problems as dataset records: id, input, target (a whole number), metadata (kind, steps)."""
    rng = random.Random(seed)
    kinds = list(KINDS.items())
    records: list[dict[str, object]] = []
    for index in range(count):
        kind, make = kinds[index % len(kinds)]
        text, answer, steps = make(rng, rng.choice(_NAMES))
        records.append(
            {
                "id": f"arith-{index + 1:03d}",
                "input": text + _ASK,
                "target": answer,
                "metadata": {"kind": kind, "steps": steps},
            }
        )
    return records


def render(records: list[dict[str, object]]) -> str:
    """The JSONL text of `records`, one per line."""
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "arithmetic.jsonl")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--count", type=int, default=COUNT)
    args = parser.parse_args(argv)
    args.out.write_text(render(make_problems(args.seed, args.count)), encoding="utf-8")
    print(f"wrote {args.count} problems to {args.out}")


if __name__ == "__main__":
    main()
