"""The fastest peer, side by side: Apple's pfl-research against fedadapt on one FedAvg job.

The job (issue 21): fedadapt's built-in digits (the same arrays, 20% held out), 100 clients by
Dirichlet(0.5) (flwr-datasets' partitioner as fedadapt runs it; pfl gets exactly those client
arrays), 10 clients per round, 1 local epoch of SGD (lr 0.1, batch 32), 30 rounds, fedadapt's
``mlp`` (64 hidden units, the same initial weights), FedAvg (server step 1); accuracy on the
held-out set at the end only (fedadapt: ``eval-every`` past the last round; evaluation of
rounds 0 and 30).

Arms, each in a fresh process, interleaved when repeated:

- ``pfl``: pfl 0.6's ``FederatedAveraging`` on its ``SimulatedBackend`` (one process, no
  workers), a user sampler that minimises reuse; ``--sweep K`` runs it K times (seeds 0..K-1)
  in one process, as a pfl user loops;
- ``fedadapt-simulate``: ``fedadapt simulate`` of the job (one run, Flower on Ray, 2 workers);
- ``fedadapt-sweep``: ``fedadapt compare`` of the same job over K seeds, ``--parallel auto``;
- ``fedadapt-simulate-local``, ``fedadapt-sweep-local``: the same with ``--backend local`` (no
  Ray; the sweep in ``--jobs`` = CPUs processes); ``fedadapt-sweep-local-noplots`` adds
  ``--no-run-plots`` (the runs' own plots skipped, the comparison's drawn).

Reported: wall time per client update (rounds x clients per round x runs updates), the ratio
to pfl's, and where fedadapt's time goes: start-up until round 0 (imports, checks, Ray,
actors, the workers' warm-up), the steady rounds (median round wall time, and the driver's
aggregation seconds in it), the end (final evaluation, run directory, plots, Ray shutdown);
``--profile`` adds one more simulate run under cProfile (not in the table) and prints the
driver's phases by cumulative time.

pfl is a benchmark-only dependency: ``pip install 'fedadapt[bench]'`` (or ``pip install pfl``).
Without it the script says so and exits 0.

    .venv/bin/python benchmarks/pfl_peer.py                 # 1 repeat, sweep of 12
    .venv/bin/python benchmarks/pfl_peer.py --repeats 3 --profile
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procmem import flower_cli_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIENTS, PER_ROUND, ROUNDS, EPOCHS, LR, BATCH, ALPHA = 100, 10, 30, 1, 0.1, 32, 0.5
SETS = [
    f"num-clients={CLIENTS}",
    f"clients-per-round={PER_ROUND}",
    f"num-server-rounds={ROUNDS}",
    f"local-epochs={EPOCHS}",
    f"client-lr={LR}",
    f"batch-size={BATCH}",
    f"partition-alpha={ALPHA}",
    "strategy=fedavg",
    f"eval-every={ROUNDS + 1}",
    "model=mlp",
]
RESULT = "PFL-PEER-RESULT "


# ----------------------------------------------------------------------------- the job's data


def export_job(path: Path, seeds: int) -> None:
    """fedadapt's own clients, test set and initial model for seeds 0..seeds-1, to ``path``."""
    import numpy as np
    import torch

    from simulations.cli import build_config
    from simulations.reader import read
    from simulations.world import world

    for seed in range(seeds):
        spec = read(build_config("quickstart", SETS, seed))
        w = world(spec.world)
        arrays: dict[str, np.ndarray] = {}
        for cid in range(CLIENTS):
            X, y = w.client_data(cid, 1)
            arrays[f"x{cid}"], arrays[f"y{cid}"] = X, y
        arrays["xtest"], arrays["ytest"] = w.test_data(1)
        np.savez(path / f"job-{seed}.npz", **arrays)  # type: ignore[arg-type]
        torch.save(w.model().state_dict(), path / f"init-{seed}.pt")


# ----------------------------------------------------------------------------- pfl (child)


