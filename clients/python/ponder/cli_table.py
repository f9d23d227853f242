"""Tables the CLI prints: a header row and aligned columns.

On a terminal a table is drawn with rich (installed with the daemon, or `pip install rich`),
headers in bold. Anywhere else (a pipe, a file, `NO_COLOR`, `TERM=dumb`) it is plain text that
scripts can split on runs of two or more spaces: the header row in capitals, then one line per
row, columns padded to the widest cell and separated by two spaces, numbers right-aligned, an
empty cell as `-`, no colour codes, no box characters and no wrapping. The same rows always
print the same text.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import IO, Any, Sequence


@dataclass(frozen=True)
class Column:
    header: str
    # "right" for numbers (they line up on their last digit).
    align: str = "left"


def is_terminal(out: IO[str]) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def plain(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> str:
    """The table as plain aligned text (what a pipe gets)."""
    cells = [[c.header.upper() for c in columns]] + [[_cell(v) or "-" for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for r in cells:
        parts = [v.rjust(w) if c.align == "right" else v.ljust(w) for v, w, c in zip(r, widths, columns)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def print_table(
    columns: Sequence[Column], rows: Sequence[Sequence[Any]], out: IO[str] | None = None, title: str | None = None
) -> None:
    """Print rows under headers: rich on a terminal, plain aligned text otherwise."""
    stream = out if out is not None else sys.stdout
    if is_terminal(stream):
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            from rich import box
            from rich.text import Text

            table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", header_style="bold", pad_edge=False,
                          show_edge=False)
            for c in columns:
                table.add_column(c.header.upper(), justify="right" if c.align == "right" else "left", no_wrap=True)
            for row in rows:
                # Text, not markup: a label such as "[ci]" prints as written.
                table.add_row(*(Text(_cell(v)) for v in row))
            Console(file=stream).print(table)
            return
    if title:
        stream.write(title + "\n")
    stream.write(plain(columns, rows))
