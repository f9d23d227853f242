"""Write bench/data/verifiable.jsonl: short questions with checkable answers, for `ponder calibrate`.

Run: python bench/make_verifiable.py (deterministic: a fixed seed). See bench/data/README.md.
"""

from __future__ import annotations

import json
import pathlib
import random

OUT = pathlib.Path(__file__).resolve().parent / "data" / "verifiable.jsonl"
SEVERITIES = ("low", "medium", "high")

CAPITALS = [
    ("France", ["Paris"]), ("Japan", ["Tokyo"]), ("Italy", ["Rome"]), ("Spain", ["Madrid"]), ("Germany", ["Berlin"]),
    ("Canada", ["Ottawa"]), ("Egypt", ["Cairo"]), ("Russia", ["Moscow"]), ("Greece", ["Athens"]),
    ("Portugal", ["Lisbon"]), ("Norway", ["Oslo"]), ("Kenya", ["Nairobi"]), ("Peru", ["Lima"]),
    ("Austria", ["Vienna"]), ("Ireland", ["Dublin"]), ("Australia", ["Canberra"]), ("Turkey", ["Ankara"]),
    ("Poland", ["Warsaw"]), ("Sweden", ["Stockholm"]), ("China", ["Beijing", "Peking"]),
]
CHOICES = [
    ("Which is a fruit?", ["car", "apple", "chair"], 1),
    ("Which animal can fly?", ["eagle", "cow", "fish"], 0),
    ("Which is a colour?", ["table", "river", "blue"], 2),
    ("Which is the largest?", ["mouse", "elephant", "cat"], 1),
    ("Which is frozen water?", ["ice", "sand", "wood"], 0),
    ("Which is a planet?", ["Mars", "Paris", "Nile"], 0),
    ("Which number is even?", ["7", "9", "4"], 2),
    ("Which is hot?", ["snow", "fire", "ice"], 1),
    ("Which do you drink?", ["bread", "stone", "water"], 2),
    ("Which is a month?", ["June", "Monday", "Spring"], 0),
]
# Stakes framings: the same arithmetic as a dose, money or safety question.
SUM_FRAMES = {
    "low": "What is {a} + {b}?",
    "medium": "I paid {a} dollars and then {b} dollars. How many dollars in total?",
    "high": "A patient took {a} mg and then {b} mg of a drug. How many mg in total?",
}
CONVERSIONS = [
    ("How many grams are in {x} kilograms?", 1000), ("How many minutes are in {x} hours?", 60),
    ("How many centimetres are in {x} metres?", 100), ("How many seconds are in {x} minutes?", 60),
    ("How many milligrams are in {x} grams?", 1000), ("How many millilitres are in {x} litres?", 1000),
]
CONVERSION_HIGH = "The label says {x} grams per dose. How many milligrams is one dose?"


def items(rng: random.Random) -> list[dict]:
    out: list[dict] = []

    def add(kind: str, text: str, check: dict, severity: str, reasoning: bool | None = None) -> None:
        row = {"id": f"{kind}-{sum(1 for r in out if r['id'].startswith(kind + '-')) + 1:02d}", "text": text,
               "check": check, "severity": severity}
        if reasoning is not None:
            row["needs_reasoning"] = reasoning
        out.append(row)

    for i in range(20):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        sev = SEVERITIES[i % 3]
        add("sum1", SUM_FRAMES[sev].format(a=a, b=b) + " Reply with just the number.", {"number": a + b}, sev, False)
    for i, (country, names) in enumerate(CAPITALS):
        # A regex, not any_of: the model says "The capital of France is Paris.", whose phrase is the whole sentence.
        pattern = r"\b(?:" + "|".join(n.lower() for n in names) + r")\b"
        add("capital", f"What is the capital of {country}? Reply with one word.", {"regex": pattern},
            SEVERITIES[0] if i % 4 else "medium", False)
    for i in range(20):
        a, b = rng.sample(range(10, 100), 2)
        sev = SEVERITIES[i % 3]
        text = {"low": f"Which is larger, {a} or {b}?",
                "medium": f"Which price is higher, {a} dollars or {b} dollars?",
                "high": f"Which dose is larger, {a} mg or {b} mg?"}[sev]
        add("larger", text + " Reply with just the number.", {"number": max(a, b)}, sev, i % 4 == 0)
    for i in range(20):
        question, options, right = CHOICES[i % len(CHOICES)]
        if i >= len(CHOICES):
            order = rng.sample(range(3), 3)
            options, right = [options[j] for j in order], order.index(right)
        letters = "ABC"
        text = question + " " + " ".join(f"({letters[j]}) {o}" for j, o in enumerate(options)) + " Answer with the letter."
        add("choice", text, {"choice": letters[right]}, "low" if i % 5 else "medium", False)
    for i in range(20):
        a, b = rng.randint(11, 59), rng.randint(11, 39)
        sev = SEVERITIES[i % 3]
        add("sum2", SUM_FRAMES[sev].format(a=a, b=b) + " Reply with just the number.", {"number": a + b}, sev,
            i % 2 == 0)
    for i in range(20):
        x = rng.randint(2, 9)
        if i % 3 == 2:
            add("convert", CONVERSION_HIGH.format(x=x) + " Reply with just the number.", {"number": x * 1000}, "high", True)
        else:
            text, factor = CONVERSIONS[i % len(CONVERSIONS)]
            add("convert", text.format(x=x) + " Reply with just the number.", {"number": x * factor},
                "low" if i % 3 == 0 else "medium", i % 2 == 0)
    return out


def main() -> None:
    rows = items(random.Random(20261129))
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} items to {OUT}")


if __name__ == "__main__":
    main()
