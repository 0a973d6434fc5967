"""The one style every fedadapt plot uses (run plots, comparisons, heatmaps).

Conventions (those ``steps.png`` set first, issue 21 §4):

* a title that names the scenario and what is compared (:func:`title`);
* integer round ticks, the x axis starting at round 0 (:func:`round_axis`);
* the legend outside the data, to the right of the axes (:func:`legend_outside`);
* drift drawn as it happened: a sudden, synchronous changepoint as a dashed line, a gradual or
  staggered one as a shaded span over the rounds in which clients are still switching
  (:func:`drift_spans`, :func:`draw_drift`);
* curves that may coincide stay visible: each series gets its own colour, line style and marker
  (:func:`series_style`), so two identical curves show as a dashed line over a solid one;
* a mean over seeds is drawn with a band (min-max over the seeds, :func:`mean_band`).

Everything here takes matplotlib objects and returns nothing a caller must keep; callers save
and close their figures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "COLORS",
    "draw_drift",
    "drift_spans",
    "legend_outside",
    "mean_band",
    "new_figure",
    "round_axis",
    "series_style",
    "title",
]

COLORS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)
_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "v", "D", "x", "P", "*")
TITLE_SIZE = 9
LEGEND_SIZE = 7


def new_figure(width: float = 8.0, height: float = 4.2) -> tuple[Figure, Axes]:
    """A figure with one axes, in the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return fig, ax


def series_style(k: int, n_points: int = 0) -> dict[str, Any]:
    """Colour, line style and marker of the ``k``-th series: all three change with ``k``, and
    later series are drawn thinner on top, so identical curves stay distinguishable."""
    style: dict[str, Any] = {
        "color": COLORS[k % len(COLORS)],
        "linestyle": _LINESTYLES[k % len(_LINESTYLES)],
        "marker": _MARKERS[k % len(_MARKERS)],
        "linewidth": max(0.8, 2.2 - 0.35 * k),
        "markersize": 4,
        "zorder": 2 + k,
    }
    if n_points > 0:  # a marker every few points, offset per series
        step = max(1, n_points // 10)
        style["markevery"] = (k % step, step)
    return style


def round_axis(ax: Axes, last_round: int | None = None) -> None:
    """Integer round ticks, from round 0 (to ``last_round`` when given)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    if last_round is not None and last_round > 0:
        ax.set_xlim(0, last_round)
    else:
        ax.set_xlim(left=0)


def title(ax: Axes, scenario: object, what: str) -> None:
    """``"<scenario>: <what>"`` in the house size."""
    ax.set_title(f"{scenario}: {what}" if scenario else what, fontsize=TITLE_SIZE)


def legend_outside(
    ax: Axes,
    handles: Sequence[Any] | None = None,
    labels: Sequence[str] | None = None,
    x: float = 1.02,
) -> None:
    """The legend to the right of the axes (``x`` in axes coordinates; more than 1.02 when a
    second y axis sits there), never over the data."""
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            list(handles),
            list(labels),
            fontsize=LEGEND_SIZE,
            loc="upper left",
            bbox_to_anchor=(x, 1.0),
            borderaxespad=0.0,
        )


_EVENT = re.compile(r"start cp(\d+)")


def drift_spans(
    rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any]
) -> list[tuple[int, int]]:
    """Per changepoint, the rounds from its first client switching to its last client done
    (``(first, last)``; equal for a sudden synchronous change). Read from the rows' drift
    events (one per round in which some clients start switching: several for a staggered
    change) and the config's ``drift.width`` for a gradual one."""
    starts: dict[int, list[int]] = {}
    for r in rows:
        for e in r.get("drift-events") or []:
            m = _EVENT.match(str(e))
            key = int(m.group(1)) if m else -int(r["round"])  # unknown format: its own span
            starts.setdefault(key, []).append(int(r["round"]))
    width = int(config.get("drift.width", 1) or 1) if config.get("drift.timing") == "gradual" else 1
    return [
        (min(v), max(v) + width - 1) for _, v in sorted(starts.items(), key=lambda kv: min(kv[1]))
    ]


def draw_drift(ax: Axes, spans: Sequence[tuple[int, int]], *, label: bool = True) -> None:
    """A dashed line at a one-round change, a shaded span over a gradual or staggered one."""
    first_line = first_span = label
    for a, b in spans:
        if a == b:
            ax.axvline(
                a,
                color="red",
                linestyle="--",
                alpha=0.6,
                gid="drift",
                label="drift" if first_line else None,
            )
            first_line = False
        else:
            ax.axvspan(
                a - 0.5,
                b + 0.5,
                color="red",
                alpha=0.1,
                linewidth=0,
                gid="drift",
                label="drift (clients switching)" if first_span else None,
            )
            first_span = False


def mean_band(
    ax: Axes, x: Sequence[float], curves: Sequence[Sequence[float]], label: str, k: int
) -> None:
    """The mean of ``curves`` (one per seed, NaN where missing) as a line, with the min-max
    band over the seeds when there is more than one."""
    import numpy as np

    arr = np.asarray(curves, dtype=float)
    style = series_style(k, len(x))
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():  # all-NaN columns (a round nobody evaluated)
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(arr, axis=0)
            lo, hi = np.nanmin(arr, axis=0), np.nanmax(arr, axis=0)
    n = arr.shape[0]
    ax.plot(x, mean, label=f"{label} (n={n})" if n > 1 else label, gid="mean", **style)
    if n > 1:
        ax.fill_between(x, lo, hi, color=style["color"], alpha=0.15, linewidth=0, gid="band")
