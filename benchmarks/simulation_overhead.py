"""Simulation overhead: one workload as plain Flower, as fedadapt's apps, and as a plain loop.

Workload: 200 digits clients (Dirichlet(0.5) partition as in the ``quickstart`` scenario), 20
sampled per round, 20 rounds, the digits MLP, 1 local epoch of SGD (lr 0.1, batch 32).

(a) ``flower``: plain Flower. A minimal ServerApp running Flower's own
    ``flwr.serverapp.strategy.FedAvg`` (fraction_train=0.1, no federated evaluation) and a
    ClientApp that loads its partition from ``context.node_config["partition-id"]`` with
    ``simulations.data.build_source`` (same settings, cached per worker process as a Flower
    app would) and trains the same model the same way; ONE SUPERNODE PER CLIENT (200).
(b) ``fedadapt``: ``simulations.experiment.run_experiment`` (strategy fedadapt, server sgd lr 1,
    client sgd), 2 worker supernodes serving 10 clients each per round. Centralized evaluation
    only at rounds 0 and N (``eval-every`` > N) so that the steady rounds measure the
    simulation, not the server's evaluation.
(c) ``loop``: the compute floor. One process, no Flower, no Ray: for each round, for each of
    the 20 sampled clients, load its data, train 1 epoch, then average (example-weighted).

Both Ray variants: ``client_resources.num_cpus=1`` (2 actors on 2 cores), torch 1 thread.
Each variant runs in a fresh subprocess (Ray starts fresh), interleaved when repeated; times
are taken inside the subprocess: "start-up" is from process start until round 1 ends (imports,
data, Ray, actors, round 1), "steady" the median seconds per round of rounds 2..N.

    .venv/bin/python benchmarks/simulation_overhead.py                # 20 rounds, 1 repeat
    .venv/bin/python benchmarks/simulation_overhead.py --repeats 3
    .venv/bin/python benchmarks/simulation_overhead.py --quick        # 6 rounds
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the sibling helper importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procmem  # noqa: E402

VARIANTS = ("flower", "fedadapt", "loop")  # also "fedadapt-flower-poll" (A/B of the engine poll)
NUM_CLIENTS = 200
PER_ROUND = 20
WORKERS = 2
LR = 0.1
BATCH = 32
SEED = 0


def _settings(rounds: int, out_dir: str) -> dict:
    return {
        "rounds": rounds,
        "num-clients": NUM_CLIENTS,
        "per-round": PER_ROUND,
        "workers": WORKERS,
        "lr": LR,
        "batch": BATCH,
        "seed": SEED,
        "out-dir": out_dir,
    }


def _fedadapt_cfg(s: dict) -> dict:
    from simulations.cli import build_config

    return build_config(
        "quickstart",
        [
            f"num-clients={s['num-clients']}",
            f"clients-per-round={s['per-round']}",
            f"num-server-rounds={s['rounds']}",
            f"num-supernodes={s['workers']}",
            "strategy=fedadapt",
            "server-optimizer=sgd",
            "server-lr=1.0",
            "client-optimizer=sgd",
            f"client-lr={s['lr']}",
            f"batch-size={s['batch']}",
            "local-epochs=1",
            "client-num-cpus=1",
            f"seed={s['seed']}",
            f"eval-every={s['rounds'] + 1}",
            f"out-dir={s['out-dir']}",
        ],
        None,
        None,
    )


# ----------------------------------------------------------------------------- shared pieces

_SOURCE: dict[str, object] = {}  # per process (Ray worker): the data source, built once


def source(s: dict):
    """The digits source with quickstart's partition settings (the same object fedadapt's
    ``world`` builds), cached per process."""
    key = json.dumps([s["num-clients"], s["seed"]])
    if key not in _SOURCE:
        from simulations.data import build_source

        cfg = _fedadapt_cfg(s)
        _SOURCE.clear()
        _SOURCE[key] = build_source(
            "digits",
            num_clients=int(cfg["num-clients"]),
            partitioner=str(cfg["partitioner"]),
            partitioner_params={"alpha": float(cfg["partition-alpha"])},
            seed=int(cfg["seed"]),
            cache_size=int(cfg["cache-size"]),
            test_fraction=float(cfg["test-fraction"]),
        )
    return _SOURCE[key]


def model_for(src, seed: int):
    from simulations.models import build_model

    return build_model("mlp", src.input_shape, src.num_classes, seed=seed)


def train_one_epoch(model, X, y, *, lr: float, batch: int, seed: int, cid: int, rnd: int) -> float:
    """One local epoch of minibatch SGD the way fedadapt's ``train_client`` does it."""
    import torch

    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n = len(yt)
    steps = max(1, math.ceil(n / batch))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(hash((seed, cid, rnd)) & 0x7FFFFFFF)
    order, pos = torch.randperm(n, generator=gen), 0
    loss_sum = 0.0
    model.train()
    for _ in range(steps):
        if pos >= n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + batch]
        pos += batch
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach())
    return loss_sum / steps


# ----------------------------------------------------------------------------- (a) plain Flower


