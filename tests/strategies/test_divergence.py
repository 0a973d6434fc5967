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
    s = FedAdapt(
        server_optimizer="sgd",
        server_options={"lr": 300.0},
        num_clients=20,
        clients_per_round=4,
        num_workers=2,
        client_options={"lr": 0.05},
    )
    with caplog.at_level(logging.WARNING):
        s.start(
            FakeGrid([1, 2]),
            ArrayRecord(tiny_model().state_dict()),
            num_rounds=4,
            evaluate_fn=lambda r, a: MetricRecord({"accuracy": 0.1}),
        )
    assert s.divergence.message is not None
    assert "server_options['lr'], now 300" in s.divergence.message
    assert any(h.get("divergence") == 1.0 for h in s.history)


def test_a_lasting_several_fold_rise_of_the_evaluated_loss_warns():
    """Server adam at lr 1 in the adoption probe (RESULTS.md §11, seed 0): the central loss went
    1.61 -> 14.4 -> 7.9 while the clients' training loss hardly rose."""
    w = DivergenceWatch("server-lr", eval_loss_factor=3.0, eval_loss_rounds=2)
    assert not w.observe_eval_loss(0, 1.61)
    assert not w.observe_eval_loss(1, 14.38)
    assert w.observe_eval_loss(2, 7.91)
    assert "evaluated loss" in w.message and "3x" in w.message and "server-lr" in w.message


def test_a_drifts_one_round_jump_of_the_evaluated_loss_does_not_warn():
    """drift-recurring with the default strategy (seed 0): 3.0x and 3.3x the initial loss at two
    changes, each for one evaluated round, then back below."""
    rel = [1.0, 1.0, 1.1, 0.8, 0.6, 0.3, 0.1, 3.0, 0.9, 0.7, 0.4, 1.4, 0.9, 0.4, 3.3, 1.4, 1.0, 0.9]
    w = DivergenceWatch("x")
    assert not any(w.observe_eval_loss(r, 2.3 * x) for r, x in enumerate(rel))
    assert w.message is None


def test_the_evaluated_loss_rule_needs_the_initial_model_and_counts_consecutive_rounds():
    w = DivergenceWatch("x")
    # resumed past round 0: no reference, no rule (a trained model's loss is no reference)
    assert not any(w.observe_eval_loss(r, x) for r, x in [(5, 0.1), (6, 5.0), (7, 5.0), (8, 5.0)])
    v = DivergenceWatch("x")
    v.observe_eval_loss(0, 1.0)
    # high, low, high, low: never two in a row
    assert not any(v.observe_eval_loss(r, x) for r, x in [(1, 4.0), (2, 1.0), (3, 4.0), (4, 2.9)])
    assert v.observe_eval_loss(5, 3.5) is False and v.observe_eval_loss(6, 3.1) is True
    u = DivergenceWatch("x")
    u.observe_eval_loss(0, 1.0)
    assert u.observe_eval_loss(1, math.inf)  # non-finite after a finite start


def test_a_run_whose_global_model_loss_stays_high_names_the_setting(caplog):
    s = FedAdapt(
        server_optimizer="sgd",
        num_clients=20,
        clients_per_round=4,
        num_workers=2,
        client_options={"lr": 0.05},
    )
    losses = iter([1.0, 5.0, 6.0, 7.0])
    with caplog.at_level(logging.WARNING):
        s.start(
            FakeGrid([1, 2]),
            ArrayRecord(tiny_model().state_dict()),
            num_rounds=3,
            evaluate_fn=lambda r, a: MetricRecord({"accuracy": 0.5, "loss": next(losses)}),
        )
    assert s.divergence.message is not None and "evaluated loss" in s.divergence.message
    assert "server_options['lr']" in s.divergence.message
