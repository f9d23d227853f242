"""What the classifier's second view adds before the first token while the daemon generates: view off, in the engine, in its own context.

    python bench/risk_view_latency.py [--queries 60] [--rounds 3] [--load 4] [--out bench/results/risk_view_latency.txt]

Three real daemons (`ponder serve` subprocesses, the embedded model, the
default policy), one per way of serving the risk classifier:
- `off`: `risk.second_view = false`, the cascade's n-gram stage alone;
- `engine` (the default, `risk.view_in_engine = true`): the view read by the
  serving engine's owner thread between steps (engine/view.py);
- `own context`: a llama.cpp context of its own in a worker thread
  (`risk.view_in_engine = false`), decoding the prompt a second time and
  fighting the engine for the cores;
- with `--baseline-tree DIR`, also `engine at DIR`: the engine way served by
  another checkout's code (DIR/daemon first on PYTHONPATH, this virtual
  environment), so a change is measured side by side with what it replaces.
In each round every daemon in turn is put under the same generation load
(`--load` streaming asks kept in flight, level `direct`: up to 256 tokens)
and is sent the same `--queries` held-out queries one at a time through the
Python client, twice: first each is quoted, then each is asked (streaming,
level `direct`), timed to its first streamed piece and then closed; the
other two daemons are idle meanwhile. Rounds interleave the three, so drift hits all alike.
Reported: p50/p90/p99 time to the first token and quote latency per way, the
view's added latency (each percentile minus `off`'s), and the same for the
queries the cascade embeds alone.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import sys
import tempfile
import threading
import time
from contextlib import ExitStack

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from common import percentile, report  # noqa: E402
from conftest import DaemonProcess  # noqa: E402
from ponder.client import PonderClient  # noqa: E402
from ponderd.risk import artifact, corpus  # noqa: E402

WAYS = {
    "off": {"PONDER_RISK_SECOND_VIEW": "false"},
    "engine": {},
    "own context": {"PONDER_RISK_VIEW_IN_ENGINE": "false"},
}
LOAD_PROMPT = "Write a long story about a lighthouse keeper and the sea."


class Load:
    """`n` streaming asks kept in flight against one daemon until stopped; counts the tokens."""

    def __init__(self, address: str, token: str, n: int) -> None:
        self.address, self.token, self.n = address, token, n
        self.stop = threading.Event()
        self.tokens = 0
        self.streaming = threading.Semaphore(0)
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i: int) -> None:
        with PonderClient(self.address, self.token, timeout=600) as c:
            first = True
            while not self.stop.is_set():
                for event in c.ask_stream(LOAD_PROMPT, level="direct", seed=i):
                    if event.HasField("delta"):
                        self.tokens += 1
                        if first:
                            first = False
                            self.streaming.release()  # observable: this asker is generating
                    if self.stop.is_set():
                        break

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        for _ in range(self.n):  # every asker generating before the first quote
            if not self.streaming.acquire(timeout=300):
                raise RuntimeError("the load's asks did not start streaming within 300 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=600)


def summary(name: str, xs: list[float], base: list[float] | None) -> str:
    p = [percentile(xs, q) * 1e3 for q in (50, 90, 99)]
    line = f"{name:<22} {len(xs):>5} {p[0]:>9.1f} {p[1]:>9.1f} {p[2]:>9.1f}"
    if base is not None:
        b = [percentile(base, q) * 1e3 for q in (50, 90, 99)]
        line += "   added " + " / ".join(f"{x - y:+.1f}" for x, y in zip(p, b)) + " ms"
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load", type=int, default=4, help="streaming asks kept in flight while quoting")
    ap.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS),
                    help="which ways to run (off is always run: the others are measured against it)")
    ap.add_argument("--baseline-tree", type=pathlib.Path, help="another checkout: its engine way runs beside this one's")
    ap.add_argument("--out", type=pathlib.Path, default=REPO / "bench" / "results" / "risk_view_latency.txt")
    args = ap.parse_args()
    ways = {w: v for w, v in WAYS.items() if w == "off" or w in args.ways}
    if args.baseline_tree:
        tree = args.baseline_tree.resolve()
        if not (tree / "daemon" / "ponderd").is_dir():
            sys.exit(f"--baseline-tree {tree}: no daemon/ponderd there; give a checkout of this repository")
        ways[f"engine at {tree.name}"] = {"PYTHONPATH": str(tree / "daemon")}
    model = artifact.load(artifact.SHIPPED_DIR)
    texts = [e.text for e in corpus.load(corpus.heldout_files())]
    random.Random(0).shuffle(texts)
    texts = texts[: args.queries]
    routed = {t for t in texts if model.routed(t)}
    times: dict[str, list[float]] = {w: [] for w in ways}
    routed_times: dict[str, list[float]] = {w: [] for w in ways}
    first: dict[str, list[float]] = {w: [] for w in ways}
    routed_first: dict[str, list[float]] = {w: [] for w in ways}
    load_rate: dict[str, list[float]] = {w: [] for w in ways}
    load_before = os.getloadavg()[0]
    asked = texts * args.rounds  # the order every way's times are in
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        daemons = {}
        for k, (way, extra) in enumerate(ways.items()):
            env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_")}
            env.update(PONDER_STATE_DIR=f"{tmp}/{k}/state", PONDER_METRICS_LISTEN="", **extra)
            proc = DaemonProcess(env, "--policy-file", str(REPO / "policies" / "default.toml"))
            stack.callback(proc.stop)
            daemons[way] = proc
        for way, proc in daemons.items():
            address = proc.wait_ready(300).splitlines()[0]
            token = (proc.state_dir / "local.token").read_text().strip()
            daemons[way] = (address, token)
        for r in range(args.rounds):
            for way, (address, token) in daemons.items():
                with PonderClient(address, token, timeout=600) as c:
                    c.quote(texts[0])  # the first embedding loads its context: not timed
                    with Load(address, token, args.load) as load:
                        started, before = time.perf_counter(), load.tokens
                        # Quotes, then asks, in the same order: by the asks' turn the engine keeps the
                        # last VIEW_KEPT (engine/llama.py) quotes' vectors; the earlier asks decode theirs again.
                        for t in texts:
                            s = time.perf_counter()
                            c.quote(t)
                            took = time.perf_counter() - s
                            times[way].append(took)
                            if t in routed:
                                routed_times[way].append(took)
                        for t in texts:
                            s = time.perf_counter()
                            for event in c.ask_stream(t, level="direct", seed=r):
                                if event.HasField("delta"):
                                    break  # closing the stream cancels the rest
                            took = time.perf_counter() - s
                            first[way].append(took)
                            if t in routed:
                                routed_first[way].append(took)
                        load_rate[way].append((load.tokens - before) / (time.perf_counter() - started))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    lines = [
        f"latency while the daemon generates ({args.load} streaming asks in flight), "
        f"{len(texts)} held-out queries x {args.rounds} rounds, {len(routed)} of them embedded by the cascade; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; cores {os.cpu_count()}",
    ]
    for what, all_, only in (("ask: time to first token", first, routed_first), ("quote", times, routed_times)):
        lines.append(what)
        lines.append(f"{'way (all queries)':<22} {'n':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}")
        for way in ways:
            lines.append(summary(way, all_[way], None if way == "off" else all_["off"]))
        lines.append(f"{'way (embedded only)':<22}")
        for way in ways:
            lines.append(summary(way, only[way], None if way == "off" else only["off"]))
        # The others do the same work in every way: their difference is the run's noise.
        rest = {w: [x for x, t in zip(all_[w], asked) if t not in routed] for w in ways}
        lines.append(f"{'way (not embedded)':<22}")
        for way in ways:
            lines.append(summary(way, rest[way], None if way == "off" else rest["off"]))
        for way in [w for w in ways if w != "off"]:
            for which, xs, base in (("all", all_[way], all_["off"]), ("embedded", only[way], only["off"])):
                paired = sorted(x - y for x, y in zip(xs, base))
                lines.append(f"  {way}: {which} queries, paired (same query and round) added p50 {percentile(paired, 50) * 1e3:+.1f}"
                             f" / p90 {percentile(paired, 90) * 1e3:+.1f} ms")
    lines.append("generation under each (streamed pieces/s while quoting): " + ", ".join(
        f"{w} {sum(v) / len(v):.1f}" for w, v in load_rate.items()))
    picked = [w for w in ways if w in WAYS]
    chosen = "" if len(picked) == len(WAYS) else " --ways " + " ".join(f"'{w}'" for w in picked if w != "off")
    if args.baseline_tree:
        chosen += f" --baseline-tree {args.baseline_tree}"
    default_out = REPO / "bench" / "results" / "risk_view_latency.txt"
    here = args.out.resolve()
    out = "" if here == default_out else f" --out {here.relative_to(REPO) if here.is_relative_to(REPO) else here}"
    lines.append(f"command: python bench/risk_view_latency.py --queries {args.queries} --rounds {args.rounds} --load {args.load}{chosen}{out}")
    report(lines, args.out)


if __name__ == "__main__":
    main()
