"""The commented config file a host install writes: every setting with its default, from settings.py itself.

    python -m ponderd.sample_config [--state-dir DIR] [--policy-file FILE]

Each setting appears as `#key = default` under the comment its dataclass field
carries in settings.py, so the file cannot drift from the loader: a new setting
shows up on the next install, and tests/deploy/test_install.py uncomments every line
and checks the loader reads back exactly the defaults. Only `state_dir` and
`policy_file` are set, because their defaults (the user's home, the source
checkout) mean nothing on a server.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import pathlib
import re
import sys
from typing import Any, Sequence

from ponderd.settings import _SECTIONS, ENV_PREFIX, Settings

HOST_STATE_DIR = "/var/lib/ponder"
HOST_POLICY_FILE = "/etc/ponder/policy.toml"

HEADER = """\
# Ponder daemon configuration (ponderd --config /etc/ponder/ponder.toml).
#
# Generated from ponderd/settings.py by `python -m ponderd.sample_config`: every
# setting is listed with its default, commented out as `#key = default`;
# uncomment a line to change it. Each setting also has an environment variable
# (named beside it), which wins over this file; `ponderd` flags win over both.
# An unknown key is an error that names it, so a typo never falls back silently.
# Where a comment says None, write "" (not set). See docs/operations.md.
"""

# The comments settings.py gives these two describe a developer's defaults.
HOST_COMMENTS = {
    "state_dir": ["The database, key files and retrained risk models (0700, owner ponder).",
                  "The unit's StateDirectory=ponder and the backup timer use this path."],
    "policy_file": ["The admin policy: levels, costs, allowed plans (docs/policy.md).",
                    "Re-read on `systemctl reload ponderd`."],
}


def field_comments(cls: type) -> dict[str, list[str]]:
    """The `#` lines directly above each field in the dataclass's source."""
    names = {f.name for f in dataclasses.fields(cls)}
    comments: dict[str, list[str]] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            pending.append(text[1:].strip())
            continue
        match = re.match(r"(\w+)\s*:", text)
        if match and match.group(1) in names:
            comments[match.group(1)] = pending
        pending = []
    return comments


def toml_value(value: Any) -> str:
    if value is None:
        return '""'  # the loader reads "" as "not set" for optional paths
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items()) + "}"
    # JSON's string escapes are valid in TOML basic strings.
    return json.dumps(str(value))


def _lines(cls: type, section: str | None, active: dict[str, str]) -> list[str]:
    defaults = cls()
    comments = field_comments(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        if section is None and f.name in _SECTIONS:
            continue
        if section is None and f.name == "models":
            # Tables, not a value: shown as prose so that switching every default on adds no model.
            out += ["", *(f"# {c}" for c in comments.get(f.name, [])),
                    "# Each is a table with [model]'s keys, e.g. a [models.reasoner] table with",
                    '# path = "/var/lib/ponder/models/reasoner.gguf" and kind = "reasoning". No environment variable.']
            continue
        env = f"{ENV_PREFIX}{section + '_' if section else ''}{f.name}".upper()
        out.append("")
        text = HOST_COMMENTS[f.name] if f.name in active else comments.get(f.name, [])
        out += [f"# {c}" if c else "#" for c in text]
        out.append(f"# Environment: {env}")
        if f.name in active:
            out.append(f"{f.name} = {toml_value(active[f.name])}")
        else:
            out.append(f"#{f.name} = {toml_value(getattr(defaults, f.name))}")
    return out


def render(state_dir: str = HOST_STATE_DIR, policy_file: str = HOST_POLICY_FILE) -> str:
    active = {"state_dir": state_dir, "policy_file": policy_file}
    lines = HEADER.splitlines()
    lines += _lines(Settings, None, active)
    for name, cls in _SECTIONS.items():
        lines += ["", "", f"[{name}]"]
        lines += _lines(cls, name, {})
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ponderd.sample_config", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", default=HOST_STATE_DIR)
    parser.add_argument("--policy-file", default=HOST_POLICY_FILE)
    parser.add_argument("--output", "-o", type=pathlib.Path, help="write here instead of standard output")
    args = parser.parse_args(argv)
    text = render(args.state_dir, args.policy_file)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
