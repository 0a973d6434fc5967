"""A diverging run says so, naming the server step size (issue 20 §1)."""

from __future__ import annotations

import logging
import math

from flwr.app import ArrayRecord, MetricRecord
from strategy_fakes import FakeGrid, tiny_model

from strategies import FedAdapt
from strategies.divergence import DivergenceWatch


def test_a_tenfold_rise_of_the_loss_warns_once():
    w = DivergenceWatch("server-lr")
    assert not w.observe_loss(1, 2.3, 10)
    assert not w.observe_loss(2, 6.0, 10)  # a drift's jump
    assert w.observe_loss(3, 40.0, 10)
    assert "server step size" in w.message and "server-lr" in w.message
    assert not w.observe_loss(4, 1e9, 10)  # once


def test_non_finite_loss_with_replies_warns_and_without_replies_not():
    w = DivergenceWatch("x")
    assert not w.observe_loss(1, math.nan, 0)
    assert w.observe_loss(2, math.inf, 3)


def test_accuracy_at_chance_for_five_rounds_warns_but_a_drop_after_learning_not():
    w = DivergenceWatch("x")
    w.observe_accuracy(0, 0.1)
    assert [w.observe_accuracy(r, 0.105) for r in range(1, 6)] == [False] * 4 + [True]
    v = DivergenceWatch("x")
    v.observe_accuracy(0, 0.1)
    v.observe_accuracy(1, 0.6)
    assert not any(v.observe_accuracy(r, 0.1) for r in range(2, 10))


def test_a_run_with_a_huge_server_lr_names_the_setting(caplog):
    s = FedAdapt(server_optimizer="sgd", server_options={"lr": 300.0}, num_clients=20,
                 clients_per_round=4, num_workers=2, client_options={"lr": 0.05})
    with caplog.at_level(logging.WARNING):
        s.start(FakeGrid([1, 2]), ArrayRecord(tiny_model().state_dict()), num_rounds=4,
                evaluate_fn=lambda r, a: MetricRecord({"accuracy": 0.1}))
    assert s.divergence.message is not None
    assert "server_options['lr'], now 300" in s.divergence.message
    assert any(h.get("divergence") == 1.0 for h in s.history)
