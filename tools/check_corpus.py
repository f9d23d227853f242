"""Check the risk corpus files: schema, duplicates, label counts.

Usage: python tools/check_corpus.py [FILE ...]   (default: every corpus file)
       python tools/check_corpus.py --markdown   (docs/risk.md's count and taxonomy tables)
Exits 1 and names file:line for every problem: schema, duplicates (also of the
independent writers' sets in bench/data, which must never leak into the
corpus), domain tags the taxonomy does not list, training files whose writer
the taxonomy does not name. `--markdown` prints the datasheet's tables from
the corpus and the taxonomy; a test checks docs/risk.md holds them as printed.
"""

from __future__ import annotations

import collections
import difflib
import json
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "daemon/ponderd/risk/data/corpus"
TAXONOMY = ROOT / "daemon/ponderd/risk/data/taxonomy.toml"
BENCH = ROOT / "bench/data"
FIELDS = {"text", "severity", "needs_reasoning", "lang", "domain", "hard"}
REQUIRED = FIELDS - {"hard"}


def normalise(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def rows(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def markdown() -> str:
    """The datasheet's tables: queries per file and label, and the taxonomy with its training counts."""
    files = sorted(CORPUS.glob("*.jsonl"))
    taxonomy = tomllib.loads(TAXONOMY.read_text(encoding="utf-8"))
    group_of = {tag: g for g, t in taxonomy["groups"].items() for tag in t["tags"]}
    out = ["| file | queries | low (reasoning/direct) | medium | high | hard cases |",
           "|---|---:|---:|---:|---:|---:|"]
    total: collections.Counter = collections.Counter()
    per_group: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in files:
        c: collections.Counter = collections.Counter()
        for row in rows(path):
            c[(row["severity"], row["needs_reasoning"])] += 1
            c["all"] += 1
            c["hard"] += "hard" in row
            if not path.name.endswith(".heldout.jsonl"):
                per_group[group_of[row["domain"]]][row["severity"]] += 1
        total.update(c)
        cells = [f"{c[(s, True)]} / {c[(s, False)]}" for s in ("low", "medium", "high")]
        out.append(f"| `{path.name}` | {c['all']} | {' | '.join(cells)} | {c['hard']} |")
    cells = [f"{total[(s, True)]} / {total[(s, False)]}" for s in ("low", "medium", "high")]
    out.append(f"| **total** | {total['all']} | {' | '.join(cells)} | {total['hard']} |")
    out += ["", "| group | domain (tags) | high queries | look-alikes | training high / medium / low |",
            "|---|---|---|---|---:|"]
    everyday = ["| everyday group | tags | training high / medium / low |", "|---|---|---:|"]
    for g, t in taxonomy["groups"].items():
        n = per_group[g]
        counts = f"{n['high']} / {n['medium']} / {n['low']}"
        if t["stakes"] == "high":
            out.append(f"| `{g}` | {t['name']} ({', '.join(t['tags'])}) | {t['high']} | {t['lookalikes']} | {counts} |")
        else:
            everyday.append(f"| `{g}` ({t['name']}) | {', '.join(t['tags'])} | {counts} |")
    return "\n".join(out + [""] + everyday) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--markdown"]:
        print(markdown(), end="")
        return 0
    files = [pathlib.Path(a) for a in argv] or sorted(CORPUS.glob("*.jsonl"))
    problems: list[str] = []
    taxonomy = tomllib.loads(TAXONOMY.read_text(encoding="utf-8"))
    group_of = {tag: g for g, t in taxonomy["groups"].items() for tag in t["tags"]}
    writers = taxonomy.get("writers", {})
    seen: dict[str, str] = {}
    for path in sorted(BENCH.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                seen[normalise(json.loads(line)["text"])] = f"bench/data/{path.name}:{n} (independent writers' set)"
    groups: collections.Counter[str] = collections.Counter()
    combos: collections.Counter[tuple[str, bool]] = collections.Counter()
    per_file: collections.Counter[str] = collections.Counter()
    langs: collections.Counter[str] = collections.Counter()
    hard = 0
    for path in files:
        if not path.name.endswith(".heldout.jsonl") and path.name not in writers:
            problems.append(f"{path.name}: no writer named for it in {TAXONOMY.name} [writers]")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.name}:{n}"
            if not line.strip():
                problems.append(f"{where}: blank line")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: not JSON ({exc})")
                continue
            if not isinstance(row, dict):
                problems.append(f"{where}: not an object")
                continue
            missing, unknown = REQUIRED - row.keys(), row.keys() - FIELDS
            if missing or unknown:
                problems.append(f"{where}: missing {sorted(missing)} unknown {sorted(unknown)}")
                continue
            if row["severity"] not in ("low", "medium", "high"):
                problems.append(f"{where}: severity must be low|medium|high")
            if not isinstance(row["needs_reasoning"], bool):
                problems.append(f"{where}: needs_reasoning must be true|false")
            text = row["text"]
            if not isinstance(text, str) or not text.strip() or len(text) > 1200:
                problems.append(f"{where}: text must be 1..1200 characters")
                continue
            key = normalise(text)
            if key in seen:
                problems.append(f"{where}: duplicate of {seen[key]}")
            seen[key] = where
            if row["domain"] not in group_of:
                near = difflib.get_close_matches(str(row["domain"]), sorted(group_of), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                problems.append(f"{where}: domain {row['domain']!r} is not in {TAXONOMY.name}{hint}")
            else:
                groups[group_of[row["domain"]]] += 1
            combos[(row["severity"], row["needs_reasoning"])] += 1
            per_file[path.name] += 1
            langs[row["lang"]] += 1
            hard += "hard" in row
    total = sum(combos.values())
    print(f"{total} queries in {len(files)} files, {hard} hard cases")
    for name, count in sorted(per_file.items()):
        print(f"  {name}: {count}")
    for sev in ("low", "medium", "high"):
        print(f"  {sev:6} reasoning={combos[(sev, True)]:5} direct={combos[(sev, False)]:5}")
    print("  domain groups: " + ", ".join(f"{k}={v}" for k, v in sorted(groups.items())))
    print("  languages: " + ", ".join(f"{k}={v}" for k, v in langs.most_common()))
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
