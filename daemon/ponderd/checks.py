"""Verifiable answer checkers: does an answer match what a question's author knows is right?

A checker is a JSON object with exactly one key:

- `{"number": 42}`: the answer's number (answers.extract_number) equals 42, to a
  relative 1e-9; "42.0", "$42", "Answer: 42 apples" and "84/2" all pass.
- `{"regex": "\\\\bparis\\\\b"}`: re.search, case-insensitive (no full match needed).
- `{"choice": "B"}`: the answer's multiple-choice letter (answers.extract_choice) is B.
- `{"any_of": ["Paris", "paris, france"]}`: the answer, as a short normalised phrase
  (answers.extract_phrase), equals one of these phrases normalised the same way.

Pure functions over answers.py's extraction, so a checker and the daemon's vote
read an answer the same way. `ponder calibrate` uses it on the client side; the
request path may use it to verify an answer when a client sends a checker.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ponderd.answers import extract_choice, extract_number, extract_phrase, normalise_number

KINDS = ("number", "regex", "choice", "any_of")
# The answer format whose extraction a kind reads: what a client would ask the daemon to vote on.
ANSWER_FORMAT = {"number": "number", "regex": "auto", "choice": "choice", "any_of": "phrase"}
_CHOICE = re.compile(r"[A-J]")
_REL_TOL = 1e-9
_LONE_LETTER = re.compile(r"^\W{0,3}([a-jA-J])\W{0,3}$")


class CheckError(ValueError):
    """A checker spec that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Check:
    kind: str
    # number: a Fraction; regex: the pattern text; choice: an upper-case letter; any_of: normalised phrases.
    expected: Any

    @property
    def answer_format(self) -> str:
        """The daemon answer format that extracts what this checker compares."""
        return ANSWER_FORMAT[self.kind]

    def verify(self, answer: str) -> bool:
        """True when the answer (a voted answer or a sample's text) is right."""
        answer = answer or ""
        if self.kind == "number":
            got = _value(extract_number(answer))
            return got is not None and _close(got, self.expected)
        if self.kind == "regex":
            return re.search(self.expected, answer, re.IGNORECASE) is not None
        if self.kind == "choice":
            letter = extract_choice(answer)
            if not letter:
                # A voted answer under the "auto" format is lower-cased ("b"); extract_choice
                # reads lone lower-case letters only in brackets, so take a lone letter as it is.
                m = _LONE_LETTER.match(answer.strip())
                letter = m.group(1).upper() if m else ""
            return letter == self.expected
        return extract_phrase(answer) in self.expected

    def to_json(self) -> dict[str, Any]:
        if self.kind == "number":
            n = self.expected
            value: Any = n.numerator if n.denominator == 1 else float(n)
            return {"number": value}
        if self.kind == "any_of":
            return {"any_of": list(self.expected)}
        return {self.kind: self.expected}


def parse_check(spec: object) -> Check:
    """Validate a checker spec (see the module docstring); CheckError says what to change."""
    if not isinstance(spec, dict):
        raise CheckError(f"a check must be a JSON object with one of the keys {', '.join(KINDS)}, not {_show(spec)}")
    if len(spec) != 1:
        keys = ", ".join(map(repr, spec)) or "none"
        raise CheckError(f"a check has exactly one key ({', '.join(KINDS)}); this one has {keys}")
    ((kind, value),) = spec.items()
    if kind not in KINDS:
        near = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else f" (use one of {', '.join(KINDS)})"
        raise CheckError(f"unknown check {kind!r}{hint}")
    if kind == "number":
        return Check("number", _number(value))
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise CheckError(f"regex must be a non-empty string, not {_show(value)}")
        try:
            re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise CheckError(f"regex {value!r} does not compile ({exc})") from None
        return Check("regex", value)
    if kind == "choice":
        if not isinstance(value, str) or not _CHOICE.fullmatch(value.strip().upper()):
            raise CheckError(f"choice must be one letter from A to J, not {_show(value)}")
        return Check("choice", value.strip().upper())
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise CheckError(f"any_of must be a non-empty list of non-empty strings, not {_show(value)}")
    return Check("any_of", tuple(dict.fromkeys(extract_phrase(v) for v in value)))


def _number(value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CheckError(f"number must be a number (or a string such as \"3/4\"), not {_show(value)}")
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        raise CheckError(f"number must be finite, not {value!r}")
    parsed = _value(normalise_number(value) if isinstance(value, str) else str(Fraction(value)))
    if parsed is None:
        raise CheckError(f"number {value!r} is not a number; write it as 42, 2.5 or \"3/4\"")
    return parsed


def _value(text: str) -> Fraction | None:
    if not text:
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def _close(a: Fraction, b: Fraction) -> bool:
    return a == b or abs(a - b) <= _REL_TOL * max(abs(a), abs(b))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
