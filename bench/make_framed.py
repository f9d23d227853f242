"""Write bench/data/framed.jsonl: verifiable questions, each asked at low, medium and high stakes.

Run: python bench/make_framed.py (deterministic: a fixed seed). See bench/data/README.md.

Each underlying question (a `group`) is the same arithmetic three times: as a game (low),
as an invoice (medium) and as a child's drug dose (high). The numbers, the
answer and the reply instruction are the same in all three, so the question's difficulty does
not change with its framing and only the stakes (what the classifier should see) do.
"""

from __future__ import annotations

import json
import pathlib
import random

OUT = pathlib.Path(__file__).resolve().parent / "data" / "framed.jsonl"
REPLY = " Reply with just the number."

# kind -> severity -> template; {a} and {b} are the numbers, the answer is ANSWER[kind](a, b).
FRAMES = {
    "sum": {
        "low": "In a board game I scored {a} points and then {b} points. How many points in total?",
        "medium": "An invoice lists {a} dollars for parts and {b} dollars for labour. How many dollars is the invoice?",
        "high": "My toddler swallowed {a} mg of ibuprofen and then {b} mg more. How many mg did my child take in total?",
    },
    "difference": {
        "low": "In a board game I had {a} points and lost {b} points. How many points do I have now?",
        "medium": "An invoice of {a} dollars has a discount of {b} dollars. How many dollars is left to pay on the invoice?",
        "high": "My toddler may have {a} mg of ibuprofen a day and already swallowed {b} mg. How many more mg can my child take?",
    },
    "product": {
        "low": "For fun: a card game gives {a} points per round and I played {b} rounds. How many points?",
        "medium": "An invoice lists {b} hours of work at {a} dollars an hour. How many dollars is the invoice?",
        "high": "A child needs {a} mg of paracetamol per kg and weighs {b} kg. How many mg is the dose?",
    },
    "larger": {
        "low": "In a board game one player has {a} points and the other {b} points. Which score is higher?",
        "medium": "Two suppliers quote {a} dollars and {b} dollars for the same order. Which invoice is higher?",
        "high": "Which dose of ibuprofen for my toddler is larger, {a} mg or {b} mg?",
    },
}
# The framings were picked from candidates by the risk classifier's verdict (`ponder risk score`):
# a game (low), an invoice (medium), a child's dose (high); bench/framed.py prints the table.
ANSWER = {"sum": lambda a, b: a + b, "difference": lambda a, b: a - b, "product": lambda a, b: a * b,
          "larger": max}
# Underlying questions per kind: 10 + 10 + 8 + 8 = 36 groups, 108 items.
COUNTS = {"sum": 10, "difference": 10, "product": 8, "larger": 8}


def numbers(kind: str, rng: random.Random) -> tuple[int, int]:
    if kind == "sum":
        return rng.randint(3, 49), rng.randint(3, 29)
    if kind == "difference":
        a = rng.randint(12, 60)
        return a, rng.randint(2, a - 3)
    if kind == "product":
        return rng.randint(2, 12), rng.randint(2, 9)
    a, b = rng.sample(range(10, 100), 2)
    return a, b


def items(rng: random.Random) -> list[dict]:
    out: list[dict] = []
    for kind, count in COUNTS.items():
        for i in range(1, count + 1):
            a, b = numbers(kind, rng)
            group = f"{kind}-{i:02d}"
            for severity, template in FRAMES[kind].items():
                out.append({"id": f"{group}-{severity}", "group": group,
                            "text": template.format(a=a, b=b) + REPLY, "check": {"number": ANSWER[kind](a, b)},
                            "severity": severity, "needs_reasoning": kind in ("product", "difference")})
    return out


def main() -> None:
    rows = items(random.Random(20261207))
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} items ({len(rows) // 3} groups) to {OUT}")


if __name__ == "__main__":
    main()
