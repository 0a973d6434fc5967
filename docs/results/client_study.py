"""The client-method study of RESULTS.md §8 (issue 19): which client step-size method, carried
how across rounds, makes a cp-adam federation insensitive to the client lr it is started with.

    python docs/results/client_study.py screen  --out runs/study19 --jobs 2
    python docs/results/client_study.py confirm --out runs/study19 --jobs 2 \
        --configs hd/server,eg/persist,hd-mult/server
    python docs/results/client_study.py tables  --out runs/study19 [--stage screen|confirm]

Every run is a shipped scenario with ``--set`` overrides only (client method, lr state, client
lr, seed; the competitors' strategy and server lr), run by ``docs/results/inprocess.py`` (the
ServerApp and ClientApp code of ``fedadapt simulate`` in one process, checked bitwise against
``fedadapt compare``). Each run writes its own directory; a run whose ``summary.json`` exists
is skipped, so the same command again resumes a killed study. ``--jobs`` processes run at once.

Screening: every client method x every ``client-lr-state`` (client SGD: ``reset`` only, it has
no step size to carry) under cp-adam, client lr 0.01..1.0 (5 values, 100x), on
``lr-robustness`` and ``drift-digits``, seeds 0-1; then (``floor``) cp-adam's denominator floor
made scale-free (``eps_rel`` grid) under client SGD and the named client configurations.
Confirmation: the configurations named (``cp-adam~rel0.1/hd/server`` style, or a client part
alone under the default cp-adam), client SGD under cp-adam, FedAvg (over the client lr) and
FedAdam (over eta 0.03, 0.1, 0.3 and the client lr) on the screening scenarios, the
many-local-steps scenarios, a covariate drift and the no-drift control of each drift, seeds
0-2 (``--seeds`` to add more).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

CLIENT_METHODS = ("hd", "hd-mult", "dsa", "autodrop", "cprop", "eg", "fedhyper-cl")
LR_STATES = ("reset", "persist", "server")
DIGITS_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
# the confirmation scenarios' grids: 100x around each scenario's own client lr
SCENARIO_LRS = {
    "lr-robustness": DIGITS_LRS,
    "drift-digits": DIGITS_LRS,
    "covariate-gradual": DIGITS_LRS,
    "synthetic-local": (0.001, 0.003, 0.01, 0.03, 0.1),
    "mnist1d-local": (0.005, 0.015, 0.05, 0.15, 0.5),
}
NO_DRIFT = ("drift.round=0", "drift.kind=none")
# FedAdam's eta grid brackets Flower's default 0.1, the best of 0.01/0.03/0.1 on drift-digits
# in RESULTS.md §2
FEDADAM_ETAS = (0.03, 0.1, 0.3)


@dataclass(frozen=True)
class Run:
    scenario: str  # the scenario name, "+control" for its no-drift control
    config: str  # e.g. "cp-adam/hd/server", "fedavg", "fedadam/eta0.03"
    lr: float
    seed: int

    @property
    def base(self) -> str:
        return self.scenario.split("+")[0]

    def sets(self) -> list[str]:
        out = [f"client-lr={self.lr}"]
        if self.scenario.endswith("+control"):
            out += list(NO_DRIFT)
        parts = self.config.split("/")
        server, _, rel = parts[0].partition("~rel")
        if server == "cp-adam":
            out += [
                "strategy=fedadapt",
                "server-optimizer=cp-adam",
                f"client-optimizer={parts[1]}",
                f"client-lr-state={parts[2]}",
            ]
            if rel:  # the scale-free floor: eps negligible, eps_rel times each tensor's RMS
                opts = {"eps": 1e-8, "eps_rel": float(rel)}
                out += [f"server-options={json.dumps(opts)}"]
            out += [f"client-lr-on-change={p}" for p in parts[3:]]
        elif parts[0] == "fedavg":
            out += ["strategy=fedavg"]
        elif parts[0] == "fedadam":
            out += ["strategy=fedadam", f"server-lr={parts[1].removeprefix('eta')}"]
        else:
            raise ValueError(f"unknown configuration {self.config!r}")
        return out

    def directory(self, root: Path) -> Path:
        tag = self.config.replace("/", "_")
        return root / self.scenario / tag / f"lr{self.lr:g}" / f"seed{self.seed}"


def screening_runs(seeds: int = 2) -> list[Run]:
    configs = ["cp-adam/sgd/reset"] + [
        f"cp-adam/{m}/{s}" for m in CLIENT_METHODS for s in LR_STATES
    ]
    return [
        Run(sc, c, lr, s)
        for sc in ("lr-robustness", "drift-digits")
        for c in configs
        for lr in SCENARIO_LRS[sc]
        for s in range(seeds)
    ]


FLOOR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # extended past 1.0, the first grid's best edge


def floor_runs(configs: Sequence[str], seeds: int = 2) -> list[Run]:
    """Screening, part 2: cp-adam's denominator floor made scale-free (``eps_rel`` over
    :data:`FLOOR_GRID`, ``eps`` 1e-8) under client SGD and the named client configurations."""
    cfgs = [f"cp-adam~rel{r:g}/{c}" for r in FLOOR_GRID for c in ["sgd/reset", *configs]]
    return [
        Run(sc, c, lr, s)
        for sc in ("lr-robustness", "drift-digits")
        for c in cfgs
        for lr in SCENARIO_LRS[sc]
        for s in range(seeds)
    ]


def confirmation_runs(configs: Sequence[str], seeds: int = 3) -> list[Run]:
    scenarios = [
        "lr-robustness",
        "drift-digits",
        "drift-digits+control",
        "synthetic-local",
        "mnist1d-local",
        "mnist1d-local+control",
        "covariate-gradual",
        "covariate-gradual+control",
    ]
    cfgs = [c if c.startswith("cp-adam") else f"cp-adam/{c}" for c in configs]
    cfgs += ["cp-adam/sgd/reset", "fedavg"]
    cfgs += [f"fedadam/eta{e:g}" for e in FEDADAM_ETAS]
    return [
        Run(sc, c, lr, s)
        for sc in scenarios
        for c in cfgs
        for lr in SCENARIO_LRS[sc.split("+")[0]]
        for s in range(seeds)
    ]


# ---------------------------------------------------------------------------------- running
def _init_worker() -> None:
    import logging

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import flwr.common.logger  # noqa: F401 - sets its level on import; quiet it after that
    import torch

    logging.getLogger("flwr").setLevel(logging.WARNING)

    torch.set_num_threads(1)


def _one(args: tuple[Run, str]) -> tuple[Run, float, str | None]:
    run, root = args
    from inprocess import run as run_inprocess

    from simulations.cli import build_config

    out = run.directory(Path(root))
    t0 = time.perf_counter()
    try:
        cfg = build_config(run.base, run.sets(), run.seed, str(out))
        run_inprocess(cfg)
    except Exception as exc:  # recorded, the study goes on
        out.mkdir(parents=True, exist_ok=True)
        (out / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
        return run, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
    return run, time.perf_counter() - t0, None


def execute(runs: Iterable[Run], root: Path, jobs: int) -> None:
    import multiprocessing as mp

    todo = [r for r in runs if not (r.directory(root) / "summary.json").exists()]
    total = len(todo)
    print(f"{total} runs to do in {root} ({jobs} processes)", flush=True)
    if not todo:
        return
    t0 = time.time()
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, initializer=_init_worker, maxtasksperchild=50) as pool:
        for i, (run, secs, err) in enumerate(
            pool.imap_unordered(_one, [(r, str(root)) for r in todo]), 1
        ):
            left = (time.time() - t0) / i * (total - i)
            status = f"error {err}" if err else "ok"
            print(
                f"[{i}/{total}] {run.scenario} {run.config} lr={run.lr:g} seed={run.seed} "
                f"{secs:.1f}s {status}; about {left / 60:.0f} min left",
                flush=True,
            )
    print(f"done in {(time.time() - t0) / 60:.1f} min", flush=True)


# ---------------------------------------------------------------------------------- tables
def load(root: Path) -> list[dict[str, Any]]:
    """One row per finished run: its Run fields and the metrics of its summary.json."""
    rows = []
    for path in root.glob("*/*/lr*/seed*/summary.json"):
        seed_dir = path.parent
        lr_dir, cfg_dir, sc_dir = seed_dir.parent, seed_dir.parent.parent, seed_dir.parents[2]
        s = json.loads(path.read_text())
        drifts = s.get("drifts") or []
        d0 = drifts[0] if drifts else {}
        rows.append(
            {
                "stage": root.name,
                "scenario": sc_dir.name,
                "config": cfg_dir.name.replace("_", "/"),
                "lr": float(lr_dir.name[2:]),
                "seed": int(seed_dir.name[4:]),
                "final": s.get("final-accuracy"),
                "target": s.get("rounds-to-target"),
                "pre": d0.get("pre-drift-accuracy"),
                "after": d0.get("mean-after"),
                "dip": d0.get("max-drop"),
                "back": d0.get("rounds-to-within-2pt"),
                "alarms": s.get("detector-alarms"),
            }
        )
    return rows


def _mean(vals: Sequence[float | None]) -> float:
    v = [x for x in vals if isinstance(x, int | float) and math.isfinite(x)]
    return statistics.fmean(v) if v else math.nan


def cell_table(
    rows: list[dict[str, Any]], metric: str
) -> dict[tuple[str, str], dict[float, float]]:
    """(scenario, config) -> {lr: mean of ``metric`` over seeds}."""
    acc: dict[tuple[str, str, float], list[Any]] = defaultdict(list)
    for r in rows:
        acc[(r["scenario"], r["config"], r["lr"])].append(r[metric])
    out: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    for (sc, cfg, lr), vals in acc.items():
        out[(sc, cfg)][lr] = _mean(vals)
    return out


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scenario, configuration): worst, median and best cell over the lr grid, for the
    final accuracy and (drift scenarios) the mean accuracy after the change."""
    out = []
    finals = cell_table(rows, "final")
    afters = cell_table(rows, "after")
    seeds = defaultdict(set)
    for r in rows:
        seeds[(r["scenario"], r["config"])].add(r["seed"])
    for key in sorted(finals):
        f = finals[key]
        a = {lr: v for lr, v in afters.get(key, {}).items() if math.isfinite(v)}
        entry = {
            "scenario": key[0],
            "config": key[1],
            "seeds": len(seeds[key]),
            "cells": len(f),
            "final-worst": min(f.values()),
            "final-median": statistics.median(f.values()),
            "final-best": max(f.values()),
            "best-lr": max(f, key=lambda lr: f[lr]),
        }
        if a:
            entry.update(
                {
                    "after-worst": min(a.values()),
                    "after-median": statistics.median(a.values()),
                    "after-best": max(a.values()),
                    "after-best-lr": max(a, key=lambda lr: a[lr]),
                }
            )
        out.append(entry)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.3f}"
    return str(v)


