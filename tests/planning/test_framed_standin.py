"""The stand-in engine's declared accuracy model (bench/framed_standin.py, for `bench/framed.py --standin`): pure, no model."""

from __future__ import annotations

import json
import statistics
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import framed_standin as standin  # noqa: E402

DATA = REPO / "bench" / "data" / "framed.jsonl"


def framings() -> dict[str, list[str]]:
    """group -> its item ids, from the benchmark's own data."""
    out: dict[str, list[str]] = {}
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.setdefault(row["group"], []).append(row["id"])
    return out


def test_the_three_framings_of_a_question_share_its_difficulty_and_questions_differ():
    groups = framings()
    assert len(groups) == 40 and all(len(ids) == 3 for ids in groups.values())
    for group, ids in sorted(groups.items())[:6]:
        assert len({id_.rsplit("-", 1)[-1] for id_ in ids}) == 3  # low, medium, high
        # Each framing is right as often as its question's one difficulty says (400 draws: sd under 0.025).
        p = standin.p_right(standin.SKILL["direct"], standin.difficulty(0, group))
        for id_ in ids:
            rate = statistics.fmean(standin.correct(0, group, id_, "direct", r) for r in range(400))
            assert abs(rate - p) < 0.09, (group, id_, rate, p)
    assert len({round(standin.difficulty(0, g), 12) for g in groups}) == len(groups)
    # Same group, same probability of a right answer at a level, whichever framing is asked.
    sev_rates = {}
    for sev in ("low", "medium", "high"):
        items = [(g, next(i for i in ids if i.endswith(sev))) for g, ids in groups.items()]
        sev_rates[sev] = statistics.fmean(standin.correct(0, g, i, "vote5", r) for g, i in items for r in range(200))
    assert max(sev_rates.values()) - min(sev_rates.values()) < 0.05, sev_rates


def test_the_seed_makes_the_draws_reproducible_and_another_seed_changes_them():
    groups = sorted(framings())
    draw = lambda seed: [(standin.difficulty(seed, g), standin.correct(seed, g, f"{g}-high", "careful", r))
                         for g in groups for r in range(5)]
    assert draw(0) == draw(0)
    assert draw(0) != draw(1)
    # Order does not matter: a draw depends on its (seed, group, item, level, replicate) only.
    assert [standin.correct(3, g, f"{g}-low", "direct", 2) for g in reversed(groups)] == \
        [standin.correct(3, g, f"{g}-low", "direct", 2) for g in groups][::-1]


def test_higher_skill_gives_higher_mean_accuracy_and_the_declared_levels_rise_with_compute():
    skills = list(standin.SKILL.values())
    assert skills == sorted(skills) and len(set(skills)) == len(skills)
    assert list(standin.SKILL) == ["direct", "brief", "vote3", "vote5", "careful", "thorough"]
    groups = sorted(framings())
    rates = {}
    for level in standin.SKILL:
        rates[level] = statistics.fmean(standin.correct(0, g, f"{g}-{s}", level, r)
                                        for g in groups for s in ("low", "medium", "high") for r in range(40))
    # 4800 draws per level: the standard error is under 0.007; neighbouring levels differ by 0.04 or more in expectation.
    assert list(rates.values()) == sorted(rates.values()), rates
    expected = {lvl: statistics.fmean(standin.p_right(k, standin.difficulty(0, g)) for g in groups)
                for lvl, k in standin.SKILL.items()}
    assert all(abs(rates[lvl] - expected[lvl]) < 0.03 for lvl in rates), (rates, expected)
    # A custom skill table is honoured the same way.
    low = statistics.fmean(standin.correct(0, g, g, "x", r, skill={"x": -2.0}) for g in groups for r in range(50))
    high = statistics.fmean(standin.correct(0, g, g, "x", r, skill={"x": 3.0}) for g in groups for r in range(50))
    assert low < 0.3 < 0.8 < high


def test_the_cost_is_the_declared_fraction_of_the_quoted_worst_case():
    assert standin.spend(0.4) == standin.SPEND_FRACTION * 0.4
    assert 0 < standin.SPEND_FRACTION <= 1
    assert standin.declared()["engine"] == standin.ENGINE and "not the embedded model" in standin.ENGINE
