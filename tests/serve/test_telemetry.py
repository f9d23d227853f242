"""Metrics, the access log and the audit log, through the real daemon."""

import json
import logging
import urllib.request

import pytest

from conftest import REPO, counted, eventually, scrape, value  # noqa: F401
from ponder.client import PonderError
from ponderd.serve.logs import JsonFormatter

pytestmark = pytest.mark.model

PROMPT = "What is 17 * 23? zebra-quokka"  # a marker no log line may ever contain


def at_least(n: int, items: list):
    return items if len(items) >= n else None


def key_id(token: str) -> str:
    return token.split("_")[1]


def test_asks_move_the_counters(daemon):
    assert daemon.daemon.telemetry.address.startswith("127.0.0.1:")
    before = scrape(daemon)
    assert value(before, "ponder_requests_total", tenant="local") == 0
    with daemon.client() as c:
        r = c.ask(PROMPT)
        c.balance()
    after = scrape(daemon)
    assert value(after, "ponder_requests_total", tenant="local", status="ok", level=r.plan.level) == 1
    assert value(after, "ponder_rpcs_total", method="Ask", code="OK") == 1
    assert value(after, "ponder_rpcs_total", method="GetBalance", code="OK") == 1
    assert value(after, "ponder_tokens_total", tenant="local", kind="prompt") == r.usage.prompt_tokens > 0
    answered = r.usage.thinking_tokens + r.usage.answer_tokens
    assert value(after, "ponder_tokens_total", tenant="local", kind="thinking") + value(
        after, "ponder_tokens_total", tenant="local", kind="answer"
    ) == answered > 0
    assert value(after, "ponder_spend_credits_total", tenant="local") == pytest.approx(r.cost)
    assert value(after, "ponder_budget_remaining_credits", tenant="local") == pytest.approx(r.balance.remaining)
    assert value(after, "ponder_classifier_duration_seconds_count") >= 1
    assert value(after, "ponder_planner_duration_seconds_count") >= 1
    assert value(after, "ponder_reservations_held") == 0
    assert ("ponder_engine_queue_depth", ()) in after


def test_a_refused_ask_is_counted_by_its_status(daemon):
    with daemon.admin() as admin:
        token = admin.create_tenant("poor", 0).token
    with daemon.client(token) as c, pytest.raises(PonderError):
        c.ask(PROMPT)
    samples = eventually(lambda: counted(scrape(daemon), "ponder_rpcs_total", method="Ask"))
    assert value(samples, "ponder_requests_total", tenant="poor", status="refused") == 1
    assert value(samples, "ponder_rpcs_total", method="Ask", code="RESOURCE_EXHAUSTED") == 1
    assert value(samples, "ponder_spend_credits_total", tenant="poor") == 0


def access_lines(caplog):
    return [r for r in caplog.records if r.name == "ponder.access"]


def test_one_access_line_per_request_without_the_prompt(daemon, caplog):
    caplog.set_level(logging.INFO)
    with daemon.client() as c:
        r = c.ask(PROMPT)
    with daemon.client("pnd_0123456789ab_forged") as c, pytest.raises(PonderError):
        c.balance()
    lines = access_lines(caplog)
    asked = [x for x in lines if x.fields["access"]["method"] == "Ask"]
    assert len(asked) == 1
    entry = asked[0].fields["access"]
    assert entry["request_id"] == r.request_id and entry["tenant"] == "local" and entry["status"] == "OK"
    assert entry["level"] == r.plan.level and float(entry["cost"]) == pytest.approx(r.cost, abs=1e-6)
    assert f"request_id={r.request_id}" in asked[0].getMessage()
    # A call refused by authentication is logged too, with no tenant.
    refused = eventually(
        lambda: [x.fields["access"] for x in access_lines(caplog) if x.fields["access"]["method"] == "GetBalance"]
    )
    assert refused == [refused[0]] and refused[0]["status"] == "UNAUTHENTICATED" and refused[0]["tenant"] == "-"
    assert "zebra-quokka" not in caplog.text and r.text not in caplog.text
    assert daemon.token("local") not in caplog.text and "forged" not in caplog.text
    # The same record as JSON: one object, the access fields as keys.
    parsed = json.loads(JsonFormatter().format(asked[0]))
    assert parsed["logger"] == "ponder.access" and parsed["access"]["request_id"] == r.request_id