def markdown(entries: list[dict[str, Any]], cols: Sequence[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for e in entries:
        lines.append("| " + " | ".join(_fmt(e.get(c, math.nan)) for c in cols) + " |")
    return "\n".join(lines)


def grid_table(rows: list[dict[str, Any]], scenario: str, metric: str) -> str:
    """Configurations x lr cells of ``metric`` (mean over seeds) for one scenario."""
    cells = {k: v for k, v in cell_table(rows, metric).items() if k[0] == scenario}
    lrs = sorted({lr for v in cells.values() for lr in v})
    lines = [
        "| configuration | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | worst | median |",
        "|" + "---|" * (len(lrs) + 3),
    ]
    for (_, cfg), v in sorted(cells.items(), key=lambda kv: -min(kv[1].values())):
        vals = [v.get(lr, math.nan) for lr in lrs]
        fin = [x for x in vals if math.isfinite(x)]
        lines.append(
            f"| {cfg} | "
            + " | ".join(_fmt(x) for x in vals)
            + f" | {_fmt(min(fin) if fin else math.nan)} | "
            + f"{_fmt(statistics.median(fin) if fin else math.nan)} |"
        )
    return "\n".join(lines)


def claims(rows: list[dict[str, Any]], scenario: str, metric: str) -> str:
    """The issue's three claims on one scenario, per configuration:

    (a) started 10x off its tuned lr: the cells 10x below and above the best lr cell, as a
        share of the best cell's ``metric`` (the lr grid steps by sqrt(10), so 10x is two cells);
    (b) adapting to a shift: the mean accuracy after the change, best and worst cell, against
        client SGD's (drift scenarios; reported by the tables);
    (c) carrying the step size: each method's worst and median cell for each lr state.
    """
    cells = {k[1]: v for k, v in cell_table(rows, metric).items() if k[0] == scenario}
    lines = [
        "| configuration | best lr | best | 10x below | 10x above | share of best (worst of the two) |",
        "|---|---|---|---|---|---|",
    ]
    for cfg, v in sorted(cells.items()):
        fin = {lr: x for lr, x in v.items() if math.isfinite(x)}
        if not fin:
            continue
        best = max(fin, key=lambda lr: fin[lr])
        lo = next(
            (x for lr, x in fin.items() if math.isclose(lr, best / 10, rel_tol=0.05)), math.nan
        )
        hi = next(
            (x for lr, x in fin.items() if math.isclose(lr, best * 10, rel_tol=0.05)), math.nan
        )
        off = [x for x in (lo, hi) if math.isfinite(x)]
        share = min(off) / fin[best] if off and fin[best] > 0 else math.nan
        lines.append(
            f"| {cfg} | {best:g} | {_fmt(fin[best])} | {_fmt(lo)} | {_fmt(hi)} | {_fmt(share)} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=("screen", "floor", "confirm", "tables"))
    ap.add_argument("--out", default="runs/study19")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--configs", default="", help="client method/lr state list (confirm)")
    ap.add_argument("--only", default="", help="scenario filter (comma list)")
    args = ap.parse_args()
    root = Path(args.out)
    if args.stage == "screen":
        runs = screening_runs(args.seeds or 2)
    elif args.stage == "floor":
        runs = floor_runs([c for c in args.configs.split(",") if c], args.seeds or 2)
    elif args.stage == "confirm":
        configs = [c for c in args.configs.split(",") if c]
        runs = confirmation_runs(configs, args.seeds or 3)
    else:
        rows = load(root / "screen") + load(root / "floor") + load(root / "confirm")
        (root / "rows.json").write_text(json.dumps(rows, indent=1))
        for sc in sorted({r["scenario"] for r in rows}):
            print(f"\n### {sc}: final accuracy (mean over seeds)\n")
            print(grid_table(rows, sc, "final"))
            if any(r["after"] is not None for r in rows if r["scenario"] == sc):
                print(f"\n### {sc}: mean accuracy after the change\n")
                print(grid_table(rows, sc, "after"))
        for sc in sorted({r["scenario"] for r in rows}):
            drift = any(r["after"] is not None for r in rows if r["scenario"] == sc)
            metric = "after" if drift else "final"
            print(f"\n### {sc}: started 10x off the best lr ({metric})\n")
            print(claims(rows, sc, metric))
        print("\n### per configuration\n")
        print(
            markdown(
                summary_rows(rows),
                [
                    "scenario",
                    "config",
                    "seeds",
                    "final-worst",
                    "final-median",
                    "final-best",
                    "best-lr",
                    "after-worst",
                    "after-median",
                    "after-best",
                    "after-best-lr",
                ],
            )
        )
        return
    if args.only:
        keep = set(args.only.split(","))
        runs = [r for r in runs if r.scenario in keep]
    execute(runs, root / args.stage, args.jobs)


if __name__ == "__main__":
    main()
