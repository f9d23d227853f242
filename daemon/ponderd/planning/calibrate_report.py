"""How `ponder calibrate` shows its work: a progress bar, a table of the profile, the accuracy-vs-cost plot."""

from __future__ import annotations

import contextlib
import pathlib
import sys
from typing import Any, Callable, Iterator

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
    """The profile as a table on stdout: accuracy with its 95% interval, mean cost and tokens, median latency.

    Drawn with rich on a terminal, plain aligned columns otherwise (ponder.cli_table)."""
    from ponder.cli_table import Column, print_table

    columns = [Column("level")] + [Column(name, "right") for name in (
        "n", "accuracy", "95% CI", "mean cost", "thinking", "answer", "samples", "p50 latency")]
    rows: list[list[str]] = []
    for name, lvl in profile.levels.items():
        rows.append([
            name, str(lvl.n), f"{lvl.accuracy:.1%}", f"{lvl.ci95[0]:.1%}-{lvl.ci95[1]:.1%}", f"{lvl.mean_cost:.6f}",
            f"{lvl.mean_thinking_tokens:.1f}", f"{lvl.mean_answer_tokens:.1f}", f"{lvl.mean_samples:.2f}",
            f"{lvl.p50_latency_s:.2f}s",
        ])
        if slices:
            for key in SLICE_ORDER:
                if key not in lvl.slices:
                    continue
                n, c = lvl.slices[key]
                sev, kind = key.split("/")
                est = profile.estimate(name, sev, kind == "reasoning")
                shrunk = f" (est. {est.accuracy:.1%})" if est else ""
                rows.append([f"{name} {key}", str(n), f"{c / n:.1%}{shrunk}", "", "", "", "", "", ""])
    print_table(columns, rows,
                title=f"accuracy profile (policy {profile.policy_version}, {profile.dataset.get('items', '?')} items)")


def frontier(profile: Profile) -> list[str]:
    """The levels no cheaper level matches or beats on accuracy, cheapest first (the Pareto frontier)."""
    best = -1.0
    out = []
    for name, lvl in sorted(profile.levels.items(), key=lambda kv: (kv[1].mean_cost, -kv[1].accuracy)):
        if lvl.accuracy > best:
            out.append(name)
            best = lvl.accuracy
    return out


# Where a level's label may go, relative to its point (points; tried in order): beside it first,
# then above and below, further out each round, until it overlaps no other label or point.
_OFFSETS = [(dx * k, dy * k) for k in (1, 2, 3, 4) for dx, dy in ((7, 4), (7, -12), (-7, 4), (-7, -12), (0, 12), (0, -18))]


def figure(profile: Profile) -> Any:
    """The accuracy-vs-cost figure: each level with its 95% interval, the frontier as a line, labels apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = frontier(profile)
    levels = profile.levels
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    costs = [lvl.mean_cost for lvl in levels.values() if lvl.mean_cost > 0]
    # Costs a level apart by 10x or more crowd the cheap levels together on a linear axis.
    if costs and max(costs) / min(costs) >= 10:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_xscale("log")
        # Ticks at 1, 2 and 5 of each decade, written as plain numbers (0.002, not 2x10^-3).
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _pos: ""))
    for name, lvl in levels.items():
        on = name in names
        err = [[lvl.accuracy - lvl.ci95[0]], [lvl.ci95[1] - lvl.accuracy]]
        ax.errorbar([lvl.mean_cost], [lvl.accuracy], yerr=err, fmt="o", capsize=3, markersize=7, zorder=3,
                    color="tab:orange" if on else "tab:gray", mfc="tab:orange" if on else "white", alpha=0.9)
    ax.plot([levels[n].mean_cost for n in names], [levels[n].accuracy for n in names], "-", color="tab:orange",
            linewidth=2, zorder=2, label="frontier: no cheaper level is as accurate")
    ax.plot([], [], "o", color="tab:gray", mfc="white", label="other levels")
    ax.set_xlabel("mean cost per request (credits)" + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"What effort buys: {profile.dataset.get('items', '?')} items, policy {profile.policy_version}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
    _place_labels(fig, ax, profile)
    return fig


def _place_labels(fig: Any, ax: Any, profile: Profile) -> None:
    """Each level's name beside its point, moved until it overlaps no other label, point or the legend."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    taken = [ax.get_legend().get_window_extent(renderer)]
    points = {name: ax.transData.transform((lvl.mean_cost, lvl.accuracy)) for name, lvl in profile.levels.items()}
    for x, y in points.values():
        taken.append(matplotlib_bbox(x - 5, y - 5, x + 5, y + 5))
    for lvl in profile.levels.values():
        # The interval's bar too: a label across it hides where the interval ends.
        (x, lo), (_, hi) = ax.transData.transform([(lvl.mean_cost, lvl.ci95[0]), (lvl.mean_cost, lvl.ci95[1])])
        taken.append(matplotlib_bbox(x - 4, lo, x + 4, hi))
    inside = ax.get_window_extent(renderer)
    # The most accurate first: they sit where the frontier is flat and labels crowd.
    for name, lvl in sorted(profile.levels.items(), key=lambda kv: -kv[1].accuracy):
        label = None
        for dx, dy in _OFFSETS:
            if label is not None:
                label.remove()
            label = ax.annotate(name, (lvl.mean_cost, lvl.accuracy), textcoords="offset points", xytext=(dx, dy),
                                ha="left" if dx >= 0 else "right", fontsize=10, zorder=4,
                                arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if abs(dy) > 12 else None)
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(t) for t in taken) and inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1):
                break
        if label is not None:
            taken.append(label.get_window_extent(renderer))


def matplotlib_bbox(x0: float, y0: float, x1: float, y1: float) -> Any:
    from matplotlib.transforms import Bbox

    return Bbox([[x0, y0], [x1, y1]])


def plot(profile: Profile, path: pathlib.Path) -> None:
    """Write the figure as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(profile)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
