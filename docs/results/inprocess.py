"""Run fedadapt scenarios without Ray, for studies of hundreds of short runs.

A thin wrapper over :mod:`simulations.local` (``fedadapt simulate/compare --backend local``),
kept for the study scripts that import ``run`` from here. The ServerApp body (:func:`simulations.server_app.serve`) and the ClientApp handlers
(:func:`simulations.client_app.handle_train`, :func:`~simulations.client_app.handle_warm_up`)
are the ones ``fedadapt simulate`` and ``fedadapt compare`` run on Flower's Ray simulation
runtime; here a Grid answers each message by calling the handler in the same process. Runs are
seeded, so a run gives the same metrics as under ``fedadapt compare``; ``--check`` repeats one
run through ``fedadapt compare`` and compares every metrics row (RESULTS.md says when it was
last checked). What this saves is Ray's start-up (10-20 s per process on 2 cores) and Flower's
per-message transport, so a 25-round digits run takes a few seconds and one process per core
runs the study.

Use the Ray path for anything else: this runner has no worker isolation, no deadlines across
processes, no retries and no resources; the settings it cannot honour (crash and hang faults, a
round-timeout other than the default, GPUs, deployment mode) are refused before it starts.

    python docs/results/inprocess.py drift-digits --set client-optimizer=hd --out /tmp/run
    python docs/results/inprocess.py drift-digits --check
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from simulations.local import LocalGrid, check_local, run_local  # noqa: E402

__all__ = ["LocalGrid", "run", "run_local"]


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """One run of a resolved config, in this process; returns its summary."""
    from simulations.checks import resolve
    from simulations.experiment import prepare

    (spec,) = prepare([resolve(cfg)])
    check_local([spec])
    return run_local(spec)


def _rows(run_dir: str | Path) -> list[dict[str, Any]]:
    keep = (
        "round",
        "accuracy",
        "loss",
        "server-lr",
        "client-lr",
        "client-lr-min",
        "client-lr-max",
        "train-loss",
        "succeeded-ids",
    )
    rows = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.append({k: row.get(k) for k in keep})
    return rows


def main() -> None:
    from simulations.cli import build_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--check",
        action="store_true",
        help="also run it through `fedadapt compare` (Ray) and compare the rows",
    )
    args = ap.parse_args()
    out = args.out or f"runs/inprocess-{Path(args.scenario).stem}"
    cfg = build_config(args.scenario, args.sets, args.seed, out)
    summary = run(cfg)
    print(json.dumps({k: summary.get(k) for k in ("final-accuracy", "best-accuracy")}))
    if args.check:
        import subprocess

        ray_out = out + "-ray"
        sets = [a for s in args.sets for a in ("--set", s)]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "simulations.cli",
                "compare",
                args.scenario,
                "--strategies",
                str(cfg["strategy"]),
                "--seeds",
                str(args.seed + 1),
                *sets,
                "--out",
                ray_out,
            ],
            check=True,
            cwd=ROOT,
        )
        ray_dir = next(d for d in Path(ray_out).glob("*/*") if d.name.endswith(f"seed{args.seed}"))
        a, b = _rows(out), _rows(ray_dir)
        same = a == b
        print(f"in-process vs Ray: {len(a)} rows, identical: {same}")
        if not same:
            for ra, rb in zip(a, b, strict=False):
                if ra != rb:
                    print("first difference:", ra, rb)
                    break
            sys.exit(1)


if __name__ == "__main__":
    main()
