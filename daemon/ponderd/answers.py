"""Final-answer extraction and normalisation: pure functions, so votes compare like with like.

An answer format says what kind of answer to look for; "" means the sample
said nothing of that kind, and such a sample does not vote.

- "auto" (the default), first match wins: the last \\boxed{...}; the last
  "Answer: ..." / "Final answer = ..." / "the answer (to …) is ..." phrase (its
  first number if it has one); the last number in the text; the first sentence.
- "number": the number in the box, else in the last answer phrase, else the
  last in the text; nothing if there is none.
- "choice": a multiple-choice letter A-J ("(B)", "Answer: C", "option d)").
- "phrase": the box, else the answer phrase, else the first sentence, as a
  short normalised phrase (no leading article).
- "free": free text is not voted; every sample answers "".

Numbers are normalised so that equal values vote together: thousands
separators, currency and units, a Unicode minus, a leading plus, trailing
zeros, fractions (\\frac{3}{4}, 3/4, 1 1/2) and decimals of the same value.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Callable

ANSWER_FORMATS = ("auto", "number", "choice", "phrase", "free")

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
# "Answer: X", "Final answer = X", "the answer to this is X", "Respuesta: X"…
_MARKER = re.compile(
    r"\b(?:final\s+answer|answer|respuesta|réponse|antwort|risposta|resposta)\b[^:=\n]{0,40}?(?:\bis\b|:|=)\s*(.+)",
    re.IGNORECASE,
)
# A LaTeX fraction, a mixed number, a plain fraction (not part of a date such as
# 3/4/2024), then a number with optional thousands separators and exponent.
_NUMBER = re.compile(
    r"(?:(?<![\w)])(?P<sign>[-+−]))?(?:"
    r"\\d?frac\{(?P<fn>\d+)\}\{(?P<fd>\d+)\}"
    r"|(?P<whole>\d+)\s(?P<mn>\d+)/(?P<md>\d+)(?![\d/])"
    r"|(?<![\d/.])(?P<n>\d+)/(?P<d>\d+)(?![\d/])"
    r"|(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|(?<![\d.])\.\d+)(?:[eE](?P<exp>[-+]?\d{1,2})(?!\d))?"
    r")"
)
_SENTENCE = re.compile(r"(?<=[.!?])\s|\n")
_MARKDOWN = re.compile(r"[*_`#>]+")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)
# A choice letter: upper case, or any case inside brackets; never the start of a word.
_CHOICE = r"(?:\(([A-Ja-j])\)|\[([A-Ja-j])\]|\b([A-J])(?![\w'’]))"
_CHOICE_AT_START = re.compile(r"^\W{0,3}?(?:" + _CHOICE + r"|([a-j])\W*$)")
_CHOICE_MARKER = re.compile(
    r"\b(?:final\s+answer|answer|option|choice)\b[^:=\n]{0,30}?(?:\bis\b|:|=)\s*(.+)", re.IGNORECASE
)
_CHOICE_NAMED = re.compile(r"\b(?:option|choice|letter)\s+" + r"\(?([A-Ja-j])\b\)?", re.IGNORECASE)
_CHOICE_BRACKETED = re.compile(r"\(([A-J])\)|(?<![\w(])([A-J])\)")
_CHOICE_LINE = re.compile(r"^\s*([A-J])[).:](?:\s|$)|^\s*\(?([A-J])\)?[.!]?\s*$", re.MULTILINE)
MAX_LEN = 120
# Past this, a "number" answer is a digit string the vote compares as it is.
_MAX_DIGITS = 40


def extractor(answer_format: str) -> Callable[[str], str]:
    """The extraction function for a format (one of ANSWER_FORMATS)."""
    return _EXTRACTORS[answer_format]


def extract_answer(text: str) -> str:
    """The "auto" format: the final answer in a sample's text, normalised for voting ("" if there is none)."""
    text = text.strip()
    if not text:
        return ""
    boxed = _BOXED.findall(text)
    if boxed:
        return normalise(boxed[-1])
    marked = _last_marked(text)
    if marked is not None:
        # "Answer: 391 apples" votes as 391; "Answer: Paris" as paris.
        return _first_number(marked) or normalise(marked)
    return _last_number(text) or normalise(_first_sentence(text))


def extract_number(text: str) -> str:
    boxed = _BOXED.findall(text)
    if boxed:
        return _first_number(boxed[-1])
    marked = _last_marked(text)
    # An answer phrase without a number ("Answer: I cannot tell") falls back to the text.
    return (_first_number(marked) if marked is not None else "") or _last_number(text)


