"""Stakes cues: a small, readable detector for what makes a wrong answer costly whatever the field.

The risk classifier reads n-grams; where a field's vocabulary is new to it, it
falls back to medium or low. These patterns do not judge severity; they only
say the query carries something a wrong answer would act on: a dose, a
physical quantity with a unit, a legal date or deadline, or money. The policy
uses them only when the classifier itself is unsure (see assessment.adjust).
Patterns are deliberately few and multilingual only where a currency or unit
is written the same way; docs/risk.md lists them.
"""

from __future__ import annotations

import re

_NUM = r"\d+(?:[.,]\d+)?"
CUES: dict[str, re.Pattern[str]] = {
    # A dose: a number with a dosing unit, or a per-weight/per-time rate.
    "dose": re.compile(
        rf"(?i)(?:{_NUM}\s?(?:mg|mcg|µg|ug|ng|iu|units?|mmol|meq|ml|gtt|drops?|tabs?|tablets?|puffs?)\b"
        r"|\b(?:mg|mcg|units?|ml)\s?/\s?(?:kg|h|hr|min|day|d)\b|\b(?:dose|dosage|dosing|posolog\w*|dosis|Dosis)\b)"
    ),
    # A physical quantity a specification or safety limit is written in.
    "quantity": re.compile(
        rf"(?i){_NUM}\s?(?:kg|lbs?|bar|psi|kpa|mpa|nm|ft[- ]?lbs?|v|kv|a|amps?|w|kw|kwh|mm²|mm2|awg|ppm|°\s?[cf]"
        r"|db\(?a?\)?|gal|gph|l/h|m3/h|m/s|kt|knots|ft|mm|cm|m|km|nm|g|l|%)(?![a-z])"
    ),
    # A legal or administrative date: deadlines, limitation and notice periods, filing windows.
    "deadline": re.compile(
        r"(?i)\b(?:deadline|due (?:date|by|on)|limitation|statute of|notice period|appeal|file by|filing|expir\w*"
        r"|within \d+ (?:days|weeks|months)|\d+ (?:days|weeks|months) (?:to|before|after|notice)|frist|plazo|délai)\b"
    ),
    # Money: a currency sign or code next to a number, or an amount with k.
    "money": re.compile(
        rf"(?i)(?:[$€£¥₹]\s?{_NUM}|{_NUM}\s?(?:[$€£¥₹]|usd|eur|gbp|chf|inr|k\b)"
        r"|\b(?:salary|payroll|invoice|vat|tax|mortgage|loan|apr|pension|wage|refund|deposit)\b)"
    ),
}


def stakes_cues(text: str) -> tuple[str, ...]:
    """The cue names found in the text, in a fixed order (empty when none)."""
    return tuple(name for name, pattern in CUES.items() if pattern.search(text))
