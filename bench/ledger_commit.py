"""The local SQLite ledger: reserve+settle pairs per second, group commit against one commit per call.

    python bench/ledger_commit.py [--concurrency 8,32,128] [--rounds 3] [--seconds 2]
                                  [--out bench/results/ledger_commit.txt] [--plot bench/results/ledger_commit.png]

Real: the request path's budgets seam (SqliteBudgets -> Ledger -> Store) on a
real SQLite file in WAL mode with synchronous=FULL, on this machine's disk.
Simulated: the requests; each of `concurrency` workers reserves a plan
(worst case 1,000 micro-credits) and settles it at once, in a loop, for
`--seconds`. The two modes run in alternating rounds, side by side in one run
(baseline then group commit, then the other way round), each on a fresh file;
the figure is the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

REPO = pathlib.Path(__file__).resolve().parents[1]

from ponderd.clock import SystemClock  # noqa: E402
from ponderd.ledger.sqlite.budgets import SqliteBudgets  # noqa: E402
from ponderd.ledger.sqlite.ledger import Ledger  # noqa: E402
from ponderd.ledger.sqlite.store import Store  # noqa: E402
from ponderd.ledger.types import SpendRow  # noqa: E402

WORST = 1_000
MODES = {"baseline": False, "group commit": True}


class Plan:
    worst_case_micros = WORST

    def to_json(self) -> dict:
        return {"level": "stand-in"}


def spend_row(request_id: str) -> SpendRow:
    return SpendRow(
        request_id=request_id, tenant="acme", at=datetime.now(timezone.utc).isoformat(), severity="low",
        needs_reasoning=False, model_severity="low", model_needs_reasoning=False, risk_model="-", policy_version="-",
        level="stand-in", thinking_cap=0, answer_cap=16, samples_planned=1, prompt_tokens=5, thinking_tokens=0,
        answer_tokens=10, forced_tokens=0, samples_run=1, samples_stopped=0, cost_micros=WORST // 2, latency_ms=3,
        status="ok",
    )


async def measure(store: Store, concurrency: int, seconds: float) -> dict:
    clock = SystemClock()
    ledger = Ledger(ZoneInfo("UTC"))
    await store.call(ledger.create_tenant, "acme", 10**15, "month", clock.now())
    budgets = SqliteBudgets(store, ledger, clock)
    plans = [Plan()]
    pairs = 0
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal pairs
        i = 0
        while time.perf_counter() < stop_at:
            request_id = f"w{w}-{i}"
            i += 1
            await budgets.reserve("acme", request_id, plans, {})
            await budgets.settle(spend_row(request_id), None)
            pairs += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - start
    balance = await store.call(ledger.balance, "acme", clock.now())
    assert balance.reserved_micros == 0 and balance.spent_micros == pairs * (WORST // 2), "the ledger does not add up"
    return {"pairs_per_s": pairs / elapsed, "pairs": pairs, "commits": store.batches}


def one_run(root: pathlib.Path, name: str, group: bool, concurrency: int, seconds: float) -> dict:
    path = root / f"{name.replace(' ', '_')}-{concurrency}-{time.monotonic_ns()}.db"
    store = Store(path, group_commit=group)
    store.open()
    try:
        return asyncio.run(measure(store, concurrency, seconds))
    finally:
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="8,32,128")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--dir", default=None, help="where the SQLite files go (default: a temporary folder)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ledger_commit.txt"))
    ap.add_argument("--plot", default=str(REPO / "bench" / "results" / "ledger_commit.png"))
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    load_before = os.getloadavg()[0]
    runs: dict[tuple[str, int], list[dict]] = {(m, c): [] for m in MODES for c in levels}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for round_ in range(args.rounds):
            order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))
            for c in levels:
                for name in order:
                    r = one_run(pathlib.Path(tmp), name, MODES[name], c, args.seconds)
                    runs[(name, c)].append(r)
                    print(f"round {round_ + 1} concurrency {c:>3} {name:>12}: {r['pairs_per_s']:8.0f} pairs/s", flush=True)
    med = {k: statistics.median(r["pairs_per_s"] for r in v) for k, v in runs.items()}
    calls_per_commit = {
        c: statistics.median(2 * r["pairs"] / max(r["commits"], 1) for r in runs[("group commit", c)]) for c in levels
    }
    lines = [
        f"$ python bench/ledger_commit.py --concurrency {args.concurrency} --rounds {args.rounds} --seconds {args.seconds}",
        "Real: SqliteBudgets -> Ledger -> Store on a SQLite file (WAL, synchronous=FULL) on this machine's disk.",
        "Simulated: the requests (each worker reserves 1,000 micro-credits and settles at once, in a loop).",
        f"Median of {args.rounds} rounds of {args.seconds:g} s per cell; modes alternate within each round.",
        f"Machine: {os.cpu_count()} cores, load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after "
        "(other work on the machine takes CPU from both modes alike; the ratio is the figure to compare).",
        "",
        f"{'concurrency':>11} {'baseline pairs/s':>16} {'group pairs/s':>13} {'ratio':>6} {'calls/commit':>12}",
    ]
    for c in levels:
        base, group = med[("baseline", c)], med[("group commit", c)]
        lines.append(f"{c:>11} {base:>16.0f} {group:>13.0f} {group / base:>5.1f}x {calls_per_commit[c]:>12.1f}")
    lines += ["", "pairs/s: reserve+settle pairs acknowledged per second (each acknowledged only after its COMMIT).",
              "calls/commit: ledger calls that shared one COMMIT (one fsync) under group commit."]
    text = "\n".join(lines) + "\n"
    pathlib.Path(args.out).write_text(text)
    print(text)
    _plot(levels, med, args.plot)
    return 0


def _plot(levels: list[int], med: dict[tuple[str, int], float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    width = 0.38
    xs = range(len(levels))
    for k, (name, color) in enumerate((("baseline", "tab:gray"), ("group commit", "tab:blue"))):
        values = [med[(name, c)] for c in levels]
        bars = ax.bar([x + (k - 0.5) * width for x in xs], values, width, label=name, color=color)
        for bar, v in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [str(c) for c in levels])
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("reserve+settle pairs / s")
    ax.set_title("Local ledger (SQLite, synchronous=FULL)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