def extract_choice(text: str) -> str:
    boxed = _BOXED.findall(text)
    if boxed:
        return _choice_at_start(_MARKDOWN.sub("", boxed[-1]).strip())
    plain = _MARKDOWN.sub("", text)
    # The last answer phrase that names a letter: a later "this answer is wrong" does not hide it.
    for m in reversed([m for line in plain.splitlines() if (m := _CHOICE_MARKER.search(line))]):
        letter = _choice_at_start(m.group(1).strip())
        if letter:
            return letter
    # No answer phrase names a letter: the last "option C", "(C)", "C)", or line that starts with one.
    found = [
        (m.start(), next(g for g in m.groups() if g))
        for pattern in (_CHOICE_NAMED, _CHOICE_BRACKETED, _CHOICE_LINE)
        for m in pattern.finditer(plain)
    ]
    return max(found)[1].upper() if found else ""


def extract_phrase(text: str) -> str:
    text = text.strip()
    boxed = _BOXED.findall(text)
    if boxed:
        return _phrase(boxed[-1])
    marked = _last_marked(text)
    return _phrase(marked if marked is not None else _first_sentence(text))


def extract_free(text: str) -> str:
    return ""


_EXTRACTORS: dict[str, Callable[[str], str]] = {
    "auto": extract_answer,
    "number": extract_number,
    "choice": extract_choice,
    "phrase": extract_phrase,
    "free": extract_free,
}


def normalise(answer: str) -> str:
    answer = _MARKDOWN.sub("", answer).strip()
    whole = answer.rstrip(".!?;:,").strip()
    m = _NUMBER.fullmatch(whole)
    if m:
        return _number(m) or whole
    answer = re.sub(r"\s+", " ", answer.lower()).strip(" .!?;:,\"'")
    return answer[:MAX_LEN]


def normalise_number(text: str) -> str:
    """A number as the vote compares it: "1,000" -> "1000", "3/4" -> "0.75", "−2.50" -> "-2.5"."""
    m = _NUMBER.fullmatch(text.strip())
    return _number(m) if m else ""


def _number(m: re.Match[str]) -> str:
    g = m.groupdict()
    try:
        if g["fn"] is not None:
            value = Fraction(int(g["fn"]), int(g["fd"]))
        elif g["whole"] is not None:
            value = int(g["whole"]) + Fraction(int(g["mn"]), int(g["md"]))
        elif g["n"] is not None:
            value = Fraction(int(g["n"]), int(g["d"]))
        else:
            digits = g["num"].replace(",", "")
            if len(digits) > _MAX_DIGITS:
                # Too long to be a value anyone means; exact arithmetic on it would only cost time.
                return ("-" if g["sign"] in ("-", "−") else "") + digits
            value = Fraction(digits) * Fraction(10) ** int(g["exp"] or 0)
    except (ZeroDivisionError, ValueError, OverflowError):
        return ""
    if g["sign"] in ("-", "−"):
        value = -value
    return _show(value)


def _show(value: Fraction) -> str:
    """An exact value as text: an integer, a terminating decimal, else a reduced fraction."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return f"{value.numerator}/{value.denominator}"
    # Terminating: the shortest decimal that is exactly this value.
    places = 0
    while (value * 10**places).denominator != 1:
        places += 1
    text = f"{abs(value.numerator) * 10**places // value.denominator:0{places + 1}d}"
    sign = "-" if value < 0 else ""
    return f"{sign}{text[:-places]}.{text[-places:]}"


def _first_number(text: str) -> str:
    for m in _NUMBER.finditer(text):
        value = _number(m)
        if value:
            return value
    return ""


def _last_number(text: str) -> str:
    found = [v for m in _NUMBER.finditer(text) if (v := _number(m))]
    return found[-1] if found else ""


def _last_marked(text: str) -> str | None:
    """The first sentence of the last answer phrase, or None when there is none."""
    markers = [m.group(1) for line in text.splitlines() if (m := _MARKER.search(line))]
    return _first_sentence(markers[-1]) if markers else None


def _choice_at_start(text: str) -> str:
    m = _CHOICE_AT_START.search(text)
    return next(g for g in m.groups() if g).upper() if m else ""


def _phrase(text: str) -> str:
    answer = normalise(text)
    if answer and not _NUMBER.fullmatch(answer):
        # "2.50 m" and "2.5 m" are the same phrase; a value too odd to read stays as written.
        answer = _NUMBER.sub(lambda m: _number(m) or m.group(0), _ARTICLE.sub("", answer))
    return answer


def _first_sentence(text: str) -> str:
    return _SENTENCE.split(text.strip(), maxsplit=1)[0]
