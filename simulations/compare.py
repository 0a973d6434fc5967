"""Comparison outputs: a markdown table over strategies x grid cells (mean +- std over seeds),
accuracy curves per strategy, and for grids an accuracy heatmap per strategy."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulations.report import load_rows

METRICS = (
    ("final-accuracy", "final acc"),
    ("best-accuracy", "best acc"),
    ("mean-accuracy", "mean acc"),
    ("rounds-to-target", "rounds to target"),
    ("pre-drift-accuracy", "pre-drift acc"),
    ("max-drop", "max drop"),
    ("rounds-to-recover", "rounds to recover"),
    ("rounds-to-within-2pt", "rounds to 2 pt"),
    ("area-under-drop", "area under drop"),
    ("mean-after", "mean acc after"),
    ("detector-alarms", "alarms"),
)

# per-changepoint metrics, read from the first changepoint of each run
_DRIFT_KEYS = ("pre-drift-accuracy", "max-drop", "rounds-to-recover", "rounds-to-within-2pt",
               "area-under-drop", "mean-after")


def _first_drift(summary: Mapping[str, Any], key: str) -> Any:
    drifts = summary.get("drifts") or []
    return drifts[0].get(key) if drifts else None


def _value(summary: Mapping[str, Any], key: str) -> float | None:
    v = summary.get(key)
    if v is None and key in _DRIFT_KEYS:
        v = _first_drift(summary, key)
    return float(v) if isinstance(v, int | float) else None


def _fmt(values: Sequence[float | None], n_runs: int) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    text = f"{statistics.fmean(vals):.3f}"
    if len(vals) > 1:
        text += f" ± {statistics.stdev(vals):.3f}"
    if len(vals) < n_runs:
        text += f" ({len(vals)}/{n_runs})"
    return text


def write_comparison(
    root: Path, results: Sequence[Mapping[str, Any]], grid_keys: Sequence[str]
) -> str:
    """Write ``comparison.md``, ``comparison.json`` and plots under ``root``; return the table."""
    root.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Mapping[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["strategy"], tuple(sorted(r["cell"].items())))].append(r)
    header = ["strategy", *grid_keys, "seeds", *[label for _, label in METRICS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows_json = []
    for (strategy, cell), runs in groups.items():
        cell_d = dict(cell)
        cells = [strategy, *[cell_d.get(k, "") for k in grid_keys], str(len(runs))]
        entry: dict[str, Any] = {"strategy": strategy, "cell": cell_d, "seeds": len(runs)}
        for key, _ in METRICS:
            vals = [_value(r["summary"], key) for r in runs]
            cells.append(_fmt(vals, len(runs)))
            entry[key] = vals
        lines.append("| " + " | ".join(cells) + " |")
        rows_json.append(entry)
    table = "\n".join(lines)
    (root / "comparison.md").write_text(table + "\n")
    (root / "comparison.json").write_text(json.dumps(rows_json, indent=2) + "\n")
    _plot_curves(root, groups)
    if len(grid_keys) == 2:
        _plot_heatmaps(root, groups, grid_keys)
    return table


def _plot_curves(root: Path, groups: Mapping[Any, list[Mapping[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    drift_marks: set[int] = set()
    for (strategy, cell), runs in groups.items():
        curves = []
        for r in runs:
            rows = load_rows(r["summary"]["run-dir"])
            curves.append([row.get("accuracy") for row in rows if int(row["round"]) >= 1])
            for row in rows:
                if any(str(e).startswith("start") for e in row.get("drift-events") or []):
                    drift_marks.add(int(row["round"]))
        n = min(len(c) for c in curves)
        arr = np.array([[np.nan if v is None else v for v in c[:n]] for c in curves], dtype=float)
        label = strategy + ("" if not cell else " " + ",".join(f"{k}={v}" for k, v in cell))
        ax.plot(np.arange(1, n + 1), np.nanmean(arr, axis=0), label=label)
    for d in sorted(drift_marks):
        ax.axvline(d, color="red", linestyle="--", alpha=0.5)
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(root / "accuracy.png")
    plt.close(fig)


def _plot_heatmaps(
    root: Path, groups: Mapping[Any, list[Mapping[str, Any]]], grid_keys: Sequence[str]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by_strategy: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for (strategy, cell), runs in groups.items():
        d = dict(cell)
        vals = [v for r in runs if (v := _value(r["summary"], "final-accuracy")) is not None]
        by_strategy[strategy][(d[grid_keys[0]], d[grid_keys[1]])] = (
            statistics.fmean(vals) if vals else float("nan")
        )
    strategies = list(by_strategy)
    fig, axes = plt.subplots(1, len(strategies), figsize=(3.2 * len(strategies), 3), dpi=100,
                             squeeze=False)
    for ax, strategy in zip(axes[0], strategies, strict=True):
        cells = by_strategy[strategy]
        ys = sorted({k[0] for k in cells}, key=float)
        xs = sorted({k[1] for k in cells}, key=float)
        mat = np.array([[cells.get((y, x), np.nan) for x in xs] for y in ys])
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", origin="lower")
        for i in range(len(ys)):
            for j in range(len(xs)):
                if np.isfinite(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="w" if mat[i, j] < 0.5 else "k")
        ax.set_xticks(range(len(xs)), xs, fontsize=7)
        ax.set_yticks(range(len(ys)), ys, fontsize=7)
        ax.set_xlabel(grid_keys[1])
        ax.set_ylabel(grid_keys[0])
        ax.set_title(strategy, fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    fig.savefig(root / "heatmap.png")
    plt.close(fig)
