"""RESULTS.md's tables from `fedadapt compare` output directories (their comparison.json).

    python docs/results/tables.py DIR [DIR ...]          # one row per strategy x grid cell
    python docs/results/tables.py --paired A B DIR ...   # per-seed differences A - B

Columns: mean ± sample std over seeds, with (k/n) when only k of n seeds have a value.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from simulations.compare import _fmt

COLUMNS = [
    ("pre-drift-accuracy", "pre-drift"),
    ("mean-after", "mean after change"),
    ("max-drop", "dip"),
    ("rounds-to-within-2pt", "rounds to 2 pt"),
    ("area-under-drop", "area under drop"),
    ("final-accuracy", "final"),
    ("detector-alarms", "alarms"),
]


def fmt(values: list[float | None]) -> str:
    return _fmt(values, len(values))


def label(entry: dict) -> str:
    cell = ",".join(f"{k}={v}" for k, v in entry["cell"].items())
    return entry["strategy"] + (f" ({cell})" if cell else "")


def entries(dirs: list[str]) -> list[dict]:
    out = []
    for d in dirs:
        out += json.loads((Path(d) / "comparison.json").read_text())
    return out


def table(dirs: list[str]) -> str:
    rows = ["| strategy | seeds | " + " | ".join(c for _, c in COLUMNS) + " |",
            "|---|---|" + "---|" * len(COLUMNS)]
    for e in entries(dirs):
        rows.append(f"| {label(e)} | {e['seeds']} | " + " | ".join(fmt(e.get(k, [None] * e['seeds'])) for k, _ in COLUMNS) + " |")
    return "\n".join(rows)


def paired(a: str, b: str, dirs: list[str]) -> str:
    by = {label(e): e for e in entries(dirs)}
    ea, eb = by[a], by[b]
    rows = [f"| {a} - {b} | " + " | ".join(c for _, c in COLUMNS[:-1]) + " |", "|---|" + "---|" * (len(COLUMNS) - 1)]
    cells = []
    for k, _ in COLUMNS[:-1]:
        diffs = [x - y for x, y in zip(ea.get(k, []), eb.get(k, []), strict=False) if x is not None and y is not None]
        cells.append(fmt(diffs) if diffs else "-")
    rows.append("| per-seed difference | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--paired":
        print(paired(args[1], args[2], args[3:]))
    else:
        print(table(args))
