"""Sweep wall time: ``fedadapt compare`` one run at a time versus several at once.

The sweep: the ``quickstart`` scenario (digits, 20 Dirichlet(0.5) clients, 10 per round, 2
workers, 2 local epochs, 15 rounds), strategies ``fedavg, fedadam, fedadapt`` x seeds 0..3 =
12 runs, exactly as a user types it::

    fedadapt compare quickstart --strategies fedavg,fedadam,fedadapt --seeds 4 --parallel P

Arms: ``--parallel 1`` (the sequential compare that came before) and ``--parallel 2`` (or any
other values of ``--arms``: ``local`` is ``--backend local`` with ``--jobs`` = the CPUs, no Ray;
``-noplots`` adds ``--no-run-plots``; ``auto`` is 1 on a 2-core machine with quickstart's 2 workers), each in a fresh process (Ray starts fresh) writing to a fresh
folder (nothing is skipped), interleaved when repeated, so both arms see the same load.
Measured per arm: the command's wall time; the CPU seconds of the driver process (the
ServerApp: aggregation, evaluation, messages, the compare's tables and plots) and of the rest
of its process tree (Ray's worker actors, raylet, GCS), sampled with psutil until it exits; each
run's own duration (``sweep-done.json``) and the start-up before the first run's first round.
The last lines turn the sequential arm's per-run profile into what a cluster of N nodes gives.

    .venv/bin/python benchmarks/sweep.py                  # 1 repeat, arms 1,2
    .venv/bin/python benchmarks/sweep.py --repeats 3      # medians and minima
    .venv/bin/python benchmarks/sweep.py --arms 1,2,3,auto --seeds 2 --rounds 5   # quicker
    .venv/bin/python benchmarks/sweep.py --arms 1,local,local-noplots --repeats 3
                                                        # Ray sequential vs --backend local
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procmem import flower_cli_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = "fedavg,fedadam,fedadapt"


class CpuSampler:
    """CPU seconds of a process and of its descendants (the last sample of each pid)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval = pid, interval
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                procs = []
            for p in procs:
                try:
                    t = p.cpu_times()
                    self.last[p.pid] = t.user + t.system
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self._stop.wait(self.interval)

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._t.join()
        driver = self.last.get(self.pid, 0.0)
        return driver, sum(v for k, v in self.last.items() if k != self.pid)


def arm_options(arm: str) -> list[str]:
    """An arm's compare options: ``1``, ``2``, ``auto``: ``--parallel`` on Ray; ``local``:
    ``--backend local`` (``--jobs`` = the CPUs); ``localN``: ``--jobs N``; a ``-noplots``
    suffix adds ``--no-run-plots`` (the runs' own plots skipped)."""
    opts = []
    if arm.endswith("-noplots"):
        arm = arm[: -len("-noplots")]
        opts.append("--no-run-plots")
    if arm.startswith("local"):
        jobs = arm[len("local") :] or "0"
        return ["--backend", "local", "--jobs", jobs, *opts]
    return ["--parallel", arm, *opts]