def pfl_child(data: Path, runs: int) -> None:
    """Run the job with pfl ``runs`` times (seeds 0..runs-1) in this process; print a result."""
    t_start = time.perf_counter()
    import numpy as np
    import torch
    import torch.nn.functional as F  # noqa: N812
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Weighted
    from pfl.model.pytorch import PyTorchModel

    torch.set_num_threads(1)  # as fedadapt's workers

    class Net(torch.nn.Module):
        """fedadapt's mlp (Flatten, Linear(64, 64), ReLU, Linear(64, 10)) with pfl's hooks."""

        def __init__(self) -> None:
            super().__init__()
            self.seq = torch.nn.Sequential(
                torch.nn.Flatten(),
                torch.nn.Linear(64, 64),
                torch.nn.ReLU(),
                torch.nn.Linear(64, 10),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.seq(x)

        def loss(self, x: torch.Tensor, y: torch.Tensor, eval: bool = False) -> torch.Tensor:  # noqa: A002
            self.train(not eval)
            return F.cross_entropy(self(x), y)

        @torch.no_grad()
        def metrics(self, x: torch.Tensor, y: torch.Tensor, eval: bool = False) -> dict:  # noqa: A002
            self.eval()
            logits = self(x)
            n = len(y)
            return {
                "loss": Weighted(float(F.cross_entropy(logits, y, reduction="sum")), n),
                "accuracy": Weighted(float((logits.argmax(1) == y).sum()), n),
            }

    t_imported = time.perf_counter()
    results = []
    for seed in range(runs):
        t0 = time.perf_counter()
        z = np.load(data / f"job-{seed}.npz")
        users = {
            cid: (torch.from_numpy(z[f"x{cid}"]), torch.from_numpy(z[f"y{cid}"]))
            for cid in range(CLIENTS)
        }
        np.random.seed(seed)
        sampler = get_user_sampler("minimize_reuse", list(range(CLIENTS)))
        fed = FederatedDataset(
            lambda uid, users=users: Dataset(raw_data=list(users[uid]), user_id=uid), sampler
        )
        net = Net()
        net.seq.load_state_dict(torch.load(data / f"init-{seed}.pt"))
        model = PyTorchModel(
            model=net,
            local_optimizer_create=torch.optim.SGD,
            central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0),
        )
        backend = SimulatedBackend(training_data=fed, val_data=None)
        t_ready = time.perf_counter()
        model = FederatedAveraging().run(
            algorithm_params=NNAlgorithmParams(
                central_num_iterations=ROUNDS,
                evaluation_frequency=ROUNDS,
                train_cohort_size=PER_ROUND,
                val_cohort_size=None,
            ),
            backend=backend,
            model=model,
            model_train_params=NNTrainHyperParams(
                local_num_epochs=EPOCHS, local_learning_rate=LR, local_batch_size=BATCH
            ),
            model_eval_params=NNEvalHyperParams(local_batch_size=None),
            callbacks=[],
        )
        t_trained = time.perf_counter()
        with torch.no_grad():
            net.eval()
            xt, yt = torch.from_numpy(z["xtest"]), torch.from_numpy(z["ytest"])
            acc = float((net(xt).argmax(1) == yt).float().mean())
        results.append(
            {
                "seed": seed,
                "setup": t_ready - t0,
                "train": t_trained - t_ready,
                "run": time.perf_counter() - t0,
                "accuracy": acc,
            }
        )
    print(RESULT + json.dumps({"imports": t_imported - t_start, "runs": results}), flush=True)


# ----------------------------------------------------------------------------- the arms


def _timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, list[tuple[float, str]]]:
    """Run ``cmd``; its wall time and its output lines with the second each came."""
    t0 = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with log.open("w") as fh:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))
            fh.write(f"{lines[-1][0]:8.2f} {line}")
        rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} ... failed (exit {rc}):\n{log.read_text()[-3000:]}")
    return wall, lines


def arm_pfl(work: Path, runs: int, tag: str) -> dict:
    env = flower_cli_env(str(work / "flwr-home"))
    wall, lines = _timed(
        [sys.executable, __file__, "--child-pfl", str(work), "--sweep", str(runs)],
        env,
        work / f"{tag}.log",
    )
    line = next(x for _, x in lines if x.startswith(RESULT))
    res = json.loads(line[len(RESULT) :])
    return {
        "wall": wall,
        "updates": runs * ROUNDS * PER_ROUND,
        **res,
        "accuracy": statistics.mean(r["accuracy"] for r in res["runs"]),
    }


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def arm_simulate(work: Path, tag: str, opts: tuple[str, ...] = ()) -> dict:
    out = work / tag
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "simulate",
        "quickstart",
        "--out",
        str(out),
        *[a for s in SETS for a in ("--set", s)],
        "--seed",
        "0",
        *opts,
    ]
    wall, lines = _timed(cmd, flower_cli_env(str(work / "flwr-home")), work / f"{tag}.log")
    rows = _rows(out)
    # the plain progress lines: "<scenario>: starting Ray ..." once the configs are checked,
    # then one line per round, then the summary
    starting = next(t for t, x in lines if ": starting" in x)
    round0 = next(t for t, x in lines if " round 0/" in x)
    last = next(t for t, x in lines if f" round {ROUNDS}/" in x)
    steady = [float(r["wall-time"]) for r in rows[2:]]
    agg = [float(r.get("aggregate-seconds") or 0.0) for r in rows[2:]]
    return {
        "wall": wall,
        "updates": ROUNDS * PER_ROUND,
        "accuracy": rows[-1].get("accuracy"),
        "imports": starting,
        "startup": round0 - starting,
        "rounds": last - round0,
        "end": wall - last,
        "steady": statistics.median(steady),
        "aggregate": statistics.median(agg),
    }


