"""Feedback and retraining through the real daemon, and safe model reloads."""

import shutil

import grpc
import pytest

from conftest import DaemonThread, make_settings
from ponder.client import PonderError
from ponderd.risk import artifact, corpus
from ponderd.risk.train import train

pytestmark = pytest.mark.model

@pytest.fixture(scope="module")
def weak_model(tmp_path_factory):
    """A deliberately weak incumbent: a twelfth of the corpus, tuned to a lax recall target."""
    report = train(corpus.load(corpus.training_files())[::12], corpus.load(corpus.heldout_files()), 0.80, version="risk-weak")
    return artifact.save(report.model, tmp_path_factory.mktemp("weak") / "model")


def test_feedback_is_checked_and_stored(shared_daemon):
    with shared_daemon.client() as c:
        r = c.ask("Name a planet.", seed=1)
        assert c.feedback(r.request_id, correct=True)
        with pytest.raises(PonderError) as err:
            c.feedback("nope", correct=False)
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(PonderError) as err:
            c.feedback(r.request_id)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with shared_daemon.admin() as admin:
        other = admin.create_tenant("other", 1).token
    with shared_daemon.client(other) as c, pytest.raises(PonderError) as err:
        c.feedback(r.request_id, correct=False)  # another tenant's request id reveals nothing
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_retraining_from_feedback_swaps_a_better_model_and_refuses_a_worse_one(tmp_path, weak_model):
    # The grouped-CV half of the gate costs ten trainings or more (tests/risk/test_risk_cv.py covers it); off here.
    settings = make_settings(
        tmp_path / "state", risk={"model_dir": str(weak_model), "retrain_schedule": "", "retrain_cv_folds": 0}
    )
    d = DaemonThread(settings).start()
    try:
        with d.client() as c, d.admin() as admin:
            assert admin.risk_status().model_version == "risk-weak"
            assert admin.run_job("retrain_risk") == "retrain rejected: no labeled feedback yet: nothing new to learn from"

            r = c.ask("can my dog have ibuprofen for a sore leg, he is 8kg", seed=1)
            c.feedback(r.request_id, correct=False, true_severity="high", true_needs_reasoning=True)
            summary = admin.run_job("retrain_risk")
            assert summary.startswith("retrain accepted: no held-out regression"), summary
            status = admin.risk_status()
            new_version = status.model_version
            assert new_version != "risk-weak"
            latest = status.retrains[0]
            assert latest.accepted and latest.feedback_used == 1 and latest.candidate_version == new_version
            for metric in ("severity_macro_f1", "high_recall", "reasoning_f1"):
                assert latest.candidate_metrics[metric] >= latest.incumbent_metrics[metric]
            assert c.ask("Name a river.", seed=2).assessment.model_version == new_version

            assert "no new feedback since the last retrain" in admin.run_job("retrain_risk")

            # Poison: held-out high-stakes queries labelled harmless. A model that learns them
            # must lose high recall on the held-out split, and the gate must keep the old one.
            poison = [e.text for e in corpus.load(corpus.heldout_files()) if e.severity == "high"][:30]
            for text in poison:
                rid = c.ask(text, seed=3, level="direct").request_id
                c.feedback(rid, correct=True, true_severity="low", true_needs_reasoning=False)
            summary = admin.run_job("retrain_risk")
            assert summary.startswith("retrain rejected: loses on the held-out split"), summary
            assert "high_recall" in summary
            status = admin.risk_status()
            assert status.model_version == new_version
            assert not status.retrains[0].accepted and status.retrains[0].feedback_used == 1 + len(poison)
    finally:
        d.stop()


def test_a_tampered_model_is_refused_on_reload_and_the_old_one_stays(tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(artifact.SHIPPED_DIR, model_dir)
    d = DaemonThread(make_settings(tmp_path / "state", risk={"model_dir": str(model_dir)})).start()
    try:
        with d.admin() as admin:
            version = admin.risk_status().model_version
            data = bytearray((model_dir / artifact.MODEL_FILE).read_bytes())
            data[-100] ^= 0xFF
            (model_dir / artifact.MODEL_FILE).write_bytes(bytes(data))
            with pytest.raises(PonderError) as err:
                admin.reload_policy()
            assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "risk.skops does not match its manifest" in err.value.message
            assert admin.risk_status().model_version == version
        with d.client() as c:
            assert c.ask("Name a colour.", seed=1).assessment.model_version == version
    finally:
        d.stop()
