"""`ponder risk score|train|eval|explain` (local files) and `ponder risk retrain` (a running daemon).

They import the engine and scikit-learn only when run, so the CLI starts fast.
"""


from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from typing import Any, Callable

from ponder import cli_json
from ponder.cli_connect import tls_options
from ponder.cli_format import dump_json
from ponder.client import AdminClient


def _risk_model(args: argparse.Namespace) -> Any:
    from ponderd.risk import ClassifierHolder, artifact, model_dir_for
    from ponderd.settings import default_state_dir

    model_dir = pathlib.Path(args.model_dir) if args.model_dir else None
    directory = model_dir_for(default_state_dir() / "risk", model_dir)
    if artifact.read_manifest(directory).get("hyper", {}).get("embedding"):
        # A model with the embedding view: score through the embedding cache.
        return artifact.load(directory, _embedder())
    return ClassifierHolder(default_state_dir(), model_dir).current()


_EMBEDDER: list[Any] = []


def _embedder() -> Any:
    """The cached embedder for the second view (ponderd/risk/embed.py), made once; saved at exit."""
    if not _EMBEDDER:
        import atexit

        from ponderd.risk import embed

        _EMBEDDER.append(embed.cached())
        atexit.register(_EMBEDDER[0].save)
    return _EMBEDDER[0]


def _score_dict(score: Any, explain: bool = False) -> dict[str, Any]:
    out = {
        "severity": score.severity,
        "needs_reasoning": score.needs_reasoning,
        "severity_probs": {k: round(v, 6) for k, v in score.severity_probs.items()},
        "needs_reasoning_prob": round(score.needs_reasoning_prob, 6),
        "model_version": score.model_version,
    }
    if explain or score.explanation:
        out["explanation"] = [
            {"axis": c.axis, "feature": c.feature, "weight": round(c.weight, 6)} for c in score.explanation
        ]
    return out


def risk_score(args: argparse.Namespace) -> int:
    model = _risk_model(args)
    failed = 0
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text = row["text"]
            if not isinstance(text, str):
                raise TypeError("text must be a string")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            failed += 1
            print(cli_json.dumps({"line": n, "error": f"expected a JSON object with a 'text' string ({exc})"}, indent=None))
            continue
        print(cli_json.dumps(row | _score_dict(model.score(text, explain=args.explain)), indent=None))
    return 1 if failed else 0


def _print_report(report: dict[str, Any], what: str) -> None:
    s = report["summary"]
    print(f"{what}: {int(s['examples'])} examples")
    print("severity      precision  recall  f1      support")
    for label, r in report["severity"].items():
        print(f"  {label:<10}  {r['precision']:.3f}      {r['recall']:.3f}   {r['f1']:.3f}   {int(r['support'])}")
    print(f"  macro-F1 {s['severity_macro_f1']:.3f}   accuracy {s['severity_accuracy']:.3f}   ECE {s['severity_ece']:.3f}")
    labels = report["confusion"]["labels"]
    print("  confusion (rows true, columns predicted): " + " ".join(f"{x:>6}" for x in labels))
    for label, row in zip(labels, report["confusion"]["matrix"]):
        print(f"    {label:<8}" + " ".join(f"{x:>6}" for x in row))
    nr = report["needs_reasoning"]["true"]
    print(f"needs_reasoning  precision {nr['precision']:.3f}  recall {nr['recall']:.3f}  F1 {nr['f1']:.3f}  ECE {s['reasoning_ece']:.3f}")


