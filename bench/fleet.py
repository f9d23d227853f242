"""The fleet ledger at 10, 25 and 50 hosts: overshoot (must be 0), stranded refusals, lease traffic, PostgreSQL load.

    python bench/fleet.py [--hosts 10,25,50] [--requests 3000] [--out bench/results/fleet.txt]

What is real and what is simulated: each host is the real host side of the
fleet ledger (ledger/postgres/fleet.py: Fleet and FleetBudgets over its own
SQLite file, leases, shipping, keys over LISTEN/NOTIFY), all hosts in this
one process on one event loop, against a real PostgreSQL server from the
system's packages (tests/postgres.py). The engine is a stand-in: a "request"
reserves a worst case of 1,000 micro-credits and settles a cost drawn from
30-100 % of it after a few milliseconds. Requests arrive at every host at once
(4 at a time per host) until the tenant's budget refuses them.

Reported per fleet size:
- overshoot: the fleet's settled spend beyond the budget (micro-credits; must be 0);
- stranded refusals: refusals while the fleet, at that moment, still had a
  worst case's worth left that no host could use (it sat in other hosts' leases);
- lease transactions per 1,000 requests, and PostgreSQL commits per second.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import psycopg

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import postgres  # noqa: E402  (the tests' throwaway server)

from ponderd.clock import SystemClock  # noqa: E402
from ponderd.errors import BudgetExhausted  # noqa: E402
from ponderd.ledger.keys import Keyring  # noqa: E402
from ponderd.ledger.postgres import central  # noqa: E402
from ponderd.ledger.postgres.fleet import Fleet, FleetBudgets  # noqa: E402
from ponderd.ledger.sqlite.budgets import SqliteBudgets  # noqa: E402
from ponderd.ledger.sqlite.ledger import Ledger  # noqa: E402
from ponderd.ledger.sqlite.store import Store  # noqa: E402
from ponderd.ledger.types import SpendRow  # noqa: E402
from ponderd.settings import LedgerSettings  # noqa: E402

WORST = 1_000
UTC = ZoneInfo("UTC")


class Plan:
    worst_case_micros = WORST

    def to_json(self) -> dict:
        return {"level": "stand-in"}


def row(tenant: str, request_id: str, cost: int) -> SpendRow:
    return SpendRow(
        request_id=request_id, tenant=tenant, at=datetime.now(timezone.utc).isoformat(), severity="low",
        needs_reasoning=False, model_severity="low", model_needs_reasoning=False, risk_model="-", policy_version="-",
        level="stand-in", thinking_cap=0, answer_cap=16, samples_planned=1, prompt_tokens=5, thinking_tokens=0,
        answer_tokens=10, forced_tokens=0, samples_run=1, samples_stopped=0, cost_micros=cost, latency_ms=3, status="ok",
    )


async def run_fleet(dsn: str, hosts: int, requests: int, root: pathlib.Path) -> dict:
    budget = requests * WORST * 65 // 100  # about what `requests` settle to: the budget runs out near the end
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        from ponderd.ledger.postgres import schema

        await schema.migrate(conn, "UTC")
        await central.create_tenant(conn, "acme", budget, "day", datetime.now(timezone.utc), UTC, with_key=False)
    settings = LedgerSettings(backend="postgres", dsn=dsn, lease_seconds=30, sync_seconds=0.5, keys_poll_seconds=5,
                              min_lease=0.002, max_lease_fraction=0.05)
    fleet: list[tuple[Fleet, FleetBudgets, Store]] = []
    for i in range(hosts):
        state = root / f"h{hosts}-{i}"
        store = Store(state / "ponder.db")
        store.open()
        ledger = Ledger(UTC, leased=True)
        f = Fleet(LedgerSettings(**{**settings.__dict__, "host_id": f"h{i}"}), store, ledger, Keyring(), SystemClock(),
                  UTC, "UTC", state, None, pool_size=2)
        await f.start()
        fleet.append((f, FleetBudgets(SqliteBudgets(store, ledger, SystemClock()), f), store))
    settled = 0
    inflight = 0
    stats = {"ok": 0, "refused": 0, "stranded": 0}
    rng = random.Random(7)
    counter = iter(range(10**9))

    async def one(budgets: FleetBudgets) -> bool:
        nonlocal settled, inflight
        rid = f"r{next(counter)}"
        try:
            await budgets.reserve("acme", rid, [Plan()], {})
        except BudgetExhausted:
            stats["refused"] += 1
            if budget - settled - inflight >= WORST:
                stats["stranded"] += 1
            return False
        inflight += WORST
        await asyncio.sleep(0.002)
        cost = rng.randint(WORST * 3 // 10, WORST)
        await budgets.settle(row("acme", rid, cost), None)
        inflight -= WORST
        settled += cost
        stats["ok"] += 1
        return True

    async def host_loop(budgets: FleetBudgets, share: int) -> None:
        refusals = 0
        for _ in range(share):
            if not await one(budgets):
                refusals += 1
                if refusals >= 5:
                    return
                await asyncio.sleep(0.05)

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        before = (await (await conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")).fetchone())[0]
    start = time.perf_counter()
    share = requests // hosts // 4 + 2
    await asyncio.gather(*(host_loop(b, share) for _, b, _ in fleet for _ in range(4)))
    for f, _, _ in fleet:
        await f.sync_once()  # ship the last records
    seconds = time.perf_counter() - start
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await asyncio.sleep(1.0)  # pg_stat_database lags a moment behind the commits
        after = (await (await conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")).fetchone())[0]
        central_spent = (await (await conn.execute(
            "SELECT COALESCE(SUM(cost_micros), 0)::bigint FROM spend WHERE tenant = 'acme'")).fetchone())[0]
    grants = sum(f.grants for f, _, _ in fleet)
    for f, _, store in fleet:
        await f.stop()
        store.close()
    done = stats["ok"] + stats["refused"]
    return {
        "hosts": hosts, "requests": done, "answered": stats["ok"], "refused": stats["refused"],
        "stranded": stats["stranded"], "budget": budget, "spent": central_spent, "overshoot": max(0, central_spent - budget),
        "used": central_spent / budget, "grants_per_1000": 1000 * grants / max(done, 1),
        "pg_tps": (after - before) / seconds, "seconds": seconds, "local_equals_central": central_spent == settled,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="10,25,50")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "fleet.txt"))
    ap.add_argument("--keep-log", action="store_true", help="print the PostgreSQL server's log at the end")
    ap.add_argument("--plot", default=str(REPO / "bench" / "results" / "fleet.png"))
    args = ap.parse_args()
    server = postgres.start_server()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in (int(x) for x in args.hosts.split(",")):
                results.append(asyncio.run(run_fleet(server.database(), n, args.requests, pathlib.Path(tmp))))
                print(results[-1], flush=True)
    finally:
        if "--keep-log" in sys.argv:
            print(server.log()[-6000:])
        postgres.remove(server)
    lines = [
        f"$ python bench/fleet.py --hosts {args.hosts} --requests {args.requests}",
        "Real: the fleet ledger's host side (Fleet, FleetBudgets, local SQLite files), PostgreSQL 15 on loopback.",
        "Simulated: the engine (a request reserves 1,000 micro-credits and settles 30-100 % of it); all hosts in one process.",
        "",
        f"{'hosts':>5} {'requests':>8} {'answered':>8} {'refused':>7} {'stranded':>8} {'budget used':>11} "
        f"{'overshoot':>9} {'lease tx/1k req':>15} {'PG commits/s':>12}",
    ]
    for r in results:
        lines.append(
            f"{r['hosts']:>5} {r['requests']:>8} {r['answered']:>8} {r['refused']:>7} {r['stranded']:>8} "
            f"{r['used']:>10.1%} {r['overshoot']:>9} {r['grants_per_1000']:>15.1f} {r['pg_tps']:>12.0f}"
        )
    lines.append("")
    lines.append("overshoot: settled spend beyond the budget, micro-credits (0 = the fleet never overspent).")
    lines.append("stranded: refusals while a worst case's worth of budget was left, held in other hosts' leases.")
    text = "\n".join(lines) + "\n"
    pathlib.Path(args.out).write_text(text)
    print(text)
    _plot(results, args.plot)
    return 0 if all(r["overshoot"] == 0 and r["local_equals_central"] for r in results) else 1


def _plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hosts = [r["hosts"] for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].bar([str(h) for h in hosts], [r["overshoot"] for r in results], color="tab:green")
    for i, r in enumerate(results):
        axes[0].text(i, 0.05, f"{r['overshoot']}", ha="center", va="bottom", fontsize=11)
    axes[0].set_title("overshoot (micro-credits; must be 0)")
    axes[0].set_ylim(0, max(1, max(r["overshoot"] for r in results)) * 1.2)
    axes[1].plot(hosts, [100 * r["stranded"] / max(r["requests"], 1) for r in results], marker="o")
    axes[1].set_title("stranded refusals (% of requests)")
    axes[2].plot(hosts, [r["grants_per_1000"] for r in results], marker="o", label="lease tx / 1k requests")
    axes[2].plot(hosts, [r["pg_tps"] for r in results], marker="s", label="PG commits / s")
    axes[2].set_title("PostgreSQL traffic")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("hosts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
