"""The adoption probe of issue 20 ("Done when"): a standard Flower app adopting a server method
with one line trains as well as with Flower's FedAvg, or better (RESULTS.md §11).

The app is tests/e2e/apps/quickstart (``fedquick``, in the shape of Flower's PyTorch quickstart:
an MLP on a synthetic 5-class task; its ClientApp trains with its own torch SGD, momentum 0.9,
and the lr of the train config; one data partition per node). Its ServerApp body runs here
with one strategy line changed: Flower's ``FedAvg(fraction_evaluate=0.0)`` against
``FedAdapt(server_optimizer=m, fraction_evaluate=0.0)`` for every server method ``m`` in its
default configuration, and ``FedAdapt()`` (no method named). Flower's real strategy code runs
(``Strategy.start``, FedAvg's sampling and aggregation); the Grid calls the app's own
``@app.train()`` function in this process for each message (no Ray, no SuperLink), with the
node's ``partition-id``. Seeds change the initial model and the partitions.

    python docs/results/adoption_probe.py --seeds 3 --rounds 10 --nodes 10
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "e2e" / "apps" / "quickstart"
for p in (str(ROOT), str(APP)):
    if p not in sys.path:
        sys.path.insert(0, p)


class AppGrid:
    """A Flower Grid whose nodes are calls of the app's ClientApp train function."""

    def __init__(self, nodes: int, local_epochs: int, partition_offset: int) -> None:
        self.nodes = list(range(1, nodes + 1))
        self.local_epochs = local_epochs
        self.offset = partition_offset
        self._replies: dict[str, Any] = {}
        self._ids = itertools.count(1)

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def _context(self, node: int) -> Any:
        from flwr.app import Context, RecordDict

        return Context(
            run_id=1,
            node_id=node,
            node_config={"partition-id": self.offset + node - 1, "num-partitions": len(self.nodes)},
            state=RecordDict(),
            run_config={"local-epochs": self.local_epochs},
        )

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        from fedquick.client_app import train_fn
        from flwr.app import MessageType

        ids = []
        for msg in messages:
            mid = f"app-{next(self._ids)}"
            msg.metadata.__dict__["_message_id"] = mid
            if msg.metadata.message_type == MessageType.TRAIN:
                self._replies[mid] = train_fn(msg, self._context(int(msg.metadata.dst_node_id)))
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        return [self._replies.pop(m) for m in list(message_ids) if m in self._replies]

    def send_and_receive(
        self, messages: Iterable[Any], *, timeout: float | None = None
    ) -> list[Any]:
        return self.pull_messages(self.push_messages(messages))


def strategy_line(name: str) -> Any:
    """The one line the app changes."""
    from flwr.serverapp.strategy import FedAvg

    from strategies import FedAdapt

    if name == "flower-fedavg":
        return FedAvg(fraction_evaluate=0.0)
    if name == "fedadapt-default":
        return FedAdapt(fraction_evaluate=0.0)
    return FedAdapt(server_optimizer=name, fraction_evaluate=0.0)


def run_app(
    name: str,
    seed: int,
    *,
    rounds: int = 10,
    nodes: int = 10,
    lr: float = 0.05,
    local_epochs: int = 2,
) -> dict[str, Any]:
    """The app's ServerApp body (tests/e2e/apps/quickstart/fedquick/server_app.py) with
    ``strategy_line(name)``; returns the centralized accuracy per round."""
    import torch
    from fedquick.task import Net, evaluate, test_set
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    torch.set_num_threads(1)
    strategy = strategy_line(name)
    x, y = test_set()
    accuracy: dict[int, float] = {}
    losses: dict[int, float] = {}

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net = Net()
        net.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(net, x, y)
        accuracy[server_round], losses[server_round] = acc, loss
        return MetricRecord({"accuracy": acc, "loss": loss})

    torch.manual_seed(seed)
    strategy.start(
        grid=AppGrid(nodes, local_epochs, 100 * seed),
        initial_arrays=ArrayRecord(Net().state_dict()),
        train_config=ConfigRecord({"lr": lr}),
        num_rounds=rounds,
        evaluate_fn=central,
    )
    watch = getattr(
        strategy, "divergence", None
    )  # FedAdapt's divergence check (not Flower's FedAvg)
    return {
        "accuracy": accuracy,
        "loss": losses,
        "divergence": None if watch is None else watch.message,
    }


def main() -> None:
    import logging

    import fedadapt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--out", default=str(Path(__file__).with_name("adoption-probe-rows.json")))
    args = ap.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    names = ["flower-fedavg", "fedadapt-default", *fedadapt.methods_for("server")]
    rows = []
    for name in names:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            r = run_app(name, seed, rounds=args.rounds, nodes=args.nodes)
            rows.append(
                {"strategy": name, "seed": seed, **r, "seconds": round(time.perf_counter() - t0, 2)}
            )
            print(name, seed, round(r["accuracy"][args.rounds], 4), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    base = {r["seed"]: r["accuracy"][args.rounds] for r in rows if r["strategy"] == "flower-fedavg"}
    print(
        f"\n| strategy line | final accuracy (round {args.rounds}) | change vs FedAvg "
        "(paired, points) | largest central loss | divergence warned (seeds) |"
    )
    print("|---|---|---|---|---|")

    def warned(rs: list[dict[str, Any]]) -> str:  # Flower's FedAvg has no divergence check
        if all("divergence" not in r or r["strategy"] == "flower-fedavg" for r in rs):
            return "-"
        return f"{sum(1 for r in rs if r.get('divergence'))}/{len(rs)}"

    for name in names:
        rs = [r for r in rows if r["strategy"] == name]
        acc = [r["accuracy"][args.rounds] for r in rs]
        gaps = [100 * (r["accuracy"][args.rounds] - base[r["seed"]]) for r in rs]
        worst_loss = max(max(v for v in r["loss"].values() if math.isfinite(v)) for r in rs)
        print(
            f"| {name} | {statistics.mean(acc):.3f} ± {statistics.stdev(acc):.3f} | "
            f"{statistics.mean(gaps):+.1f} ± {statistics.stdev(gaps):.1f} | "
            f"{worst_loss:.3g} | {warned(rs)} |"
        )


if __name__ == "__main__":
    main()
