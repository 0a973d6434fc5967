"""The attack study of RESULTS.md §10 (issue 20 §6): Byzantine clients against FedAvg, FedAdam
and cp-adam with each aggregator of the server pipeline, on quickstart.

    python docs/results/attack_study.py run --stage 1      # f = 1: every aggregator, every attack
    python docs/results/attack_study.py run --stage 2      # f = 3: mean and trimmed mean
    python docs/results/attack_study.py run --stage 3      # f = 3: median, Krum, MultiKrum
    python docs/results/attack_study.py run --stage 1 --extend   # seeds 3-4 where a gap is
                                                                 # within two sd of 0 or -3
    python docs/results/attack_study.py run --stage 4 --first-seed 5 --seeds 5  # the goal's cell
    python docs/results/attack_study.py run --stage 5 --seeds 5  # cp-adam, max-norm-ratio 3
    python docs/results/attack_study.py tables

Every run is quickstart (20 clients, 10 per round, 15 rounds) with ``reply-mode = per-client``
and ``--set`` overrides only, run in this process by ``docs/results/inprocess.py`` (the ServerApp
and ClientApp code of ``fedadapt simulate``, no Ray). The Byzantine clients are
``attack.clients = f`` per round (simulations/attacks.py: the omniscient attacker rewrites their
replies after the honest ones are known). Krum, MultiKrum and Bulyan are told the true ``f``
(``byzantine-clients``); Bulyan needs ``4 f + 3 <= 10`` replies, so ``f = 1`` only. The server
methods: FedAvg (``server-optimizer = sgd`` at server lr 1), FedAdam (``adam``, eta 0.1, tau 1e-3,
betas (0.9, 0.99), as RESULTS.md §9) and cp-adam (fedadapt's default). The default bounds of the
pipeline (weight cap 0.75, updates above 10x the cohort's median norm clipped) are on in every run.

Each finished run is one row of ``attack-study-rows.json`` (next to this file), written as soon
as the run ends, so the same command again resumes a killed study. Besides the accuracy a row
says whether the strategy's whole state (server method's moments, lr, detector) was finite at
the end, read back from the last round's checkpoint.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

ROWS = HERE / "attack-study-rows.json"
SCENARIO = "quickstart"
ROUNDS = 15
ATTACKS = ("sign-flip", "scaling", "alie", "ipm", "free-rider")
AGGREGATORS = ("mean", "median", "trimmed-mean", "krum", "multikrum", "bulyan")
METHODS = {
    "fedavg": ["server-optimizer=sgd", "server-lr=1.0"],
    "fedadam": [
        "server-optimizer=adam",
        "server-lr=0.1",
        'server-options={"eps": 0.001, "betas": [0.9, 0.99]}',
    ],
    "cp-adam": [],
}
NEEDS_F = ("krum", "multikrum", "bulyan")  # rules told the number of Byzantine clients
STAGES = {
    1: (1, AGGREGATORS),
    2: (3, ("mean", "trimmed-mean")),
    3: (3, ("median", "krum", "multikrum")),
    # the goal's cell (cp-adam, mean, 1 of 10) with more seeds (--first-seed 5), and a tighter
    # relative norm bound than the default 10x the cohort's median norm
    4: (1, ("mean",)),
    5: (1, ("mean@ratio3",)),
}
STAGE_METHODS = {4: ("cp-adam",), 5: ("cp-adam",)}
GOAL = 0.03  # issue 20: one attacker of ten costs cp-adam at most 3 points


@dataclass(frozen=True)
class Run:
    method: str
    aggregator: str
    f: int  # Byzantine clients per round (0: the clean run)
    attack: str  # "none" for the clean run
    seed: int
    f_assumed: int = 1  # byzantine-clients of Krum / MultiKrum / Bulyan

    @property
    def key(self) -> str:
        return f"{self.method}/{self.aggregator}/fa{self.f_assumed}/{self.attack}/f{self.f}/s{self.seed}"

    def sets(self) -> list[str]:
        out = ["reply-mode=per-client", f"checkpoint-every={ROUNDS}", *METHODS[self.method]]
        agg, _, variant = self.aggregator.partition("@")
        if agg != "mean":
            out.append(f"aggregator={agg}")
        if variant.startswith("ratio"):  # "mean@ratio3": max-norm-ratio 3
            out.append(f"max-norm-ratio={variant[len('ratio') :]}")
        if self.aggregator in NEEDS_F and self.f_assumed != 1:
            out.append(f"byzantine-clients={self.f_assumed}")
        if self.attack != "none":
            out += [f"attack.kind={self.attack}", f"attack.clients={self.f}"]
        return out


def runs_of(stage: int, seeds: list[int]) -> list[Run]:
    f, aggregators = STAGES[stage]
    out = []
    for seed in seeds:
        for method in STAGE_METHODS.get(stage, tuple(METHODS)):
            for agg in aggregators:
                fa = f if agg in NEEDS_F else 1
                out.append(Run(method, agg, 0, "none", seed, fa))  # its clean twin
                out += [Run(method, agg, f, a, seed, fa) for a in ATTACKS]
    return out


# ---------------------------------------------------------------------------------- running
def _init_worker() -> None:
    import logging

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import flwr.common.logger  # noqa: F401 - sets its level on import; quiet it after that
    import torch

    logging.getLogger("flwr").setLevel(logging.WARNING)
    torch.set_num_threads(1)


def _finite(obj: Any) -> bool:
    import torch

    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(_finite(v) for v in obj)
    return True


def _one(args: tuple[Run, str]) -> dict[str, Any]:
    run, root = args
    import torch
    from inprocess import run as run_inprocess

    from simulations.cli import build_config

    out = Path(root) / run.key
    t0 = time.perf_counter()
    row: dict[str, Any] = {"key": run.key, **asdict(run)}
    try:
        cfg = build_config(SCENARIO, run.sets(), run.seed, str(out))
        summary = run_inprocess(cfg)
        ckpt = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        rounds = [r for r in rows if r.get("round", 0) >= 1]
        row.update(
            {
                "final-accuracy": summary["final-accuracy"],
                "best-accuracy": summary["best-accuracy"],
                "failures": summary.get("failures"),
                "alarms": summary.get("detector-alarms", 0),
                "state-finite": _finite(ckpt),
                "server-skipped": sum(float(r.get("server-skipped") or 0) for r in rounds),
                "server-clipped": sum(float(r.get("server-clipped") or 0) for r in rounds),
                "server-lr-last": rounds[-1].get("server-lr") if rounds else None,
            }
        )
    except Exception as exc:  # recorded, the study goes on
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def load_rows() -> dict[str, dict[str, Any]]:
    if not ROWS.exists():
        return {}
    return {r["key"]: r for r in json.loads(ROWS.read_text())}


def save_rows(rows: dict[str, dict[str, Any]]) -> None:
    tmp = ROWS.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(rows.values(), key=lambda r: r["key"]), indent=1) + "\n")
    tmp.replace(ROWS)


def execute(runs: list[Run], root: Path, jobs: int) -> None:
    import multiprocessing as mp

    rows = load_rows()
    # a run that ended in an error is run again
    todo = [r for r in dict.fromkeys(runs) if r.key not in rows or "error" in rows[r.key]]
    total = len(todo)
    print(f"{total} runs to do ({jobs} processes)", flush=True)
    if not todo:
        return
    t0 = time.time()
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, initializer=_init_worker, maxtasksperchild=100) as pool:
        for i, row in enumerate(pool.imap_unordered(_one, [(r, str(root)) for r in todo]), 1):
            rows[row["key"]] = row
            save_rows(rows)
            left = (time.time() - t0) / i * (total - i)
            status = row.get("error") or f"acc {row['final-accuracy']:.3f}"
            print(
                f"[{i}/{total}] {row['key']} {row['seconds']:.1f}s {status}; "
                f"about {left / 60:.0f} min left",
                flush=True,
            )
    print(f"done in {(time.time() - t0) / 60:.1f} min", flush=True)


def extend(stage: int, rows: dict[str, dict[str, Any]]) -> list[Run]:
    """Seeds 3-4 for the cells whose paired gap is within two standard deviations of 0 or of
    the goal's -3 points (neither clearly there nor clearly not)."""
    out = []
    for cell in cells(rows).values():
        if cell["f"] != STAGES[stage][0] or cell["aggregator"] not in STAGES[stage][1]:
            continue
        m, sd = cell["gap"], cell["gap-sd"]
        if any(abs(m - ref) <= 2 * sd for ref in (0.0, -GOAL)):
            base = Run(
                cell["method"], cell["aggregator"], cell["f"], cell["attack"], 0, cell["f-assumed"]
            )
            for seed in (3, 4):
                out += [
                    Run(base.method, base.aggregator, 0, "none", seed, base.f_assumed),
                    Run(base.method, base.aggregator, base.f, base.attack, seed, base.f_assumed),
                ]
    return out


