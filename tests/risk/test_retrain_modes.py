"""Retraining works whatever view is served (#24): with risk.second_view off, the n-gram stage is retrained alone."""

import pytest

from ponderd.risk import ClassifierHolder, cascade, retrain
from ponderd.risk.corpus import Example
from ponderd.risk.model import RiskModel

FEEDBACK = [Example("can my dog have ibuprofen for a sore leg, he is 8kg", "high", True, "feedback:1")]


@pytest.fixture
def holder(tmp_path):
    """The shipped cascade, served as the daemon serves it with `risk.second_view = false`."""
    served = ClassifierHolder(tmp_path / "state", None, second_view=False)
    assert type(served.current()) is RiskModel and served.current().manifest["hyper"]["embedding"] > 0
    return served


def test_with_the_second_view_off_the_ngram_stage_is_retrained_gated_and_served(holder, monkeypatch):
    verdicts = []

    def gate_then_accept(candidate, incumbent):  # the real gate's verdict is recorded; the swap is forced
        verdicts.append(real_gate(candidate, incumbent))
        return True, "accepted by the test"

    real_gate = retrain.gate
    monkeypatch.setattr(retrain, "gate", gate_then_accept)
    result = retrain.Retrainer(holder, None, None, 0.95, cv_folds=0)._train_and_gate(FEEDBACK, set())
    assert result.accepted and result.feedback_used == 1 and len(verdicts) == 1
    assert "retraining the n-gram stage alone" in result.reason
    assert set(retrain.GATED) <= set(result.candidate_metrics) and set(retrain.GATED) <= set(result.incumbent_metrics)
    served = holder.current()
    assert served.version == result.candidate_version and served.manifest["hyper"]["embedding"] == 0
    # The same state dir with the view on serves the retrained n-gram model too (it has no view to serve).
    on = ClassifierHolder(holder.state_dir.parent, None, second_view=True).current()
    assert on.version == result.candidate_version and not isinstance(on, cascade.CascadeModel)


def test_the_served_recipe_keeps_a_cascade_whole_when_its_view_is_served():
    class WithView:
        embedder = object()

    manifest = {"hyper": {"embedding": 1.0, "cascade": 0.7, "word_ngrams": [1, 2], "char_ngrams": [2, 5]}}
    hyper, note = retrain.served_recipe(WithView(), manifest)
    assert (hyper.embedding, hyper.cascade, note) == (1.0, 0.7, "")
    hyper, note = retrain.served_recipe(object(), manifest)
    assert (hyper.embedding, hyper.cascade) == (0.0, 0.0) and "risk.second_view" in note
