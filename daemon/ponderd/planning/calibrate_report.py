"""How `ponder calibrate` shows its work: a progress bar, a table of the profile, the accuracy-vs-cost plot."""

from __future__ import annotations

import contextlib
import pathlib
import sys
from typing import Callable, Iterator

from ponderd.planning.profile import Profile, slice_key

SLICE_ORDER = [slice_key(s, r) for s in ("low", "medium", "high") for r in (False, True)]


@contextlib.contextmanager
def progress(total: int, quiet: bool = False) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr (items x levels, ETA); nothing when quiet or stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("calibrating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("pairs", total=total)
        yield lambda: bar.advance(task)


def table(profile: Profile, slices: bool = False) -> None:
    """The profile as a table on stdout: accuracy with its 95% interval, mean cost and tokens, median latency."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"accuracy profile (policy {profile.policy_version}, {profile.dataset.get('items', '?')} items)")
    for name, justify in (("level", "left"), ("n", "right"), ("accuracy", "right"), ("95% CI", "right"),
                          ("mean cost", "right"), ("thinking", "right"), ("answer", "right"), ("samples", "right"),
                          ("p50 latency", "right")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name, lvl in profile.levels.items():
        t.add_row(
            name, str(lvl.n), f"{lvl.accuracy:.1%}", f"{lvl.ci95[0]:.1%}-{lvl.ci95[1]:.1%}", f"{lvl.mean_cost:.6f}",
            f"{lvl.mean_thinking_tokens:.1f}", f"{lvl.mean_answer_tokens:.1f}", f"{lvl.mean_samples:.2f}",
            f"{lvl.p50_latency_s:.2f}s",
        )
        if slices:
            for key in SLICE_ORDER:
                if key not in lvl.slices:
                    continue
                n, c = lvl.slices[key]
                sev, kind = key.split("/")
                est = profile.estimate(name, sev, kind == "reasoning")
                shrunk = f" (est. {est.accuracy:.1%})" if est else ""
                t.add_row(f"  {key}", str(n), f"{c / n:.1%}{shrunk}", "", "", "", "", "", "", style="dim")
    Console(soft_wrap=False, width=max(120, Console().width)).print(t)


def frontier(profile: Profile) -> list[str]:
    """The levels no cheaper level matches or beats on accuracy, cheapest first (the Pareto frontier)."""
    best = -1.0
    out = []
    for name, lvl in sorted(profile.levels.items(), key=lambda kv: (kv[1].mean_cost, -kv[1].accuracy)):
        if lvl.accuracy > best:
            out.append(name)
            best = lvl.accuracy
    return out


def plot(profile: Profile, path: pathlib.Path) -> None:
    """Accuracy (with its 95% interval) against mean cost per level, the frontier joined by a line, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        for name, lvl in profile.levels.items():
            err = [[lvl.accuracy - lvl.ci95[0]], [lvl.ci95[1] - lvl.accuracy]]
            ax.errorbar([lvl.mean_cost], [lvl.accuracy], yerr=err, fmt="o", capsize=3, color="tab:blue")
            ax.annotate(name, (lvl.mean_cost, lvl.accuracy), textcoords="offset points", xytext=(6, 6))
        names = frontier(profile)
        ax.plot([profile.levels[n].mean_cost for n in names], [profile.levels[n].accuracy for n in names],
                "-", color="tab:orange", label="frontier")
        ax.set_xlabel("mean cost per request")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"What effort buys: {profile.dataset.get('items', '?')} items, policy {profile.policy_version}")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
