"""Answer checkers, the accuracy profile, and `ponder calibrate` against the real daemon in a subprocess."""

from __future__ import annotations

import json
import math
import os
import re
import stat
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import REPO, DaemonThread, make_settings
from ponderd.checks import CheckError, parse_check
from ponderd.engine.model_file import model_identity
from ponderd.planning.calibrate import CalibrateError, build_profile, item_seed, load_dataset
from ponderd.planning.calibrate_report import frontier
from ponderd.planning.profile import Estimate, Profile, ProfileError, wilson

PONDER = str(Path(sys.executable).parent / "ponder")


@pytest.mark.parametrize(
    "spec, answer, right",
    [
        ({"number": 42}, "42", True),
        ({"number": 42}, "Answer: 42 apples", True),
        ({"number": 42}, "\\boxed{42.0}", True),
        ({"number": 42}, "$42", True),
        ({"number": 42}, "41", False),
        ({"number": 42}, "forty-two", False),
        ({"number": 42}, "", False),
        ({"number": 0.75}, "3/4", True),
        ({"number": "3/4"}, "0.75", True),
        ({"number": 1000}, "1,000", True),
        ({"number": -2.5}, "−2.50", True),
        ({"number": 1e12}, "1000000000000.0001", True),  # within 1e-9 relative
        ({"number": 1e3}, "1000.1", False),
        ({"regex": r"\bparis\b"}, "It is PARIS.", True),
        ({"regex": r"^\d+$"}, "12 apples", False),
        ({"choice": "B"}, "The answer is (B).", True),
        ({"choice": "b"}, "B", True),
        ({"choice": "B"}, "b", True),  # a voted "auto" answer is lower-cased
        ({"choice": "B"}, "(C)", False),
        ({"choice": "B"}, "bread", False),
        ({"any_of": ["Paris", "paris, france"]}, "Paris.", True),
        ({"any_of": ["Paris", "paris, france"]}, "The answer is Paris, France.", True),
        ({"any_of": ["Paris"]}, "Lyon", False),
    ],
)
def test_checkers_read_answers_as_the_vote_does(spec, answer, right):
    assert parse_check(spec).verify(answer) is right


@pytest.mark.parametrize(
    "spec, says",
    [
        ({"numbr": 42}, "did you mean 'number'"),
        ({}, "exactly one key"),
        ({"number": 1, "regex": "x"}, "exactly one key"),
        ([1], "JSON object"),
        ({"number": True}, "number must be a number"),
        ({"number": "lots"}, "is not a number"),
        ({"regex": "("}, "does not compile"),
        ({"regex": ""}, "non-empty string"),
        ({"choice": "Z"}, "one letter from A to J"),
        ({"choice": 2}, "one letter from A to J"),
        ({"any_of": []}, "non-empty list"),
        ({"any_of": ["Paris", 3]}, "non-empty list"),
    ],
)
def test_bad_checkers_say_what_to_change(spec, says):
    with pytest.raises(CheckError, match=says):
        parse_check(spec)


def test_checker_json_round_trips():
    for spec in ({"number": 42}, {"number": 2.5}, {"regex": "a+"}, {"choice": "C"}, {"any_of": ["paris"]}):
        assert parse_check(parse_check(spec).to_json()) == parse_check(spec)
    assert parse_check({"number": "3/4"}).expected == Fraction(3, 4)


def test_wilson_interval():
    lo, hi = wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)


def _profile_json(**level_overrides) -> dict:
    level = {"model": "default", "n": 60, "correct": 33, "accuracy": 0.55, "ci95": list(wilson(33, 60)),
             "mean_cost": 0.0024, "mean_prompt_tokens": 40.1, "mean_thinking_tokens": 0.0, "mean_answer_tokens": 12.3,
             "mean_samples": 1.0, "p50_latency_s": 0.21, "p90_latency_s": 0.4,
             "slices": {"high/reasoning": {"n": 10, "correct": 4}, "low/direct": {"n": 12, "correct": 9}}}
    level.update(level_overrides)
    return {"format": "ponder-accuracy-profile/1", "created_at": "2026-11-29T17:00:00Z", "policy_version": "default-1",
            "dataset": {"path": "d.jsonl", "sha256": "ab" * 32, "items": 60}, "levels": {"direct": level}}


