"""Comparison outputs of ``fedadapt compare`` (and ``fedadapt report`` over many runs): the
tables of :mod:`simulations.tables` (Markdown, CSV, JSON, LaTeX; paired differences against a
baseline), accuracy curves per strategy and grid cell (mean over seeds with a min-max band), and
for a two-key grid an accuracy heatmap per strategy. Every plot follows
:mod:`simulations.plotstyle`."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulations import plotstyle
from simulations.tables import Run, load_run, run_value, write_tables

__all__ = ["plot_comparison", "write_comparison"]


def write_comparison(
    root: Path,
    results: Sequence[Mapping[str, Any]],
    grid_keys: Sequence[str],
    baseline: str | None = None,
) -> str:
    """Write ``comparison.{md,csv,json,tex}``, ``runs.csv`` and the plots under ``root`` from
    the runs of ``results`` (each with its ``summary["run-dir"]``); return the Markdown."""
    runs = [load_run(r["summary"]["run-dir"]) for r in results]
    table = write_tables(root, "comparison", runs, grid_keys, baseline)
    plot_comparison(root, runs, grid_keys)
    return table


def _label(run: Run, grid_keys: Sequence[str]) -> str:
    cell = ",".join(f"{k}={v}" for k, v in run.cell(grid_keys))
    return run.strategy + (f" [{cell}]" if cell else "")


def plot_comparison(root: Path, runs: Sequence[Run], grid_keys: Sequence[str]) -> list[Path]:
    """``accuracy.png`` (``accuracy-<scenario>.png`` when several scenarios) and, for a
    two-key grid, ``heatmap.png``; returns the files written."""
    by_scenario: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_scenario[r.scenario].append(r)
    written = []
    for scenario, members in by_scenario.items():
        name = "accuracy.png" if len(by_scenario) == 1 else f"accuracy-{scenario}.png"
        written.append(_plot_curves(root / name, scenario, members, grid_keys))
        if len(grid_keys) == 2:
            hname = "heatmap.png" if len(by_scenario) == 1 else f"heatmap-{scenario}.png"
            written.append(_plot_heatmaps(root / hname, scenario, members, grid_keys))
    return written


def curves_figure(scenario: str, runs: Sequence[Run], grid_keys: Sequence[str]) -> Any:
    """Mean accuracy over seeds per strategy and grid cell, with the min-max band, from round
    0; drift as a line or a span (the first run's schedule)."""
    import numpy as np

    fig, ax = plotstyle.new_figure(8, 4.2)
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        groups[_label(r, grid_keys)].append(r)
    last = 0
    seeds = set()
    for k, (label, members) in enumerate(groups.items()):
        curves = []
        for r in members:
            seeds.add(r.seed)
            curves.append(
                {
                    int(row["round"]): row.get("accuracy")
                    for row in r.rows
                    if row.get("accuracy") is not None
                }
            )
        rounds = sorted(set().union(*curves))
        if not rounds:
            continue
        last = max(last, rounds[-1])
        arr = [[np.nan if (v := c.get(x)) is None else float(v) for x in rounds] for c in curves]
        plotstyle.mean_band(ax, rounds, arr, label, k)
    first = runs[0]
    plotstyle.draw_drift(ax, plotstyle.drift_spans(first.rows, first.config))
    plotstyle.round_axis(ax, last)
    ax.set_ylabel("accuracy")
    n = len(seeds)
    what = "accuracy by strategy" + (f" and {', '.join(grid_keys)}" if grid_keys else "")
    what += f", mean and min-max over {n} seeds" if n > 1 else ", one seed"
    plotstyle.title(ax, scenario, what)
    ax.grid(alpha=0.3)
    plotstyle.legend_outside(ax)
    fig.tight_layout()
    return fig


def _plot_curves(path: Path, scenario: str, runs: Sequence[Run], grid_keys: Sequence[str]) -> Path:
    import matplotlib.pyplot as plt

    fig = curves_figure(scenario, runs, grid_keys)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_heatmaps(
    path: Path, scenario: str, runs: Sequence[Run], grid_keys: Sequence[str]
) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np

    from simulations.tables import RUN_COLUMNS

    final = RUN_COLUMNS[0]
    cells: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        c = dict(r.cell(grid_keys))
        v = run_value(r, final)
        if not isinstance(v, str):
            cells[r.strategy][(c[grid_keys[0]], c[grid_keys[1]])].append(v)
    strategies = list(cells)
    fig, axes = plt.subplots(
        1, len(strategies), figsize=(3.2 * len(strategies), 3.2), dpi=100, squeeze=False
    )
    im = None

    def order(values: set[str]) -> list[str]:
        try:
            return sorted(values, key=float)
        except ValueError:
            return sorted(values)

    for ax, strategy in zip(axes[0], strategies, strict=True):
        means = {k: statistics.fmean(v) for k, v in cells[strategy].items() if v}
        ys = order({k[0] for k in cells[strategy]})
        xs = order({k[1] for k in cells[strategy]})
        mat = np.array([[means.get((y, x), np.nan) for x in xs] for y in ys])
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", origin="lower")
        for i in range(len(ys)):
            for j in range(len(xs)):
                if np.isfinite(mat[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{mat[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="w" if mat[i, j] < 0.5 else "k",
                    )
        ax.set_xticks(range(len(xs)), xs, fontsize=7)
        ax.set_yticks(range(len(ys)), ys, fontsize=7)
        ax.set_xlabel(grid_keys[1])
        ax.set_ylabel(grid_keys[0])
        ax.set_title(strategy, fontsize=8)
    n = len({r.seed for r in runs})
    fig.suptitle(
        f"{scenario}: final accuracy by {grid_keys[0]} and {grid_keys[1]}, mean over "
        f"{n} seed{'s' if n != 1 else ''}",
        fontsize=plotstyle.TITLE_SIZE,
    )
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
