"""The critique-and-revise prompt (request/refine.py runs the rounds).

It lives beside the engine because the engine measures, once at load, how
many tokens the frame adds (EngineLimits.refine_overhead), which the planner
needs to bound a refinement prompt.
"""

from __future__ import annotations

from typing import Callable

# Boundary merges when the pieces are tokenised together may add a token or two.
SLACK = 4


def frame(question: str, answer: str) -> str:
    """The critique-and-revise prompt around a question and a proposed answer."""
    return (
        f"{question}\n\nA proposed answer:\n{answer}\n\n"
        "Check the proposed answer step by step for mistakes. If it is wrong, correct it. "
        "End with the final answer."
    )


def overhead(count: Callable[[str], int]) -> int:
    """Tokens the framing adds to a prompt, given a function counting a prepared prompt's tokens."""
    return max(0, count(frame("", "")) - count("")) + SLACK
