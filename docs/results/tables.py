"""RESULTS.md's tables from `fedadapt compare` output directories: a thin wrapper over
`simulations.tables`, the reporting path of `fedadapt compare` and `fedadapt report`.

    python docs/results/tables.py DIR [DIR ...]          # one row per strategy x grid cell
    python docs/results/tables.py --paired A B DIR ...   # per-seed differences A - B, 95% CIs

The same tables, with CSV, JSON and LaTeX beside them: `fedadapt report DIR [--baseline B]`.
Each table says its statistic: mean ± sample std over the seeds, with (k/n) when only k of n
seeds have a value; `never` (not reached) and `n/a` (does not apply) are kept apart.
"""

from __future__ import annotations

import sys

from simulations.report import find_runs
from simulations.tables import infer_grid_keys, load_run, markdown, paired, summary_table


def _runs(dirs: list[str]) -> list:
    return [load_run(run) for d in dirs for run in find_runs(d)]


def table(dirs: list[str]) -> str:
    runs = _runs(dirs)
    return markdown(summary_table(runs, infer_grid_keys(runs)))


def paired_table(a: str, b: str, dirs: list[str]) -> str:
    runs = _runs(dirs)
    tables = paired(runs, infer_grid_keys(runs), b)
    for t in tables:  # only the rows of strategy A
        keep = [
            i
            for i, rec in enumerate(t.records)
            if rec["a"] == a or rec["a"].split("/")[0].split(" ")[0] == a
        ]
        t.rows = [t.rows[i] for i in keep]
        t.records = [t.records[i] for i in keep]
    return markdown([t for t in tables if t.rows], f"{a} − {b}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--paired":
        print(paired_table(args[1], args[2], args[3:]))
    else:
        print(table(args))
