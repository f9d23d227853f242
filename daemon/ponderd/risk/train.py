"""Training: features, model selection by cross-validation, temperature calibration,
severity-first thresholds, and held-out evaluation.

Calibration is temperature scaling fitted on out-of-fold decision values (the
same math as CalibratedClassifierCV(method="temperature", ensemble=False)); the
out-of-fold probabilities also tune the thresholds, so the held-out split is
touched only to report.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from scipy import sparse
from scipy.optimize import minimize_scalar
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

from ponderd.risk import metrics, taxonomy
from ponderd.risk.cascade import CascadeModel
from ponderd.risk.corpus import Example, data_hash
from ponderd.risk.embed import Embedder
from ponderd.risk.model import SEVERITIES, RiskModel, digit_shape, with_cues

FEEDBACK_WEIGHT = 3.0
# The high threshold aims this far above the recall target on out-of-fold
# scores, so queries from writers the corpus never saw still clear it. On the
# three independent writers' sets (bench/data) 0.5 points gave recall 0.946,
# 1 point 0.954, 1.5 and 2 points no more recall for less precision; held-out
# macro-F1 moved 0.880 -> 0.877 -> 0.873 -> 0.866 (see docs/risk.md).
RECALL_MARGIN = 0.01
# With grouped calibration the out-of-fold scores already come from domains
# the fold's model never saw, which is what the margin stood in for; keeping
# it too overshot (recall 0.969 / 0.974 / 0.987 on domain CV / writer CV /
# held-out, held-out macro-F1 0.855), so grouped calibration aims at the
# target itself.
GROUPED_RECALL_MARGIN = 0.0


@dataclass(frozen=True)
class Hyper:
    severity_c: float = 8.0
    reasoning_c: float = 32.0
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    char_min_df: int = 2
    digit_shape: bool = True
    folds: int = 5
    # Out-of-fold scores for calibration and thresholds come from folds that
    # hold whole domain groups out, so the high threshold is tuned on scores
    # of domains the fold's model never saw: the situation the issue is about.
    # Random folds (False) tune it on familiar vocabulary and set it too high.
    grouped_calibration: bool = True
    # Word n-grams also read one token per stakes cue (model.with_cues).
    stakes_cues: bool = False
    # Weight of the second view (risk/embed.py: the served model's hidden state
    # at the last token of the query's prompt) beside the n-grams; 0 = n-grams only. Each embedding
    # dimension is standardised and the block scaled to this row norm, so 1.0
    # weighs it like one of the two (unit-norm) TF-IDF blocks. An experiment:
    # docs/risk.md "A second view" has its figures and cost.
    embedding: float = 0.0
    # With the embedding view: 0 = one model reads n-grams + embedding for
    # every query; c > 0 = a cascade (risk/cascade.py): the n-gram model
    # alone decides where it is sure (top probability c or more, P(high)
    # clear of the threshold), and only the other queries are embedded.
    cascade: float = 0.0


@dataclass(frozen=True)
class Scored:
    example: Example
    probs: np.ndarray  # P(low, medium, high)
    p_nr: float
    severity: str
    needs_reasoning: bool


@dataclass
class TrainReport:
    model: RiskModel | CascadeModel
    heldout: dict[str, Any]
    selection: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def vectorizers(h: Hyper) -> tuple[TfidfVectorizer, TfidfVectorizer]:
    word = TfidfVectorizer(analyzer="word", ngram_range=h.word_ngrams, sublinear_tf=True, lowercase=True)
    char = TfidfVectorizer(
        analyzer="char_wb", ngram_range=h.char_ngrams, sublinear_tf=True, lowercase=True, min_df=h.char_min_df
    )
    return word, char


def _lr(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=3000, class_weight="balanced")


def domain_groups(examples: Sequence[Example], spread: bool = True) -> list[str]:
    """Each example's hold-out unit (taxonomy.unit_of); feedback (no domain) is one group of its own."""
    tax = taxonomy.load()
    out = []
    for e in examples:
        try:
            out.append(tax.unit_of(e.domain, e.text, spread) if e.domain else taxonomy.FEEDBACK_GROUP)
        except KeyError:
            out.append(e.domain)
    return out


