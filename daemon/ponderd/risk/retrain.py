"""Retraining from feedback, gated on the fixed held-out split and on grouped cross-validation.

A candidate trained on the corpus plus labeled feedback replaces the model in
service only if

1. it loses on none of severity macro-F1, high-severity recall and
   needs_reasoning F1 on the fixed held-out split (neither model trained on
   it), and
2. its recipe, cross-validated with whole domain groups held out and with
   whole writers held out (5 folds each, feedback in every fold's training
   data, scored on the corpus only), is no more than CV_TOLERANCE below the
   incumbent's recorded figures (manifest "cv", written by `ponder risk train
   --cv` or an earlier accepted retrain) on severity macro-F1 and high recall.

The held-out split is the same writers and topics as training; the grouped
figures are what the model does on a field or a voice it has not seen, which
feedback can quietly trade away. Every run, accepted or not, is logged with
both models' metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from ponderd.ledger.types import iso
from ponderd.risk import ClassifierHolder, artifact, corpus, embed, feedback
from ponderd.risk.corpus import Example
from ponderd.risk.cv import GATE_FOLDS, KINDS, cross_validate
from ponderd.risk.train import Hyper, evaluate, train

log = logging.getLogger("ponder.risk")

GATED = ("severity_macro_f1", "high_recall", "reasoning_f1")
CV_GATED = ("severity_macro_f1", "high_recall")
# Pooled over ~6,000 queries, re-dealt folds and a few hundred feedback lines
# move these by a few tenths of a point; one point is a real loss.
CV_TOLERANCE = 0.01


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


def cv_gate(candidate: dict[str, dict[str, float]], incumbent: dict[str, dict[str, float]]) -> tuple[bool, str]:
    """Accept only if no grouped-CV figure falls more than CV_TOLERANCE below the incumbent's."""
    losses: list[str] = []
    kept: list[str] = []
    for kind in sorted(incumbent):
        for m in CV_GATED:
            c, i = candidate[kind][m], incumbent[kind][m]
            (losses if c < i - CV_TOLERANCE else kept).append(f"{kind} {m} {i:.4f} -> {c:.4f}")
    if losses:
        return False, f"loses more than {CV_TOLERANCE} in grouped cross-validation: " + ", ".join(losses)
    return True, "grouped cross-validation within tolerance (" + ", ".join(kept) + ")"


def gate_against(report: Any, incumbent: Any, heldout: Any) -> tuple[bool, str]:
    """The retrain gate for a model trained by hand (`ponder risk train`): held-out, then grouped CV where both have it."""
    ok, reason = gate(report.heldout["summary"], evaluate(incumbent, heldout)["summary"])
    recorded = getattr(incumbent, "manifest", {}).get("cv", {})
    mine = report.model.manifest.get("cv", {})
    shared = [k for k in KINDS if k in recorded and k in mine and recorded[k].get("folds") == mine[k].get("folds")]
    if ok and shared:
        cv_ok, cv_reason = cv_gate({k: mine[k]["summary"] for k in shared}, {k: recorded[k]["summary"] for k in shared})
        return cv_ok, f"{reason}; {cv_reason}"
    return ok, reason


def hyper_from(manifest: dict[str, Any]) -> Hyper:
    h = dict(manifest.get("hyper", {}))
    h.setdefault("digit_shape", False)  # artifacts from before the option read raw text
    h.setdefault("stakes_cues", False)
    h.setdefault("grouped_calibration", False)
    for key in ("word_ngrams", "char_ngrams"):
        if key in h:
            h[key] = tuple(h[key])
    return Hyper(**h)