def arm_sweep(
    work: Path, runs: int, tag: str, opts: tuple[str, ...] = ("--parallel", "auto")
) -> dict:
    out = work / tag
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "compare",
        "quickstart",
        "--strategies",
        "fedavg",
        "--seeds",
        str(runs),
        "--out",
        str(out),
        *opts,
        *[a for s in SETS for a in ("--set", s)],
    ]
    wall, lines = _timed(cmd, flower_cli_env(str(work / "flwr-home")), work / f"{tag}.log")
    accs = [_rows(p.parent)[-1].get("accuracy") for p in out.rglob("metrics.jsonl")]
    chosen = next((x.split()[0] for _, x in lines if x.endswith("run(s) at once")), "?")
    # the runs phase: from the first run's round 0 (Ray, actors and warm-up done) to the last
    # run's end; before it imports, checks and start-up, after it tables, plots, Ray shutdown
    first = next(t for t, x in lines if x.startswith("  ") and " round 0/" in x)
    last = max(t for t, x in lines if x.startswith("[done]"))
    done = [json.loads(p.read_text()) for p in out.rglob("sweep-done.json")]
    return {
        "wall": wall,
        "updates": runs * ROUNDS * PER_ROUND,
        "parallel": chosen,
        "accuracy": statistics.mean(a for a in accs if a is not None),
        "before": first,
        "runs_phase": last - first,
        "after": wall - last,
        "run_seconds": statistics.median(d["seconds"] for d in done),
        "driver_cpu": statistics.median(d.get("driver-cpu-seconds", 0.0) for d in done),
    }


# (label, file fragment, function name) of the driver's phases, read by cumulative time;
# the first group in the main thread, the second in the ServerApp's thread (serve)
MAIN_PHASES = (
    (
        "imports (all modules, also those inside the phases below)",
        "<frozen importlib._bootstrap>",
        "_find_and_load",
    ),
    ("config checks before Ray (prepare)", "simulations/experiment.py", "prepare"),
    (
        "Flower's run_simulation (Ray up, the run, Ray down)",
        "flwr/simulation/run_simulation.py",
        "run_simulation",
    ),
    ("  ray.init", "ray/_private/worker.py", "init"),
)
SERVE_PHASES = (
    ("serve (the ServerApp body: the whole run)", "simulations/server_app.py", "serve"),
    (
        "  warm_up (wait for the workers, they build the federation)",
        "simulations/server_app.py",
        "warm_up",
    ),
    ("  the strategy's rounds (strategy.start)", "strategies/orchestration.py", "start"),
    (
        "    send_and_receive (messages out, wait for replies)",
        "simulations/resilience.py",
        "send_and_receive",
    ),
    ("    the replies checked", "strategies/orchestration.py", "_check_replies"),
    ("    aggregation", "strategies/", "aggregate_train"),
    ("    evaluation (rounds 0 and 30)", "simulations/server_app.py", "evaluate"),
    ("  run directory: summary, plots (RunWriter.finish)", "simulations/report.py", "finish"),
    ("    plots", "simulations/report.py", "plot_run"),
)


def profile_child(main_out: str, serve_out: str, argv: list[str]) -> None:
    """``fedadapt <argv>`` with cProfile on the main thread and on the ServerApp's thread."""
    import cProfile

    import simulations.server_app as server_app
    from simulations.cli import app

    original = server_app.serve

    def serve(*a: object, **k: object) -> object:
        prof = cProfile.Profile()
        prof.enable()
        try:
            return original(*a, **k)  # type: ignore[arg-type]
        finally:
            prof.disable()
            prof.dump_stats(serve_out)

    server_app.serve = serve  # type: ignore[assignment]  # run_many looks it up at call time
    prof = cProfile.Profile()
    prof.enable()
    try:
        app(argv, standalone_mode=False)
    finally:
        prof.disable()
        prof.dump_stats(main_out)