def test_admin_actions_are_audited_with_the_acting_key(daemon, caplog):
    caplog.set_level(logging.INFO)
    admin_key = key_id(daemon.token("admin"))
    with daemon.admin() as admin:
        created = admin.create_tenant("acme", 5)
        admin.set_budget("acme", 7)
        admin.revoke_key(created.key_id)
        with pytest.raises(PonderError):
            admin.revoke_key(created.key_id)  # already revoked: refused, and audited as such
    audit = eventually(lambda: at_least(4, [r.fields["audit"] for r in caplog.records if r.name == "ponder.audit"]))
    assert [(a["action"], a["outcome"]) for a in audit] == [
        ("create_tenant", "OK"), ("set_budget", "OK"), ("revoke_key", "OK"), ("revoke_key", "NOT_FOUND"),
    ]
    assert all(a["key_id"] == admin_key for a in audit)
    assert audit[0]["tenant"] == "acme" and audit[0]["new_key_id"] == created.key_id
    assert created.token not in caplog.text and daemon.token("admin") not in caplog.text
    assert f"action=create_tenant key_id={admin_key}" in caplog.text


def test_a_job_run_is_audited_and_a_retrain_counted(daemon, caplog):
    caplog.set_level(logging.INFO)
    with daemon.admin() as admin:
        admin.run_job("retrain_risk")
    audit = [r.fields["audit"] for r in caplog.records if r.name == "ponder.audit"]
    assert audit[-1]["action"] == "run_job" and audit[-1]["job"] == "retrain_risk" and audit[-1]["outcome"] == "OK"
    samples = scrape(daemon)
    assert value(samples, "ponder_retrains_total", result="rejected") == 1  # no feedback yet: nothing to learn


def test_metrics_are_off_with_an_empty_listen(tmp_path):
    from conftest import DaemonThread, make_settings

    d = DaemonThread(make_settings(tmp_path / "state", metrics={"listen": ""})).start()
    try:
        assert d.daemon.telemetry.address == ""
        with d.client() as c:
            assert c.balance().tenant == "local"
    finally:
        d.stop()


def test_the_metrics_port_closes_with_the_daemon(tmp_path):
    from conftest import DaemonThread, make_settings

    d = DaemonThread(make_settings(tmp_path / "state")).start()
    address = d.daemon.telemetry.address
    assert scrape(d)
    d.stop()
    # close() shuts the HTTP server and its socket before stop returns.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}/metrics", timeout=5)


def test_the_dashboard_and_the_docs_use_only_metrics_the_daemon_exports():
    import re

    from ponderd.serve.telemetry import PrometheusTelemetry

    registry = PrometheusTelemetry("127.0.0.1:0").registry  # never started: no port is bound
    suffixes = {"counter": ("_total",), "histogram": ("", "_bucket", "_count", "_sum"), "gauge": ("",)}
    exported = {f.name + end for f in registry.collect() for end in suffixes[f.type]}
    docs = REPO / "docs"
    for name in ("grafana-ponder.json", "operations.md"):
        used = set(re.findall(r"ponder_[a-z_]+", (docs / name).read_text())) - {"ponder_pb2"}
        assert used and used <= exported, f"{name} names metrics the daemon does not export: {sorted(used - exported)}"


def _exported_families() -> set[str]:
    """Every metric family the daemon exports, named as a scrape shows it (counters with _total)."""
    from ponderd.serve.telemetry import PrometheusTelemetry

    registry = PrometheusTelemetry("127.0.0.1:0").registry  # never started: no port is bound
    return {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}


def test_the_operations_metrics_table_lists_exactly_the_exported_metrics():
    import re

    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"(?m)^\| `([a-z_]+)` \|", section))
    assert listed == _exported_families(), (
        f"docs/operations.md § Metrics lists {sorted(listed - _exported_families())} that are not exported and "
        f"misses {sorted(_exported_families() - listed)}"
    )


def test_build_info_process_metrics_and_time_to_first_token(daemon):
    from ponderd.serve.telemetry import build_versions

    with daemon.client() as c:
        c.ask(PROMPT)
    samples = scrape(daemon)
    version, client, llama, python = build_versions()
    assert value(samples, "ponder_build_info", version=version, client_version=client, llama_cpp_python=llama,
                 python=python) == 1
    assert version != "unknown" and llama != "unknown"
    assert value(samples, "process_resident_memory_bytes") > 0 and value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "ponder_time_to_first_token_seconds_count") == 1
    assert 0 < value(samples, "ponder_time_to_first_token_seconds_sum") <= value(samples, "ponder_rpc_duration_seconds_sum", method="Ask")


def test_the_metrics_listener_answers_metrics_and_healthz_and_404_elsewhere(daemon):
    import urllib.error

    base = f"http://{daemon.daemon.telemetry.address}"
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        assert r.status == 200 and b"ponder_build_info" in r.read()
    with urllib.request.urlopen(f"{base}/healthz", timeout=30) as r:
        assert r.status == 200 and r.read() == b"ok\n"
    for path in ("/", "/metricsx", "/favicon.ico", "/metrics/extra"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}{path}", timeout=30)
        assert err.value.code == 404, path
        assert b"serves /metrics and /healthz" in err.value.read()