def test_profile_round_trips_through_a_private_file(tmp_path):
    profile = Profile.from_json(_profile_json())
    path = tmp_path / "p" / "profile.json"
    profile.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Profile.load(path) == profile
    assert json.loads(path.read_text()) == Profile.load(path).to_json()
    assert [p.name for p in path.parent.iterdir()] == ["profile.json"]  # no temporary file left


def test_estimates_shrink_a_slice_toward_its_level():
    profile = Profile.from_json(_profile_json())
    # (4 + 10 * 0.55) / (10 + 10)
    assert profile.estimate("direct", "high", True) == Estimate(pytest.approx(0.475), 60, 10)
    assert profile.estimate("direct", "low", False).accuracy == pytest.approx((9 + 5.5) / 22)
    # No outcomes in the slice: the level's accuracy.
    assert profile.estimate("direct", "medium", False) == Estimate(pytest.approx(0.55), 60, 0)
    assert profile.estimate("careful", "low", False) is None


@pytest.mark.parametrize(
    "mutate, says",
    [
        (lambda p: p.update(format="other/2"), "format: must be 'ponder-accuracy-profile/1'"),
        (lambda p: p.pop("dataset"), "dataset: missing"),
        (lambda p: p.update(levles={}), "levles: unknown field"),
        (lambda p: p.update(levels={}), "levels: must be an object with at least one level"),
        (lambda p: p["levels"]["direct"].update(correct=61), "levels.direct.correct: is 61, more than n"),
        (lambda p: p["levels"]["direct"].update(accuracy=0.9), "levels.direct.accuracy: is 0.9, but correct/n"),
        (lambda p: p["levels"]["direct"].update(mean_cost=-1), "levels.direct.mean_cost: must be a number >= 0"),
        (lambda p: p["levels"]["direct"].update(ci95=[0.5]), "levels.direct.ci95: must be \\[low, high\\]"),
        (lambda p: p["levels"]["direct"].pop("p90_latency_s"), "levels.direct.p90_latency_s: missing"),
        (lambda p: p["levels"]["direct"].update(accuracyy=1),
         "levels.direct.accuracyy: unknown field \\(did you mean 'accuracy'\\?\\)"),
        (lambda p: p["levels"]["direct"]["slices"].update({"high/reasonin": {"n": 1, "correct": 0}}),
         "levels.direct.slices.high/reasonin: unknown slice \\(did you mean 'high/reasoning'"),
        (lambda p: p["levels"]["direct"]["slices"].update({"low/direct": {"n": 1, "correct": 2}}),
         "levels.direct.slices.low/direct.correct: is 2, more than n"),
        (lambda p: p["levels"]["direct"].update(n=0, correct=0, accuracy=0), "levels.direct.n: must be at least 1"),
    ],
)
def test_bad_profiles_name_the_file_and_the_field(tmp_path, mutate, says):
    raw = _profile_json()
    mutate(raw)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ProfileError, match=f"^{path}: {says}") as info:
        Profile.load(path)
    assert "\n" not in str(info.value)


def test_unreadable_profiles(tmp_path):
    with pytest.raises(ProfileError, match="no such profile; write one with `ponder calibrate"):
        Profile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ProfileError, match="bad.json: not valid JSON"):
        Profile.load(tmp_path / "bad.json")


def _row(id_, level, correct, cost, severity="low", nr=False, samples=1):
    return {"id": id_, "level": level, "model": "", "correct": correct, "cost": cost,
            "tokens": {"prompt": 10, "thinking": 4 * samples, "answer": 6 * samples, "forced": 0},
            "samples": samples, "latency_s": 0.1 * (1 + int(id_[1:])), "answer": "", "severity": severity,
            "needs_reasoning": nr, "request_id": "r"}


