"""PNG figures for eval and loop reports (matplotlib's Agg backend: no display needed).

Each function writes one file and returns its path; callers pass plain numbers, so the same helpers
serve `rlhf eval` and the loop's per-round report.
"""

from __future__ import annotations

import os
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless servers and CI: never try to open a window
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(path: str | os.PathLike, labels: list[str], series: dict[str, list[float]], title: str,
              ylabel: str = "") -> Path:
    """Grouped bars: one group per label, one bar per series (e.g. mean reward and win rate per policy)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(max(4.0, 1.2 * len(labels)) * len(series), 3.6), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items()):
        bars = ax.bar(range(len(labels)), values, color="tab:blue")
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(name)
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="black", linewidth=0.6)
    fig.suptitle(title)
    return save_figure(plt, fig, path)


def plot_histograms(path: str | os.PathLike, data: dict[str, list[float]], title: str, xlabel: str,
                    bins: int = 20) -> Path:
    """Overlaid histograms, one per name (e.g. response length per policy)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    values = [v for vs in data.values() for v in vs]
    edges = bins if not values or min(values) == max(values) else _edges(min(values), max(values), bins)
    for name, vs in data.items():
        ax.hist(vs, bins=edges, alpha=0.5, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(plt, fig, path)


def plot_lines(path: str | os.PathLike, x: list[float], series: dict[str, list[float]], title: str,
               xlabel: str, ylabel: str = "") -> Path:
    """One line per series over a shared x axis (e.g. a figure per loop round)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for name, ys in series.items():
        ax.plot(x[: len(ys)], ys, marker="o", label=name)
    if x and all(float(v).is_integer() for v in x):
        ax.set_xticks(x)  # rounds and steps are whole numbers: no "1.5" ticks
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(plt, fig, path)


def plot_grouped_bars(path: str | os.PathLike, groups: list[str], series: dict[str, list[float]], title: str,
                      ylabel: str = "", ylim: tuple[float, float] | None = None) -> Path:
    """Bars side by side in one axis: one group per label, one coloured bar per series (e.g. pass rate per
    constraint type, one bar per policy). A NaN value leaves its slot empty."""
    plt = _pyplot()
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(groups) * len(series) + 2.0), 4.0))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width=width, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(plt, fig, path)


def plot_panels(path: str | os.PathLike, panels: dict[str, dict[str, tuple[list[float], ...]]], title: str,
                xlabel: str) -> Path:
    """A grid of small line charts, one per panel, each with its own lines as (xs, ys) (e.g. the loss of each
    training stage over its steps, one line per loop round), or (xs, ys, lows, highs) to shade an interval."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = 2 if len(panels) == 4 else min(3, max(1, len(panels)))  # 4 panels read best as 2 x 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    # A label keeps its colour in every panel ("round 2" is orange everywhere, even where round 1 is missing).
    labels = list(dict.fromkeys(label for lines in panels.values() for label in lines))
    for ax, (name, lines) in zip(axes.flat, panels.items()):
        for label, (xs, ys, *band) in lines.items():
            colour = f"C{labels.index(label) % 10}"
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label, color=colour)
            if band:  # a 95% interval around the line
                ax.fill_between(xs, band[0], band[1], color=colour, alpha=0.2, linewidth=0)
        if all(float(x).is_integer() for line in lines.values() for x in line[0]):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations and steps: no "1.5" ticks
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        if len(labels) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _edges(low: float, high: float, bins: int) -> list[float]:
    # Shared bin edges, so the overlaid histograms compare like with like.
    step = (high - low) / bins
    return [low + i * step for i in range(bins + 1)]