def embedding_view(e: np.ndarray, weight: float) -> dict[str, Any]:
    """Standardise each dimension and scale rows to about `weight` in norm (the TF-IDF blocks have norm 1)."""
    mean, sd = e.mean(axis=0), e.std(axis=0) + 1e-6
    return {"mean": mean, "scale": weight / (sd * math.sqrt(e.shape[1]))}


def _oof_decision(x: Any, y: np.ndarray, c: float, w: np.ndarray, folds: int, groups: Sequence[str] | None = None) -> np.ndarray:
    if groups is None:
        splits: Any = StratifiedKFold(folds, shuffle=True, random_state=0)
    else:
        splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(x, y, groups))
    d = cross_val_predict(_lr(c), x, y, cv=splits, method="decision_function", params={"sample_weight": w})
    return d if d.ndim == 2 else d[:, None]


def _temperature(decision: np.ndarray, y_index: np.ndarray) -> float:
    """The beta minimising log loss of softmax(beta * logits) (binary: logits [-d, d])."""
    logits = decision if decision.shape[1] > 1 else np.hstack([-decision, decision])

    def nll(beta: float) -> float:
        z = beta * logits
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -float(logp[np.arange(len(y_index)), y_index].mean())

    return float(minimize_scalar(nll, bounds=(1e-3, 100.0), method="bounded").x)


def _proba(decision: np.ndarray, beta: float) -> np.ndarray:
    logits = decision if decision.shape[1] > 1 else np.hstack([-decision, decision])
    z = beta * logits
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def high_threshold(p_high: np.ndarray, is_high: np.ndarray, target: float) -> float:
    """The largest threshold whose recall on these (out-of-fold) scores reaches the target."""
    scores = np.sort(p_high[is_high])[::-1]
    if scores.size == 0:
        return 0.5
    k = min(scores.size, max(1, math.ceil(target * scores.size)))
    return float(scores[k - 1])