def test_profile_from_results_counts_slices_and_finds_the_frontier():
    rows = [_row(f"q{i}", "cheap", i < 2, 0.001, "high" if i % 2 else "low", i % 2 == 1) for i in range(4)]
    rows += [_row(f"q{i}", "dear", i < 3, 0.004, samples=2) for i in range(4)]
    rows += [_row(f"q{i}", "waste", i < 1, 0.009) for i in range(4)]
    p = build_profile(rows, ["cheap", "dear", "waste"], "v1", {"path": "d", "sha256": "x", "items": 4})
    assert list(p.levels) == ["cheap", "dear", "waste"]
    cheap = p.levels["cheap"]
    assert (cheap.n, cheap.correct, cheap.accuracy, cheap.model) == (4, 2, 0.5, "default")
    assert cheap.slices == {"low/direct": (2, 1), "high/reasoning": (2, 1)}
    assert p.levels["dear"].per_sample() == (4.0, 6.0)
    assert p.levels["dear"].p50_latency_s == pytest.approx(0.25) and p.levels["dear"].p90_latency_s == pytest.approx(0.4)
    assert frontier(p) == ["cheap", "dear"]
    assert Profile.from_json(p.to_json()) == Profile.from_json(json.loads(json.dumps(p.to_json())))


def test_dataset_lines_are_checked_before_anything_runs(tmp_path):
    good = '{"id": "q1", "text": "What is 2 + 2?", "check": {"number": 4}}\n'
    cases = {
        "not json\n": ":1: not valid JSON",
        '{"id": "q1", "text": "x", "check": {"numbr": 4}}\n': ":1: check: unknown check 'numbr' (did you mean 'number'?)",
        '{"id": "q1", "text": "x"}\n': ":1: missing field 'check'",
        '{"id": "q1", "txt": "x", "check": {"number": 4}}\n': ":1: unknown field 'txt' (did you mean 'text'?)",
        good + '{"id": "q1", "text": "y", "check": {"number": 4}}\n': ":2: id 'q1' is already used on line 1",
        good + '{"id": "q2", "text": "y", "check": {"number": 4}, "severity": "hi"}\n': ":2: severity must be low, medium or high",
        good + '{"id": "q2", "text": "y", "check": {"number": 4}, "group": [1]}\n': ":2: group must be a string or a number",
        "\n": ": no items",
    }
    for text, says in cases.items():
        path = tmp_path / "d.jsonl"
        path.write_text(text)
        with pytest.raises(CalibrateError, match="^" + re.escape(f"{path}{says}")):
            load_dataset(path)
    path.write_text(good)
    items, sha = load_dataset(path)
    assert items[0].check.verify("4") and len(sha) == 64


def test_the_shipped_dataset_loads():
    items, _ = load_dataset(REPO / "bench" / "data" / "verifiable.jsonl")
    assert len(items) >= 100
    assert {i.severity for i in items} == {"low", "medium", "high"}
    assert any(i.needs_reasoning for i in items) and any(i.needs_reasoning is False for i in items)


def test_the_framed_dataset_asks_each_question_at_three_stakes_with_one_answer():
    items, _ = load_dataset(REPO / "bench" / "data" / "framed.jsonl")
    rows = [json.loads(line) for line in (REPO / "bench" / "data" / "framed.jsonl").read_text().splitlines()]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    assert len(items) == len(rows) and len(groups) >= 30
    for group, framed in groups.items():
        assert sorted(r["severity"] for r in framed) == ["high", "low", "medium"], group
        assert len({json.dumps(r["check"]) for r in framed}) == 1, group
        assert [r["id"] for r in framed] == [f"{group}-{r['severity']}" for r in framed]


def test_item_seeds_are_fixed_nonzero_and_differ_by_item():
    assert item_seed(0, "q1") == item_seed(0, "q1") != 0
    assert item_seed(0, "q1") != item_seed(0, "q2") and item_seed(0, "q1") != item_seed(1, "q1")


# --- the real command, against the real daemon ---------------------------------------------------

