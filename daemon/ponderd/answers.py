"""Final-answer extraction and normalisation: pure functions, so votes compare like with like.

Rules, first match wins:
1. the last \\boxed{...};
2. the last "Answer: ..." / "Final answer = ..." / "the answer (to …) is ..." phrase
   (its first number if it has one);
3. the last number in the text, if it has one;
4. the first sentence.
The result is normalised: lowercase, no markdown, no trailing punctuation,
numbers without thousands separators or trailing zeros.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
# "Answer: X", "Final answer = X", "the answer to this is X", "Respuesta: X"…
_MARKER = re.compile(
    r"\b(?:final\s+answer|answer|respuesta|réponse|antwort|risposta|resposta)\b[^:=\n]{0,40}?(?:\bis\b|:|=)\s*(.+)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+]?\d+(?:\.\d+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s|\n")
_MARKDOWN = re.compile(r"[*_`#>]+")
MAX_LEN = 120


def extract_answer(text: str) -> str:
    """The final answer in a sample's text, normalised for voting ("" if there is none)."""
    text = text.strip()
    if not text:
        return ""
    boxed = _BOXED.findall(text)
    if boxed:
        return normalise(boxed[-1])
    markers = [m.group(1) for line in text.splitlines() if (m := _MARKER.search(line))]
    if markers:
        marked = _first_sentence(markers[-1])
        number = _NUMBER.search(marked)
        # "Answer: 391 apples" votes as 391; "Answer: Paris" as paris.
        return normalise_number(number.group(0)) if number else normalise(marked)
    numbers = _NUMBER.findall(text)
    if numbers:
        return normalise_number(numbers[-1])
    return normalise(_first_sentence(text))


def normalise(answer: str) -> str:
    answer = _MARKDOWN.sub("", answer).strip()
    number = _NUMBER.fullmatch(answer.rstrip(".!?;:,"))
    if number:
        return normalise_number(number.group(0))
    answer = re.sub(r"\s+", " ", answer.lower()).strip(" .!?;:,\"'")
    return answer[:MAX_LEN]


def normalise_number(text: str) -> str:
    text = text.replace(",", "").lstrip("+")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text


def _first_sentence(text: str) -> str:
    return _SENTENCE.split(text.strip(), maxsplit=1)[0]