def served_recipe(incumbent: Any, manifest: dict[str, Any]) -> tuple[Hyper, str]:
    """The recipe to retrain: the one the incumbent is served as, and a note when that is not its manifest's.

    A cascade served without its second view (`risk.second_view = false`, or
    its embedding model did not load) scores with the n-gram stage alone, so
    the candidate is an n-gram model, gated against that stage and measured
    without an embedder: retraining never needs the view it is not serving.
    """
    hyper = hyper_from(manifest)
    if hyper.embedding and getattr(incumbent, "embedder", None) is None:
        note = ("the second view is not served (risk.second_view = false): retraining the n-gram stage alone; "
                "turn risk.second_view on to retrain the whole cascade")
        return replace(hyper, embedding=0.0, cascade=0.0), note
    return hyper, ""


class Retrainer:
    def __init__(
        self, holder: ClassifierHolder, store: Any, clock: Any, recall_target: float, cv_folds: int = GATE_FOLDS
    ) -> None:
        self.holder = holder
        self.cv_folds = cv_folds
        self.store = store
        self.clock = clock
        self.recall_target = recall_target
        self._lock = asyncio.Lock()

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` retraining runs, newest first."""
        return await self.store.call(recent_retrains, limit)

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
        incumbent_metrics = evaluate(incumbent, heldout)["summary"]  # type: ignore[arg-type]  # the holder holds RiskModels
        hyper, recipe_note = served_recipe(incumbent, manifest)
        if recipe_note:
            log.info("%s", recipe_note)
        # A model with the embedding view retrains through the same embedder,
        # its vectors kept in the state dir so the corpus is embedded once, not
        # once per training (eleven a gated run).
        embedder = getattr(incumbent, "embedder", None)
        if embedder is not None:
            embedder = embed.CachedEmbedder(embed.offline(embedder), self.holder.state_dir / "embeddings.npz")
        report = train(examples, heldout, self.recall_target, hyper, feedback=fb, embedder=embedder)
        candidate = report.model
        ok, reason = gate(report.heldout["summary"], incumbent_metrics)
        candidate_metrics = dict(report.heldout["summary"])
        if ok and self.cv_folds:
            # Only a candidate that holds the held-out split pays for cross-validation.
            # Recorded figures are for the manifest's recipe; another recipe is measured afresh.
            recorded = {} if recipe_note else manifest.get("cv", {})
            incumbent_cv = {k: v["summary"] for k, v in recorded.items() if k in KINDS and v.get("folds") == self.cv_folds}
            for kind in KINDS:
                if kind not in incumbent_cv:  # an artifact trained without --cv: measure its recipe now
                    incumbent_cv[kind] = cross_validate(
                        examples, kind, self.recall_target, hyper, self.cv_folds, embedder=embedder).summary
            runs = {kind: cross_validate(examples, kind, self.recall_target, hyper, self.cv_folds, fb, embedder)
                    for kind in KINDS}
            candidate.manifest["cv"] = {kind: r.to_json() for kind, r in runs.items()}
            ok, cv_reason = cv_gate({k: r.summary for k, r in runs.items()}, incumbent_cv)
            reason = f"{reason}; {cv_reason}"
            for kind, r in runs.items():
                candidate_metrics |= {f"cv_{kind}_{m}": r.summary[m] for m in CV_GATED}
                incumbent_metrics = incumbent_metrics | {f"cv_{kind}_{m}": incumbent_cv[kind][m] for m in CV_GATED}
        if isinstance(embedder, embed.CachedEmbedder):
            embedder.save()
        if recipe_note:
            reason = f"{reason} ({recipe_note})"
        result = RetrainResult(ok, reason, candidate.version, candidate_metrics, incumbent_metrics, len(fb), digest)
        if ok:
            self.holder.install(artifact.save(candidate, self.holder.state_dir / candidate.version))
        return result

    def _log(self, db: Any, result: RetrainResult) -> None:
        db.table("retrains").insert(
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


def recent_retrains(db: Any, limit: int) -> list[dict[str, Any]]:
    """The last `limit` retraining runs, newest first (this module writes the retrains table)."""
    return list(db.query("SELECT * FROM retrains ORDER BY id DESC LIMIT ?", [limit]))