# ---------------------------------------------------------------------------------- tables
def cells(rows: dict[str, dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per (method, aggregator, f, attack): accuracies, the paired gap to the clean run of the
    same method + aggregator (+ assumed f), and how many runs ended with a finite state."""
    clean = {
        (r["method"], r["aggregator"], r["f_assumed"], r["seed"]): r
        for r in rows.values()
        if r["attack"] == "none" and "error" not in r
    }
    grouped: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows.values():
        if "error" not in r:
            grouped[(r["method"], r["aggregator"], r["f"], r["attack"], r["f_assumed"])].append(r)
    out = {}
    for (method, agg, f, attack, fa), rs in grouped.items():
        gaps = [
            r["final-accuracy"] - clean[(method, agg, fa, r["seed"])]["final-accuracy"]
            for r in rs
            if (method, agg, fa, r["seed"]) in clean
        ]
        accs = [r["final-accuracy"] for r in rs]
        out[(method, agg, f, attack, fa)] = {
            "method": method,
            "aggregator": agg,
            "f": f,
            "attack": attack,
            "f-assumed": fa,
            "n": len(rs),
            "acc": statistics.mean(accs),
            "acc-sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "gap": statistics.mean(gaps) if gaps else math.nan,
            "gap-sd": statistics.stdev(gaps) if len(gaps) > 1 else 0.0,
            "finite": sum(bool(r["state-finite"]) for r in rs),
            "clipped": statistics.mean(r["server-clipped"] for r in rs),
        }
    return out


def tables(rows: dict[str, dict[str, Any]]) -> str:
    cs = cells(rows)
    lines = []
    for f in (1, 3):
        seen = sorted({k[1] for k in cs} - set(AGGREGATORS))
        aggs = [a for a in (*AGGREGATORS, *seen) if any(k[1] == a and k[2] == f for k in cs)]
        if not aggs:
            continue
        lines += [
            f"\n**{f} Byzantine client{'s' if f > 1 else ''} of 10 per round.** Final "
            "accuracy of the clean run, then the paired change under each attack "
            "(points, mean ± sd over seeds; n seeds; `!` a run's state was not finite)\n"
        ]
        lines.append("| method | aggregator | clean | " + " | ".join(ATTACKS) + " |")
        lines.append("|---|---|---|" + "---|" * len(ATTACKS))
        for method in METHODS:
            for agg in aggs:
                fa = f if agg in NEEDS_F else 1
                c0 = cs.get((method, agg, 0, "none", fa))
                if c0 is None:
                    continue
                parts = [f"{c0['acc']:.3f} ± {c0['acc-sd']:.3f}"]
                for a in ATTACKS:
                    c = cs.get((method, agg, f, a, fa))
                    if c is None:
                        parts.append("-")
                        continue
                    bad = "" if c["finite"] == c["n"] else f" ! {c['n'] - c['finite']}"
                    parts.append(
                        f"{100 * c['gap']:+.1f} ± {100 * c['gap-sd']:.1f} (n={c['n']}){bad}"
                    )
                lines.append(f"| {method} | {agg} | " + " | ".join(parts) + " |")
    goal = [c for c in cs.values() if c["method"] == "cp-adam" and c["f"] == 1]
    if goal:
        lines.append("\n**Goal (cp-adam, 1 of 10, default bounds):** worst attack per aggregator")
        lines.append("\n| aggregator | worst attack | change (points) | met (>= -3) |")
        lines.append("|---|---|---|---|")
        for agg in (*AGGREGATORS, *sorted({c["aggregator"] for c in goal} - set(AGGREGATORS))):
            g = [c for c in goal if c["aggregator"] == agg]
            if not g:
                continue
            worst = min(g, key=lambda c: c["gap"])
            lines.append(
                f"| {agg} | {worst['attack']} | {100 * worst['gap']:+.1f} ± "
                f"{100 * worst['gap-sd']:.1f} | "
                f"{'yes' if worst['gap'] >= -GOAL else 'no'} |"
            )
    notfinite = sum(c["n"] - c["finite"] for c in cs.values())
    lines.append(
        f"\nRuns whose final state was not finite: {notfinite} of "
        f"{sum(c['n'] for c in cs.values())}."
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--stage", type=int, choices=sorted(STAGES), action="append", required=True)
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--first-seed", type=int, default=0)
    r.add_argument(
        "--extend",
        action="store_true",
        help="seeds 3-4 where a gap is within two sd of 0 or of -3 points",
    )
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--out", default="runs/attack-study")
    sub.add_parser("tables")
    args = ap.parse_args()
    if args.cmd == "tables":
        print(tables(load_rows()))
        return
    runs: list[Run] = []
    for stage in args.stage:
        runs += (
            extend(stage, load_rows())
            if args.extend
            else runs_of(stage, list(range(args.first_seed, args.first_seed + args.seeds)))
        )
    execute(runs, Path(args.out), args.jobs)


if __name__ == "__main__":
    main()
