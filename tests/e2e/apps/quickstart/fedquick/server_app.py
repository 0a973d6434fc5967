"""The ServerApp, as in Flower's quickstart; the run config picks the strategy line."""

import json

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedquick.task import Net, evaluate, test_set

app = ServerApp()


def strategy_line(name: str):
    # each entry is the one line a Flower user changes to adopt fedadapt
    if name == "fedavg":
        return FedAvg(fraction_evaluate=0.0)
    from strategies import FedAdapt, build_strategy

    if name == "fedadapt-hd-mult":
        return FedAdapt(server_optimizer="hd-mult", fraction_evaluate=0.0)
    if name == "fedexp":
        return build_strategy("fedexp", fraction_evaluate=0.0)
    if name == "fedhyper-g":
        return build_strategy("fedhyper-g", fraction_evaluate=0.0)
    if name == "fedexp-population":  # the docs' population shape, with a standard client
        return build_strategy(
            "fedexp", num_clients=20, clients_per_round=4, num_workers=2, fraction_evaluate=0.0
        )
    raise ValueError(f"unknown strategy {name!r}")


@app.main()
def main(grid: Grid, context: Context) -> None:
    name = str(context.run_config["strategy"])
    strategy = strategy_line(name)
    x, y = test_set()
    accuracy: dict[int, float] = {}

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net = Net()
        net.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(net, x, y)
        accuracy[server_round] = acc
        return MetricRecord({"accuracy": acc, "loss": loss})

    torch.manual_seed(0)  # the same initial model for every strategy line
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(Net().state_dict()),
        train_config=ConfigRecord({"lr": float(context.run_config["lr"])}),
        num_rounds=int(context.run_config["num-server-rounds"]),
        evaluate_fn=central,
    )
    out = str(context.run_config["out"])
    if out:
        train_metrics = {r: dict(m) for r, m in result.train_metrics_clientapp.items()}
        with open(out, "w") as fh:
            json.dump({"strategy": name, "accuracy": accuracy, "train": train_metrics}, fh)
