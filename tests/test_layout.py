"""The layout stays true: imports follow docs/architecture.md's import rule, read from the code with `ast`."""

from __future__ import annotations

import ast
import pathlib
import re

from conftest import REPO

PKG = REPO / "daemon" / "ponderd"
DOC = REPO / "docs" / "architecture.md"
LEAVES = "leaves"
ENTRY = "entry points"


def rule() -> tuple[dict[str, set[str]], set[str], set[str]]:
    """The table between the import-rule markers: package -> packages it may import; the leaves; the entry points."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- import-rule -->", 1)[1].split("<!-- /import-rule -->", 1)[0]
    allowed: dict[str, set[str]] = {}
    leaves: set[str] = set()
    entries: set[str] = set()
    for line in table.strip().splitlines()[2:]:
        left, right = (cell.strip() for cell in line.strip().strip("|").split("|"))
        names = set(re.findall(r"`([\w_]+)`", left))
        if left.startswith(LEAVES):
            leaves = names
        elif left.startswith(ENTRY):
            entries = names
        else:
            (name,) = names
            allowed[name] = set(re.findall(r"`([\w_]+)`", right))
    return allowed, leaves, entries


def unit(module: str) -> str:
    """`ponderd.ledger.sqlite.store` -> `ledger`; `ponderd.errors` -> `errors`."""
    return module.split(".")[1] if module.count(".") else ""


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: pathlib.Path, mod: str | None = None) -> list[tuple[int, str]]:
    """Every ponderd module `path` (module `mod`) imports, relative ones resolved, with its line."""
    mod = mod or module_of(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "ponderd"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ponderd":
                continue
            if target == "ponderd":  # `from ponderd import x`: each x is a module
                found += [(node.lineno, f"ponderd.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def sources() -> list[pathlib.Path]:
    return sorted(p for p in PKG.rglob("*.py") if "data" not in p.relative_to(PKG).parts)


def test_the_rule_table_is_whole():
    allowed, leaves, entries = rule()
    top = {p.stem for p in PKG.glob("*.py")} - {"__init__"}
    packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    assert set(allowed) == packages, "every package has one row in docs/architecture.md's import rule"
    assert leaves | entries == top, "every top-level module is a leaf or an entry point in the rule"
    for name, targets in allowed.items():
        assert targets <= packages, f"{name} may import {targets - packages}, which are not packages"


def test_the_top_level_shows_the_architecture():
    top = [p for p in PKG.glob("*.py") if p.stem != "__init__"]
    packages = [p for p in PKG.iterdir() if (p / "__init__.py").exists()]
    assert len(top) <= 12, sorted(p.name for p in top)
    assert len(packages) >= 5, sorted(p.name for p in packages)


def test_imports_follow_the_rule():
    allowed, leaves, entries = rule()
    bad = []
    for path in sources():
        src = unit(module_of(path)) or path.stem
        if src in entries:
            continue
        for line, target in imports(path):
            dst = unit(target)
            if dst == src:
                continue
            if src in leaves:
                ok = dst in leaves
            else:
                ok = dst in leaves or dst in allowed[src]
            if not ok:
                bad.append(f"{path.relative_to(REPO)}:{line}: {src} imports {target}")
    assert not bad, "imports docs/architecture.md's rule does not allow:\n" + "\n".join(bad)


def test_no_two_packages_import_each_other():
    edges: set[tuple[str, str]] = set()
    for path in sources():
        src = unit(module_of(path)) or path.stem
        edges |= {(src, unit(t)) for _, t in imports(path) if unit(t) != src}
    both = sorted({tuple(sorted(e)) for e in edges if (e[1], e[0]) in edges})
    assert not both, f"two-way imports: {both}"


def test_only_the_composition_root_knows_the_sqlite_backend():
    _, _, entries = rule()
    bad = []
    for path in sources():
        mod = module_of(path)
        if mod.startswith("ponderd.ledger.") or mod == "ponderd.serve.app" or path.stem in entries:
            continue
        for line, target in imports(path):
            if target.startswith("ponderd.ledger.sqlite"):
                bad.append(f"{path.relative_to(REPO)}:{line}: {target}")
    assert not bad, "use the Protocols in ledger/ (only serve/app.py picks the backend):\n" + "\n".join(bad)


def test_only_serve_imports_grpc():
    bad = []
    for path in sources():
        if unit(module_of(path)) == "serve":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level]
        if any(n.split(".")[0] == "grpc" for n in names):
            bad.append(str(path.relative_to(REPO)))
    assert not bad, f"only serve/ may import grpc: {bad}"


def test_the_rule_catches_an_import_it_forbids(tmp_path):
    """The reader sees relative, absolute and in-function imports (so a pass means something)."""
    probe = tmp_path / "probe.py"
    probe.write_text("from ...serve import app\nfrom . import types\n\ndef f():\n    import ponderd.request.pipeline\n")
    found = sorted(t for _, t in imports(probe, "ponderd.ledger.sqlite.probe"))
    assert found == ["ponderd.ledger.sqlite", "ponderd.request.pipeline", "ponderd.serve"]
