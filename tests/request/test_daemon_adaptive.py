"""Adaptive sampling through the real daemon: escalation, the Beta stop rule, confidence pruning.

The reservation covers every planned sample; the charge is what ran; the
response and the spend record say how many ran, were pruned, and why it stopped.
"""

import pytest

from conftest import SMALL_POLICY, DaemonThread, make_settings
from ponderd.request.stopping import p_leader

pytestmark = pytest.mark.model

SUM = "What is 2 + 3? Reply with just the number."
BRIEFLY = "What is 17 * 3? Think briefly, then answer."
# careful: escalation; thorough: pruning; exhaustive: the Beta stop rule.
EXHAUSTIVE = """[levels.exhaustive]
thinking_tokens = 32
samples = 6
answer_tokens = 40
stop = "beta"
stop_confidence = 0.8

"""


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory):
    policy = tmp_path_factory.mktemp("policy") / "adaptive.toml"
    text = SMALL_POLICY.read_text()
    text = text.replace("samples = 3\nanswer_tokens = 16", "samples = 4\nanswer_tokens = 16\nfirst_samples = 2")
    text = text.replace("samples = 5\nanswer_tokens = 16", "samples = 5\nanswer_tokens = 40\nprune = true\nprune_percentile = 50")
    text = text.replace("[routing]", EXHAUSTIVE + "[routing]")
    policy.write_text(text)
    d = DaemonThread(make_settings(tmp_path_factory.mktemp("state"), policy=policy)).start()
    yield d
    d.stop()


def voters(r):
    return [s.answer for s in r.samples if s.finish_reason in ("stop", "length")]


def spend_record(d, request_id):
    with d.admin() as admin:
        (record,) = [x for x in admin.spend(records=50).records if x.request_id == request_id]
    return record


def test_escalation_draws_the_rest_only_when_the_first_samples_disagree(adaptive):
    with adaptive.client() as c:
        r = c.ask(SUM, level="careful", thinking_tokens=0, seed=7)
    first = voters(r)[:2]
    agree = len(set(first)) == 1 and first[0] != ""
    # The first two agreed ("5"): the third sample was never drawn.
    assert agree and r.usage.stop_reason == "agreed"
    assert r.usage.samples_run == len(r.samples) == 2 and r.plan.samples == 4
    assert r.cost < r.plan.worst_case_cost  # reserved for 4, charged for 2
    assert r.balance.spent == pytest.approx(r.cost) and r.balance.reserved == 0
    record = spend_record(adaptive, r.request_id)
    assert (record.usage.stop_reason, record.usage.samples_run, record.samples_planned) == ("agreed", 2, 4)


def test_disagreeing_first_samples_draw_the_rest(adaptive):
    with adaptive.client() as c:
        r = c.ask("Name one colour. Reply with one word.", level="careful", thinking_tokens=0, seed=3)
    first = [s.answer for s in r.samples[:2]]
    assert first[0] != first[1]
    assert len(r.samples) == 4 and r.usage.stop_reason in ("all", "decided")


def test_pruned_samples_stop_early_do_not_vote_and_are_charged(adaptive):
    with adaptive.client() as c:
        r = c.ask(BRIEFLY, level="thorough", thinking_tokens=0, seed=5)
    pruned = [s for s in r.samples if s.finish_reason == "pruned"]
    # Samples still running at 16 tokens when two had finished, less sure than their median, stop there.
    assert r.usage.samples_pruned == len(pruned) >= 1 and r.usage.stop_reason == "pruned"
    assert all(s.answer == "" for s in pruned)
    assert sum(v.count for v in r.votes) == len([a for a in voters(r) if a])  # pruned samples do not vote
    # The charge is for every token that ran, pruned samples' included.
    assert r.usage.answer_tokens == sum(s.answer_tokens for s in r.samples)
    record = spend_record(adaptive, r.request_id)
    assert record.usage.samples_pruned == len(pruned)
    assert record.usage.stop_reason == r.usage.stop_reason


def test_the_beta_rule_stops_when_the_leader_is_likely_enough(adaptive):
    with adaptive.client() as c:
        r = c.ask(SUM, level="exhaustive", thinking_tokens=0, seed=7)
    counts = [v.count for v in r.votes]
    assert r.usage.stop_reason == "beta"
    assert p_leader(counts) >= 0.8 and r.usage.samples_stopped >= 1
    assert r.cost < r.plan.worst_case_cost