def risk_train(args: argparse.Namespace) -> int:
    """Train; with no --output, install the model as current only if it passes the retrain gate (or --force)."""
    from ponderd.risk import ClassifierHolder, artifact, corpus
    from ponderd.risk.retrain import gate_against
    from ponderd.risk.train import Hyper, train
    from ponderd.settings import default_state_dir

    with _progress(args) as step:
        examples = corpus.load(corpus.training_files())
        heldout = corpus.load(corpus.heldout_files())
        embedder = _embedder() if args.embedding else None
        step(f"training on {len(examples)} examples")
        report = train(examples, heldout, args.recall_target, Hyper(embedding=args.embedding, cascade=args.cascade),
                       select=args.select, embedder=embedder)
        if args.cv:
            from ponderd.risk.cv import GATE_FOLDS, KINDS, cross_validate
            from ponderd.risk.retrain import hyper_from

            # What the retrain gate compares a candidate with (see risk/retrain.py).
            hyper = hyper_from(report.model.manifest)
            cv = {}
            for kind in KINDS:
                step(f"cross-validating by {kind} ({GATE_FOLDS} folds)")
                cv[kind] = cross_validate(examples, kind, args.recall_target, hyper, GATE_FOLDS, embedder=embedder).to_json()
            report.model.manifest["cv"] = cv
        holder = ClassifierHolder(default_state_dir(), None)
        output = pathlib.Path(args.output) if args.output else holder.state_dir / report.model.version
        step(f"writing {output}")
        artifact.save(report.model, output)
        current, verdict = False, "written only (--output): the daemon's current model is unchanged"
        if not args.output:
            step("gating against the current model")
            passed, reason = gate_against(report, holder.current(), heldout)
            if passed or args.force:
                holder.install(output)
                current = True
                verdict = f"installed as current: {reason}" if passed else f"installed as current with --force although: {reason}"
            else:
                verdict = f"not made current: {reason}; the daemon keeps {holder.current().version} (--force installs anyway)"
    if args.json:
        dump_json({"version": report.model.version, "output": str(output), "current": current, "verdict": verdict,
                   "heldout": report.heldout, "selection": report.selection,
                   "thresholds": report.model.manifest["thresholds"], "seconds": report.seconds})
        return 0
    for row in report.selection:
        print(f"cv  C={row['C']:<5g} severity macro-F1 {row['severity_macro_f1']:.3f}  needs_reasoning F1 {row['reasoning_f1']:.3f}")
    m = report.model.manifest
    print(f"trained {m['version']} on {m['examples']} examples in {report.seconds:.1f}s; wrote {output}")
    print(f"thresholds: high >= {m['thresholds']['high']:.3f} (recall target {args.recall_target}), "
          f"needs_reasoning >= {m['thresholds']['reasoning']:.3f}")
    _print_report(report.heldout, "held-out files")
    for kind, cv in m.get("cv", {}).items():
        c = cv["summary"]
        print(f"cv {kind}: {cv['folds']} folds over {cv['groups']} groups: macro-F1 {c['severity_macro_f1']:.3f}  "
              f"high recall {c['high_recall']:.3f}  needs_reasoning F1 {c['reasoning_f1']:.3f}  ({cv['seconds']:.0f}s)")
    print(f"{m['version']}: {verdict}")
    return 0


def _progress(args: argparse.Namespace) -> Any:
    """A spinner with the current step and elapsed time on stderr (a TTY, not --json); a no-op otherwise."""
    import contextlib

    if args.json or not sys.stderr.isatty():
        return contextlib.nullcontext(lambda text: None)
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    @contextlib.contextmanager
    def bar() -> Any:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("starting", total=None)
            yield lambda text: progress.update(task, description=text)

    return bar()


def risk_eval(args: argparse.Namespace) -> int:
    from ponderd.risk import corpus
    from ponderd.risk.train import evaluate

    if args.cv:
        return _risk_cv(args)
    if not args.files:
        print("ponder: give labeled files to evaluate, or --cv domain|tag|writer", file=sys.stderr)
        return 2
    try:
        examples = [ex for f in args.files for ex in corpus.read_jsonl(pathlib.Path(f))]
    except (OSError, ValueError) as exc:
        print(f"ponder: {exc}", file=sys.stderr)
        return 1
    model = _risk_model(args)
    report = evaluate(model, examples)
    if args.json:
        dump_json(report | {"model_version": model.version})
    else:
        print(f"model {model.version}")
        _print_report(report, ", ".join(args.files) if len(args.files) < 4 else f"{len(args.files)} files")
    return 0


def _risk_cv(args: argparse.Namespace) -> int:
    """Grouped cross-validation of the model's training recipe (its hyper-parameters) on the corpus."""
    from ponderd.risk import corpus
    from ponderd.risk.cv import cross_validate
    from ponderd.risk.retrain import hyper_from

    if args.files:
        print("ponder: --cv trains on the repository's corpus; it takes no files", file=sys.stderr)
        return 2
    model = _risk_model(args)
    target = float(model.manifest.get("recall_target", 0.95))
    hyper = hyper_from(model.manifest)
    if args.embedding is not None:
        hyper = dataclasses.replace(hyper, embedding=args.embedding)
    if args.cascade is not None:
        hyper = dataclasses.replace(hyper, cascade=args.cascade)
    embedder = _embedder() if hyper.embedding else None
    cv = cross_validate(corpus.load(corpus.training_files()), args.cv, target, hyper, args.folds, embedder=embedder)
    if args.json:
        dump_json(cv.to_json() | {"report": cv.report, "model_version": model.version})
        return 0
    folds = "one fold per group" if cv.folds == cv.groups else f"{cv.folds} folds"
    print(f"recipe of model {model.version}, {args.cv} groups held out ({cv.groups} groups, {folds}, {cv.seconds:.0f}s)")
    _print_report(cv.report, "pooled over folds")
    print(f"by {args.cv} (examples, macro-F1, high support, high recall):")
    for g, r in sorted(cv.per_group.items(), key=lambda kv: kv[1]["high_recall"] if kv[1]["high_support"] else 2):
        recall = f"{r['high_recall']:.3f}" if r["high_support"] else "-"
        print(f"  {g:<40} {int(r['examples']):>5}  {r['severity_macro_f1']:.3f}  {int(r['high_support']):>4}  {recall}")
    return 0


