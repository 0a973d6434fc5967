"""The client-lr grid plot of RESULTS.md §8: accuracy against the client lr (mean over seeds,
a band from the lowest to the highest seed) for the default and the study's candidates.

    python docs/results/client_study_plot.py runs/study19 docs/results/client-lr-grid.png
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

CONFIGS = {
    "cp-adam/sgd/reset": ("cp-adam / sgd (default)", "black", "-", "o"),
    "cp-adam~rel1/sgd/reset": ("cp-adam rel 1 / sgd", "tab:blue", "--", "s"),
    "cp-adam~rel1/hd/server": ("cp-adam rel 1 / hd, server", "tab:red", "-.", "^"),
    "cp-adam~rel1/hd-mult/server": ("cp-adam rel 1 / hd-mult, server", "tab:orange", ":", "v"),
    "fedavg": ("FedAvg", "tab:gray", "-", "x"),
    "fedadam/eta0.1": ("FedAdam eta 0.1", "tab:green", "--", "d"),
}
PANELS = [
    ("lr-robustness", "final"),
    ("synthetic-local", "final"),
    ("drift-digits", "after"),
    ("mnist1d-local", "after"),
]


def main(root: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in json.loads((Path(root) / "rows.json").read_text())
        if r["stage"] == "confirm" and r["seed"] < 3
    ]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 3.8), dpi=100)
    for ax, (scenario, metric) in zip(axes, PANELS, strict=True):
        for cfg, (label, color, style, marker) in CONFIGS.items():
            cells: dict[float, list[float]] = defaultdict(list)
            for r in rows:
                if r["scenario"] == scenario and r["config"] == cfg and r[metric] is not None:
                    cells[r["lr"]].append(r[metric])
            if not cells:
                continue
            lrs = sorted(cells)
            ax.plot(
                lrs,
                [statistics.fmean(cells[lr]) for lr in lrs],
                color=color,
                linestyle=style,
                marker=marker,
                label=label,
            )
            ax.fill_between(
                lrs,
                [min(cells[lr]) for lr in lrs],
                [max(cells[lr]) for lr in lrs],
                color=color,
                alpha=0.12,
                linewidth=0,
            )
        ax.set_xscale("log")
        ax.set_xlabel("client lr")
        ax.set_ylabel("final accuracy" if metric == "final" else "mean accuracy after the change")
        ax.set_title(scenario, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(CONFIGS), fontsize=8, frameon=False)
    fig.suptitle(
        "Client-method study: accuracy over a 100x client-lr grid "
        "(mean over 3 seeds, band: lowest to highest seed)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
