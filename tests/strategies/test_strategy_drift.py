"""Strategies and changes: the detector's signal from the replies, the server's hints to the
clients after a change (more local work), the oracle's known changepoints."""

import math

import pytest
import torch
from flwr.app import ArrayRecord
from strategy_fakes import FakeGrid, jumping_start_loss, reporting_worker, tiny_model

import fedadapt
from strategies import FedAdapt, build_strategy
from strategies.client import read_train_message

HINT = "fedadapt.hint.local-work"


def worker_with_start_loss(jump_round: int):
    """A worker whose clients' round-start loss triples from ``jump_round`` on (a drift)."""
    return reporting_worker(start_loss=jumping_start_loss(jump_round))


def hints_by_round(grid):
    out = {}
    for m in grid.sent:
        if m.metadata.message_type != "train":
            continue
        cfg = m.content["config"]
        out[int(cfg["server-round"])] = cfg.get(HINT)
    return out


def test_default_method_detects_the_drift_and_asks_for_more_local_work():
    seen = []
    s = FedAdapt(
        server_optimizer="cp-adam",
        server_options={},
        num_clients=40,
        clients_per_round=8,
        num_workers=2,
        seed=1,
        on_round_end=seen.append,
    )
    grid = FakeGrid([1, 2], respond=worker_with_start_loss(jump_round=8))
    s.start(grid, ArrayRecord(tiny_model().state_dict()), num_rounds=15)
    changes = [d["round"] for d in seen if d["server-change"] == 1.0]
    assert changes == [8]
    hints = hints_by_round(grid)
    # plasticity = 3x local work for the 5 rounds after the change, then back
    assert [r for r, h in hints.items() if h is not None] == [9, 10, 11, 12, 13]
    assert all(hints[r] == pytest.approx(3.0) for r in range(9, 14))
    assert all("server-detector-start-loss-cusum" in d for d in seen)


def test_standard_replies_feed_the_detector_with_their_train_loss():
    # a reply without fedadapt's per-client record: the reply's own train loss is the signal
    from strategies.fedadapt_strategy import _start_losses
    from strategies.validation import CheckedReply

    c = CheckedReply(
        7, 10, 0.8, {}, [7], [10], {"train-loss": [math.nan], "start-loss": [math.nan]}, None, None
    )
    sig = _start_losses([c])
    assert sig[fedadapt.server.START_LOSSES] == [0.8]
    assert sig[fedadapt.server.START_WEIGHTS] == [10.0]


def test_oracle_resets_fedadam_at_the_known_changepoints():
    seen = []
    s = build_strategy(
        "fedadam-oracle",
        change_rounds=[3],
        num_clients=20,
        clients_per_round=4,
        num_workers=2,
        on_round_end=seen.append,
    )
    assert s.server_optimizer == "cp-adam"
    grid = FakeGrid([1, 2])
    s.start(grid, ArrayRecord(tiny_model().state_dict()), num_rounds=5)
    assert s._server.detector is None  # the known rounds replace the detector
    assert [d["server-change"] for d in seen] == [0.0, 0.0, 1.0, 0.0, 0.0]
    group = s._server.optimizer.param_groups[0]
    assert (group["m_step"], group["step"]) == (3, 5)  # first moment restarted at round 3
    assert [r for r, h in hints_by_round(grid).items() if h is not None] == [4, 5]


def test_lr_scale_hint_scales_the_clients_lr():
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    import strategies.records as R

    model = tiny_model()
    cfg = ConfigRecord(
        {
            R.CFG_ROUND: 2,
            R.CFG_CLIENT_IDS: [1],
            R.CFG_CLIENT_LRS: [-1.0],
            R.CFG_OPTIMIZER: "sgd",
            R.CFG_OPTIMIZER_OPTIONS: '{"lr": 0.2}',
            R.CFG_HINT_PREFIX + "lr-scale": 0.25,
        }
    )
    msg = Message(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), "config": cfg}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )
    plan = read_train_message(msg, model)
    assert plan.hints == {"lr-scale": 0.25}
    opt = plan.build_optimizer(model.parameters(), 1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    torch.testing.assert_close(plan.optimizer_kwargs(1)["lr"], 0.05)