def flower_apps(s: dict, stamps: list[float]):
    """Flower's FedAvg ServerApp + a ClientApp per partition, nothing from fedadapt's apps."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context) -> None:
        src = source(s)
        strategy = FedAvg(
            fraction_train=s["per-round"] / s["num-clients"] + 1e-9,
            fraction_evaluate=0.0,
            min_train_nodes=s["per-round"],
            min_available_nodes=s["num-clients"],
        )

        def evaluate_fn(server_round: int, arrays):
            stamps.append(time.time())
            return None

        strategy.start(
            grid,
            ArrayRecord(model_for(src, s["seed"]).state_dict()),
            num_rounds=s["rounds"],
            train_config=ConfigRecord({"lr": s["lr"]}),
            evaluate_fn=evaluate_fn,
        )

    client_app = ClientApp()

    @client_app.train()
    def _train(msg, context):
        torch.set_num_threads(1)
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        src = source(s)
        X, y = src.get(pid)
        model = model_for(src, s["seed"])
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        loss = train_one_epoch(
            model,
            X,
            y,
            lr=float(msg.content["config"]["lr"]),
            batch=s["batch"],
            seed=s["seed"],
            cid=pid,
            rnd=rnd,
        )
        content = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"num-examples": len(y), "train-loss": loss}),
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
        num_workers=s["num-clients"],
        client_num_cpus=1.0,
        client_num_gpus=0.0,
        restart_crashed_workers=False,
        fast_poll=False,
    )
    _procmem.emit(_procmem.round_times(stamps, _procmem.process_start_time()))


# ----------------------------------------------------------------------------- (b) fedadapt


def child_fedadapt(s: dict) -> None:
    import torch

    from simulations.experiment import run_experiment

    torch.set_num_threads(1)
    if s.get("pull-interval"):
        _procmem.set_grid_pull_interval(float(s["pull-interval"]))
    if s.get("flower-poll"):  # A/B: Flower's own 100 ms engine poll instead of fedadapt's
        import contextlib

        import simulations.runtime as runtime

        runtime.fast_engine_poll = lambda: contextlib.nullcontext(False)
    stamps: list[float] = []
    summary = run_experiment(_fedadapt_cfg(s), on_round=lambda row: stamps.append(time.time()))
    res = _procmem.round_times(stamps, _procmem.process_start_time())
    res["final-accuracy"] = summary.get("final-accuracy")
    _procmem.emit(res)


def child_fedadapt_flower_poll(s: dict) -> None:
    """(b) with Flower's own 100 ms engine poll: the A/B for ``simulations.runtime.fast_engine_poll``."""
    child_fedadapt({**s, "flower-poll": True})


# ----------------------------------------------------------------------------- (c) loop


def child_loop(s: dict) -> None:
    import torch

    from strategies import sampling

    torch.set_num_threads(1)
    src = source(s)
    stamps = [time.time()]  # round 0: data ready, model built
    global_model = model_for(src, s["seed"])
    model = model_for(src, s["seed"])
    for rnd in range(1, s["rounds"] + 1):
        cohort = sampling.sample_cohort(
            s["num-clients"], s["per-round"], seed=s["seed"], server_round=rnd
        )
        acc = {k: torch.zeros_like(v) for k, v in global_model.state_dict().items()}
        total = 0
        for cid in cohort.client_ids:
            X, y = src.get(cid)
            model.load_state_dict(global_model.state_dict())
            train_one_epoch(
                model, X, y, lr=s["lr"], batch=s["batch"], seed=s["seed"], cid=cid, rnd=rnd
            )
            for k, v in model.state_dict().items():
                acc[k] += v * len(y)
            total += len(y)
        global_model.load_state_dict({k: v / total for k, v in acc.items()})
        stamps.append(time.time())
    _procmem.emit(_procmem.round_times(stamps, _procmem.process_start_time()))


# ----------------------------------------------------------------------------- driver


def _fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:.3f}{unit}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="6 rounds instead of 20")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument(
        "--pull-interval",
        type=float,
        default=None,
        help="what-if, fedadapt only: the Grid's reply polling interval in seconds "
        "(Flower's default 0.1); not part of the reported baseline",
    )
    ap.add_argument("--json", default=None, help="write all results to this file")
    ap.add_argument("--log-dir", default=None, help="children's logs (default: a temp dir)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (6 if args.quick else 20)
    variants = [v for v in args.variants.split(",") if v]
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="simovh-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants:  # interleaved
            s = _settings(rounds, str(log_dir / f"run-{v}-{rep}"))
            if args.pull_interval is not None and v == "fedadapt":
                s["pull-interval"] = args.pull_interval
            t0 = time.time()
            r = _procmem.run_child(
                "simulation_overhead",
                "child_" + v.replace("-", "_"),
                s,
                timeout=1200,
                log_path=str(log_dir / f"{v}-{rep}.log"),
            )
            results[v].append(r)
            print(
                f"[rep {rep}] {v:9s} start-up {_fmt(r['startup'], ' s')}  steady "
                f"{_fmt(r['steady'] * 1e3 if r['steady'] is not None else None, ' ms')}/round"
                f"  (child wall {time.time() - t0:.1f} s)",
                flush=True,
            )

    def med(v: str, key: str) -> float | None:
        vals = [r[key] for r in results.get(v, []) if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    print(
        f"\n{rounds} rounds, {NUM_CLIENTS} clients, {PER_ROUND} per round, "
        f"median of {args.repeats} repeat(s)"
    )
    print("| variant | start-up (s) | steady (ms/round) |")
    print("|---|---|---|")
    for v in variants:
        st, sd = med(v, "startup"), med(v, "steady")
        print(f"| {v} | {_fmt(st)} | {_fmt(sd * 1e3 if sd is not None else None)} |")
    if {"flower", "fedadapt"} <= set(variants):
        print(
            f"steady b/a = {med('fedadapt', 'steady') / med('flower', 'steady'):.2f} (goal <= 0.5);"
            f" start-up b/a = {med('fedadapt', 'startup') / med('flower', 'startup'):.2f} (goal <= 1)"
        )
    if {"loop", "fedadapt"} <= set(variants):
        print(
            f"steady b/c = {med('fedadapt', 'steady') / med('loop', 'steady'):.2f} (goal <= 2.0);"
            f" start-up b/c = {med('fedadapt', 'startup') / med('loop', 'startup'):.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "results": results}, indent=1))
    print(f"logs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
