"""Retraining from feedback, gated on the fixed held-out split.

A candidate trained on the corpus plus labeled feedback replaces the model in
service only if it loses on none of: severity macro-F1, high-severity recall,
needs_reasoning F1, all measured on held-out data neither model trained on.
Every run, accepted or not, is logged with both models' metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import feedback
from ..ledger import iso
from . import ClassifierHolder, artifact, corpus
from .corpus import Example
from .train import Hyper, evaluate, train

log = logging.getLogger("ponder.risk")

GATED = ("severity_macro_f1", "high_recall", "reasoning_f1")


@dataclass
class RetrainResult:
    accepted: bool
    reason: str
    candidate_version: str = ""
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    incumbent_metrics: dict[str, float] = field(default_factory=dict)
    feedback_used: int = 0
    # The labeled data the candidate saw; a later run with the same data is skipped.
    data_hash: str = ""

    def summary(self) -> str:
        verdict = "accepted" if self.accepted else "rejected"
        return f"retrain {verdict}: {self.reason}"


def gate(candidate: dict[str, float], incumbent: dict[str, float]) -> tuple[bool, str]:
    """Accept only if the candidate is at least as good on every gated held-out metric."""
    losses = [f"{m} {candidate[m]:.4f} < {incumbent[m]:.4f}" for m in GATED if candidate[m] < incumbent[m]]
    if losses:
        return False, "loses on the held-out split: " + ", ".join(losses)
    gains = ", ".join(f"{m} {incumbent[m]:.4f} -> {candidate[m]:.4f}" for m in GATED)
    return True, f"no held-out regression ({gains})"


def hyper_from(manifest: dict[str, Any]) -> Hyper:
    h = dict(manifest.get("hyper", {}))
    h.setdefault("digit_shape", False)  # artifacts from before the option read raw text
    for key in ("word_ngrams", "char_ngrams"):
        if key in h:
            h[key] = tuple(h[key])
    return Hyper(**h)


class Retrainer:
    def __init__(self, holder: ClassifierHolder, store: Any, clock: Any, recall_target: float) -> None:
        self.holder = holder
        self.store = store
        self.clock = clock
        self.recall_target = recall_target
        self._lock = asyncio.Lock()

    async def run(self) -> RetrainResult:
        """Train a candidate on corpus + feedback, gate it, swap it in if it passes, log the run."""
        async with self._lock:
            examples = await self.store.call(feedback.labeled_examples)
            tried = await self.store.call(
                lambda db: {r["data_hash"] for r in db.query("SELECT data_hash FROM retrains WHERE candidate_version != ''")}
            )
            result = await asyncio.to_thread(self._train_and_gate, examples, tried)
            await self.store.call(self._log, result)
            log.info("%s", result.summary())
            return result

    def _train_and_gate(self, fb: Sequence[Example], tried: set[str]) -> RetrainResult:
        incumbent = self.holder.current()
        manifest = getattr(incumbent, "manifest", {})
        examples = corpus.load(corpus.training_files())
        heldout = corpus.load(corpus.heldout_files())
        if not fb:
            return RetrainResult(False, "no labeled feedback yet: nothing new to learn from")
        digest = corpus.data_hash(list(examples) + list(fb))
        if digest == manifest.get("data_hash") or digest in tried:
            return RetrainResult(False, "no new feedback since the last retrain", feedback_used=len(fb))
        incumbent_metrics = evaluate(incumbent, heldout)["summary"]
        report = train(examples, heldout, self.recall_target, hyper_from(manifest), feedback=fb)
        candidate = report.model
        ok, reason = gate(report.heldout["summary"], incumbent_metrics)
        result = RetrainResult(
            ok, reason, candidate.version, report.heldout["summary"], incumbent_metrics, len(fb), digest
        )
        if ok:
            self.holder.install(artifact.save(candidate, self.holder.state_dir / candidate.version))
        return result

    def _log(self, db: Any, result: RetrainResult) -> None:
        db["retrains"].insert(
            {
                "at": iso(self.clock.now()),
                "candidate_version": result.candidate_version,
                "accepted": int(result.accepted),
                "reason": result.reason,
                "candidate_metrics": json.dumps(result.candidate_metrics),
                "incumbent_metrics": json.dumps(result.incumbent_metrics),
                "feedback_used": result.feedback_used,
                "data_hash": result.data_hash,
            }
        )
