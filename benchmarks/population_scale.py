"""Population scale: seconds per round and peak memory of all processes as the population grows.

* ``fedadapt`` at 1,000, 100,000 and 1,000,000 clients: ``run_experiment`` on the ``scale-1m``
  scenario (Synthetic(1,1) data generated per client on demand, ``model=tiny``,
  ``local-steps=2``, ``batch-size=16``, client sgd, server sgd), 50 clients per round, 6 rounds,
  2 worker supernodes.
* ``flower``, plain Flower with ONE SUPERNODE PER CLIENT at 1,000, 10,000 and 100,000: Flower's
  ``FedAvg`` (fraction_train so that 50 are sampled per round, no federated evaluation), a
  ClientApp training ``Linear(60, 10)`` for 2 local SGD steps (batch 16) on 32 samples generated
  from its ``partition-id``. 6 rounds, 3 at 100,000 (its rounds take ~10 s). ``--skip-large``
  leaves the 100,000-supernode run out.

Each run is a fresh subprocess with an in-process Ray (``client_resources.num_cpus=1``: 2
actors on 2 cores, torch 1 thread). Seconds per round: median of the rounds after the first,
timed inside the subprocess. Peak memory: the largest sum of RSS over the subprocess's whole
process tree (driver, GCS, raylet, Ray workers and agents), sampled every 0.2 s by a thread of
this process (shared pages count once per process, so it is an upper bound).

    .venv/bin/python benchmarks/population_scale.py
    .venv/bin/python benchmarks/population_scale.py --skip-large
    .venv/bin/python benchmarks/population_scale.py --quick     # 3 rounds, no 100,000-node Flower
    .venv/bin/python benchmarks/population_scale.py --only fedadapt:1000,fedadapt:1000000 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procmem  # noqa: E402

PER_ROUND = 50
WORKERS = 2
FEDADAPT_POPS = (1_000, 100_000, 1_000_000)
FLOWER_POPS = (1_000, 10_000, 100_000)
LARGE_FLOWER = 100_000
FEATURES, CLASSES, SAMPLES, STEPS, BATCH, LR = 60, 10, 32, 2, 16, 0.05


# ----------------------------------------------------------------------------- fedadapt


def child_fedadapt(s: dict) -> None:
    import torch

    from simulations.cli import build_config
    from simulations.experiment import run_experiment

    torch.set_num_threads(1)
    if s.get("pull-interval"):
        _procmem.set_grid_pull_interval(float(s["pull-interval"]))
    cfg = build_config(
        "scale-1m",
        [
            f"num-clients={s['population']}",
            f"clients-per-round={PER_ROUND}",
            f"num-server-rounds={s['rounds']}",
            f"num-supernodes={WORKERS}",
            "client-num-cpus=1",
            "dataset=synthetic",
            "model=tiny",
            "local-steps=2",
            "batch-size=16",
            f"out-dir={s['out-dir']}",
        ],
        None,
        None,
    )
    stamps: list[float] = []
    run_experiment(cfg, on_round=lambda row: stamps.append(time.time()))
    _procmem.emit(_procmem.round_times(stamps, _procmem.process_start_time()))


# ----------------------------------------------------------------------------- plain Flower


def flower_apps(s: dict, stamps: list[float]):
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    def tiny() -> torch.nn.Module:
        model = torch.nn.Linear(FEATURES, CLASSES)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return model

    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context) -> None:
        n = s["population"]
        strategy = FedAvg(
            fraction_train=(PER_ROUND + 0.5) / n,
            fraction_evaluate=0.0,
            min_train_nodes=PER_ROUND,
            min_available_nodes=n,
        )

        def evaluate_fn(server_round: int, arrays):
            stamps.append(time.time())
            return None

        strategy.start(
            grid,
            ArrayRecord(tiny().state_dict()),
            num_rounds=s["rounds"],
            train_config=ConfigRecord({"lr": LR}),
            evaluate_fn=evaluate_fn,
        )

    client_app = ClientApp()

    @client_app.train()
    def _train(msg, context):
        torch.set_num_threads(1)
        pid = int(context.node_config["partition-id"])
        gen = torch.Generator().manual_seed(pid)
        X = torch.randn(SAMPLES, FEATURES, generator=gen)
        y = torch.randint(0, CLASSES, (SAMPLES,), generator=gen)
        model = tiny()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=float(msg.content["config"]["lr"]))
        for step in range(STEPS):
            idx = slice(step * BATCH % SAMPLES, step * BATCH % SAMPLES + BATCH)
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
        content = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"num-examples": SAMPLES, "train-loss": float(loss)}),
            }
        )
        return Message(content=content, reply_to=msg)

    return server_app, client_app


def child_flower(s: dict) -> None:
    import torch

    from simulations.runtime import run_in_process  # the one place that calls run_simulation

    torch.set_num_threads(1)
    stamps: list[float] = []
    server_app, client_app = flower_apps(s, stamps)
    run_in_process(
        server_app,
        client_app,
        num_workers=s["population"],
        client_num_cpus=1.0,
        client_num_gpus=0.0,
        restart_crashed_workers=False,
    )
    _procmem.emit(_procmem.round_times(stamps, _procmem.process_start_time()))


# ----------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument(
        "--large-rounds",
        type=int,
        default=3,
        help="rounds of the 100,000-supernode plain-Flower run",
    )
    ap.add_argument(
        "--skip-large", action="store_true", help="leave out the 100,000-supernode plain-Flower run"
    )
    ap.add_argument("--quick", action="store_true", help="3 rounds, implies --skip-large")
    ap.add_argument("--only", default="", help="comma list like fedadapt:1000,flower:10000")
    ap.add_argument(
        "--pull-interval",
        type=float,
        default=None,
        help="what-if, fedadapt only: the Grid's reply polling interval in seconds "
        "(Flower's default 0.1); not part of the reported baseline",
    )
    ap.add_argument("--repeats", type=int, default=1, help="run the list this many times")
    ap.add_argument("--json", default=None)
    ap.add_argument("--log-dir", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.skip_large = 3, True
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="popscale-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    runs = [("fedadapt", n) for n in FEDADAPT_POPS] + [
        ("flower", n) for n in FLOWER_POPS if not (args.skip_large and n >= LARGE_FLOWER)
    ]
    if args.only:
        wanted = {(k, int(n)) for k, n in (x.split(":") for x in args.only.split(","))}
        runs = [r for r in runs if r in wanted]
    runs = runs * max(1, args.repeats)
    results = []
    for kind, n in runs:
        rounds = args.large_rounds if kind == "flower" and n >= LARGE_FLOWER else args.rounds
        s = {
            "population": n,
            "rounds": rounds,
            "out-dir": str(log_dir / f"run-{kind}-{n}-{len(results)}"),
        }
        if args.pull_interval is not None and kind == "fedadapt":
            s["pull-interval"] = args.pull_interval
        r = _procmem.run_child(
            "population_scale",
            f"child_{kind}",
            s,
            timeout=1200,
            sample_memory=True,
            log_path=str(log_dir / f"{kind}-{n}-{len(results)}.log"),
        )
        r.update(kind=kind, population=n, rounds=rounds)
        results.append(r)
        print(
            f"{kind:8s} {n:>9,d}: {r['steady']:.3f} s/round after round 1 "
            f"(rounds: {', '.join(f'{x:.2f}' for x in r['per-round'])}), start-up "
            f"{r['startup']:.1f} s, peak RSS {r['peak-rss-bytes'] / 2**30:.2f} GiB "
            f"(PSS {r['peak-pss-bytes'] / 2**30:.2f} GiB) over {r['peak-procs']} processes",
            flush=True,
        )
        top = ", ".join(f"{name} {rss / 2**20:.0f}" for name, rss in r["peak-detail"][:6])
        print(f"    at the peak (MiB RSS): {top}", flush=True)

    print(
        "\n| setup | population | rounds | s/round after round 1 (median) | round 1 incl. start-up (s) | peak RSS, all processes (GiB) | peak PSS (GiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        label = (
            "fedadapt, 2 workers"
            if r["kind"] == "fedadapt"
            else "plain Flower, 1 supernode per client"
        )
        print(
            f"| {label} | {r['population']:,} | {r['rounds']} | {r['steady']:.3f} | "
            f"{r['startup']:.1f} | {r['peak-rss-bytes'] / 2**30:.2f} | "
            f"{r['peak-pss-bytes'] / 2**30:.2f} |"
        )
    steady: dict[tuple[str, int], list[float]] = {}
    for r in results:
        steady.setdefault((r["kind"], r["population"]), []).append(r["steady"])
    by = {k: statistics.median(v) for k, v in steady.items()}  # median over repeats
    if ("fedadapt", 1_000) in by and ("fedadapt", 1_000_000) in by:
        ratio = by[("fedadapt", 1_000_000)] / by[("fedadapt", 1_000)]
        print(f"fedadapt 1e6 / 1e3 s/round = {ratio:.2f} (goal <= 1.2)")
    if ("fedadapt", 100_000) in by and ("flower", 100_000) in by:
        ratio = by[("flower", 100_000)] / by[("fedadapt", 100_000)]
        print(f"plain Flower / fedadapt s/round at 1e5 = {ratio:.1f}x (goal >= 10)")
    peak = max((r["peak-rss-bytes"] for r in results if r["kind"] == "fedadapt"), default=0)
    pss = max((r["peak-pss-bytes"] for r in results if r["kind"] == "fedadapt"), default=0)
    print(f"fedadapt peak = {peak / 2**30:.2f} GiB RSS, {pss / 2**30:.2f} GiB PSS (goal < 2)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"logs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