def reasoning_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The threshold maximising F1 on out-of-fold scores."""
    best, best_f1 = 0.5, -1.0
    for t in np.linspace(0.2, 0.8, 61):
        pred = p >= t
        tp = float(np.sum(pred & y))
        f1 = 2 * tp / (pred.sum() + y.sum()) if pred.sum() + y.sum() else 0.0
        if f1 > best_f1 + 1e-12:
            best, best_f1 = float(t), f1
    return best


def train(
    examples: Sequence[Example],
    heldout: Sequence[Example],
    recall_target: float,
    hyper: Hyper | None = None,
    select: bool = False,
    feedback: Sequence[Example] = (),
    version: str | None = None,
    embedder: Embedder | None = None,
) -> TrainReport:
    """Fit a model on examples (+ weighted feedback); report it on the held-out split.

    A recipe with `Hyper.embedding` needs an embedder (risk/embed.py) for the second view.
    """
    # One BLAS/OpenMP thread: these are small sparse problems, and on a shared
    # 2-core host thread contention made the same fit 3-10x slower (12 s vs 3.5 s).
    with threadpool_limits(limits=1):
        return _train(examples, heldout, recall_target, hyper, select, feedback, version, embedder)


def _train(
    examples: Sequence[Example],
    heldout: Sequence[Example],
    recall_target: float,
    hyper: Hyper | None,
    select: bool,
    feedback: Sequence[Example],
    version: str | None,
    embedder: Embedder | None,
) -> TrainReport:
    started = time.monotonic()
    h = hyper or Hyper()
    if h.embedding and h.cascade:
        return _train_cascade(examples, heldout, recall_target, h, select, feedback, version, embedder, started)
    data = list(examples) + list(feedback)
    w = np.array([1.0] * len(examples) + [FEEDBACK_WEIGHT] * len(feedback))
    texts = [e.text for e in data]
    y_sev = np.array([SEVERITIES.index(e.severity) for e in data])
    y_nr = np.array([int(e.needs_reasoning) for e in data])
    word, char = vectorizers(h)
    char_texts = [digit_shape(t) for t in texts] if h.digit_shape else texts
    word_texts = [with_cues(t) for t in texts] if h.stakes_cues else texts
    x = sparse.hstack([word.fit_transform(word_texts), char.fit_transform(char_texts)]).tocsr()
    view: dict[str, Any] | None = None
    if h.embedding:
        if embedder is None:
            raise ValueError("this recipe has an embedding view (Hyper.embedding) and needs an embedder")
        e = embedder.embed(texts).astype(np.float64)
        view = embedding_view(e, h.embedding)
        x = sparse.hstack([x, sparse.csr_matrix((e - view["mean"]) * view["scale"])]).tocsr()
    groups = domain_groups(data) if h.grouped_calibration else None

    selection: list[dict[str, Any]] = []
    if select:
        h, selection = _select(x, y_sev, y_nr, w, h, groups)
    d_sev = _oof_decision(x, y_sev, h.severity_c, w, h.folds, groups)
    d_nr = _oof_decision(x, y_nr, h.reasoning_c, w, h.folds, groups)
    beta_sev, beta_nr = _temperature(d_sev, y_sev), _temperature(d_nr, y_nr)
    p_sev, p_nr = _proba(d_sev, beta_sev), _proba(d_nr, beta_nr)[:, 1]
    margin = GROUPED_RECALL_MARGIN if h.grouped_calibration else RECALL_MARGIN
    t_high = high_threshold(p_sev[:, 2], y_sev == 2, min(1.0, recall_target + margin))
    t_nr = reasoning_threshold(p_nr, y_nr.astype(bool))

    sev_lr = _lr(h.severity_c).fit(x, y_sev, sample_weight=w)
    nr_lr = _lr(h.reasoning_c).fit(x, y_nr, sample_weight=w)
    digest = data_hash(data)
    manifest = {
        "version": version or f"risk-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{digest[:8]}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data_hash": digest,
        "examples": len(examples),
        "feedback_examples": len(feedback),
        "hyper": asdict(h),
        "recall_target": recall_target,
        "thresholds": {"high": t_high, "reasoning": t_nr},
        "temperatures": {"severity": beta_sev, "reasoning": beta_nr},
    }
    parts: dict[str, Any] = {"word": word, "char": char, "severity": sev_lr, "reasoning": nr_lr}
    if view is not None:
        parts["embedding"] = view
        manifest["embedding_model"] = embedder.name if embedder is not None else ""
    model = RiskModel(parts, manifest, embedder)
    report = evaluate(model, heldout)
    manifest["metrics"] = report["summary"]
    return TrainReport(model, report, selection, time.monotonic() - started)


def _train_cascade(
    examples: Sequence[Example],
    heldout: Sequence[Example],
    recall_target: float,
    h: Hyper,
    select: bool,
    feedback: Sequence[Example],
    version: str | None,
    embedder: Embedder | None,
    started: float,
) -> TrainReport:
    """The n-gram model and the n-gram + embedding model, same recipe and data, as one cascade artifact."""
    if select:
        raise ValueError("choose C for a cascade with the n-gram recipe (--select without --cascade)")
    first = _train(examples, [], recall_target, replace(h, embedding=0.0, cascade=0.0), False, feedback, version, None)
    second = _train(examples, [], recall_target, replace(h, cascade=0.0), False, feedback, version, embedder)
    assert isinstance(first.model, RiskModel) and isinstance(second.model, RiskModel)  # cascade=0: single models
    return compose_cascade(first.model, second.model, h.cascade, heldout, started, version)


def compose_cascade(first: RiskModel, second: RiskModel, confidence: float, heldout: Sequence[Example],
                    started: float | None = None, version: str | None = None) -> TrainReport:
    """One cascade from an n-gram model and a model with the embedding view trained on the same data."""
    a, b = first.parts, second.parts
    if first.manifest["data_hash"] != second.manifest["data_hash"] or any(
            a[k].vocabulary_ != b[k].vocabulary_ for k in ("word", "char")):
        raise ValueError("the two models of a cascade must be trained on the same data (and share their vectorizers)")
    manifest = {k: v for k, v in first.manifest.items() if k not in ("cv", "metrics", "artifact_sha256")}
    manifest["version"] = version or f"risk-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{first.manifest['data_hash'][:8]}"
    manifest["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest["hyper"] = asdict(replace(Hyper(**{**second.manifest["hyper"], "word_ngrams": tuple(second.manifest["hyper"]["word_ngrams"]),
                                                "char_ngrams": tuple(second.manifest["hyper"]["char_ngrams"])}), cascade=confidence))
    manifest["embedding_model"] = second.manifest["embedding_model"]
    manifest["second_view"] = {k: second.manifest[k] for k in ("thresholds", "temperatures")}
    parts = dict(a) | {"severity_view": b["severity"], "reasoning_view": b["reasoning"], "embedding": b["embedding"]}
    model = CascadeModel(parts, manifest, second.embedder)
    report = evaluate(model, heldout)
    manifest["metrics"] = report["summary"]
    # The share of held-out queries that paid for an embedding.
    manifest["second_view"]["heldout_share"] = sum(map(model.routed, (e.text for e in heldout))) / max(1, len(heldout))
    return TrainReport(model, report, [], time.monotonic() - (started or time.monotonic()))


def _select(
    x: Any, y_sev: np.ndarray, y_nr: np.ndarray, w: np.ndarray, h: Hyper, groups: Sequence[str] | None
) -> tuple[Hyper, list[dict]]:
    """Pick each head's C by out-of-fold F1 (macro for severity)."""
    rows = []
    best: dict[str, tuple[float, float]] = {}
    for c in (2.0, 8.0, 32.0):
        pred_sev = np.argmax(_oof_decision(x, y_sev, c, w, h.folds, groups), axis=1)
        sev = metrics.macro_f1(metrics.per_class(list(y_sev), list(pred_sev), [0, 1, 2]))
        pred_nr = _oof_decision(x, y_nr, c, w, h.folds, groups)[:, 0] > 0
        nr = metrics.per_class(list(y_nr.astype(bool)), list(pred_nr), [True])[True]["f1"]
        rows.append({"C": c, "severity_macro_f1": sev, "reasoning_f1": nr})
        if sev > best.get("sev", (-1, 0))[0]:
            best["sev"] = (sev, c)
        if nr > best.get("nr", (-1, 0))[0]:
            best["nr"] = (nr, c)
    return Hyper(**{**asdict(h), "severity_c": best["sev"][1], "reasoning_c": best["nr"][1]}), rows


