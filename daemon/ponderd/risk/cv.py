"""Grouped cross-validation: how the training recipe does on domains and writers it has not seen.

The fixed held-out split was written by the same writers, on the same topics,
as the training files, so it cannot show what happens on a field the corpus
has no vocabulary for. Here whole groups are held out instead:

- `domain`: the high-stakes taxonomy groups (data/taxonomy.toml), e.g. all
  aviation queries, high and look-alike, at once; everyday traffic (chat,
  homework, puzzles) is spread over the folds (taxonomy.unit_of);
- `tag`: the harsher variant that also holds out each everyday tag whole
  (no puzzles at all in training when puzzles are scored);
- `writer`: all files of one writer (the taxonomy's [writers] table).

Each fold runs the whole recipe (features, calibration, thresholds) on the
other groups and scores the held-out ones; verdicts are pooled over folds and
reported like the held-out split. With `folds=0` every group is its own fold
(leave-one-group-out); with k > 0 groups are dealt into k folds of similar
size (largest group first into the smallest fold), which bounds the time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ponderd.risk import taxonomy
from ponderd.risk.corpus import Example
from ponderd.risk.train import Hyper, Scored, domain_groups, predict, summarise, train

KINDS = ("domain", "writer")  # what the gate and `ponder risk train --cv` run
ALL_KINDS = ("domain", "tag", "writer")
# What the retrain gate and `ponder risk train` run: 5 folds of each kind keep
# a gate run to ten trainings (a few minutes on two cores).
GATE_FOLDS = 5


@dataclass
class CVReport:
    kind: str
    folds: int
    groups: int
    report: dict[str, Any]
    # Pooled figures per held-out group (only groups with examples).
    per_group: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def summary(self) -> dict[str, float]:
        return self.report["summary"]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "folds": self.folds, "groups": self.groups, "summary": self.summary,
                "per_group": self.per_group, "seconds": round(self.seconds, 1)}


def groups_of(examples: Sequence[Example], kind: str) -> list[str]:
    if kind in ("domain", "tag"):
        return domain_groups(examples, spread=kind == "domain")
    if kind == "writer":
        tax = taxonomy.load()
        return [tax.writer_of(e.file) if e.source else taxonomy.FEEDBACK_GROUP for e in examples]
    raise ValueError(f"cross-validation kind must be one of {', '.join(ALL_KINDS)}, not {kind!r}")


def assign_folds(groups: Sequence[str], folds: int) -> dict[str, int]:
    """Group -> fold: one fold per group when folds is 0 (or too many), else balanced by size."""
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    order = sorted(sizes, key=lambda g: (-sizes[g], g))
    if folds <= 0 or folds >= len(order):
        return {g: i for i, g in enumerate(order)}
    load = [0] * folds
    out = {}
    for g in order:
        f = min(range(folds), key=lambda i: (load[i], i))
        out[g] = f
        load[f] += sizes[g]
    return out


def cross_validate(
    examples: Sequence[Example],
    kind: str,
    recall_target: float,
    hyper: Hyper | None = None,
    folds: int = GATE_FOLDS,
    feedback: Sequence[Example] = (),
    embedder: Any = None,
) -> CVReport:
    """Pooled verdicts over folds that each hold out whole groups of `kind`.

    Feedback, when given, is in every fold's training data and never scored,
    so the figures stay comparable with a model trained on the corpus alone.
    """
    started = time.monotonic()
    groups = groups_of(examples, kind)
    fold_of = assign_folds(groups, folds)
    n_folds = max(fold_of.values()) + 1
    scored: list[Scored] = []
    scored_groups: list[str] = []
    for f in range(n_folds):
        test = [i for i, g in enumerate(groups) if fold_of[g] == f]
        held = set(test)
        train_set = [e for i, e in enumerate(examples) if i not in held]
        model = train(train_set, [], recall_target, hyper, feedback=feedback, version=f"cv-{kind}-{f}",
                      embedder=embedder).model
        scored += predict(model, [examples[i] for i in test])
        scored_groups += [groups[i] for i in test]
    return pooled(kind, n_folds, len(fold_of), scored, scored_groups, time.monotonic() - started)


def pooled(kind: str, folds: int, groups: int, scored: Sequence[Scored], scored_groups: Sequence[str],
           seconds: float) -> CVReport:
    """The report over every fold's verdicts, and per held-out group."""
    per_group = {}
    for g in sorted(set(scored_groups)):
        s = summarise([x for x, gg in zip(scored, scored_groups) if gg == g])
        per_group[g] = {
            "examples": s["summary"]["examples"],
            "severity_macro_f1": s["summary"]["severity_macro_f1"],
            "high_support": s["severity"]["high"]["support"],
            "high_recall": s["summary"]["high_recall"],
        }
    return CVReport(kind, folds, groups, summarise(scored), per_group, seconds)
