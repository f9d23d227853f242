"""The cascade: the n-gram model scores every query; the model with the embedding view only the undecided ones.

The embedding view (risk/embed.py) costs a forward pass over the query's
prompt up to an early layer (engine/view.py), the n-gram path well under 1 ms. The n-gram verdict stands where it is decided:
P(high) far under the high threshold with a confident top class, or P(high)
of 0.9 or more. Otherwise — P(high) from a third of the threshold up to 0.9,
or a top probability under `Hyper.cascade` — the query is embedded and the
model trained on n-grams + embedding decides (docs/risk.md, "A second view").
On the corpus the view's gain is mostly fewer false highs, so it must see the
n-grams' less certain highs, not only their unsure lows. Both models are
trained by the same recipe on the same data, so they share the fitted
vectorizers; the artifact holds the first model's parts plus the second's
heads ("severity_view", "reasoning_view") and its embedding view.

Where embedding a query fails (the embedding model broke or went missing
after load), the n-gram verdict stands: the n-gram path is the fallback, so
a broken second view costs accuracy on undecided queries, never a request.
It is logged (the first failure and then every power of ten) and counted in
`embedding_failures`.
"""

from __future__ import annotations

import logging
from typing import Any, Coroutine

import numpy as np

from ponderd.risk.model import RiskModel, Thresholds
from ponderd.risk.score import RiskScore

FIRST_PARTS = ("word", "char", "severity", "reasoning")
VIEW_PARTS = ("severity_view", "reasoning_view", "embedding")
# The band of P(high) where the n-gram verdict is not decided: from this
# fraction of the high threshold up to SURE_HIGH (measured: docs/risk.md).
BAND_FROM = 1 / 3
SURE_HIGH = 0.9

log = logging.getLogger("ponderd.risk")


def routes(probs: np.ndarray, high_threshold: float, confidence: float) -> bool:
    """Whether a first-stage score goes to the second view: P(high) in the band, or an unsure top class."""
    p_high = float(probs[2])
    if p_high >= SURE_HIGH:
        return False
    return p_high >= high_threshold * BAND_FROM or float(np.max(probs)) < confidence


class CascadeModel:
    """An n-gram RiskModel in front of an n-gram + embedding RiskModel."""

    def __init__(self, parts: dict[str, Any], manifest: dict[str, Any], embedder: Any = None) -> None:
        self.parts = parts
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.confidence = float(manifest["hyper"]["cascade"])
        self.first = RiskModel({k: parts[k] for k in FIRST_PARTS}, manifest)
        view = manifest["second_view"]
        second_manifest = {"version": self.version, "hyper": manifest["hyper"], "thresholds": view["thresholds"],
                           "temperatures": view["temperatures"]}
        second_parts = {"word": parts["word"], "char": parts["char"], "severity": parts["severity_view"],
                        "reasoning": parts["reasoning_view"], "embedding": parts["embedding"]}
        self.second = RiskModel(second_parts, second_manifest, embedder, vectorizers=self.first._vecs)
        self.word_input, self.char_input = self.first.word_input, self.first.char_input
        self.embedding_failures = 0

    @property
    def thresholds(self) -> Thresholds:
        return self.first.thresholds

    @property
    def embedder(self) -> Any:
        return self.second.embedder

    def routed(self, text: str) -> bool:
        """Whether scoring this text pays for the embedding."""
        sev_p, _ = self.first.probabilities(text)
        return routes(sev_p, self.first.thresholds.high, self.confidence)

    def verdict(self, text: str) -> tuple[np.ndarray, float, str, bool]:
        first = self.first.verdict(text)
        return self.second.verdict(text) if routes(first[0], self.first.thresholds.high, self.confidence) else first

    def probabilities(self, text: str) -> tuple[np.ndarray, float]:
        return self.verdict(text)[:2]

    def _first_stage(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, bool]:
        """The n-gram stage's features and probabilities, and whether the query goes on to the view."""
        idx, val = self.first.features(text)
        sev_p, nr_p = self.first._probabilities(idx, val)
        return idx, val, sev_p, nr_p, routes(sev_p, self.first.thresholds.high, self.confidence)

    def score(self, text: str, explain: bool = False) -> RiskScore:
        idx, val, sev_p, nr_p, routed = self._first_stage(text)
        if routed:
            try:
                dense = self.second._dense(text)
            except Exception as exc:  # any failure of the embedding model: the n-gram verdict stands
                self._embedding_failed(exc)
            else:
                return self.second._score(idx, val, dense, explain, self.version)
        return self.first._labelled(idx, val, sev_p, nr_p, explain)

    def staged(self, text: str, explain: bool = False) -> RiskScore | Coroutine[Any, Any, RiskScore]:
        """score_async in two stages, for the request path: the score itself where the n-gram
        verdict stands, else a coroutine that awaits the embedding. The first stage returns
        without an await, so a query the view does not need never yields to the event loop
        (under streaming load a yield waits behind the streams' callbacks: measured, docs/risk.md)."""
        idx, val, sev_p, nr_p, routed = self._first_stage(text)
        if not routed:
            return self.first._labelled(idx, val, sev_p, nr_p, explain)
        return self._with_view(text, idx, val, sev_p, nr_p, explain)

    async def _with_view(self, text: str, idx: np.ndarray, val: np.ndarray, sev_p: np.ndarray, nr_p: float,
                         explain: bool) -> RiskScore:
        try:
            dense = await self.second._dense_async(text)
        except Exception as exc:  # any failure of the embedding model: the n-gram verdict stands
            self._embedding_failed(exc)
            return self.first._labelled(idx, val, sev_p, nr_p, explain)
        return self.second._score(idx, val, dense, explain, self.version)

    async def score_async(self, text: str, explain: bool = False) -> RiskScore:
        """score, for the request path: the n-gram stage at once, the embedding (when routed) awaited."""
        scored = self.staged(text, explain)
        return scored if isinstance(scored, RiskScore) else await scored

    def _embedding_failed(self, exc: Exception) -> None:
        self.embedding_failures += 1
        n = self.embedding_failures
        if str(n).rstrip("0") == "1":  # the 1st, 10th, 100th...: visible, not a flood
            log.warning("risk model %s: embedding a query failed (%s: %s), %d time(s) so far; "
                        "the n-gram verdict stands", self.version, type(exc).__name__, exc, n)
