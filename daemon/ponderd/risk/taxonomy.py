"""The corpus's domain taxonomy and writers (data/taxonomy.toml): what grouped cross-validation holds out."""

from __future__ import annotations

import functools
import pathlib
import tomllib
import zlib
from dataclasses import dataclass

TAXONOMY_FILE = pathlib.Path(__file__).resolve().parent / "data" / "taxonomy.toml"
# Labeled feedback has no domain or writer: it is its own group, never held out
# on its own (grouped_folds spreads it), so a fold never tests on feedback alone.
FEEDBACK_GROUP = "feedback"
EVERYDAY_SLICES = 10


@dataclass(frozen=True)
class Group:
    id: str
    name: str
    stakes: str  # "high" or "everyday"
    tags: tuple[str, ...]
    high: str = ""
    lookalikes: str = ""


@dataclass(frozen=True)
class Taxonomy:
    groups: dict[str, Group]
    writers: dict[str, str]  # training file name -> writer

    @functools.cached_property
    def _by_tag(self) -> dict[str, str]:
        return {tag: g.id for g in self.groups.values() for tag in g.tags}

    def group_of(self, tag: str) -> str:
        """The group a domain tag belongs to; KeyError for a tag the taxonomy does not list."""
        return self._by_tag[tag]

    def unit_of(self, tag: str, text: str = "", spread: bool = True) -> str:
        """What leave-one-domain-out holds out together.

        A high-stakes group is held out whole (its tags are one field: vet and
        pets, devops and cloud). Everyday traffic (chat, puzzles, homework) is
        not a domain the issue is about and every deployment sees it, so by
        default it is spread over EVERYDAY_SLICES pseudo-groups by a hash of the
        text and lands in every fold's training data; with spread=False each
        everyday tag is held out on its own (the harsher `tag` variant).
        """
        group = self.groups[self._by_tag[tag]]
        if group.stakes == "high":
            return group.id
        if spread:
            return f"everyday#{zlib.crc32(text.encode()) % EVERYDAY_SLICES}"
        return f"{group.id}/{tag}"

    def writer_of(self, file_name: str) -> str:
        """The writer of a corpus file; a file the taxonomy does not name is its own writer."""
        return self.writers.get(file_name, file_name)

    def high_stakes(self) -> list[Group]:
        return [g for g in self.groups.values() if g.stakes == "high"]


@functools.lru_cache(maxsize=4)
def load(path: pathlib.Path = TAXONOMY_FILE) -> Taxonomy:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    groups = {}
    for gid, t in raw["groups"].items():
        groups[gid] = Group(gid, t["name"], t["stakes"], tuple(t["tags"]), t.get("high", ""), t.get("lookalikes", ""))
    seen: dict[str, str] = {}
    for g in groups.values():
        for tag in g.tags:
            if tag in seen:
                raise ValueError(f"{path}: tag {tag!r} is in both {seen[tag]!r} and {g.id!r}")
            seen[tag] = g.id
    return Taxonomy(groups, dict(raw.get("writers", {})))
