"""A key's own budget cap through the real daemon, the real CLI in a subprocess and the real SQLite file.

A capped key spends until the ledger refuses it with the key's message, while another key of the same
tenant still works; the ledger file shows neither the key nor the tenant overspent.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DaemonThread, make_settings
from ponder.errors import BudgetExhausted as BudgetExhaustedError

pytestmark = pytest.mark.model

PONDER = str(Path(sys.executable).parent / "ponder")
ASK = ("ask", "Say yes.")


@pytest.fixture
def d(tmp_path, clock):
    daemon = DaemonThread(make_settings(tmp_path / "state"), clock).start()
    yield daemon
    daemon.stop()


def ponder(d, env, *args, token):
    return subprocess.run(
        [PONDER, "--address", d.address, "--token", token, *args], env=env, capture_output=True, text=True, timeout=300,
    )


def admin(d, env, *args):
    run = ponder(d, env, "admin", *args, token=d.token("admin"))
    assert run.returncode == 0, run.stderr
    return run


def test_a_capped_key_is_refused_at_its_cap_while_another_key_of_the_tenant_works(d, cli_env):
    first = admin(d, cli_env, "tenant", "create", "acme", "--budget", "50").stdout.splitlines()[-1]
    quoted = ponder(d, cli_env, "quote", *ASK[1:], "--json", token=first)
    assert quoted.returncode == 0, quoted.stderr
    quote = json.loads(quoted.stdout)
    worst = quote["plan"]["worst_case_cost"]
    assert worst > 0
    cap = round(worst * 1.5, 6)  # one worst case fits; the spend of the asks decides when the next does not
    capped = admin(d, cli_env, "key", "issue", "acme", "--label", "batch", "--budget", str(cap)).stdout.strip()
    capped_id = capped.split("_")[1]

    answered, refusal = 0, None
    for _ in range(40):
        run = ponder(d, cli_env, *ASK, token=capped)
        if run.returncode != 0:
            refusal = run.stderr
            break
        answered += 1
    assert answered >= 1 and refusal is not None, "the capped key was never refused"
    assert "RESOURCE_EXHAUSTED" in refusal, refusal
    assert f"key {capped_id} of tenant 'acme'" in refusal and "of its own cap of" in refusal, refusal
    assert f"ponder admin key budget {capped_id} AMOUNT" in refusal, refusal

    # The Python client sees whose cap it is: the QuotaFailure's subject and the key's id.
    with d.client(capped) as client, pytest.raises(BudgetExhaustedError) as err:
        client.ask("Say yes.")
    assert err.value.key_id == capped_id and err.value.violations[0].subject == f"key:{capped_id}"
    assert err.value.reason == "BUDGET_EXHAUSTED"

    # The tenant has plenty left: its other key is served.
    other = ponder(d, cli_env, *ASK, token=first)
    assert other.returncode == 0, other.stderr

    listed = {k["key_id"]: k for k in json.loads(admin(d, cli_env, "key", "list", "--tenant", "acme", "--json").stdout)}
    assert listed[capped_id]["budget"] == pytest.approx(cap)
    assert 0 < listed[capped_id]["spent"] <= cap
    table = admin(d, cli_env, "key", "list", "--tenant", "acme").stdout
    (line,) = [x for x in table.splitlines() if x.startswith(capped_id)]
    assert f"{cap:.4f}" in line and f"{listed[capped_id]['spent']:.4f}" in line

    # The ledger file: no reservation held, neither the key nor the tenant over, the key's spend its requests'.
    db = sqlite3.connect(d.settings.state_dir / "ponder.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0
        budget, spent, reserved = db.execute(
            "SELECT budget_micros, spent_micros, reserved_micros FROM keys WHERE key_id = ?", [capped_id]
        ).fetchone()
        assert reserved == 0 and 0 < spent <= budget
        t_budget, t_spent = db.execute("SELECT budget_micros, spent_micros FROM tenants WHERE name = 'acme'").fetchone()
        ok_total = db.execute("SELECT SUM(cost_micros) FROM spend WHERE tenant = 'acme'").fetchone()[0]
        assert spent < t_spent == ok_total <= t_budget
    finally:
        db.close()

    # Raising the cap lets the key through again; `none` removes it.
    raised = json.loads(admin(d, cli_env, "key", "budget", capped_id, str(cap * 10), "--json").stdout)
    assert raised["budget"] == pytest.approx(cap * 10)
    assert ponder(d, cli_env, *ASK, token=capped).returncode == 0
    cleared = json.loads(admin(d, cli_env, "key", "budget", capped_id, "none", "--json").stdout)
    assert cleared["budget"] is None


def test_the_fleet_ledger_refuses_a_key_cap_saying_it_is_single_host_only(tmp_path, pg_dsn, cli_env):
    settings = make_settings(
        tmp_path / "host", ledger={"backend": "postgres", "dsn": pg_dsn, "host_id": "capless", "keys_poll_seconds": 1.0},
    )
    d = DaemonThread(settings).start()
    try:
        admin(d, cli_env, "tenant", "create", "fleetco", "--budget", "5")
        refused = ponder(d, cli_env, "admin", "key", "issue", "fleetco", "--budget", "1", token=d.token("admin"))
        assert refused.returncode != 0
        assert "FAILED_PRECONDITION" in refused.stderr, refused.stderr
        assert "enforced on a single host's ledger only, for now" in refused.stderr, refused.stderr
        key_id = admin(d, cli_env, "key", "issue", "fleetco").stdout.strip().split("_")[1]  # without a cap: issued
        changed = ponder(d, cli_env, "admin", "key", "budget", key_id, "1", token=d.token("admin"))
        assert changed.returncode != 0 and "FAILED_PRECONDITION" in changed.stderr, changed.stderr
        listed = json.loads(admin(d, cli_env, "key", "list", "--tenant", "fleetco", "--json").stdout)
        assert all(k["budget"] is None for k in listed)
    finally:
        d.stop()
