"""Several models in one daemon, expected-loss planning and learning from verified outcomes, end to end.

The embedded SmolLM2-135M serves as both models ("default" and "second", each
its own llama.cpp context and engine thread, with other settings and prices):
the issue allows the same GGUF under two names in CI. docs/operations.md shows
a real pairing for a GPU host.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import REPO, DaemonThread, make_settings
from ponder.client import PonderError
from ponderd.checks import parse_check
from ponderd.engine.model_file import model_identity

pytestmark = pytest.mark.model

MODELS = REPO / "tests" / "policies" / "models"
SMALL = {"n_ctx": 2048, "n_seq_max": 4}


def settings(state: pathlib.Path, policy: pathlib.Path, second: dict | None = None, **extra):
    return make_settings(
        state, policy, model={"name": "default", **SMALL}, models={"second": second or {**SMALL, "n_ctx": 1536}}, **extra
    )


def health(d: DaemonThread, service: str) -> int:
    with grpc.insecure_channel(d.address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service)).status


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    d = DaemonThread(settings(tmp_path_factory.mktemp("state"), MODELS / "two_models.toml")).start()
    yield d
    d.stop()


def test_each_level_runs_on_its_model_and_is_charged_at_its_prices(two: DaemonThread):
    with two.client() as c:
        deep = c.ask("What is 2 + 2?", level="deep", seed=3)
        direct = c.ask("What is 2 + 2?", level="direct", seed=3)
    assert deep.plan.model == "second" and direct.plan.model == "default"
    assert "level deep runs on model second" in deep.plan.reasons
    u = deep.usage
    # second's prices: prompt 2.0, thinking and answer 4.0 per 1,000 tokens.
    expected = ((u.prompt_tokens + u.forced_tokens) * 2000 + (u.thinking_tokens + u.answer_tokens) * 4000) / 1e6
    assert deep.cost == pytest.approx(expected)
    with two.admin() as a:
        records = {r.request_id: r for r in a.spend(records=10).records}
    assert records[deep.request_id].model == "second"
    assert records[direct.request_id].model == "default"
    assert health(two, "ponder.engine.second") == health_pb2.HealthCheckResponse.SERVING


def test_routing_picks_the_model_and_the_quote_says_why(two: DaemonThread):
    with two.client() as c:
        quote = c.quote("What is 2 + 2?", severity_floor="high")
    assert quote.plan.level == "deep" and quote.plan.model == "second"
    assert any(r.startswith("routing: severity high") for r in quote.plan.reasons)


def test_a_check_verifies_the_voted_answer_and_the_record_keeps_the_verdict(two: DaemonThread):
    with two.client() as c:
        sure = c.ask("What is 2 + 2?", level="direct", seed=5, check={"number": 4})
        never = c.ask("What is 2 + 2?", level="direct", seed=5, check={"regex": "^no answer looks like this$"})
        unchecked = c.ask("What is 2 + 2?", level="direct", seed=5)
    assert sure.HasField("verified") and sure.verified == parse_check({"number": 4}).verify(sure.answer)
    assert never.HasField("verified") and never.verified is False
    assert not unchecked.HasField("verified")
    with two.admin() as a:
        records = {r.request_id: r for r in a.spend(records=20).records}
    assert records[sure.request_id].verified == sure.verified
    assert records[never.request_id].HasField("verified") and not records[never.request_id].verified
    assert not records[unchecked.request_id].HasField("verified")


def test_a_malformed_check_is_invalid_argument_saying_what_to_change(two: DaemonThread):
    with two.client() as c, pytest.raises(PonderError) as err:
        c.ask("What is 2 + 2?", check={"regex": "(unclosed"})
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "check: regex '(unclosed' does not compile" in err.value.message


def test_a_model_that_fails_to_load_only_takes_its_levels_out(tmp_path: pathlib.Path):
    broken = settings(tmp_path / "state", MODELS / "two_models.toml", second={"path": str(tmp_path / "missing.gguf")})
    d = DaemonThread(broken).start()
    try:
        assert health(d, "ponder.engine.second") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert health(d, "") == health_pb2.HealthCheckResponse.SERVING
        with d.client() as c:
            quote = c.quote("What is 2 + 2?", severity_floor="high")
            assert quote.plan.model == "default" and quote.plan.level == "vote"
            assert any(r.startswith("level deep skipped: model 'second' failed to load") for r in quote.plan.reasons)
            answered = c.ask("What is 2 + 2?", severity_floor="high", seed=1)
            assert answered.plan.level == "vote"
            with pytest.raises(PonderError) as err:
                c.ask("What is 2 + 2?", level="deep")
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "level deep cannot run now: model 'second' failed to load" in err.value.message
    finally:
        d.stop()


@pytest.fixture
def learning(tmp_path: pathlib.Path) -> Iterator[DaemonThread]:
    """Expected-loss planning on a profile worth one outcome, updated after three new ones."""
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    shutil.copy(MODELS / "expected_loss.toml", policy_dir / "expected_loss.toml")
    # A profile is used only on the model file it names: this one's the embedded model's.
    served = model_identity(None)
    profile = json.loads((MODELS / "profile.json").read_text())
    profile["model"] = {"file": served.file, "sha256": served.sha256}
    (policy_dir / "profile.json").write_text(json.dumps(profile))
    s = settings(tmp_path / "state", policy_dir / "expected_loss.toml",
                 accuracy={"min_new_outcomes": 3, "prior_weight": 1, "update_schedule": ""})
    d = DaemonThread(s).start()
    yield d
    d.stop()


def test_expected_loss_plans_by_the_profile_and_degrades_within_a_budget(learning: DaemonThread):
    with learning.client() as c:
        high = c.quote("What is 2 + 2?", severity_floor="high")
    assert high.plan.level == "deep" and high.plan.HasField("expected_loss")
    assert any(r.startswith("expected loss: deep") for r in high.plan.reasons)
    # A tenant whose budget covers vote's worst case but not deep's gets vote, and is told why.
    vote_cost = 0.0
    with learning.client() as c:
        vote_cost = c.quote("What is 2 + 2?", level="vote").plan.worst_case_cost
    with learning.admin() as a:
        token = a.create_tenant("lean", budget=vote_cost * 1.5).token
    with learning.client(token) as c:
        lean = c.quote("What is 2 + 2?", severity_floor="high")
    assert lean.plan.level == "vote"
    assert "budget: degraded from deep to vote, the next lowest expected total" in lean.plan.reasons


def test_verified_outcomes_move_the_plan_only_through_the_gated_job(learning: DaemonThread):
    def deep_and_wrong(c) -> str:
        r = c.ask("What is 2 + 2?", level="deep", severity_floor="high", seed=7,
                  check={"regex": "^no answer looks like this$"})
        assert r.verified is False
        return r.request_id

    with learning.client() as c, learning.admin() as a:
        assert c.quote("What is 2 + 2?", severity_floor="high").plan.level == "deep"
        first = deep_and_wrong(c)
        deep_and_wrong(c)
        held = a.run_job("update_accuracy")
        assert held.startswith("kept the estimates in force: 2 verified outcome(s), 2 new")
        assert c.quote("What is 2 + 2?", severity_floor="high").plan.level == "deep"
        # Feedback counts too (and wins over the check for its request).
        right = c.ask("What is 2 + 2?", level="deep", severity_floor="high", seed=8)
        c.feedback(right.request_id, correct=False)
        c.feedback(first, correct=False)
        taken = a.run_job("update_accuracy")
        assert taken.startswith("accepted: 3 verified outcome(s), 3 new")
        moved = c.quote("What is 2 + 2?", severity_floor="high").plan
    counts, outcomes = learning.daemon.accuracy.in_force
    assert outcomes == 3
    assert sum(n for (level, _), (n, _c) in counts.items() if level == "deep") == 3
    assert sum(c for (level, _), (_n, c) in counts.items() if level == "deep") == 0
    # Three wrong answers against a profile worth one outcome: deep no longer pays for itself.
    assert moved.level != "deep"
    assert any(r.startswith("next best expected loss:") for r in moved.reasons)
