"""`ponder calibrate DATA.jsonl`: ask a running daemon every item at every level, check the answers, write the profile.

Each DATA line is `{"id": "q1", "text": "...", "check": {...}, "severity": "high", "needs_reasoning": true}`
(severity and needs_reasoning optional; see checks.py for checkers). For each item and level the
command calls Ask with the `level` hint and a seed fixed per item, and checks the voted answer here,
on the client side: the daemon never sees the checker. One JSON line per item × level goes to
OUT.results.jsonl as it finishes, so an interrupted run resumes where it stopped; the profile
(profile.py), a table and an accuracy-versus-cost plot are written from the whole file at the end.
"""

from __future__ import annotations

import argparse
import collections
import difflib
import hashlib
import json
import math
import pathlib
import statistics
import sys
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Protocol

from ponderd.checks import Check, CheckError, parse_check
from ponderd.planning.profile import LevelProfile, Profile, slice_key, wilson

SEVERITY_NAMES = {1: "low", 2: "medium", 3: "high"}
# `group` (optional, not used here) ties framings of one underlying question together for benchmarks
# that split calibration from evaluation by question (bench/framed.py).
_ITEM_KEYS = ("id", "text", "check", "severity", "needs_reasoning", "group")


class CalibrateError(ValueError):
    """Something the user must change before calibrating; the message says what."""


class Asker(Protocol):
    """The daemon as calibrate uses it (ponder.client.PonderClient is one)."""

    def ask(self, prompt: str, *, seed: int = ..., level: str | None = ..., answer_format: Any = ...) -> Any: ...

    def quote(self, prompt: str, *, level: str | None = ..., answer_format: Any = ...) -> Any: ...


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    check: Check
    severity: str | None
    needs_reasoning: bool | None


