"""What a researcher reads off a round (issue 19 §4-5), without Ray: the clients' step sizes as
the cohort's distribution, the server method's hints (``local-work``), and a client method that
a standard Flower ClientApp never ran, reported on Flower's logger and in every round."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from strategy_fakes import (
    FakeGrid,
    jumping_start_loss,
    local_train,
    reporting_worker,
    tiny_model,
    worker,
)

import fedadapt
from strategies import FedAdapt
from strategies.round_metrics import FLOAT_KEYS, cohort_lr_stats

IGNORED = "ignored-client-optimizer-replies"
NODES = [11, 12, 13, 14]


def known_lr(cid: int) -> float:
    return 0.01 * (1 + cid % 9)


def known_steps(cid: int) -> dict[str, float]:
    lr = known_lr(cid)
    return {"lr": lr, "step-mean": 2 * lr, "step-min": lr / 10, "step-max": 10 * lr}


worker_with_known_steps = reporting_worker(steps=known_steps)


def test_cohort_lr_stats_by_hand():
    got = cohort_lr_stats(np.array([0.8, 0.1, 0.4, 0.2]))
    assert got == pytest.approx(
        {
            "client-lr": 0.375,
            "client-lr-min": 0.1,
            "client-lr-p25": 0.175,  # linear interpolation: 0.1 + 0.75 * (0.2 - 0.1)
            "client-lr-median": 0.3,
            "client-lr-p75": 0.5,  # 0.4 + 0.25 * (0.8 - 0.4)
            "client-lr-max": 0.8,
        }
    )
    assert all(math.isnan(v) for v in cohort_lr_stats(np.array([])).values())


def test_round_metrics_hold_the_cohorts_step_size_distribution():
    seen: list[dict] = []
    s = FedAdapt(
        num_clients=50,
        clients_per_round=10,
        num_workers=3,
        seed=4,
        on_round_end=seen.append,
        fraction_evaluate=0.0,
    )
    res = s.start(
        FakeGrid([1, 2, 3], worker_with_known_steps),
        ArrayRecord(tiny_model().state_dict()),
        num_rounds=2,
    )
    for info in seen:
        ids = info["succeeded-ids"]
        assert len(ids) == 10
        lrs = np.array([known_lr(c) for c in ids])
        assert info["client-lr"] == pytest.approx(lrs.mean())
        assert info["client-lr-min"] == pytest.approx(lrs.min())
        assert info["client-lr-max"] == pytest.approx(lrs.max())
        assert info["client-lr-median"] == pytest.approx(np.median(lrs))
        assert info["client-lr-p25"] == pytest.approx(np.quantile(lrs, 0.25))
        assert info["client-lr-p75"] == pytest.approx(np.quantile(lrs, 0.75))
        # the per-coordinate spread: lowest step-min, highest step-max, mean of step-means
        assert info["client-step-min"] == pytest.approx(lrs.min() / 10)
        assert info["client-step-max"] == pytest.approx(lrs.max() * 10)
        assert info["client-step-mean"] == pytest.approx(2 * lrs.mean())
        assert info["local-work"] == 1.0  # server sgd asks for nothing
        assert info[IGNORED] == 0
        # the same numbers reach Flower's Result (and so metrics.jsonl through on_round_end)
        rec = res.train_metrics_clientapp[info["round"]]
        for key in ("client-lr-median", "client-lr-p25", "client-lr-p75", "local-work", IGNORED):
            assert rec[key] == pytest.approx(info[key])


def test_a_round_without_step_statistics_has_nan_quartiles():
    seen: list[dict] = []
    s = FedAdapt(min_available_nodes=4, fraction_evaluate=0.0, on_round_end=seen.append)
    s.start(
        FakeGrid(NODES, standard_client),
        ArrayRecord(tiny_model().state_dict()),
        num_rounds=1,
        train_config=ConfigRecord({"lr": 0.05}),
    )
    info = seen[0]
    for key in (k for k in FLOAT_KEYS if k.startswith("client-lr")):
        assert math.isnan(info[key])


def drift_worker(jump_round: int):
    """Clients whose round-start loss triples from ``jump_round`` on: cp-adam's detector fires."""
    return reporting_worker(start_loss=jumping_start_loss(jump_round))


def test_local_work_hint_is_a_round_metric():
    seen: list[dict] = []
    s = FedAdapt(
        server_optimizer="cp-adam",
        server_options={},
        num_clients=40,
        clients_per_round=8,
        num_workers=2,
        seed=1,
        on_round_end=seen.append,
    )
    grid = FakeGrid([1, 2], respond=drift_worker(jump_round=8))
    s.start(grid, ArrayRecord(tiny_model().state_dict()), num_rounds=15)
    alarms = [d["round"] for d in seen if d.get("server-detector-alarm") == 1.0]
    assert alarms == [8]
    sent = {
        int(m.content["config"]["server-round"]): m.content["config"].get(
            "fedadapt.hint.local-work"
        )
        for m in grid.sent
        if m.metadata.message_type == MessageType.TRAIN
    }
    extra = [d["round"] for d in seen if d["local-work"] > 1.0]
    assert extra == [r for r, h in sent.items() if h is not None] == [9, 10, 11, 12, 13]
    assert all(d["local-work"] == pytest.approx(3.0) for d in seen if d["round"] in extra)
    assert all(d["local-work"] == 1.0 for d in seen if d["round"] not in extra)