def _phases(path: Path, phases: tuple[tuple[str, str, str], ...]) -> list[str]:
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    out = []
    for label, frag, name in phases:
        cum = [v[3] for (file, _, func), v in stats.items() if func == name and frag in file]
        if cum:
            out.append(f"{label}: {max(cum):.2f} s")
    return out


def _top(path: Path, n: int = 8) -> list[str]:
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:n]
    return [
        f"{v[2]:6.2f} s own, {v[1]:6d} calls  {Path(f).name}:{ln}({func})"
        for (f, ln, func), v in rows
    ]


def profile_simulate(work: Path) -> list[str]:
    """One more ``fedadapt simulate`` of the job under cProfile (driver process only)."""
    main_p, serve_p = work / "main.prof", work / "serve.prof"
    argv = [
        "simulate",
        "quickstart",
        "--out",
        str(work / "profiled"),
        *[a for s in SETS for a in ("--set", s)],
        "--seed",
        "0",
    ]
    _timed(
        [sys.executable, __file__, "--child-profile", str(main_p), str(serve_p), "--", *argv],
        flower_cli_env(str(work / "flwr-home")),
        work / "profiled.log",
    )
    lines = [
        "main thread:",
        *("  " + x for x in _phases(main_p, MAIN_PHASES)),
        "ServerApp thread:",
        *("  " + x for x in _phases(serve_p, SERVE_PHASES)),
        "ServerApp thread, top functions by own time:",
        *("  " + x for x in _top(serve_p)),
    ]
    return lines


