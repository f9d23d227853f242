"""Tables: headers and aligned columns; plain and stable when piped, drawn with rich on a terminal.
Long work shows a spinner on a terminal and nothing extra when piped."""

import io
import os
import pty
import re
import select
import subprocess

import pytest
from test_cli import PONDER, ponder

from ponder.cli_table import Column, plain, print_table


def cells(line: str) -> list[tuple[int, int]]:
    """(start, end) of each cell of a plain table line: cells are separated by two or more spaces."""
    return [m.span() for m in re.finditer(r"\S+(?: \S+)*", line)]


def assert_aligned(text: str, headers: list[str]) -> list[list[str]]:
    """The plain table in `text` (its header line first) has these headers and every column lined up."""
    lines = text.rstrip("\n").splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == headers, lines[0]
    spans = [cells(line) for line in lines]
    for line, row in zip(lines, spans):
        assert len(row) == len(headers), f"not {len(headers)} cells: {line!r}"
    for i, header in enumerate(headers):
        starts = {row[i][0] for row in spans}
        ends = {row[i][1] for row in spans}
        assert len(starts) == 1 or len(ends) == 1, f"column {header} is not aligned:\n{text}"
    assert "\x1b" not in text and "─" not in text and "━" not in text
    return [[line[a:b] for a, b in row] for line, row in zip(lines[1:], spans[1:])]


def test_a_plain_table_has_headers_aligned_columns_and_dashes_for_empty_cells():
    columns = [Column("tenant"), Column("cost", "right"), Column("label")]
    text = plain(columns, [["acme", "0.1275", "[ci] nightly"], ["a-much-longer-name", "12.5000", ""]])
    assert text == (
        "TENANT                 COST  LABEL\n"
        "acme                 0.1275  [ci] nightly\n"
        "a-much-longer-name  12.5000  -\n"
    )
    assert assert_aligned(text, ["TENANT", "COST", "LABEL"])[1] == ["a-much-longer-name", "12.5000", "-"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_rich_draws_it_and_a_pipe_gets_plain_text(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    columns, rows = [Column("key"), Column("label")], [["k1", "[bold]not markup[/bold]"]]
    tty = Terminal()
    print_table(columns, rows, out=tty)
    drawn = tty.getvalue()
    assert "\x1b[1m" in drawn and "KEY" in drawn and "[bold]not markup[/bold]" in drawn
    piped = io.StringIO()
    print_table(columns, rows, out=piped)
    assert piped.getvalue() == plain(columns, rows)
    monkeypatch.setenv("NO_COLOR", "1")
    tty = Terminal()
    print_table(columns, rows, out=tty)
    assert tty.getvalue() == plain(columns, rows)


def run_on_a_terminal(env: dict[str, str], *args: str) -> str:
    """The CLI with its stdout and stderr on a pseudo-terminal: what a person at a terminal sees."""
    main, side = pty.openpty()
    proc = subprocess.Popen([PONDER, *args], env=env | {"TERM": "xterm-256color", "COLUMNS": "160"},
                            stdin=subprocess.DEVNULL, stdout=side, stderr=side)
    os.close(side)
    out = b""
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert proc.wait(timeout=120) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


@pytest.mark.model
def test_the_admin_tables_have_headers_and_aligned_columns(served, cli_env):
    token = ponder(cli_env, "admin", "tenant", "create", "acme", "--budget", "5").stdout.splitlines()[-1]
    ponder(cli_env, "admin", "key", "issue", "acme", "--label", "ci [nightly]")
    ponder(cli_env, "ask", "Say hi.", "--token", token)
    ponder(cli_env, "ask", "Say yes.", "--samples", "1", "--thinking-tokens", "0")

    tenants = assert_aligned(ponder(cli_env, "admin", "tenant", "list").stdout,
                             ["TENANT", "REMAINING", "BUDGET", "CURRENCY", "WINDOW", "STATE"])
    assert {row[0] for row in tenants} == {"acme", "local"}
    keys = assert_aligned(ponder(cli_env, "admin", "key", "list").stdout,
                          ["KEY", "SCOPE", "TENANT", "STATE", "CREATED", "EXPIRES", "LAST USED", "BUDGET", "SPENT",
                           "LABEL"])
    [issued] = [r for r in keys if r[-1] == "ci [nightly]"]
    assert issued[1:4] == ["tenant", "acme", "active"]

    spend = ponder(cli_env, "admin", "spend", "--records", "5").stdout
    title, lines, _, records = spend.partition("\n")[0], *spend.partition("\n")[2].partition("\n\n")
    assert title.startswith("spend from ")
    rows = assert_aligned(lines, ["TENANT", "REQUESTS", "COST", "PROMPT", "THINKING", "ANSWER", "STATUSES"])
    assert {r[0] for r in rows} == {"acme", "local"} and all(r[1] == "1" for r in rows)
    recs = assert_aligned(records, ["AT", "REQUEST", "TENANT", "STATUS", "SEVERITY", "LEVEL", "COST", "RESERVED"])
    assert len(recs) == 2

    status = ponder(cli_env, "admin", "risk", "status").stdout
    assert status.startswith("risk model in service: ")
    assert_aligned(status.split("\n", 1)[1].split("\n\n")[0], ["METRIC", "VALUE"])

    # At a terminal: the same table, drawn by rich (bold headers), the label as written.
    drawn = run_on_a_terminal(cli_env, "admin", "key", "list")
    assert "\x1b[" in drawn and "KEY" in drawn and "ci [nightly]" in drawn

    # A spinner while the daemon generates, on a terminal; piped, stderr stays empty.
    shown = run_on_a_terminal(cli_env, "ask", "Say hi.", "--samples", "1", "--thinking-tokens", "0")
    assert "asking the daemon" in shown and "  cost " in shown
    piped = ponder(cli_env, "ask", "Say hi.", "--samples", "1", "--thinking-tokens", "0")
    assert piped.stderr == "" and "asking" not in piped.stdout