def load_dataset(path: pathlib.Path) -> tuple[list[Item], str]:
    """The items and the file's SHA-256; CalibrateError names file:line and what to change."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CalibrateError(f"{path}: cannot read ({exc.strerror})") from None
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = _item(line)
        except CheckError as exc:
            raise CalibrateError(f"{path}:{number}: check: {exc}") from None
        except ValueError as exc:
            raise CalibrateError(f"{path}:{number}: {exc}") from None
        if item.id in seen:
            raise CalibrateError(f"{path}:{number}: id {item.id!r} is already used on line {seen[item.id]}; ids must be unique")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise CalibrateError(f"{path}: no items; write one JSON object per line with id, text and check")
    return items, hashlib.sha256(raw).hexdigest()


def _item(line: str) -> Item:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise ValueError('each line must be a JSON object: {"id": ..., "text": ..., "check": {...}}')
    for key in row:
        if key not in _ITEM_KEYS:
            near = difflib.get_close_matches(key, _ITEM_KEYS, n=1)
            raise ValueError(f"unknown field {key!r}" + (f" (did you mean {near[0]!r}?)" if near else f" (allowed: {', '.join(_ITEM_KEYS)})"))
    for key in ("id", "text", "check"):
        if key not in row:
            raise ValueError(f"missing field {key!r}")
    if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool) or str(row["id"]) == "":
        raise ValueError(f"id must be a non-empty string, not {row['id']!r}")
    if not isinstance(row["text"], str) or not row["text"].strip():
        raise ValueError("text must be a non-empty string: the question to ask")
    severity = row.get("severity")
    if severity is not None and severity not in SEVERITY_NAMES.values():
        raise ValueError(f"severity must be low, medium or high, not {severity!r}")
    group = row.get("group", "")
    if isinstance(group, bool) or not isinstance(group, (str, int)):
        raise ValueError(f"group must be a string or a number naming the underlying question, not {group!r}")
    nr = row.get("needs_reasoning")
    if nr is not None and not isinstance(nr, bool):
        raise ValueError(f"needs_reasoning must be true or false, not {nr!r}")
    return Item(str(row["id"]), row["text"], parse_check(row["check"]), severity, nr)


def item_seed(base: int, item_id: str) -> int:
    """A nonzero seed fixed per item (0 would ask the daemon for a random one); the same at every level."""
    digest = hashlib.sha256(f"{base}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:6], "big") or 1


def read_results(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            # A line cut short by a crash mid-write: that pair simply runs again.
            print(f"ponder: {path}:{number}: skipping an unreadable line (it will run again)", file=sys.stderr)
    return rows


def check_resume(rows: list[dict[str, Any]], sha: str, policy_version: str, path: pathlib.Path) -> None:
    """Refuse to mix results from another dataset or policy into one profile."""
    for row in rows[:1]:
        if row.get("dataset_sha256") != sha:
            raise CalibrateError(
                f"{path} holds results for another version of the dataset; pass --restart to start over, or --out elsewhere"
            )
        if row.get("policy_version") != policy_version:
            raise CalibrateError(
                f"{path} holds results under policy {row.get('policy_version')!r} but the daemon runs {policy_version!r}; "
                "pass --restart to start over, or --out elsewhere"
            )


def result_row(item: Item, level: str, r: Any, sha: str, answer_checked: str) -> dict[str, Any]:
    u = r.usage
    severity = item.severity or SEVERITY_NAMES.get(r.assessment.severity, "low")
    nr = item.needs_reasoning if item.needs_reasoning is not None else bool(r.assessment.needs_reasoning)
    return {
        "id": item.id, "level": level, "model": _model(r), "correct": item.check.verify(answer_checked),
        "cost": r.cost,
        "tokens": {"prompt": u.prompt_tokens, "thinking": u.thinking_tokens, "answer": u.answer_tokens,
                   "forced": u.forced_tokens},
        "samples": u.samples_run, "latency_s": round(r.latency_seconds, 4), "answer": r.answer,
        "severity": severity, "needs_reasoning": nr, "request_id": r.request_id,
        "policy_version": r.plan.policy_version, "dataset_sha256": sha,
    }


def _model(r: Any) -> str:
    # The response names its model once the daemon routes between models; until then, "".
    for message in (r.plan, r):
        try:
            value = message.model
        except AttributeError:
            continue
        if isinstance(value, str) and value:
            return value
    return ""


def run_pairs(
    client: Asker,
    pairs: list[tuple[Item, str]],
    *,
    seed: int,
    sha: str,
    out: pathlib.Path,
    concurrency: int = 1,
    format_hint: bool = True,
    done: Callable[[], None] = lambda: None,
) -> int:
    """Ask each (item, level), append its result line to `out` as it finishes; the number run.

    A failed call stops the run (pairs already running finish and are kept) and is raised."""
    lock = threading.Lock()
    stop = threading.Event()
    count = 0

    def one(item: Item, level: str) -> None:
        nonlocal count
        if stop.is_set():
            return
        try:
            r = client.ask(item.text, level=level, seed=item_seed(seed, item.id),
                           answer_format=item.check.answer_format if format_hint else None)
        except BaseException:
            stop.set()
            raise
        row = result_row(item, level, r, sha, r.answer or r.text)
        with lock, out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        done()

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="calibrate") as pool:
        futures = [pool.submit(one, item, level) for item, level in pairs]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            # A failure or Ctrl-C: start nothing new; what is running finishes and is kept.
            stop.set()
            for f in futures:
                f.cancel()
        for f in futures:
            if not f.cancelled() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
    return count


def build_profile(
    rows: Iterable[dict[str, Any]], levels: list[str], policy_version: str, dataset: dict[str, Any], model: Any = None,
) -> Profile:
    by_level: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        by_level[row["level"]].append(row)
    order = [lvl for lvl in levels if lvl in by_level] + sorted(set(by_level) - set(levels))
    return Profile(
        levels={lvl: level_profile(by_level[lvl]) for lvl in order},
        policy_version=policy_version,
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        dataset=dataset,
        model_file=model.file if model is not None else "",
        model_sha256=model.sha256 if model is not None else "",
    )


def served_model(args: argparse.Namespace) -> Any:
    """The daemon's primary model file (--model, else the config on this host), named and digested for the profile."""
    from ponderd.engine.model_file import model_identity
    from ponderd.errors import FailedPrecondition

    if getattr(args, "model", None):
        configured: pathlib.Path | None = pathlib.Path(args.model)
    else:
        from ponderd.settings import SettingsError, load_settings

        try:
            configured = load_settings().model.path
        except SettingsError as exc:
            raise CalibrateError(f"cannot find the daemon's model file ({exc}); pass --model FILE.gguf") from None
    try:
        return model_identity(configured)
    except FailedPrecondition as exc:
        raise CalibrateError(f"{exc}; pass --model with the GGUF file the daemon serves") from None
    except OSError as exc:
        raise CalibrateError(f"cannot read the model file ({exc.strerror}); pass --model FILE.gguf") from None


