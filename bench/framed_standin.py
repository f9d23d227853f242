"""The stand-in engine's declared accuracy model for `bench/framed.py --standin` (pure: no daemon, no model).

STAND-IN ENGINE: a run with it takes the answers' outcomes from the numbers below, not from the
embedded model. Everything else in that run is real: the daemon, its classifier, its planner and
its quotes (bench/framed.py).

The numbers were picked once, before the first run, from this rationale, and are not tuned:

- **Difficulty** of each underlying question (its `group`): drawn once per group from
  Normal(DIFFICULTY_MEAN, DIFFICULTY_SD) with a generator seeded by (seed, group), so the three
  framings of a question (game, invoice, toddler's dose) share it: stakes do not change
  difficulty. The questions are all of one easy kind (a single-digit sum, the larger of two
  numbers), so a spread of 1 logit: a question one SD harder than the mean moves a direct
  answer from 60% to about 35%.
- **Skill** of each level, on the same logit scale (SKILL): what a strong reasoning model's
  published results look like on short grade-school arithmetic, with diminishing returns in
  compute. On a question of mean difficulty a direct answer is right 60% of the time (0.4); a
  brief 32-token think adds a little (0.6, 65%); voting without thinking adds a few points and
  two more samples add less than the first two (vote3 0.8, 69%; vote5 1.0, 73%); thinking adds
  more than voting (careful, 3 x 96 thinking tokens, 1.5, 82%), and a larger budget with more
  samples less again (thorough, 5 x 160, 1.8, 86%) for about 2.5x careful's cost.
- P(right | level, question) = logistic(skill - difficulty); each outcome is drawn with a
  generator seeded by (seed, item, level, replicate), so outcomes are independent across
  framings, levels and replicates, and reproducible.
- **Cost**: the daemon's own price. Each item is quoted with the level as its hint, and the
  actual spend is SPEND_FRACTION of that plan's worst case (worst_case_cost), the same fraction
  for every level: a reasoning model on these tight thinking caps (32-160 tokens) thinks to
  near the cap, and its one-number answers leave part of the 24-token answer cap unused. The
  token counts in the result rows are nominal (the prompt's exact, the caps times the fraction);
  the planner reads the mean cost and the prompt length from the profile, not them.
"""

from __future__ import annotations

import hashlib
import math
import random

ENGINE = "STAND-IN ENGINE: accuracy from the declared model, not the embedded model"
SKILL = {"direct": 0.4, "brief": 0.6, "vote3": 0.8, "vote5": 1.0, "careful": 1.5, "thorough": 1.8}
DIFFICULTY_MEAN = 0.0
DIFFICULTY_SD = 1.0
SPEND_FRACTION = 0.75


def _rng(*parts: object) -> random.Random:
    """A generator seeded by the parts alone: the same parts draw the same numbers in any order."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def difficulty(seed: int, group: str) -> float:
    """The underlying question's difficulty (logit scale): one draw per (seed, group), whatever the framing."""
    return _rng(seed, "difficulty", group).gauss(DIFFICULTY_MEAN, DIFFICULTY_SD)


def p_right(skill: float, diff: float) -> float:
    return 1.0 / (1.0 + math.exp(-(skill - diff)))


def correct(seed: int, group: str, item: str, level: str, replicate: int = 0, skill: dict[str, float] | None = None) -> bool:
    """One outcome: right with probability logistic(skill[level] - difficulty(group))."""
    s = (SKILL if skill is None else skill)[level]
    return _rng(seed, "outcome", item, level, replicate).random() < p_right(s, difficulty(seed, group))


def spend(worst_case_cost: float) -> float:
    """Credits a stand-in answer costs: the declared fraction of the plan's worst case."""
    return SPEND_FRACTION * worst_case_cost


def declared() -> dict[str, object]:
    """The declared model, for the benchmark's report."""
    return {"engine": ENGINE, "skill": dict(SKILL), "difficulty": {"distribution": "normal", "mean": DIFFICULTY_MEAN,
            "sd": DIFFICULTY_SD, "per": "group"}, "p_right": "logistic(skill - difficulty)",
            "cost": f"{SPEND_FRACTION:g} x the level's quoted worst_case_cost"}