# ---------------------------------------------------------------- a client method nobody runs
def standard_client(msg: Message) -> Message:
    """Flower's quickstart ClientApp in miniature: its own torch SGD, the config's lr."""
    model = tiny_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=float(msg.content["config"].get("lr", 0.05)))
    n, loss = local_train(model, opt, int(msg.metadata.dst_node_id) % 1000)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": n}),
        }
    )
    return Message(content=content, reply_to=msg)


def _run_logged(strategy, respond, caplog, rounds=2):
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    try:
        strategy.start(
            FakeGrid(NODES, respond),
            ArrayRecord(tiny_model().state_dict()),
            num_rounds=rounds,
            train_config=ConfigRecord({"lr": 0.05}),
        )
    finally:
        flwr_logger.removeHandler(caplog.handler)
    # Flower's logger may also propagate to the root logger caplog listens on: one record each
    unique = {id(r): r for r in caplog.records if "is ignored by" in r.getMessage()}
    return list(unique.values())


def test_client_method_ignored_by_standard_clients_is_reported(caplog):
    s = FedAdapt(
        client_optimizer="hd",
        min_available_nodes=4,
        min_train_nodes=4,
        fraction_train=1.0,
        fraction_evaluate=0.0,
    )
    warnings = _run_logged(s, standard_client, caplog, rounds=3)
    assert len(warnings) == 1  # once, at the first round
    text = warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert text.startswith("round 1:")
    assert "'hd'" in text and "4 of 4 replies" in text
    assert "read_train_message" in text and "build_train_reply" in text
    assert "ClientApp" in text
    assert [h[IGNORED] for h in s.history] == [4, 4, 4]


@pytest.mark.parametrize(
    ("client_optimizer", "respond"),
    [("sgd", standard_client), ("hd", worker)],
    ids=["plain-sgd-standard-client", "hd-two-call-client"],
)
def test_nothing_is_reported_when_nothing_is_ignored(client_optimizer, respond, caplog):
    s = FedAdapt(
        client_optimizer=client_optimizer,
        min_available_nodes=4,
        min_train_nodes=4,
        fraction_train=1.0,
        fraction_evaluate=0.0,
    )
    assert _run_logged(s, respond, caplog) == []
    assert [h[IGNORED] for h in s.history] == [0, 0]


def test_mixed_replies_count_only_the_standard_ones(caplog):
    def mixed(msg: Message) -> Message:
        return standard_client(msg) if msg.metadata.dst_node_id in (11, 12) else worker(msg)

    s = FedAdapt(
        client_optimizer="dsa",
        min_available_nodes=4,
        min_train_nodes=4,
        fraction_train=1.0,
        fraction_evaluate=0.0,
    )
    warnings = _run_logged(s, mixed, caplog, rounds=1)
    assert len(warnings) == 1 and "2 of 4 replies" in warnings[0].getMessage()
    assert s.history[0][IGNORED] == 2


def test_a_default_client_method_not_run_by_standard_clients_is_said_without_a_warning(caplog):
    """A strategy whose *default* client method is not sgd (here a FedAdapt subclass defaulting
    to hd) names none on the adoption line: that standard ClientApps do not run it is
    information (INFO), still counted per round; the no-argument FedAdapt() says nothing."""

    class HDByDefault(FedAdapt):
        default_client = ("hd", "server")

    assert FedAdapt().client_optimizer == fedadapt.DEFAULT_CLIENT_METHOD == "sgd"
    s = HDByDefault(
        min_available_nodes=4, min_train_nodes=4, fraction_train=1.0, fraction_evaluate=0.0
    )
    assert (s.client_optimizer, s.client_lr_state) == ("hd", "server")
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="flwr"):
            s.start(
                FakeGrid(NODES, standard_client),
                ArrayRecord(tiny_model().state_dict()),
                num_rounds=2,
                train_config=ConfigRecord({"lr": 0.05}),
            )
    finally:
        flwr_logger.removeHandler(caplog.handler)
    said = {id(r): r for r in caplog.records if "standard Flower ClientApp" in r.getMessage()}
    assert [r.levelno for r in said.values()] == [logging.INFO]
    assert "default client method 'hd'" in next(iter(said.values())).getMessage()
    assert [h[IGNORED] for h in s.history] == [4, 4]
