"""The second view on the whole corpus: n-grams, n-grams + embedding, and the cascade between them, same folds.

    python bench/risk_cascade.py run [--weights 1 0.5] [--recipes ngrams emb1] [--out ~/.cache/ponder/risk-cascade.npz]
    python bench/risk_cascade.py report [--out ...] [--confidence 0.6 0.7 0.8 0.9]
    python bench/risk_cascade.py ship --confidence C --output daemon/ponderd/risk/data/model

`run` trains, on each split, the n-gram recipe (the shipped hyper-parameters,
Hyper.embedding = 0) and the same recipe with the embedding view at each
weight, on exactly the same queries: the full training files (scored on the
held-out files and on the independent writers' sets, bench/data), and the 5
leave-one-domain-out and 5 leave-one-writer-out folds of risk/cv.py (the
retrain gate's folds). It keeps every scored query's probabilities and
verdicts from every model in one .npz (no pickle), so the cascade rules can be
compared without retraining. It needs every text's vector in the embedding
cache (`python bench/risk_embedding.py fill`).

`report` prints severity macro-F1 / high recall (high precision) per split for
each recipe and for cascades: `served` is risk/cascade.py's rule (P(high) in
the undecided band, or top probability under C); `any` embeds every query
whose n-gram top probability is under C, `below-high` only those below high.
Elsewhere the n-gram verdict stands; the share of queries that pay for an
embedding is reported beside each.

`ship` writes the cascade of the two full-split models at one confidence,
with the grouped CV figures of that cascade computed from the run's folds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import table
from ponderd.risk import artifact, corpus, embed
from ponderd.risk.cascade import routes
from ponderd.risk.cv import GATE_FOLDS, assign_folds, groups_of
from ponderd.risk.model import SEVERITIES
from ponderd.risk.retrain import hyper_from
from ponderd.risk.train import Scored, predict, summarise, train

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = embed.default_cache_path().parent / "risk-cascade.npz"
DEFAULT_MODELS = embed.default_cache_path().parent / "risk-cascade-models"


def writer_files() -> list[pathlib.Path]:
    return sorted((REPO / "bench" / "data").glob("*_writer.jsonl"))


def splits(training: list, heldout: list, writers: list):
    """(split name, train examples, {test set name: examples}) for every training the comparison needs."""
    yield "full", training, {"heldout": heldout, "writers": writers}
    for kind in ("domain", "writer"):
        groups = groups_of(training, kind)
        fold_of = assign_folds(groups, GATE_FOLDS)
        for f in range(max(fold_of.values()) + 1):
            test = {i for i, g in enumerate(groups) if fold_of[g] == f}
            yield (f"{kind}-{f}", [e for i, e in enumerate(training) if i not in test],
                   {kind: [training[i] for i in sorted(test)]})


def run(args: argparse.Namespace) -> None:
    # The shipped recipe's hyper-parameters (its manifest alone: the view it was trained on may be another's).
    base = hyper_from(artifact.read_manifest(artifact.SHIPPED_DIR))
    # Single models (cascade 0): the cascades are composed from them by `report` and `ship`.
    recipes = {"ngrams": dataclasses.replace(base, embedding=0.0, cascade=0.0)}
    recipes |= {f"emb{w:g}": dataclasses.replace(base, embedding=w, cascade=0.0) for w in args.weights}
    recipes = {k: v for k, v in recipes.items() if not args.recipes or k in args.recipes}
    # The n-gram recipe needs no vectors (and leaves the cache file alone).
    cache = embed.cached() if any(h.embedding for h in recipes.values()) else None
    training = corpus.load(corpus.training_files())
    heldout = corpus.load(corpus.heldout_files())
    writers = corpus.load(writer_files())
    if args.cached_only:  # a smoke test on whatever the cache holds
        have = embed.cached()
        training, heldout, writers = ([e for e in xs if not have.missing([e.text])] for xs in (training, heldout, writers))
        if args.limit:  # every k-th, so every writer and domain keeps some
            training, heldout, writers = (xs[:: max(1, len(xs) // args.limit)] for xs in (training, heldout, writers))
    missing = cache.missing([e.text for e in training + heldout + writers]) if cache else []
    if missing and not args.allow_embedding:
        sys.exit(f"{len(missing)} texts have no cached vector: run `python bench/risk_embedding.py fill` first")
    # Recipes run apart (--recipes) add to one file: the splits come in the same order.
    kept: dict[str, np.ndarray] = {}
    log: list[dict] = []
    if args.out.is_file():
        with np.load(args.out, allow_pickle=False) as z:
            kept = {k: z[k] for k in z.files if k != "log" and (k.count("/") == 1 or k.split("/")[1] not in recipes)}
            log = [x for x in json.loads(str(z["log"])) if x["recipe"] not in recipes]
    out: dict[str, list] = {}
    for split, train_set, tests in splits(training, heldout, writers):
        if args.only and not any(split.startswith(o) for o in args.only):
            continue
        for n, (name, h) in enumerate(recipes.items()):
            started = time.monotonic()
            model = train(train_set, [], 0.95, h, version=None if split == "full" else f"{split}-{name}",
                          embedder=cache if h.embedding else None).model
            seconds = time.monotonic() - started
            if split == "full":  # what `ship` makes the cascade of
                artifact.save(model, args.models / name)
            for test_name, examples in tests.items():
                scored = predict(model, examples)
                key = f"{test_name}/{name}"
                out.setdefault(f"{key}/probs", []).append(np.vstack([s.probs for s in scored]))
                out.setdefault(f"{key}/p_nr", []).append(np.array([s.p_nr for s in scored]))
                out.setdefault(f"{key}/severity", []).append(np.array([SEVERITIES.index(s.severity) for s in scored]))
                out.setdefault(f"{key}/reasoning", []).append(np.array([s.needs_reasoning for s in scored]))
                out.setdefault(f"{key}/high_threshold", []).append(np.full(len(scored), model.thresholds.high))
                if n == 0:
                    out.setdefault(f"{test_name}/truth", []).append(np.array([SEVERITIES.index(e.severity) for e in examples]))
                    out.setdefault(f"{test_name}/truth_nr", []).append(np.array([e.needs_reasoning for e in examples]))
                    out.setdefault(f"{test_name}/source", []).append(np.array([e.source for e in examples]))
            log.append({"split": split, "recipe": name, "train": len(train_set), "seconds": round(seconds, 1)})
            print(json.dumps(log[-1]), flush=True)
            arrays = kept | {k: np.concatenate(v) for k, v in out.items()}
            np.savez(args.out, log=np.array(json.dumps(log)), **arrays)
    if missing and cache is not None:
        cache.save()


def _scored(truth: np.ndarray, truth_nr: np.ndarray, probs: np.ndarray, p_nr: np.ndarray, sev: np.ndarray,
            nr: np.ndarray) -> list[Scored]:
    return [Scored(corpus.Example("-", SEVERITIES[t], bool(tn)), p, float(q), SEVERITIES[s], bool(r))
            for t, tn, p, q, s, r in zip(truth, truth_nr, probs, p_nr, sev, nr)]


def load_runs(paths: list[pathlib.Path]) -> dict[str, np.ndarray]:
    """The arrays of one or more `run` files (e.g. one per recipe or per split), as one."""
    z: dict[str, np.ndarray] = {}
    log: list[dict] = []
    for path in paths:
        with np.load(path, allow_pickle=False) as f:
            for k in f.files:
                if k == "log":
                    log += json.loads(str(f[k]))
                elif k in z:
                    # A run still going has fewer folds: the longer must extend the shorter.
                    short, long = sorted((z[k], f[k]), key=len)
                    if not np.array_equal(long[: len(short)], short):
                        raise ValueError(f"{path}: {k} differs from an earlier file's; the runs do not line up")
                    z[k] = long
                else:
                    z[k] = f[k]
    z["log"] = np.array(json.dumps(log))
    return z


def report(args: argparse.Namespace) -> None:
    z = load_runs(args.out)
    tests = [t for t in ("heldout", "writers", "domain", "writer") if f"{t}/truth" in z]
    recipes = sorted({k.split("/")[1] for k in z if k.count("/") == 2}, key=lambda r: (r != "ngrams", r))
    rows = []
    fields = ("probs", "p_nr", "severity", "reasoning")
    # Folds still running: compare recipes on the queries every one of them has scored.
    n = {t: min(len(v) for k, v in z.items() if k.startswith(f"{t}/")) for t in tests}
    print("queries scored: " + ", ".join(f"{t} {n[t]}" for t in tests))

    def get(t: str, r: str) -> dict[str, np.ndarray] | None:
        return {k: z[f"{t}/{r}/{k}"][: n[t]] for k in fields} if f"{t}/{r}/probs" in z else None

    def cell(test: str, probs, p_nr, sev, nr) -> str:
        s = summarise(_scored(z[f"{test}/truth"][: n[test]], z[f"{test}/truth_nr"][: n[test]], probs, p_nr, sev, nr))["summary"]
        return f"{s['severity_macro_f1']:.3f} / {s['high_recall']:.3f} ({s['high_precision']:.3f}) {s['reasoning_f1']:.3f}"

    for r in recipes:
        rows.append((r, *[cell(t, *get(t, r).values()) if get(t, r) else "-" for t in tests]))
    for r in [r for r in recipes if r != "ngrams"]:
        for rule, c in [(rule, c) for rule in ("served", "below-high", "any") for c in args.confidence]:
            cells, shares = [], []
            for t in tests:
                g, e = get(t, "ngrams"), get(t, r)
                if g is None or e is None:
                    cells.append("-")
                    shares.append("-")
                    continue
                ask = g["probs"].max(axis=1) < c
                if rule == "served":  # what risk/cascade.py serves
                    t_high = z[f"{t}/ngrams/high_threshold"][: n[t]]
                    ask = np.array([routes(p, th, c) for p, th in zip(g["probs"], t_high)])
                elif rule == "below-high":
                    ask &= g["severity"] != 2
                pick = {k: np.where(ask if g[k].ndim == 1 else ask[:, None], e[k], g[k]) for k in g}
                cells.append(cell(t, pick["probs"], pick["p_nr"], pick["severity"], pick["reasoning"]))
                shares.append(f"{t} {ask.mean():.1%}")
            rows.append((f"cascade {r} {rule} top<{c:g}", *cells))
            rows.append(("  embedded", *shares))
    print("severity macro-F1 / high recall (high precision) needs_reasoning F1")
    print(table(rows, ["recipe", *tests]))
    log = json.loads(str(z["log"]))
    for r in recipes:
        print(f"{r}: {sum(x['seconds'] for x in log if x['recipe'] == r):.0f} s training over {sum(x['recipe'] == r for x in log)} trainings")


def ship(args: argparse.Namespace) -> None:
    """The cascade of the full-split models at one confidence, its grouped CV taken from the run's folds.

    The figures are the ones `ponder risk train --embedding W --cascade C --cv`
    would compute: the same recipe on the same folds (risk/cv.py) gives the
    same two models per fold; only the routing depends on C.
    """
    from ponderd.risk.cv import pooled
    from ponderd.risk.train import compose_cascade

    cache = embed.cached()
    z = load_runs(args.out)
    log = json.loads(str(z["log"]))
    first = artifact.load(args.models / "ngrams")
    second = artifact.load(args.models / args.recipe, cache)
    training = corpus.load(corpus.training_files())
    report = compose_cascade(first, second, args.confidence, corpus.load(corpus.heldout_files()))
    model = report.model
    by_source = {e.source: e for e in training}
    cv = {}
    for kind in ("domain", "writer"):
        groups = dict(zip((e.source for e in training), groups_of(training, kind)))
        g = {k: z[f"{kind}/ngrams/{k}"] for k in ("probs", "p_nr", "severity", "reasoning", "high_threshold")}
        e = {k: z[f"{kind}/{args.recipe}/{k}"] for k in ("probs", "p_nr", "severity", "reasoning")}
        scored, scored_groups = [], []
        for i, source in enumerate(z[f"{kind}/source"]):
            pick = e if routes(g["probs"][i], float(g["high_threshold"][i]), args.confidence) else g
            scored.append(Scored(by_source[str(source)], pick["probs"][i], float(pick["p_nr"][i]),
                                 SEVERITIES[pick["severity"][i]], bool(pick["reasoning"][i])))
            scored_groups.append(groups[str(source)])
        seconds = sum(x["seconds"] for x in log if x["split"].startswith(kind) and x["recipe"] in ("ngrams", args.recipe))
        cv[kind] = pooled(kind, GATE_FOLDS, len(set(groups.values())), scored, scored_groups, seconds).to_json()
        print(kind, json.dumps(cv[kind]["summary"]))
    model.manifest["cv"] = cv
    artifact.save(model, args.output)
    print(f"{model.version}: held-out {json.dumps(report.heldout['summary'])}, "
          f"{model.manifest['second_view']['heldout_share']:.1%} of held-out queries embedded; wrote {args.output}")
    cache.save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("run")
    p.add_argument("--weights", type=float, nargs="*", default=[1.0])
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    p.add_argument("--only", nargs="*", help="only the splits starting with these (full, domain, writer)")
    p.add_argument("--recipes", nargs="*", help="only these recipes (ngrams, emb1, ...); others already in --out are kept")
    p.add_argument("--allow-embedding", action="store_true", help="embed texts missing from the cache (slow)")
    p.add_argument("--cached-only", action="store_true", help="only queries whose vectors are cached (a sample)")
    p.add_argument("--limit", type=int, default=0, help="with --cached-only: at most this many of each set")
    p.add_argument("--models", type=pathlib.Path, default=DEFAULT_MODELS, help="where the full-split models go")
    p = sub.add_parser("ship")
    p.add_argument("--out", type=pathlib.Path, nargs="+", default=[DEFAULT_OUT], help="run files, read as one")
    p.add_argument("--models", type=pathlib.Path, default=DEFAULT_MODELS)
    p.add_argument("--recipe", default="emb1", help="the second model (a recipe of `run`)")
    p.add_argument("--confidence", type=float, required=True)
    p.add_argument("--output", type=pathlib.Path, required=True)
    p = sub.add_parser("report")
    p.add_argument("--out", type=pathlib.Path, nargs="+", default=[DEFAULT_OUT], help="run files, read as one")
    p.add_argument("--confidence", type=float, nargs="*", default=[0.6, 0.7, 0.8, 0.9])
    args = ap.parse_args()
    {"run": run, "report": report, "ship": ship}[args.what](args)


if __name__ == "__main__":
    main()
