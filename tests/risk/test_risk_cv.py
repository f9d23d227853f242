"""Grouped cross-validation, the taxonomy it holds out, and the gate on it. No training here but a stub."""

import collections

import pytest

from conftest import REPO
from ponderd.risk import corpus, cv, taxonomy
from ponderd.risk.corpus import Example
from ponderd.risk.cues import stakes_cues
from ponderd.risk.retrain import CV_TOLERANCE, cv_gate


def test_the_taxonomy_lists_forty_high_stakes_domains_with_their_look_alikes():
    tax = taxonomy.load()
    high = tax.high_stakes()
    assert len(high) >= 40
    for g in high:
        assert g.name and g.high and "medium" in g.lookalikes and "low" in g.lookalikes, g.id


def test_every_corpus_line_has_a_known_domain_and_every_training_file_a_writer():
    tax = taxonomy.load()
    for path in corpus.training_files() + corpus.heldout_files():
        for e in corpus.read_jsonl(path):
            tax.group_of(e.domain)  # KeyError names the unknown tag
    unnamed = [p.name for p in corpus.training_files() if p.name not in tax.writers]
    assert unnamed == []


def test_every_high_stakes_domain_has_high_and_look_alike_training_queries():
    tax = taxonomy.load()
    by_group = collections.defaultdict(collections.Counter)
    for e in corpus.load(corpus.training_files()):
        by_group[tax.group_of(e.domain)][e.severity] += 1
    thin = {g.id: dict(by_group[g.id]) for g in tax.high_stakes() if min(by_group[g.id][s] for s in corpus.SEVERITIES) < 1}
    assert thin == {}
    assert all(sum(by_group[g.id].values()) >= 12 for g in tax.high_stakes())


@pytest.mark.parametrize("folds", [0, 2, 3])
def test_folds_hold_whole_groups_and_balance_sizes(folds):
    groups = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"]
    fold_of = cv.assign_folds(groups, folds)
    assert set(fold_of) == set(groups)
    if folds == 0:
        assert sorted(fold_of.values()) == list(range(5))
    else:
        sizes = collections.Counter()
        for g in groups:
            sizes[fold_of[g]] += 1
        assert len(sizes) == folds and max(sizes.values()) - min(sizes.values()) <= 3


def test_cross_validation_never_trains_on_a_group_it_scores(monkeypatch):
    seen = []

    class Stub:
        thresholds = type("T", (), {"high": 0.5, "reasoning": 0.5})()

        def probabilities(self, text):
            import numpy as np

            return np.array([0.2, 0.2, 0.6]), 0.7

        def verdict(self, text):
            return (*self.probabilities(text), "high", True)

    def fake_train(examples, heldout, target, hyper, feedback=(), version=None, embedder=None):
        seen.append({e.domain for e in examples} | {"fb" for _ in feedback})
        return type("R", (), {"model": Stub()})()

    monkeypatch.setattr(cv, "train", fake_train)
    tags = ["aviation", "vehicle", "gas", "fire", "tax", "payroll"]
    examples = [Example(f"q{i} {t}", "high" if i % 2 else "low", bool(i % 3), f"x.jsonl:{i}", t) for i, t in enumerate(tags * 4)]
    fb = [Example("feedback", "high", True)]
    report = cv.cross_validate(examples, "domain", 0.95, None, folds=3, feedback=fb)
    assert report.folds == 3 and report.summary["examples"] == len(examples)  # feedback trained on, never scored
    for trained, (fold_groups) in zip(seen, _fold_groups(examples, 3)):
        assert not trained & fold_groups and "fb" in trained


def _fold_groups(examples, folds):
    groups = cv.groups_of(examples, "domain")
    fold_of = cv.assign_folds(groups, folds)
    tag_of = {taxonomy.load().unit_of(e.domain, e.text): e.domain for e in examples}
    return [{tag_of[g] for g, f in fold_of.items() if f == k} for k in range(folds)]


def test_writer_groups_come_from_the_taxonomy():
    ex = [Example("a", "low", False, "plain.jsonl:1", "chat"), Example("b", "low", False, "new.jsonl:3", "chat")]
    assert cv.groups_of(ex, "writer") == ["second writer (plain chat-box voice)", "new.jsonl"]
    with pytest.raises(ValueError, match="domain, tag, writer"):
        cv.groups_of(ex, "language")


def cvsum(f1, recall):
    return {"severity_macro_f1": f1, "high_recall": recall}