def run_arm(
    parallel: str,
    seeds: int,
    rounds: int,
    work: Path,
    strategies: str = STRATEGIES,
    sets: tuple[str, ...] = (),
) -> dict:
    out = work / f"p{parallel}-{time.monotonic_ns()}"
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "compare",
        "quickstart",
        "--strategies",
        strategies,
        "--seeds",
        str(seeds),
        "--out",
        str(out),
        *arm_options(parallel),
        "--set",
        f"num-server-rounds={rounds}",
        *[a for x in sets for a in ("--set", x)],
    ]
    log = out.with_suffix(".log")
    stamps: dict[str, float] = {}  # phase -> seconds since the command started
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=flower_cli_env(str(work / "flwr-home")),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sampler = CpuSampler(proc.pid)
        assert proc.stdout is not None
        for line in proc.stdout:  # the compare's plain progress lines, as they come
            now = time.perf_counter() - t0
            fh.write(f"{now:8.2f} {line}")
            if line.startswith("  ") and " round " in line:  # a run's round 0: Ray is up
                stamps.setdefault("ray-up", now)
            elif line.startswith("[start]"):
                stamps.setdefault("first-start", now)
            elif line.startswith("[done]"):
                stamps["last-done"] = now
        rc = proc.wait()
    wall = time.perf_counter() - t0
    driver_cpu, other_cpu = sampler.stop()
    if rc != 0:
        raise SystemExit(
            f"arm --parallel {parallel} failed (exit {rc}); see {log}:\n" + log.read_text()[-3000:]
        )
    runs = []
    for done in sorted(out.rglob("sweep-done.json")):
        rows = [json.loads(x) for x in (done.parent / "metrics.jsonl").read_text().splitlines()]
        rec = json.loads(done.read_text())
        runs.append(
            {
                "seconds": rec["seconds"],
                "driver_cpu": rec.get("driver-cpu-seconds", 0.0),
                "round0": float(rows[0].get("elapsed", 0.0)),
                "steady": statistics.median(float(r["wall-time"]) for r in rows[2:])
                if len(rows) > 2
                else float("nan"),
            }
        )
    chosen = next(
        (int(x.split()[1]) for x in log.read_text().splitlines() if x.endswith("run(s) at once")),
        None,
    )
    return {
        "arm": parallel,
        "parallel": chosen,
        "wall": wall,
        "driver_cpu": driver_cpu,
        "other_cpu": other_cpu,
        "runs": runs,
        "before": stamps.get("ray-up", float("nan")),
        "runs_phase": stamps.get("last-done", wall) - stamps.get("ray-up", 0.0),
        "after": wall - stamps.get("last-done", wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--arms",
        default="1,2",
        help="--parallel values on Ray, or local / localN "
        "(--backend local, --jobs N), any with a -noplots suffix "
        "(--no-run-plots); the first the base (auto is 1 on a 2-core machine "
        "with quickstart's 2 workers)",
    )
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--strategies", default=STRATEGIES)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        help="key=value for every run (e.g. pfl_peer.py's job)",
    )
    ap.add_argument("--json", help="write every measurement here")
    args = ap.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    n_runs = len(args.strategies.split(",")) * args.seeds
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(
        f"sweep: quickstart {' '.join(args.sets)}, {args.strategies} x {args.seeds} seeds = "
        f"{n_runs} runs of {args.rounds} rounds; {os.cpu_count()} CPUs; arms --parallel {', '.join(arms)}; "
        f"{args.repeats} repeat(s), interleaved"
    )
    results: dict[str, list[dict]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory(prefix="fa-sweep-bench-") as tmp:
        for rep in range(args.repeats):
            order = arms if rep % 2 == 0 else arms[::-1]
            for arm in order:
                r = run_arm(
                    arm, args.seeds, args.rounds, Path(tmp), args.strategies, tuple(args.sets)
                )
                results[arm].append(r)
                print(
                    f"  repeat {rep + 1} --parallel {arm} ({r['parallel']} at once): "
                    f"{r['wall']:.1f} s",
                    flush=True,
                )
    print(f"uptime: {os.popen('uptime').read().strip()}")
    base = statistics.median(r["wall"] for r in results[arms[0]])
    print()
    print(
        "| --parallel | runs at once | wall s (median) | wall s (min) | x sequential | "
        "until round 0 s | runs s | after s | driver CPU s | workers+Ray CPU s | "
        "run s (median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for arm in arms:
        rs = results[arm]
        walls = [r["wall"] for r in rs]
        med = statistics.median(walls)
        print(
            f"| {arm} | {rs[0]['parallel']} | {med:.1f} | {min(walls):.1f} | "
            f"{med / base:.2f} | {statistics.median(r['before'] for r in rs):.1f} | "
            f"{statistics.median(r['runs_phase'] for r in rs):.1f} | "
            f"{statistics.median(r['after'] for r in rs):.1f} | "
            f"{statistics.median(r['driver_cpu'] for r in rs):.1f} | "
            f"{statistics.median(r['other_cpu'] for r in rs):.1f} | "
            f"{statistics.median(x['seconds'] for r in rs for x in r['runs']):.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    _cluster_estimate(results[arms[0]], n_runs)


def _cluster_estimate(seq: list[dict], n_runs: int) -> None:
    """What N nodes would give, from the sequential arm's per-run profile."""
    run_s = statistics.median(x["seconds"] for r in seq for x in r["runs"])
    driver = statistics.median(x["driver_cpu"] for r in seq for x in r["runs"])
    workers = statistics.median(r["other_cpu"] for r in seq) / n_runs
    # what a sweep pays once: before the first run's round 0 (imports, checks, Ray, actors,
    # warm-up) and after the last run (tables, plots, Ray's shutdown)
    fixed = statistics.median(r["before"] + r["after"] for r in seq)
    print()
    print(
        f"per-run profile (sequential arm, medians): {run_s:.2f} s per run alone; CPU of the "
        f"driver thread serving it {driver:.2f} s; workers+Ray CPU {workers:.2f} s per run (all "
        f"of Ray's processes over the runs, an upper bound); fixed cost (until round 0, and "
        f"after the last run) {fixed:.1f} s"
    )
    print(
        "estimate for N nodes of 2 CPUs (a run uses 2 worker slots, so --parallel auto runs "
        "N at once): wall = fixed + runs x max(run alone / N, driver CPU, workers CPU / (2N)); the "
        "driver's threads share one interpreter (its CPU per run bounds the rate however "
        "many nodes), and Flower's engine serves every actor of the pool "
        "(simulations.runtime.every_actor_served; Flower alone: at most the driver's CPUs + 4)"
    )
    for n in (1, 2, 4, 8, 16):
        per = max(run_s / n, driver, workers / (2 * n))
        bound = (
            "driver" if per == driver else ("workers" if per == workers / (2 * n) else "run length")
        )
        for runs in (n_runs, 100):
            est = fixed + runs * per
            print(f"  N={n:2d}: {runs:3d} runs ~ {est:7.1f} s ({bound}-bound)")


if __name__ == "__main__":
    main()
