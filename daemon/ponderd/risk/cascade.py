"""The cascade: the n-gram model scores every query; the model with the embedding view only the unsure ones.

The embedding view (risk/embed.py) costs 50-250 ms a query on a CPU, the
n-gram path well under 1 ms. Most queries are decided with confidence by the
n-grams alone; where the n-gram verdict is below high and its top severity
probability is under `Hyper.cascade`, the query is embedded and the model
trained on n-grams + embedding decides (docs/risk.md, "The cascade"). Both
models are trained by the same recipe on the same data, so they share the
fitted vectorizers; the artifact holds the first model's parts plus the
second's heads ("severity_view", "reasoning_view") and its embedding view.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..assessment import RiskScore
from .model import RiskModel, Thresholds, decide_severity

FIRST_PARTS = ("word", "char", "severity", "reasoning")
VIEW_PARTS = ("severity_view", "reasoning_view", "embedding")


def routes(probs: np.ndarray, severity: str, confidence: float) -> bool:
    """Whether a first-stage verdict goes to the second view: below high, and unsure."""
    return severity != "high" and float(np.max(probs)) < confidence


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

    @property
    def thresholds(self) -> Thresholds:
        return self.first.thresholds

    @property
    def embedder(self) -> Any:
        return self.second.embedder

    def routed(self, text: str) -> bool:
        """Whether scoring this text pays for the embedding."""
        sev_p, _ = self.first.probabilities(text)
        return routes(sev_p, decide_severity(sev_p, self.first.thresholds.high), self.confidence)

    def verdict(self, text: str) -> tuple[np.ndarray, float, str, bool]:
        first = self.first.verdict(text)
        return self.second.verdict(text) if routes(first[0], first[2], self.confidence) else first

    def probabilities(self, text: str) -> tuple[np.ndarray, float]:
        return self.verdict(text)[:2]

    def score(self, text: str, explain: bool = False) -> RiskScore:
        idx, val = self.first.features(text)
        sev_p, nr_p = self.first._probabilities(idx, val)
        if routes(sev_p, decide_severity(sev_p, self.first.thresholds.high), self.confidence):
            return self.second._score(idx, val, self.second._dense(text), explain, self.version)
        return self.first._labelled(idx, val, sev_p, nr_p, explain)
