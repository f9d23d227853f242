"""The second view (docs/risk.md, "A second view"): what it costs per query and what it buys, side by side.

    python bench/risk_embedding.py cost [--n 100]
    python bench/risk_embedding.py fill [--jobs N]
    python bench/risk_embedding.py compare [--weight 1.0] [--kinds domain writer] [--limit N]

`cost`: one query at a time, the shipped n-gram scoring path against the
embedding of the same query by the served SmolLM2-135M (llama-cpp-python,
mean pooling, one thread), in milliseconds, with the load average.

`compare`: the n-gram recipe and the n-gram + embedding recipe (Hyper.embedding
= weight) on the *same* queries: grouped CV (leave-one-domain-out and
leave-one-writer-out, 5 folds) and, trained on those training queries, the
held-out files. Only queries whose vectors are already in the embedding cache
take part (ponderd/risk/embed.py; fill it with `ponder risk train --embedding`
or `python bench/risk_embedding.py fill`), so on a host where embedding the
whole corpus is too slow the comparison runs on a uniform random sample of it,
and says how large.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import percentile, table
from ponderd.risk import artifact, corpus, embed
from ponderd.risk.cv import cross_validate
from ponderd.risk.retrain import hyper_from
from ponderd.risk.train import train

REPO = pathlib.Path(__file__).resolve().parent.parent


def cost(args: argparse.Namespace) -> None:
    model = artifact.load(artifact.SHIPPED_DIR)
    texts = [e.text for e in corpus.load(corpus.heldout_files())]
    random.Random(0).shuffle(texts)
    texts = texts[: args.n]
    llama = embed.LlamaEmbedder()
    llama.embed(texts[:3])  # warm up
    rows = []
    for name, fn in (("n-gram scoring path", model.score), ("embedding (SmolLM2-135M, mean)", lambda t: llama.embed([t]))):
        ms = []
        for t in texts:
            start = time.perf_counter_ns()
            fn(t)
            ms.append((time.perf_counter_ns() - start) / 1e6)
        rows.append((name, len(ms), percentile(ms, 50), percentile(ms, 99), max(ms)))
    print(f"per query, {len(texts)} held-out texts, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (ms)")
    print(table(rows, ["path", "n", "p50 ms", "p99 ms", "max ms"]))
    print(f"the embedding costs {rows[1][2] / rows[0][2]:.0f}x the n-gram path at p50")


_WORKER: list = []


def _start_worker() -> None:
    _WORKER.append(embed.LlamaEmbedder())


def _embed_in_worker(texts: list[str]):
    return _WORKER[0].embed(texts)


def fill(args: argparse.Namespace) -> None:
    import multiprocessing

    cache = embed.cached()
    texts = [e.text for p in corpus.training_files() + corpus.heldout_files() + writer_files() for e in corpus.read_jsonl(p)]
    todo = cache.missing(texts)
    random.Random(11).shuffle(todo)  # a uniform sample at every point, for `compare`
    started = time.monotonic()
    chunks = [todo[i : i + 100] for i in range(0, len(todo), 100)]
    # One single-threaded embedder per process (--jobs, one per core); saved
    # every 100 texts, so an interrupted fill resumes where it stopped.
    with multiprocessing.get_context("spawn").Pool(args.jobs, initializer=_start_worker) as pool:
        done = 0
        for chunk, vectors in zip(chunks, pool.imap(_embed_in_worker, chunks)):
            cache.put(chunk, vectors)
            cache.save()
            done += len(chunk)
            print(f"{done}/{len(todo)} {time.monotonic() - started:.0f} s load {os.getloadavg()[0]:.1f}", flush=True)


def writer_files() -> list[pathlib.Path]:
    """The independent writers' sets (bench/data): scored, never trained on."""
    return sorted((REPO / "bench" / "data").glob("*_writer.jsonl"))


def compare(args: argparse.Namespace) -> None:
    cache = embed.cached()
    training = [e for e in corpus.load(corpus.training_files()) if not cache.missing([e.text])]
    heldout = [e for e in corpus.load(corpus.heldout_files()) if not cache.missing([e.text])]
    if args.limit:
        training = training[: args.limit]
    base = hyper_from(artifact.load(artifact.SHIPPED_DIR).manifest)
    recipes = {"n-grams": dataclasses.replace(base, embedding=0.0),
               f"n-grams + embedding x{args.weight:g}": dataclasses.replace(base, embedding=args.weight)}
    if args.skip_ngrams:
        del recipes["n-grams"]
    total = len(corpus.load(corpus.training_files()))
    print(f"{len(training)} of {total} training queries and {len(heldout)} held-out queries have cached vectors")
    rows = []
    for name, h in recipes.items():
        started = time.monotonic()
        cells: list[str] = []
        report = train(training, heldout, 0.95, h, embedder=cache).heldout["summary"]
        cells.append(f"{report['severity_macro_f1']:.3f} / {report['high_recall']:.3f}")
        for kind in args.kinds:
            s = cross_validate(training, kind, 0.95, h, 5, embedder=cache).summary
            cells.append(f"{s['severity_macro_f1']:.3f} / {s['high_recall']:.3f}")
        rows.append((name, *cells, f"{time.monotonic() - started:.0f}"))
        print(rows[-1], flush=True)
    print("severity macro-F1 / high recall")
    print(table(rows, ["recipe", "held-out", *[f"cv {k}" for k in args.kinds], "seconds"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("cost")
    p.add_argument("--n", type=int, default=100)
    p = sub.add_parser("fill")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="embedding processes (default: one per core)")
    p = sub.add_parser("compare")
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--kinds", nargs="*", default=["domain", "writer"])
    p.add_argument("--limit", type=int, default=0, help="at most this many training queries")
    p.add_argument("--skip-ngrams", action="store_true", help="run only the recipe with the embedding")
    args = ap.parse_args()
    {"cost": cost, "fill": fill, "compare": compare}[args.what](args)


if __name__ == "__main__":
    main()
