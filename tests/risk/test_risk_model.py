"""The risk classifier: shipped quality, calibration reporting, the fast path, safe artifacts, the gate."""

import json
import shutil
import zipfile

import numpy as np
import pytest
from scipy import sparse

from ponderd.errors import ArtifactError
from ponderd.risk import artifact, corpus
from ponderd.risk.metrics import confusion, expected_calibration_error, macro_f1, per_class
from ponderd.risk.model import RiskModel, digit_shape
from ponderd.risk.retrain import gate
from ponderd.risk.train import evaluate, high_threshold


@pytest.fixture(scope="module")
def model():
    return artifact.load(artifact.SHIPPED_DIR)


@pytest.fixture(scope="module")
def heldout():
    return corpus.load(corpus.heldout_files())


def test_shipped_model_meets_the_quality_bars_on_the_held_out_split(model, heldout):
    summary = evaluate(model, heldout)["summary"]
    assert summary["examples"] >= 700
    assert summary["severity_macro_f1"] >= 0.85
    assert summary["high_recall"] >= 0.95
    assert summary["reasoning_f1"] >= 0.85
    # The manifest reports what the model really scores, not a number written by hand.
    for key in ("severity_macro_f1", "high_recall", "reasoning_f1", "severity_ece"):
        assert model.manifest["metrics"][key] == pytest.approx(summary[key], abs=1e-9)


def test_shipped_model_records_its_grouped_cross_validation(model):
    # Written by `ponder risk train --cv` (make risk-model); the retrain gate compares against it.
    cv = model.manifest["cv"]
    assert set(cv) == {"domain", "writer"}
    for kind, run in cv.items():
        assert run["folds"] == 5 and run["summary"]["examples"] == model.manifest["examples"], kind
        # The bars, on domains and writers the fold's models never saw (docs/risk.md).
        assert run["summary"]["high_recall"] >= 0.95, kind
        assert run["summary"]["severity_macro_f1"] >= 0.85, kind


def test_shipped_model_was_trained_on_the_corpus_in_the_repo(model):
    training = corpus.load(corpus.training_files())
    assert model.manifest["data_hash"] == corpus.data_hash(training)
    assert model.manifest["examples"] == len(training) >= 3000
    texts = {e.text for e in training}
    assert not texts & {e.text for e in corpus.load(corpus.heldout_files())}, "held-out queries leaked into training"


def test_the_fast_path_matches_scikit_learn(model, heldout):
    model = getattr(model, "first", model)  # a cascade's n-gram stage (its second: tests/risk/test_risk_embedding.py)
    texts = [e.text for e in heldout[:200]]
    p = model.parts
    words = [model.word_input(t) for t in texts]
    x = sparse.hstack([p["word"].transform(words), p["char"].transform([model.char_input(t) for t in texts])]).tocsr()
    for head, key in (("severity", "severity"), ("reasoning", "reasoning")):
        d = p[head].decision_function(x)
        logits = d if d.ndim == 2 else np.stack([-d, d], axis=1)
        z = model.manifest["temperatures"][key] * logits
        expected = np.exp(z - z.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
        for text, row in zip(texts, expected):
            sev, nr = model.probabilities(text)
            got = sev if head == "severity" else np.array([1 - nr, nr])
            np.testing.assert_allclose(got, row, atol=1e-9)


def test_scores_are_calibrated_probabilities_with_an_explanation(model):
    s = model.score("my 3 year old weighs 14kg, how much children's paracetamol can I give?", explain=True)
    assert sum(s.severity_probs.values()) == pytest.approx(1.0)
    assert 0 <= s.needs_reasoning_prob <= 1
    assert s.severity == "high"
    assert {c.axis for c in s.explanation} <= {"severity", "needs_reasoning"}
    assert all(c.weight > 0 and (c.feature.startswith("word:") or c.feature.startswith("char:")) for c in s.explanation)


@pytest.mark.parametrize(
    "text, shaped",
    [("17 * 23", "00 * 00"), ("v2.3.1, 500mg", "v0.0.0, 000mg"), ("٣ apples", "0 apples"), ("no digits", "no digits")],
)
def test_character_ngrams_read_digits_by_shape(text, shaped):
    assert digit_shape(text) == shaped


def test_unseen_arithmetic_is_recognised_as_needing_reasoning(model):
    for text in ("What is 17 * 23?", "what is 1234 + 5678"):
        assert model.score(text).needs_reasoning, text


def test_artifacts_without_the_digit_shape_option_read_raw_text(model):
    model = getattr(model, "first", model)
    manifest = {**model.manifest, "hyper": {k: v for k, v in model.manifest["hyper"].items() if k != "digit_shape"}}
    old = RiskModel(model.parts, manifest)
    assert old.char_input("17 * 23") == "17 * 23"
    assert model.char_input("17 * 23") == "00 * 00"


@pytest.mark.parametrize(
    "confidence, correct, ece",
    [
        ([0.9] * 10, [True] * 9 + [False], 0.0),
        ([1.0, 1.0], [False, False], 1.0),
        ([0.75] * 4, [True, True, False, False], 0.25),
        ([], [], 0.0),
    ],
)
def test_expected_calibration_error(confidence, correct, ece):
    assert expected_calibration_error(confidence, correct) == pytest.approx(ece)


def test_per_class_report_and_confusion():
    t = ["low", "low", "high", "medium", "high"]
    p = ["low", "high", "high", "medium", "low"]
    report = per_class(t, p, ["low", "medium", "high"])
    assert report["high"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2.0}
    assert macro_f1(report) == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert confusion(t, p, ["low", "medium", "high"]) == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


def test_high_threshold_reaches_the_recall_target():
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.6])
    is_high = np.array([True, True, True, True, False, False])
    t = high_threshold(p, is_high, 0.75)
    assert t == 0.3 and (p[is_high] >= t).mean() >= 0.75