ARMS = (
    "pfl",
    "fedadapt-simulate",
    "fedadapt-simulate-local",
    "pfl-sweep",
    "fedadapt-sweep",
    "fedadapt-sweep-local",
    "fedadapt-sweep-local-noplots",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sweep", type=int, default=12, help="runs (seeds) in the sweep arms")
    ap.add_argument("--profile", action="store_true", help="cProfile the simulate arm's driver")
    ap.add_argument(
        "--arms", default=",".join(ARMS), help=f"comma list of arms (default all: {','.join(ARMS)})"
    )
    ap.add_argument("--child-pfl", help=argparse.SUPPRESS)
    ap.add_argument("--child-profile", nargs=2, help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.child_profile:
        main_out, serve_out = args.child_profile
        profile_child(main_out, serve_out, [a for a in rest if a != "--"])
        return
    if args.child_pfl:
        pfl_child(Path(args.child_pfl), args.sweep)
        return
    if importlib.util.find_spec("pfl") is None:
        print(
            "pfl is not installed: this benchmark compares against Apple's pfl-research. "
            "Install it with `pip install 'fedadapt[bench]'` (or `pip install pfl`), then run "
            "it again. Nothing was measured."
        )
        return
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(
        f"job: digits, {CLIENTS} Dirichlet({ALPHA}) clients, {PER_ROUND} per round, {EPOCHS} "
        f"local epoch (SGD lr {LR}, batch {BATCH}), {ROUNDS} rounds, mlp, FedAvg; "
        f"sweep of {args.sweep} seeds; {os.cpu_count()} CPUs; {args.repeats} repeat(s)"
    )
    chosen = [a.strip() for a in args.arms.split(",") if a.strip()]
    if any(a not in ARMS for a in chosen):
        raise SystemExit(f"--arms: expected some of {','.join(ARMS)}")
    res: dict[str, list[dict]] = {k: [] for k in chosen}
    with tempfile.TemporaryDirectory(prefix="fa-pfl-") as tmp:
        work = Path(tmp)
        export_job(work, max(args.sweep, 1))
        for rep in range(args.repeats):
            arms = list(res)
            if rep % 2:
                arms.reverse()
            for arm in arms:
                tag = f"{arm}-{rep}"
                if arm == "pfl":
                    r = arm_pfl(work, 1, tag)
                elif arm == "pfl-sweep":
                    r = arm_pfl(work, args.sweep, tag)
                elif arm == "fedadapt-simulate":
                    r = arm_simulate(work, tag)
                elif arm == "fedadapt-simulate-local":
                    r = arm_simulate(work, tag, ("--backend", "local"))
                elif arm == "fedadapt-sweep":
                    r = arm_sweep(work, args.sweep, tag)
                elif arm == "fedadapt-sweep-local":
                    r = arm_sweep(work, args.sweep, tag, ("--backend", "local"))
                else:
                    r = arm_sweep(work, args.sweep, tag, ("--backend", "local", "--no-run-plots"))
                res[arm].append(r)
                print(f"  repeat {rep + 1} {arm}: {r['wall']:.1f} s", flush=True)
        profile = []
        if args.profile:  # an extra simulate run under cProfile, not in the table
            profile = profile_simulate(work)
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print()
    print(
        "| arm | runs | wall s (median) | wall s (min) | ms per client update | "
        "x pfl (same runs) | final acc |"
    )
    print("|---|---|---|---|---|---|---|")
    per = {k: statistics.median(r["wall"] / r["updates"] for r in v) for k, v in res.items()}
    ref = {a: ("pfl-sweep" if "sweep" in a else "pfl") for a in res}
    for arm, rs in res.items():
        walls = [r["wall"] for r in rs]
        runs = rs[0]["updates"] // (ROUNDS * PER_ROUND)
        extra = f" ({rs[0]['parallel']} at once)" if "parallel" in rs[0] else ""
        ratio = f"{per[arm] / per[ref[arm]]:.2f}" if ref[arm] in per else "-"
        print(
            f"| {arm}{extra} | {runs} | {statistics.median(walls):.1f} | {min(walls):.1f} | "
            f"{1000 * per[arm]:.2f} | {ratio} | "
            f"{statistics.mean(r['accuracy'] for r in rs):.3f} |"
        )
    for local_arm in (
        "fedadapt-simulate-local",
        "fedadapt-sweep-local",
        "fedadapt-sweep-local-noplots",
    ):
        if local_arm in res:
            r0 = res[local_arm]
            key = "startup" if "simulate" in local_arm else "before"
            print(
                f"{local_arm}: until round 0 {statistics.median(r[key] for r in r0):.2f} s"
                + (
                    f", steady round {1000 * statistics.median(r['steady'] for r in r0):.1f} ms"
                    if "steady" in r0[0]
                    else f", runs {statistics.median(r['runs_phase'] for r in r0):.2f} s, after "
                    f"{statistics.median(r['after'] for r in r0):.2f} s"
                )
            )
    if not all(a in res for a in ("pfl", "fedadapt-simulate", "pfl-sweep", "fedadapt-sweep")):
        return
    p = res["pfl"]
    s = res["fedadapt-simulate"]
    print()
    print(
        f"pfl, one run: imports {statistics.median(r['imports'] for r in p):.2f} s, setup "
        f"{statistics.median(r['runs'][0]['setup'] for r in p):.2f} s, 30 rounds "
        f"{statistics.median(r['runs'][0]['train'] for r in p):.2f} s "
        f"({1000 * statistics.median(r['runs'][0]['train'] for r in p) / ROUNDS:.1f} ms/round)"
    )

    def med(key: str) -> float:
        return statistics.median(r[key] for r in s)

    print(
        f"fedadapt simulate, one run: wall {med('wall'):.2f} s = imports and config checks "
        f"{med('imports'):.2f} s + Ray, actors, workers' warm-up and round-0 evaluation "
        f"{med('startup'):.2f} s + rounds 1-{ROUNDS} {med('rounds'):.2f} s (steady round "
        f"{1000 * med('steady'):.1f} ms, of which the driver's aggregation "
        f"{1000 * med('aggregate'):.1f} ms) + the end (final evaluation, model, plots, "
        f"summary, Ray shutdown) {med('end'):.2f} s"
    )
    w = res["fedadapt-sweep"]
    ps = res["pfl-sweep"]

    def wmed(key: str) -> float:
        return statistics.median(r[key] for r in w)

    pfl_run = statistics.median(statistics.median(x["run"] for x in r["runs"]) for r in ps)
    print(
        f"fedadapt sweep of {args.sweep}: before the first round 0 (imports, checks, Ray, "
        f"actors, warm-up) {wmed('before'):.2f} s + runs {wmed('runs_phase'):.2f} s "
        f"({wmed('runs_phase') / args.sweep:.2f} s per run at {w[0]['parallel']} at once; a "
        f"run alone {wmed('run_seconds'):.2f} s of which the driver thread's CPU "
        f"{wmed('driver_cpu'):.2f} s) + tables, plots, Ray shutdown {wmed('after'):.2f} s; "
        f"pfl: imports {statistics.median(r['imports'] for r in ps):.2f} s + "
        f"{pfl_run:.2f} s per run (data, setup, 30 rounds, evaluation)"
    )
    if profile:
        print()
        print(
            "cProfile of one more `fedadapt simulate` of the job (driver process; phases by "
            "cumulative seconds, a phase includes those indented below it):"
        )
        for line in profile:
            print("   " + line)


if __name__ == "__main__":
    main()