def level_profile(rows: list[dict[str, Any]]) -> LevelProfile:
    n = len(rows)
    correct = sum(1 for r in rows if r["correct"])
    slices: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for r in rows:
        cell = slices[slice_key(r["severity"], r["needs_reasoning"])]
        cell[0] += 1
        cell[1] += bool(r["correct"])
    models = collections.Counter(r.get("model") or "default" for r in rows)
    latencies = sorted(r["latency_s"] for r in rows)

    def mean(get: Callable[[dict[str, Any]], float]) -> float:
        return sum(get(r) for r in rows) / n

    return LevelProfile(
        model=models.most_common(1)[0][0], n=n, correct=correct, accuracy=correct / n, ci95=wilson(correct, n),
        mean_cost=mean(lambda r: r["cost"]),
        mean_prompt_tokens=mean(lambda r: r["tokens"]["prompt"]),
        mean_thinking_tokens=mean(lambda r: r["tokens"]["thinking"]),
        mean_answer_tokens=mean(lambda r: r["tokens"]["answer"]),
        mean_samples=mean(lambda r: r["samples"]),
        p50_latency_s=statistics.median(latencies), p90_latency_s=_quantile(latencies, 0.9),
        slices={k: (c[0], c[1]) for k, c in slices.items()},
    )


def _quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile of sorted values."""
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def choose_levels(args: argparse.Namespace, client: Any, daemon_version: str) -> list[str]:
    """--levels as given; else every level the token's tenant may use, from the daemon's policy file."""
    if args.levels:
        levels = [x.strip() for x in args.levels.split(",") if x.strip()]
        if not levels:
            raise CalibrateError("--levels: give level names separated by commas, e.g. direct,brief,careful")
        return list(dict.fromkeys(levels))
    from ponderd.errors import PolicyError
    from ponderd.planning.policy_file import load_policy

    if args.policy:
        path = pathlib.Path(args.policy)
    else:
        from ponderd.settings import SettingsError, load_settings

        try:
            path = load_settings().policy_file
        except SettingsError as exc:
            raise CalibrateError(f"cannot find the daemon's policy file ({exc}); pass --policy FILE or --levels") from None
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        raise CalibrateError(f"{exc}; pass --policy with the daemon's policy file, or --levels") from None
    if policy.version != daemon_version:
        raise CalibrateError(
            f"the policy file {path} is version {policy.version!r} but the daemon runs {daemon_version!r}; "
            "pass --policy with the daemon's policy file, or --levels a,b,c"
        )
    rules = policy.rules_for(client.balance().tenant)
    return [lvl.name for lvl in policy.levels[policy.rank(rules.min_level): policy.rank(rules.max_level) + 1]]


def main(args: argparse.Namespace) -> int:
    """The `ponder calibrate` command (registered by ponder/cli_local.py)."""
    from ponder.cli_connect import tls_options
    from ponder.cli_format import dump_json

    # A failed call raises ponder.client.PonderError, which the CLI prints as `ponder: STATUS: message`;
    # the results so far stay in the results file for a rerun.
    from ponder.client import PonderClient
    from ponderd.planning import calibrate_report as report

    try:
        data = pathlib.Path(args.data)
        items, sha = load_dataset(data)
        model = served_model(args)
        out = pathlib.Path(args.out)
        results_path = out.with_suffix(".results.jsonl")
        plot_path = pathlib.Path(args.plot) if args.plot else out.with_suffix(".png")
        with PonderClient(args.address, args.token, timeout=args.timeout, **tls_options(args)) as client:
            # A quote is free: it learns the daemon's policy version and refuses a level or hint
            # the tenant may not use before anything is spent.
            first = items[0]
            fmt: Any = first.check.answer_format if args.format_hint else None
            version = client.quote(first.text, answer_format=fmt).plan.policy_version
            levels = choose_levels(args, client, version)
            for level in levels:
                client.quote(first.text, level=level, answer_format=fmt)
            out.parent.mkdir(parents=True, exist_ok=True)
            if args.restart:
                results_path.unlink(missing_ok=True)
            rows = read_results(results_path)
            check_resume(rows, sha, version, results_path)
            done = {(r["id"], r["level"]) for r in rows}
            pairs = [(item, lvl) for item in items for lvl in levels if (item.id, lvl) not in done]
            if not pairs:
                print(f"ponder: nothing left to run: all {len(items) * len(levels)} item x level results are in {results_path}",
                      file=sys.stderr)
            else:
                with report.progress(len(pairs), quiet=args.quiet) as tick:
                    run_pairs(client, pairs, seed=args.seed, sha=sha, out=results_path,
                              concurrency=args.concurrency, format_hint=args.format_hint, done=tick)
        rows = read_results(results_path)
        profile = build_profile(rows, levels, version, {"path": str(data), "sha256": sha, "items": len(items)}, model)
        profile.save(out)
        report.plot(profile, plot_path)
    except CalibrateError as exc:
        print(f"ponder: {exc}", file=sys.stderr)
        return 1
    if args.json:
        dump_json({"profile": profile.to_json(), "profile_path": str(out), "results": str(results_path),
                   "plot": str(plot_path), "new_requests": len(pairs)})
    else:
        report.table(profile, slices=args.slices)
        print(f"wrote {out}, {results_path} and {plot_path} ({len(pairs)} new request(s))")
    return 0
