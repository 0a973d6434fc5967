"""A standard Flower ClientApp (quickstart-shaped replies) against fedadapt's strategies, in
process: deployment mode derives per-client statistics from the replies, protocol mismatches
stop the run with the fix, the clients' own metrics survive, ids are lossless, the app's lr is
respected, and the round lines reach Flower's logger."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from strategy_fakes import FakeGrid, local_train, tiny_model, worker

from strategies import FedAdapt, ProtocolError, build_strategy, read_train_message
from strategies.sampling import WorkersNotReady


def standard_client(msg: Message) -> Message:
    """Flower's quickstart ClientApp in miniature: its own optimizer and lr from the config."""
    model = tiny_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    lr = float(msg.content["config"].get("lr", 0.05))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n, loss = local_train(model, opt, int(msg.metadata.dst_node_id) % 1000)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": n}),
        }
    )
    return Message(content=content, reply_to=msg)


def _run(strategy, grid, rounds=2, lr=0.05):
    return strategy.start(
        grid,
        ArrayRecord(tiny_model().state_dict()),
        num_rounds=rounds,
        train_config=ConfigRecord({"lr": lr}),
    )


NODES = [11, 12, 13, 14]


def test_fedexp_standard_client_equals_two_call_client_in_deployment():
    """Same clients, same local training: the server computes ||x_i - x_t||^2 from each
    reply exactly as fedadapt's client writer does, so the models agree to float rounding."""
    results = {}
    for name, respond in (("standard", standard_client), ("two-call", worker)):
        s = build_strategy(
            "fedexp",
            min_available_nodes=4,
            min_train_nodes=4,
            fraction_train=1.0,
            fraction_evaluate=0.0,
            client_options={"lr": 0.05},
        )
        res = _run(s, FakeGrid(NODES, respond), rounds=3)
        results[name] = (res.arrays.to_torch_state_dict(), s.history)
    (a, ha), (b, hb) = results["standard"], results["two-call"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
    assert [h["num-succeeded"] for h in ha] == [4, 4, 4]
    assert [h["server-lr"] for h in ha] == pytest.approx([h["server-lr"] for h in hb])
    assert max(h["server-lr"] for h in ha) > 1.0  # FedExP extrapolated: the signal was used


def test_standard_client_in_population_mode_stops_the_run_with_the_fix():
    s = build_strategy("fedexp", num_clients=20, clients_per_round=4, num_workers=4)
    with pytest.raises(ProtocolError) as err:
        _run(s, FakeGrid(NODES, standard_client))
    msg = str(err.value)
    assert "fedadapt.clients" in msg and "read_train_message" in msg and "deployment" in msg
    # FedAvg-like methods too: the reply cannot say which client ids it served
    s = FedAdapt(server_optimizer="hd-mult", num_clients=20, clients_per_round=4, num_workers=4)
    with pytest.raises(ProtocolError, match="num_clients=None"):
        _run(s, FakeGrid(NODES, standard_client))


def test_a_client_failure_is_not_a_protocol_error():
    def crash(msg):
        from strategies import error_reply

        return error_reply(msg, "CUDA out of memory")

    s = FedAdapt(min_available_nodes=4, fraction_evaluate=0.0)
    res = _run(s, FakeGrid(NODES, crash), rounds=1)  # recorded, the run goes on
    assert s.history[0]["num-failed"] == 4 and "CUDA" in s.history[0]["failed-reasons"][0]
    assert res.arrays is not None


@pytest.mark.parametrize("name", ["fedavg", "fedadapt", "fedhyper-g", "fedexp"])
def test_clients_own_metrics_are_aggregated_example_weighted(name):
    s = build_strategy(name, min_available_nodes=4, fraction_evaluate=0.0)
    grid = FakeGrid(NODES, standard_client)
    replies = []

    def respond(msg):
        r = standard_client(msg)
        replies.append(r)
        return r

    grid.respond = respond
    res = _run(s, grid, rounds=1)
    met = res.train_metrics_clientapp[1]
    ns = [r.content["metrics"]["num-examples"] for r in replies]
    losses = [r.content["metrics"]["train_loss"] for r in replies]
    want = sum(n * v for n, v in zip(ns, losses, strict=True)) / sum(ns)
    assert met["train_loss"] == pytest.approx(want)
    assert met["num-succeeded"] == 4
    assert math.isfinite(met["train-loss"])  # fedadapt's own key, from the client's loss


def test_ids_are_lossless_and_every_key_exists_in_every_round():
    big = [2**63 + 5, 2**64 - 1, 2**63 - 1, 7]
    bad = big[1]

    def flaky(msg):
        if msg.metadata.dst_node_id == bad and msg.content["config"]["server-round"] == 2:
            return Message(content=RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)
        return standard_client(msg)

    s = FedAdapt(min_available_nodes=4, fraction_evaluate=0.0)
    res = _run(s, FakeGrid(big, flaky), rounds=3)
    h1, h2 = s.history[0], s.history[1]
    assert sorted(h1["sampled-ids"]) == sorted(big) and sorted(h1["succeeded-ids"]) == sorted(big)
    assert h2["failed-nodes"] == [bad] and "missing record 'metrics'" in h2["failed-reasons"][0]
    assert h1["failed-reasons"] == [] and set(h1) == set(h2) == set(s.history[2])
    m1, m2 = res.train_metrics_clientapp[1], res.train_metrics_clientapp[2]
    assert set(m1.keys()) == set(m2.keys())
    assert sorted(v % 2**64 for v in m1["sampled-ids"]) == sorted(big)  # int64, two's complement
    assert [v % 2**64 for v in m2["failed-nodes"]] == [bad]


def test_train_config_lr_is_used_and_a_disagreeing_client_lr_warns(caplog):
    s = FedAdapt(min_available_nodes=2, fraction_evaluate=0.0)
    msgs = list(
        s.configure_train(
            1, ArrayRecord(tiny_model().state_dict()), ConfigRecord({"lr": 0.05}), FakeGrid([1, 2])
        )
    )
    assert read_train_message(msgs[0], tiny_model()).optimizer_kwargs(1) == {"lr": 0.05}
    s = FedAdapt(min_available_nodes=2, client_options={"lr": 0.01}, fraction_evaluate=0.0)
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    try:
        msgs = list(
            s.configure_train(
                1,
                ArrayRecord(tiny_model().state_dict()),
                ConfigRecord({"lr": 0.05}),
                FakeGrid([1, 2]),
            )
        )
    finally:
        flwr_logger.removeHandler(caplog.handler)
    assert read_train_message(msgs[0], tiny_model()).optimizer_kwargs(1) == {"lr": 0.01}
    assert "overrides the train config's lr=0.05" in caplog.text


def test_two_call_client_under_flowers_own_strategy_keeps_the_apps_lr():
    from flwr.serverapp.strategy import FedAvg

    msgs = list(
        FedAvg(min_available_nodes=1, min_train_nodes=1, fraction_train=1.0).configure_train(
            1, ArrayRecord(tiny_model().state_dict()), ConfigRecord({"lr": 0.05}), FakeGrid([3])
        )
    )
    plan = read_train_message(msgs[0], tiny_model())
    assert plan.client_ids == [3] and plan.optimizer_kwargs(3) == {"lr": 0.05}


def test_round_lines_go_to_flowers_logger(caplog):
    # at INFO whatever an earlier test in this process left the level at (the CLI's runners
    # raise "flwr" to WARNING for the user's terminal)
    caplog.set_level(logging.INFO, logger="flwr")
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    try:

        def half(msg):
            if msg.metadata.dst_node_id == 12:
                return Message(content=RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)
            return standard_client(msg)

        _run(
            FedAdapt(server_optimizer="hd-mult", min_available_nodes=4, fraction_evaluate=0.0),
            FakeGrid(NODES, half),
            rounds=2,
        )
    finally:
        flwr_logger.removeHandler(caplog.handler)
    text = caplog.text
    assert "[ROUND 2/2]" in text and "4 sampled, 3 received, 1 failed" in text
    assert "server lr" in text and "failed: missing record 'metrics'" in text
    assert "fedadapt summary: 2 rounds" in text


def test_deployment_wait_speaks_of_supernodes():
    s = FedAdapt(min_available_nodes=3, worker_wait_timeout=0.3)
    with pytest.raises(WorkersNotReady) as err:
        _run(s, FakeGrid([1, 2], standard_client), rounds=1)
    msg = str(err.value)
    assert "SuperNode" in msg and "min_available_nodes=3" in msg
    assert "num_workers" not in msg and "num-supernodes" not in msg


def test_default_wait_depends_on_the_mode():
    from strategies.options import DEPLOYMENT_WAIT_S, SIMULATION_WAIT_S

    assert FedAdapt().options.wait_timeout == DEPLOYMENT_WAIT_S
    sim = FedAdapt(num_clients=10, clients_per_round=2, num_workers=2)
    assert sim.options.wait_timeout == SIMULATION_WAIT_S < DEPLOYMENT_WAIT_S


def test_state_dict_round_trip_continues_identically():
    def make():
        return FedAdapt(
            server_optimizer="adam",
            server_options={"lr": 0.05},
            client_lr_state="persist",
            client_optimizer="hd",
            num_clients=12,
            clients_per_round=4,
            num_workers=2,
            fraction_evaluate=0.0,
        )

    arrays = ArrayRecord(tiny_model().state_dict())
    a = make()
    out = _run(a, FakeGrid([1, 2], worker), rounds=2).arrays
    b = make()
    b.load_state_dict(a.state_dict(), out)
    assert b.client_lrs == a.client_lrs and b.client_lrs
    nxt_a, _ = a.aggregate_train(
        3, [worker(m) for m in a.configure_train(3, out, ConfigRecord(), FakeGrid([1, 2]))]
    )
    nxt_b, _ = b.aggregate_train(
        3, [worker(m) for m in b.configure_train(3, out, ConfigRecord(), FakeGrid([1, 2]))]
    )
    assert all(nxt_a[k].data == nxt_b[k].data for k in arrays)
    other = FedAdapt(server_optimizer="sgd", num_clients=12, clients_per_round=4, num_workers=2)
    with pytest.raises(ValueError, match="server-optimizer"):
        other.load_state_dict(a.state_dict(), out)
