"""The risk model: TF-IDF word and character n-grams, one calibrated linear head per axis.

Training uses scikit-learn; scoring one query goes through a lean path that
reads the same fitted parameters (vocabularies, idf weights, coefficients,
temperatures) and skips sklearn's per-call overhead, so a single query scores
in well under a millisecond. Tests check the two paths agree.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ponderd.risk.cues import stakes_cues
from ponderd.risk.score import Contribution, RiskScore

SEVERITIES = ("low", "medium", "high")
_DIGIT = re.compile(r"\d")


def digit_shape(text: str) -> str:
    """The text with every digit written as 0: what the character n-grams read.

    A number's value rarely decides the label, its shape often does ("17 * 23",
    "500 mg", "v2.3.1"); without this, character n-grams of unseen numbers are
    unseen features and arithmetic looks like nothing at all.
    """
    return _DIGIT.sub("0", text)


def with_cues(text: str) -> str:
    """The text plus one token per stakes cue it carries: what the word n-grams read.

    A dose, a quantity with a unit, a deadline or money is a sign of stakes in
    any field; as tokens, the model can learn that sign once and apply it to
    fields whose vocabulary it has never seen (docs/risk.md).
    """
    cues = stakes_cues(text)
    return text + "".join(f" stakescue{c}" for c in cues) if cues else text


@dataclass(frozen=True)
class Thresholds:
    # Predict "high" when P(high) reaches this (tuned for the recall target).
    high: float
    # Predict needs_reasoning when its probability reaches this.
    reasoning: float


class _Vectorizer:
    """One fitted TfidfVectorizer, reduced to what scoring needs."""

    def __init__(self, vec: Any, offset: int, prefix: str) -> None:
        self.analyze = vec.build_analyzer()
        self.vocab: dict[str, int] = {k: int(v) for k, v in vec.vocabulary_.items()}
        self.idf = np.asarray(vec.idf_, dtype=np.float64)
        self.sublinear = bool(vec.sublinear_tf)
        self.offset = offset
        self.prefix = prefix
        names = [""] * len(self.vocab)
        for term, i in self.vocab.items():
            names[i] = term
        self.names = names

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        # Look every n-gram up in C (map over dict.get), then count the known ones with one sort.
        ids = [i for i in map(self.vocab.get, self.analyze(text)) if i is not None]
        if not ids:
            return np.empty(0, dtype=np.int64), np.empty(0)
        idx, counts = np.unique(np.array(ids, dtype=np.int64), return_counts=True)
        tf = counts.astype(np.float64)
        if self.sublinear:
            tf = np.log(tf) + 1.0
        val = tf * self.idf[idx]
        val /= math.sqrt(float(val @ val))
        return idx + self.offset, val


class RiskModel:
    """A fitted model plus its manifest (version, metrics, thresholds)."""

    def __init__(self, parts: dict[str, Any], manifest: dict[str, Any], embedder: Any = None,
                 vectorizers: list[_Vectorizer] | None = None) -> None:
        self.parts = parts
        self.manifest = manifest
        self.version: str = manifest["version"]
        t = manifest["thresholds"]
        self.thresholds = Thresholds(float(t["high"]), float(t["reasoning"]))
        word, char = parts["word"], parts["char"]
        # A cascade's second model shares the first's (identical) fitted vectorizers.
        self._vecs = vectorizers or [_Vectorizer(word, 0, "word"), _Vectorizer(char, len(word.vocabulary_), "char")]
        # Older artifacts read raw text with both vectorizers.
        self.char_input = digit_shape if manifest.get("hyper", {}).get("digit_shape") else _same
        self.word_input = with_cues if manifest.get("hyper", {}).get("stakes_cues") else _same
        temps = manifest["temperatures"]
        self._sev = _Head(parts["severity"], float(temps["severity"]))
        self._nr = _Head(parts["reasoning"], float(temps["reasoning"]))
        if list(self._sev.classes) != list(SEVERITIES):
            raise ValueError(f"severity head classes are {list(self._sev.classes)}, expected {list(SEVERITIES)}")
        # Both heads' weights side by side, one row per feature: scoring gathers once.
        self._weights = np.ascontiguousarray(np.vstack([self._sev.coef, self._nr.coef]).T)
        self._bias = np.concatenate([self._sev.intercept, self._nr.intercept])
        # The second view (risk/embed.py), when the recipe has one: its weights
        # are the rows after the n-gram features.
        self._n_sparse = len(word.vocabulary_) + len(char.vocabulary_)
        view = parts.get("embedding")
        self._view = None if view is None else (np.asarray(view["mean"]), np.asarray(view["scale"]))
        if self._view is not None and embedder is None:
            raise ValueError(f"model {self.version} has an embedding view and needs an embedder to score")
        self._embedder = embedder

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        (wi, wv), (ci, cv) = self._vecs[0].features(self.word_input(text)), self._vecs[1].features(self.char_input(text))
        return np.concatenate([wi, ci]), np.concatenate([wv, cv])

    @property
    def embedder(self) -> Any:
        """The second view's embedder, or None for an n-gram-only model."""
        return self._embedder if self._view is not None else None

    def _dense(self, text: str) -> np.ndarray | None:
        if self._view is None:
            return None
        return self._standardize(self._embedder.embed([text])[0])

    def _standardize(self, raw: Any) -> np.ndarray:
        """An embedding as the view was fitted on it: centred and scaled per dimension."""
        assert self._view is not None
        mean, scale = self._view
        return (np.asarray(raw).astype(np.float64) - mean) * scale

    async def _dense_async(self, text: str) -> np.ndarray | None:
        """_dense without blocking the event loop: the embedder's own `aembed` where it has one
        (the engine's, cancellable while it waits), else its `embed` in a worker thread."""
        if self._view is None:
            return None
        aembed = getattr(self._embedder, "aembed", None)
        if aembed is not None:
            return self._standardize(await aembed(text))
        return self._standardize((await asyncio.to_thread(self._embedder.embed, [text]))[0])

    async def score_async(self, text: str, explain: bool = False) -> RiskScore:
        """score, for the request path: an embedding is awaited, not waited for on the event loop."""
        idx, val = self.features(text)
        return self._score(idx, val, await self._dense_async(text), explain)

    def _probabilities(self, idx: np.ndarray, val: np.ndarray, dense: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        logits = val @ self._weights[idx] + self._bias
        if dense is not None:
            logits = logits + dense @ self._weights[self._n_sparse:]
        z = self._sev.beta * logits[:3]
        z = np.exp(z - z.max())
        # Binary head: the decision d stands for logits [-d, d], as in training.
        nr = 1.0 / (1.0 + math.exp(-2.0 * self._nr.beta * float(logits[3])))
        return z / z.sum(), nr

    def probabilities(self, text: str) -> tuple[np.ndarray, float]:
        """P(low, medium, high) and P(needs_reasoning)."""
        return self._probabilities(*self.features(text), self._dense(text))

    def verdict(self, text: str) -> tuple[np.ndarray, float, str, bool]:
        """Probabilities and the labels they decide (what evaluation reads)."""
        sev_p, nr_p = self.probabilities(text)
        return sev_p, nr_p, decide_severity(sev_p, self.thresholds.high), nr_p >= self.thresholds.reasoning

    def score(self, text: str, explain: bool = False) -> RiskScore:
        idx, val = self.features(text)
        return self._score(idx, val, self._dense(text), explain)

    def _score(self, idx: np.ndarray, val: np.ndarray, dense: np.ndarray | None, explain: bool,
               version: str | None = None) -> RiskScore:
        return self._labelled(idx, val, *self._probabilities(idx, val, dense), explain, version)

    def _labelled(self, idx: np.ndarray, val: np.ndarray, sev_p: np.ndarray, nr_p: float, explain: bool,
                  version: str | None = None) -> RiskScore:
        severity = decide_severity(sev_p, self.thresholds.high)
        reasoning = nr_p >= self.thresholds.reasoning
        explanation: tuple[Contribution, ...] = ()
        if explain:
            explanation = self._explain(idx, val, SEVERITIES.index(severity), reasoning)
        return RiskScore(
            severity=severity,
            needs_reasoning=reasoning,
            severity_probs={s: float(p) for s, p in zip(SEVERITIES, sev_p)},
            needs_reasoning_prob=nr_p,
            model_version=version or self.version,
            explanation=explanation,
        )

    def _explain(self, idx: np.ndarray, val: np.ndarray, cls: int, reasoning: bool, k: int = 6) -> tuple[Contribution, ...]:
        out: list[Contribution] = []
        # For the multinomial head, a feature's pull towards the predicted class
        # is its weight there minus its mean weight over all classes.
        coef = self._sev.coef[:, idx]
        pull = (coef[cls] - coef.mean(axis=0)) * val
        out += [Contribution("severity", self._name(idx[i]), float(pull[i])) for i in np.argsort(-pull)[:k] if pull[i] > 0]
        nr = self._nr.coef[0, idx] * val * (1 if reasoning else -1)
        out += [Contribution("needs_reasoning", self._name(idx[i]), float(nr[i])) for i in np.argsort(-nr)[:k] if nr[i] > 0]
        return tuple(out)

    def _name(self, i: int) -> str:
        vec = self._vecs[0] if i < self._vecs[1].offset else self._vecs[1]
        return f"{vec.prefix}:{vec.names[i - vec.offset]!r}" if vec.prefix == "char" else f"word:{vec.names[i - vec.offset]}"


def _same(text: str) -> str:
    return text


class _Head:
    """A logistic regression with temperature scaling: softmax(beta * logits)."""

    def __init__(self, lr: Any, beta: float) -> None:
        self.classes = [SEVERITIES[int(c)] for c in lr.classes_] if len(lr.classes_) == 3 else list(lr.classes_)
        self.coef = np.asarray(lr.coef_, dtype=np.float64)
        self.intercept = np.asarray(lr.intercept_, dtype=np.float64)
        self.beta = beta


def decide_severity(probs: np.ndarray, high_threshold: float) -> str:
    """High when P(high) reaches the tuned threshold; otherwise the likelier of low and medium."""
    if probs[2] >= high_threshold:
        return "high"
    return "low" if probs[0] >= probs[1] else "medium"