@pytest.mark.parametrize(
    "candidate, ok, words",
    [
        ({"domain": cvsum(0.87, 0.96), "writer": cvsum(0.86, 0.95)}, True, "within tolerance"),
        ({"domain": cvsum(0.87 - CV_TOLERANCE + 0.001, 0.96), "writer": cvsum(0.86, 0.95)}, True, "within tolerance"),
        ({"domain": cvsum(0.85, 0.96), "writer": cvsum(0.86, 0.95)}, False, "domain severity_macro_f1 0.8700 -> 0.8500"),
        ({"domain": cvsum(0.87, 0.96), "writer": cvsum(0.86, 0.93)}, False, "writer high_recall 0.9500 -> 0.9300"),
    ],
)
def test_the_grouped_cv_gate(candidate, ok, words):
    accepted, reason = cv_gate(candidate, {"domain": cvsum(0.87, 0.96), "writer": cvsum(0.86, 0.95)})
    assert accepted is ok and words in reason


@pytest.mark.parametrize(
    "text, cues",
    [
        ("noradrenaline 4 mg in 50 mL, target 0.1 mcg/kg/min, 85 kg", ("dose", "quantity")),
        ("torque spec 108 Nm for the lug nuts", ("quantity",)),
        ("claim form served 3 March, deadline for the acknowledgement?", ("deadline",)),
        ("salary sacrifice 5% on 38k", ("quantity", "money")),
        ("write a poem about autumn leaves", ()),
        ("what is 17 * 23", ()),
    ],
)
def test_stakes_cues(text, cues):
    assert stakes_cues(text) == cues


def test_domain_units_hold_high_stakes_groups_whole_and_spread_everyday_traffic():
    tax = taxonomy.load()
    assert tax.unit_of("vet", "a") == tax.unit_of("pets", "b") == "vet"
    spread = {tax.unit_of("puzzle", f"riddle {i}") for i in range(200)}
    assert len(spread) == taxonomy.EVERYDAY_SLICES and all(u.startswith("everyday#") for u in spread)
    assert tax.unit_of("puzzle", "riddle", spread=False) == "leisure/puzzle"


def test_the_retrainer_runs_the_grouped_gate_after_the_held_out_one(monkeypatch, tmp_path):
    from ponderd.risk import retrain

    summary = {"severity_macro_f1": 0.86, "high_recall": 0.96, "reasoning_f1": 0.9}

    class Model:
        version = "cand"
        manifest: dict = {}

    class Report:
        model = Model()
        heldout = {"summary": summary}

    class Holder:
        state_dir = tmp_path

        def current(self):
            m = Model()
            m.manifest = {"data_hash": "old", "cv": {k: {"folds": 5, "summary": {"severity_macro_f1": 0.84, "high_recall": 0.97}} for k in cv.KINDS}}
            return m

    calls = []

    def fake_cv(examples, kind, target, hyper, folds, feedback=(), embedder=None):
        calls.append((kind, folds, len(feedback)))
        return cv.CVReport(kind, folds, 9, {"summary": {"severity_macro_f1": 0.845, "high_recall": 0.95}})

    monkeypatch.setattr(retrain, "train", lambda *a, **k: Report())
    monkeypatch.setattr(retrain, "evaluate", lambda model, ex: {"summary": summary})
    monkeypatch.setattr(retrain, "cross_validate", fake_cv)
    r = retrain.Retrainer(Holder(), None, None, 0.95)
    result = r._train_and_gate([Example("fb", "high", True)], set())
    assert calls == [("domain", 5, 1), ("writer", 5, 1)]  # the incumbent's recorded figures are reused
    assert not result.accepted and "domain high_recall 0.9700 -> 0.9500" in result.reason
    assert result.candidate_metrics["cv_writer_high_recall"] == 0.95


def test_the_datasheet_tables_in_docs_are_the_corpus_and_taxonomy_as_they_are():
    # docs/risk.md's count and taxonomy tables are printed by tools/check_corpus.py --markdown.
    import subprocess
    import sys

    root = REPO
    printed = subprocess.run([sys.executable, str(root / "tools/check_corpus.py"), "--markdown"],
                             capture_output=True, text=True, check=True).stdout
    doc = (root / "docs/risk.md").read_text(encoding="utf-8")
    tables = printed.rstrip("\n").split("\n\n")
    assert len(tables) == 3
    for table in tables:
        assert table in doc, f"docs/risk.md is stale: paste `python tools/check_corpus.py --markdown`:\n{table[:300]}"
