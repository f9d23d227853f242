"""The labeled corpus: JSON Lines files in data/corpus, `*.heldout.jsonl` kept apart for evaluation."""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import Iterable

CORPUS_DIR = pathlib.Path(__file__).resolve().parent / "data" / "corpus"
SEVERITIES = ("low", "medium", "high")


@dataclass(frozen=True)
class Example:
    text: str
    severity: str
    needs_reasoning: bool
    source: str = ""  # "file.jsonl:line"
    domain: str = ""  # the line's domain tag (see data/taxonomy.toml)

    @property
    def file(self) -> str:
        return self.source.rsplit(":", 1)[0]


def read_jsonl(path: pathlib.Path) -> list[Example]:
    """Examples from one file; a malformed line is an error naming file and line."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            sev, nr, text = row["severity"], row["needs_reasoning"], row["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a labeled example ({exc})") from None
        if sev not in SEVERITIES or not isinstance(nr, bool) or not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}:{n}: needs text, severity (low|medium|high) and needs_reasoning (true|false)")
        out.append(Example(text, sev, nr, f"{path.name}:{n}", str(row.get("domain", ""))))
    return out


def training_files(directory: pathlib.Path = CORPUS_DIR) -> list[pathlib.Path]:
    return sorted(p for p in directory.glob("*.jsonl") if not p.name.endswith(".heldout.jsonl"))


def heldout_files(directory: pathlib.Path = CORPUS_DIR) -> list[pathlib.Path]:
    return sorted(directory.glob("*.heldout.jsonl"))


def load(paths: Iterable[pathlib.Path]) -> list[Example]:
    return [ex for p in paths for ex in read_jsonl(p)]


def data_hash(examples: Iterable[Example]) -> str:
    """A digest of the labeled data, independent of file order."""
    rows = sorted(json.dumps([e.text, e.severity, e.needs_reasoning]) for e in examples)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()