def predict(model: RiskModel | CascadeModel, examples: Sequence[Example]) -> list[Scored]:
    """The model's verdict on each example, kept with the truth (what `summarise` reads)."""
    out = []
    for e in examples:
        out.append(Scored(e, *model.verdict(e.text)))
    return out


def evaluate(model: RiskModel | CascadeModel, examples: Sequence[Example]) -> dict[str, Any]:
    """Per-class precision/recall, macro-F1, confusion and calibration on labeled examples."""
    return summarise(predict(model, examples))


def summarise(scored: Sequence[Scored]) -> dict[str, Any]:
    """The report for verdicts from one model, or pooled over cross-validation folds."""
    true_sev = [s.example.severity for s in scored]
    pred_sev = [s.severity for s in scored]
    true_nr = [s.example.needs_reasoning for s in scored]
    pred_nr = [s.needs_reasoning for s in scored]
    sev_conf = [float(np.max(s.probs)) for s in scored]
    sev_hit = [SEVERITIES[int(np.argmax(s.probs))] == s.example.severity for s in scored]
    nr_conf = [max(s.p_nr, 1 - s.p_nr) for s in scored]
    nr_hit = [(s.p_nr >= 0.5) == s.example.needs_reasoning for s in scored]
    sev_report = metrics.per_class(true_sev, pred_sev, SEVERITIES)
    nr_report = metrics.per_class(true_nr, pred_nr, [True, False])
    summary = {
        "severity_macro_f1": metrics.macro_f1(sev_report),
        "high_recall": sev_report["high"]["recall"],
        "high_precision": sev_report["high"]["precision"],
        "severity_accuracy": float(np.mean([t == p for t, p in zip(true_sev, pred_sev)])) if scored else 0.0,
        "severity_ece": metrics.expected_calibration_error(sev_conf, sev_hit),
        "reasoning_f1": nr_report[True]["f1"],
        "reasoning_precision": nr_report[True]["precision"],
        "reasoning_recall": nr_report[True]["recall"],
        "reasoning_ece": metrics.expected_calibration_error(nr_conf, nr_hit),
        "examples": float(len(scored)),
    }
    return {
        "summary": summary,
        "severity": sev_report,
        "needs_reasoning": {str(k).lower(): v for k, v in nr_report.items()},
        "confusion": {"labels": list(SEVERITIES), "matrix": metrics.confusion(true_sev, pred_sev, SEVERITIES)},
    }