TINY_POLICY = """
version = "tiny-1"
[prices]
prompt = 1.0
thinking = 2.0
answer = 2.0
[levels.quick]
thinking_tokens = 0
samples = 1
answer_tokens = 8
[levels.vote]
thinking_tokens = 0
samples = 2
answer_tokens = 12
[routing]
low = { direct = "quick", reasoning = "vote", floor = "quick" }
medium = { direct = "quick", reasoning = "vote", floor = "quick" }
high = { direct = "vote", reasoning = "vote", floor = "quick" }
[tenants.local]
hints = ["severity_floor", "max_cost", "level", "answer_format"]
"""

DATA = [
    {"id": "add", "text": "What is 2 + 3? Reply with just the number.", "check": {"number": 5}, "severity": "high"},
    {"id": "capital", "text": "What is the capital of France? Reply with one word.", "check": {"any_of": ["Paris"]}},
    {"id": "pick", "text": "Which is a fruit? (A) car (B) apple (C) chair Answer with the letter.",
     "check": {"choice": "B"}, "needs_reasoning": True},
]


@pytest.fixture
def tiny_daemon(tmp_path):
    policy = tmp_path / "tiny.toml"
    policy.write_text(TINY_POLICY)
    d = DaemonThread(make_settings(tmp_path / "state", policy=policy)).start()
    d.policy_path = policy
    yield d
    d.stop()


def _cli(d, env, *args):
    return subprocess.run([PONDER, *args, "--address", d.address, "--token", d.token("local")],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.model
def test_calibrate_writes_profile_results_table_and_plot_then_resumes_without_asking(tiny_daemon, tmp_path, cli_env):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in DATA))
    out = tmp_path / "out" / "profile.json"
    run = _cli(tiny_daemon, cli_env, "calibrate", str(data), "--out", str(out), "--policy", str(tiny_daemon.policy_path),
               "--slices", "--concurrency", "2")
    assert run.returncode == 0, run.stderr
    # The table: one row per level, then its slices.
    table = run.stdout
    assert "quick" in table and "vote" in table and "high/" in table, table
    profile = Profile.load(out)
    assert list(profile.levels) == ["quick", "vote"] and profile.policy_version == "tiny-1"
    assert profile.dataset["items"] == 3
    # The profile names the model file it was measured on (the daemon's config on this host: the embedded model).
    served = model_identity(None)
    assert (profile.model_file, profile.model_sha256) == (served.file, served.sha256)
    results = out.with_suffix(".results.jsonl")
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted((r["id"], r["level"]) for r in rows) == sorted((i["id"], lvl) for i in DATA for lvl in ("quick", "vote"))
    for r in rows:
        assert r["cost"] > 0 and r["request_id"] and r["tokens"]["prompt"] > 0 and r["samples"] >= 1
        assert isinstance(r["correct"], bool) and r["policy_version"] == "tiny-1"
    by = {(r["id"], r["level"]): r for r in rows}
    # The dataset's labels win; the daemon's assessment fills in the rest.
    assert by["add", "quick"]["severity"] == "high" and by["pick", "vote"]["needs_reasoning"] is True
    assert by["capital", "quick"]["severity"] in ("low", "medium", "high")
    for level in ("quick", "vote"):
        lvl = profile.levels[level]
        assert lvl.n == 3 and lvl.correct == sum(by[i["id"], level]["correct"] for i in DATA)
        assert lvl.mean_cost == pytest.approx(sum(by[i["id"], level]["cost"] for i in DATA) / 3)
        assert sum(n for n, _ in lvl.slices.values()) == 3
    assert profile.levels["vote"].mean_samples > profile.levels["quick"].mean_samples
    print(table)
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    with tiny_daemon.admin() as admin:
        before = sum(line.requests for line in admin.spend().lines)
    again = _cli(tiny_daemon, cli_env, "calibrate", str(data), "--out", str(out), "--levels", "quick,vote", "--json")
    assert again.returncode == 0, again.stderr
    assert "nothing left to run" in again.stderr
    assert json.loads(again.stdout)["new_requests"] == 0
    with tiny_daemon.admin() as admin:
        assert sum(line.requests for line in admin.spend().lines) == before
    assert [json.loads(line) for line in results.read_text().splitlines()] == rows