@pytest.mark.parametrize(
    "candidate, accepted, words",
    [
        ({"severity_macro_f1": 0.9, "high_recall": 0.96, "reasoning_f1": 0.9}, True, "no held-out regression"),
        ({"severity_macro_f1": 0.88, "high_recall": 0.96, "reasoning_f1": 0.9}, True, "no held-out regression"),
        ({"severity_macro_f1": 0.8799, "high_recall": 0.99, "reasoning_f1": 0.99}, False, "severity_macro_f1 0.8799 < 0.8800"),
        ({"severity_macro_f1": 0.9, "high_recall": 0.94, "reasoning_f1": 0.9}, False, "high_recall 0.9400 < 0.9500"),
    ],
)
def test_the_held_out_gate(candidate, accepted, words):
    ok, reason = gate(candidate, {"severity_macro_f1": 0.88, "high_recall": 0.95, "reasoning_f1": 0.9})
    assert ok is accepted and words in reason


@pytest.fixture
def model_copy(tmp_path):
    target = tmp_path / "model"
    shutil.copytree(artifact.SHIPPED_DIR, target)
    return target


def test_a_changed_artifact_is_refused(model_copy):
    data = bytearray((model_copy / artifact.MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model_copy / artifact.MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        artifact.load(model_copy)


class Payload:
    """Stands in for an object whose loading would run code."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_an_artifact_with_untrusted_types_is_refused_even_with_a_matching_hash(model_copy, capsys):
    import skops.io as sio

    parts = {"word": Payload(), "char": 1, "severity": 2, "reasoning": 3}
    sio.dump(parts, model_copy / artifact.MODEL_FILE)
    manifest = json.loads((model_copy / artifact.MANIFEST_FILE).read_text())
    manifest["artifact_sha256"] = artifact._sha256(model_copy / artifact.MODEL_FILE)
    (model_copy / artifact.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="holds types that could run code on load .*Payload"):
        artifact.load(model_copy)
    assert "pwned" not in capsys.readouterr().out


def test_a_pickle_is_not_a_model(model_copy):
    import pickle

    (model_copy / artifact.MODEL_FILE).write_bytes(pickle.dumps({"a": 1}))
    manifest = json.loads((model_copy / artifact.MANIFEST_FILE).read_text())
    manifest["artifact_sha256"] = artifact._sha256(model_copy / artifact.MODEL_FILE)
    (model_copy / artifact.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a readable skops file"):
        artifact.load(model_copy)


def test_missing_manifest_is_refused(model_copy):
    (model_copy / artifact.MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        artifact.load(model_copy)


def test_artifact_is_compressed_skops(model_copy):
    with zipfile.ZipFile(model_copy / artifact.MODEL_FILE) as z:
        assert "schema.json" in z.namelist()


def test_stakes_cue_tokens_are_an_option_the_shipped_model_does_not_pay_for(model):
    from ponderd.risk.model import with_cues

    assert with_cues("heparin 18 units/kg/h, 72 kg") == "heparin 18 units/kg/h, 72 kg stakescuedose stakescuequantity"
    assert with_cues("write a poem") == "write a poem"
    assert model.manifest["hyper"]["stakes_cues"] is False and model.word_input("5 mg") == "5 mg"
