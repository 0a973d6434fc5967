"""Server-side aggregation cost: FedAdapt.aggregate_train vs Flower's FedAvg / FedAdam.

Identical replies (about 10M float32 parameters, 20 replies, fedadapt's reply format), methods
interleaved round-robin so drift in machine load hits all of them alike. Reports the median
wall time of ``aggregate_train`` per method, its ratio to Flower's FedAvg (scalar methods) or
FedAdam (per-coordinate methods), and the peak rise in resident memory during the call
(sampled every ~1 ms by a thread, each method measured in a fresh subprocess).

    .venv/bin/python benchmarks/server_overhead.py            # ~10M params, 20 replies, 5 reps
    .venv/bin/python benchmarks/server_overhead.py --quick    # ~1M params, 5 replies, 2 reps
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import torch

# methods: (label, kind, builder-name, kwargs, baseline label)
METHODS = {
    "flower-fedavg": ("flower", "FedAvg", {}, None),
    "flower-fedadam": ("flower", "FedAdam", {"eta": 0.01}, None),
    "fedadapt-sgd": ("fedadapt", "sgd", {"lr": 1.0}, "flower-fedavg"),
    "fedadapt-hd": ("fedadapt", "hd", {"lr": 1.0, "hyper_lr": 1e-3}, "flower-fedavg"),
    "fedadapt-fedexp": ("fedadapt", "fedexp", {}, "flower-fedavg"),
    "fedadapt-adam": ("fedadapt", "adam", {"lr": 0.01}, "flower-fedadam"),
}


def _setup_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def _model(params: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n_tensors = 10
    per = params // n_tensors
    return {f"layer{i}.weight": torch.randn(per, generator=g) * 0.1 for i in range(n_tensors)}


class _Grid:
    def __init__(self, n: int) -> None:
        self.ids = list(range(1, n + 1))

    def get_node_ids(self) -> list[int]:
        return list(self.ids)


def _build(params: int, replies: int):
    """Global arrays and the replies (each one client, fedadapt's format with sq-norm)."""
    from flwr.app import ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict

    from strategies import FedAdapt
    from strategies.records import tensors_to_record

    _setup_identity()
    base = _model(params)
    arrays = ArrayRecord(base)
    s = FedAdapt(num_clients=replies, clients_per_round=replies, num_workers=replies, seed=0)
    msgs = list(s.configure_train(1, arrays, ConfigRecord(), _Grid(replies)))
    out = []
    g = torch.Generator().manual_seed(1)
    from flwr.app import Message

    for i, m in enumerate(msgs):
        cid = m.content["config"]["fedadapt.client-ids"][0]
        sd = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        sq = float(sum(((sd[k] - base[k]).double() ** 2).sum() for k in base))
        n = 10 + i
        content = RecordDict(
            {
                "arrays": tensors_to_record(sd),
                "metrics": MetricRecord({"num-examples": n, "train-loss": 1.0}),
                "fedadapt.clients": ConfigRecord(
                    {
                        "ids": [cid],
                        "num-examples": [n],
                        "train-loss": [1.0],
                        "lr": [0.1],
                        "step-mean": [0.1],
                        "step-min": [0.1],
                        "step-max": [0.1],
                        "sq-norm": [sq],
                        "failed-ids": [],
                        "failed-reasons": [],
                    }
                ),
            }
        )
        out.append(Message(content, reply_to=m))
        del sd
    assert all(m.metadata.message_type == MessageType.TRAIN for m in msgs)
    return arrays, out


def _strategy(label: str, replies: int):
    kind, name, kw, _ = METHODS[label]
    if kind == "flower":
        import flwr.serverapp.strategy as fs

        return getattr(fs, name)(**kw)
    from strategies import FedAdapt

    return FedAdapt(
        server_optimizer=name,
        server_options=kw,
        num_clients=replies,
        clients_per_round=replies,
        num_workers=replies,
        seed=0,
    )


def _run_once(strategy, arrays, replies) -> float:
    from flwr.app import ConfigRecord

    strategy.configure_train(1, arrays, ConfigRecord(), _Grid(len(replies)))
    gc.collect()
    t0 = time.perf_counter()
    out, _ = strategy.aggregate_train(1, replies)
    dt = time.perf_counter() - t0
    assert out is not None
    return dt


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_of(fn) -> tuple[float, int]:
    peak = [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0005)

    gc.collect()
    before = _rss()
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    dt = fn()
    stop.set()
    t.join()
    return dt, max(0, max(peak[0], _rss()) - before)


def _memory_child(label: str, params: int, replies: int) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    arrays, rep = _build(params, replies)
    s = _strategy(label, replies)
    _run_once(s, arrays, rep)  # warm-up: lazily built server state is not per-round cost
    _, peak = _peak_of(lambda: _run_once(s, arrays, rep))
    print(json.dumps({"label": label, "peak": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="~1M params, 5 replies, 2 repetitions")
    ap.add_argument("--params", type=int, default=None)
    ap.add_argument("--replies", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    params = args.params or (1_000_000 if args.quick else 10_000_000)
    replies = args.replies or (5 if args.quick else 20)
    reps = args.reps or (2 if args.quick else 5)
    if args.memory_child:
        os.environ["BENCH_THREADS"] = str(args.threads)
        _memory_child(args.memory_child, params, replies)
        return
    torch.set_num_threads(args.threads)
    arrays, rep = _build(params, replies)
    strategies = {label: _strategy(label, replies) for label in METHODS}
    for s in strategies.values():  # warm-up
        _run_once(s, arrays, rep)
    times: dict[str, list[float]] = {label: [] for label in METHODS}
    for _ in range(reps):
        for label, s in strategies.items():
            times[label].append(_run_once(s, arrays, rep))
    del strategies, rep, arrays
    gc.collect()
    peaks: dict[str, int] = {}
    for label in METHODS:
        # a fixed mmap threshold makes every large buffer its own mapping, so RSS follows the
        # live allocations (glibc's dynamic threshold would recycle freed heap silently)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                label,
                "--params",
                str(params),
                "--replies",
                str(replies),
                "--threads",
                str(args.threads),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        peaks[label] = json.loads(out.stdout.strip().splitlines()[-1])["peak"]

    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\nServer aggregation, {params / 1e6:.1f}M float32 parameters, {replies} replies, "
        f"median of {reps} interleaved repetitions, torch threads {args.threads}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, numpy {np.__version__}\n"
    )
    print(
        "| method | aggregate_train (s) | time ratio | vs | peak RSS rise (MB) | memory ratio vs FedAvg |"
    )
    print("|---|---|---|---|---|---|")
    for label, (_, _, _, base) in METHODS.items():
        ratio = f"{med[label] / med[base]:.2f}" if base else "-"
        mem_ratio = peaks[label] / max(peaks["flower-fedavg"], 1)
        print(
            f"| {label} | {med[label]:.3f} | {ratio} | {base or '-'} | {peaks[label] / 2**20:.0f} | {mem_ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