def risk_explain(args: argparse.Namespace) -> int:
    score = _risk_model(args).score(args.text, explain=True)
    if args.json:
        dump_json(_score_dict(score, explain=True))
        return 0
    d = _score_dict(score, explain=True)
    print(f"severity={d['severity']} {d['severity_probs']}  needs_reasoning={d['needs_reasoning']} "
          f"({d['needs_reasoning_prob']:.2f})  model {d['model_version']}")
    for c in d.get("explanation", []):
        print(f"  {c['axis']:<16} {c['weight']:+.3f}  {c['feature']}")
    return 0


def risk_retrain(args: argparse.Namespace) -> int:
    with AdminClient(args.address, args.token, timeout=args.timeout, **tls_options(args)) as admin, _progress(args) as step:
        # The daemon reports nothing until the job ends: the spinner shows it is still running, and for how long.
        step("retraining on the daemon: held-out gate, then grouped cross-validation")
        summary = admin.run_job("retrain_risk")
    if args.json:
        dump_json({"job": "retrain_risk", "summary": summary})
    else:
        print(summary)
    return 0


def add_commands(sub: Any, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    risk = sub.add_parser("risk", help="score, train, evaluate and explain the risk classifier",
                          description="The risk classifier, run locally (retrain runs on the daemon).")
    r = risk.add_subparsers(dest="action", metavar="ACTION", required=True)

    def with_model(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model-dir", help="model directory (default: the one the daemon would load)")

    p = r.add_parser("score", help="score JSON lines from stdin", description='Read {"text": ...} JSON lines on stdin; write each with its assessment.')
    p.add_argument("--explain", action="store_true", help="add the top contributing features")
    with_model(p)
    p.set_defaults(handler=risk_score)

    p = r.add_parser("train", help="train on the corpus and report held-out metrics", description="Train on the repository's corpus; report held-out metrics; write the artifact.")
    p.add_argument("--output", help="model directory to write (default: a new version in the state dir, made current if it passes the retrain gate)")
    p.add_argument("--select", action="store_true", help="choose regularisation by cross-validation (slower)")
    p.add_argument("--recall-target", type=float, default=0.95, help="high-severity recall to tune for (default 0.95)")
    p.add_argument("--cv", action="store_true", help="also run domain and writer grouped CV (5 folds each) and record it in the manifest for the retrain gate")
    p.add_argument("--embedding", type=float, default=0.0, metavar="WEIGHT", help="add the second view, the served model's hidden state at the query prompt's last token, at this weight (slow, see docs/risk.md; default 0 = n-grams only)")
    p.add_argument("--cascade", type=float, default=0.0, metavar="CONFIDENCE", help="with --embedding: a cascade that embeds only the queries the n-gram model leaves undecided (P(high) from a third of its threshold to 0.9, or top probability under this; docs/risk.md); default 0 = embed every query")
    p.add_argument("--force", action="store_true", help="make the new model current even if it fails the retrain gate")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=risk_train)

    p = r.add_parser("eval", help="evaluate the model on labeled JSON lines files, or its recipe by grouped CV", description="Per-class precision/recall, macro-F1, confusion matrix and calibration on labeled files, taken together; or, with --cv, the training recipe cross-validated with whole domains or writers held out.")
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--cv", choices=("domain", "tag", "writer"), help="hold out whole high-stakes domains (domain), every domain tag including everyday ones (tag), or writers, instead of reading files")
    p.add_argument("--folds", type=int, default=5, help="with --cv: deal groups into this many folds; 0 = one fold per group (default 5)")
    p.add_argument("--embedding", type=float, default=None, metavar="WEIGHT", help="with --cv: the recipe with the second view (the served model's hidden state at the query prompt's last token) at this weight; 0 = n-grams only (default: the model's own recipe)")
    p.add_argument("--cascade", type=float, default=None, metavar="CONFIDENCE", help="with --cv and the second view: the cascade that embeds only queries the n-gram model leaves undecided, top probability under this; 0 = every query (default: the model's own recipe)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    with_model(p)
    p.set_defaults(handler=risk_eval)

    p = r.add_parser("explain", help="show a text's assessment and its top features", description="Show a text's assessment and the features behind it.")
    p.add_argument("text")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    with_model(p)
    p.set_defaults(handler=risk_explain)

    p = r.add_parser("retrain", help="run the daemon's retraining job now", description="Run the daemon's retrain_risk job now (needs an admin key).")
    connection(p)
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=risk_retrain)
