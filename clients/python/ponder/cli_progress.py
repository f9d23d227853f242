"""Progress for long work: a spinner with what is running and for how long, on a terminal only.

On stderr, and only when stderr is a terminal, rich is installed (it comes with the daemon) and
the command is not printing JSON; it disappears when the work ends. Anywhere else nothing is
printed, so piped and scripted output is exactly what it was.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from .cli_table import is_terminal


@contextlib.contextmanager
def spinner(text: str, *, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """Show `text` with a spinner and the elapsed time while the block runs; yields a function to change the text."""
    if not enabled or not is_terminal(sys.stderr):
        yield lambda _text: None
        return
    try:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    except ImportError:
        yield lambda _text: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(text, total=None)
        yield lambda new: progress.update(task, description=new)