@pytest.mark.model
def test_calibrate_refuses_a_bad_line_before_asking_and_a_changed_dataset(tiny_daemon, tmp_path, cli_env):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(DATA[0]) + "\n" + '{"id": "x", "text": "hi", "check": {"regx": "a"}}\n')
    out = tmp_path / "profile.json"
    run = _cli(tiny_daemon, cli_env, "calibrate", str(data), "--out", str(out), "--levels", "quick")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"ponder: {data}:2: check: unknown check 'regx' (did you mean 'regex'?)"
    ]
    with tiny_daemon.admin() as admin:
        assert sum(line.requests for line in admin.spend().lines) == 0
    assert not out.with_suffix(".results.jsonl").exists()

    data.write_text(json.dumps(DATA[0]) + "\n")
    assert _cli(tiny_daemon, cli_env, "calibrate", str(data), "--out", str(out), "--levels", "quick", "--quiet").returncode == 0
    data.write_text(json.dumps(DATA[1]) + "\n")
    changed = _cli(tiny_daemon, cli_env, "calibrate", str(data), "--out", str(out), "--levels", "quick")
    assert changed.returncode == 1 and "another version of the dataset; pass --restart" in changed.stderr
    unknown = _cli(tiny_daemon, cli_env, "calibrate", str(data), "--out", str(out), "--levels", "quick,careful", "--restart")
    assert unknown.returncode == 1 and "no level 'careful'" in unknown.stderr
    assert math.isfinite(Profile.load(out).levels["quick"].mean_cost)
    assert os.path.exists(out.with_suffix(".results.jsonl"))


def _crowded_profile() -> Profile:
    """Seven levels, some a hair apart in cost and accuracy: where labels overprinted each other."""
    from ponderd.planning.profile import LevelProfile, wilson

    def lvl(correct: int, cost: float, samples: float) -> LevelProfile:
        return LevelProfile("m", 40, correct, correct / 40, wilson(correct, 40), cost, 40, 100, 20, samples, 1.0, 2.0)

    levels = {"direct": lvl(18, 0.00021, 1), "quick": lvl(20, 0.00023, 1), "think": lvl(25, 0.00090, 1),
              "vote": lvl(27, 0.00095, 3), "deliberate": lvl(31, 0.0031, 5), "careful": lvl(30, 0.0033, 5),
              "exhaustive": lvl(33, 0.0090, 8)}
    return Profile(levels, "p-1", "2026-12-07T00:00:00Z", {"items": 40})


def test_the_plot_keeps_labels_apart_and_draws_the_frontier_as_a_line(tmp_path):
    import matplotlib.pyplot as plt

    from ponderd.planning import calibrate_report

    profile = _crowded_profile()
    fig = calibrate_report.figure(profile)
    try:
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        labels = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
        assert set(labels) == set(profile.levels)
        boxes = list(labels.items())
        for i, (a, box_a) in enumerate(boxes):
            for b, box_b in boxes[i + 1:]:
                assert not box_a.overlaps(box_b), f"the labels {a!r} and {b!r} overprint each other"
            for name, lvl in profile.levels.items():
                x, y = ax.transData.transform((lvl.mean_cost, lvl.accuracy))
                assert not box_a.contains(x, y), f"the label {a!r} covers the point of {name!r}"
        frontier = calibrate_report.frontier(profile)
        assert frontier == ["direct", "quick", "think", "vote", "deliberate", "exhaustive"]
        [line] = [line for line in ax.get_lines() if line.get_label().startswith("frontier")]
        assert list(line.get_xdata()) == [profile.levels[n].mean_cost for n in frontier]
        assert line.get_linestyle() == "-" and len(line.get_xdata()) > 1
        # 40x from the cheapest level to the dearest: a log axis keeps the cheap ones apart.
        assert ax.get_xscale() == "log"
    finally:
        plt.close(fig)
    path = tmp_path / "profile.png"
    calibrate_report.plot(profile, path)
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    assert width >= 800 and height >= 500, (width, height)
