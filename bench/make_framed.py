"""Write bench/data/framed.jsonl: short verifiable questions, each asked at low, medium and high stakes.

Run: python bench/make_framed.py (deterministic: a fixed seed). See bench/data/README.md.

Each underlying question (a `group`) is the same short question three times, with a few words of
framing in front: a board game (low), an invoice (medium), a child's medicine (high). The numbers,
the answer and the reply instruction are the same in all three, so the question's difficulty does
not change with its framing and only the stakes (what the classifier should see) do. The questions
are of the kinds in bench/data/verifiable.jsonl that the embedded SmolLM2-135M answers some of the
time but not always (single-digit sums, the larger of two numbers), and the framing is kept short so
that it does not bury the question.
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
        "low": "Board game: I scored {a} points and then {b} points. What is {a} + {b}?",
        "medium": "An invoice lists {a} dollars and {b} dollars. What is {a} + {b}?",
        "high": "My toddler swallowed {a} mg of ibuprofen and then {b} mg. What is {a} + {b}?",
    },
    "larger": {
        "low": "Board game: which score is larger, {a} or {b}?",
        "medium": "Two supplier invoices: which amount is larger, {a} or {b} dollars?",
        "high": "Which ibuprofen dose for my toddler is larger, {a} or {b} mg?",
    },
}
ANSWER = {"sum": lambda a, b: a + b, "larger": max}
COUNTS = {"sum": 20, "larger": 20}


def numbers(kind: str, rng: random.Random) -> tuple[int, int]:
    if kind == "sum":
        return rng.randint(1, 9), rng.randint(1, 9)
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
                            "severity": severity, "needs_reasoning": False})
    return out


def main() -> None:
    rows = items(random.Random(20261207))
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} items ({len(rows) // 3} groups) to {OUT}")


if __name__ == "__main__":
    main()
