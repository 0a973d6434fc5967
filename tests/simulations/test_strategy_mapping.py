"""The run config reaches each strategy family with the meaning its docs give `server-lr`."""

from __future__ import annotations

import pytest

from simulations.cli import build_config
from simulations.reader import read, strategy_arguments


def _kw_of(scenario: str, *sets: str) -> dict:
    spec = read(build_config(scenario, list(sets)))
    return strategy_arguments(spec.strategy, spec.strategy_settings)


def _kw(*sets: str) -> dict:
    spec = read(build_config("quickstart", list(sets)))
    return strategy_arguments(spec.strategy, spec.strategy_settings)


def test_server_lr_per_family():
    assert _kw("server-lr=2")["server_options"]["lr"] == 2.0  # fedadapt: the optimizer's lr
    adam = _kw("strategy=fedadam", "server-lr=0.03", "client-lr=0.2")
    assert adam["eta"] == 0.03 and adam["eta_l"] == 0.2
    avgm = _kw("strategy=fedavgm", "server-lr=0.5")
    assert avgm["server_learning_rate"] == 0.5 and avgm["server_momentum"] == 0.9
    assert _kw("strategy=fedprox")["proximal_mu"] == 0.01
    assert _kw("strategy=fedhyper-g")["server_options"]["lr"] == 1.0


def test_server_autodrop_window_counts_rounds():
    # 20 clients, 10 per round: a window is one expected pass over the population (2 rounds)
    assert _kw("server-optimizer=autodrop")["server_options"]["window"] == 2
    assert (
        _kw("server-optimizer=autodrop", 'server-options={"window": 7}')["server_options"]["window"]
        == 7
    )


def test_deployment_mode_has_no_population():
    kw = _kw("deployment=true")
    assert kw["num_clients"] is None and kw["num_workers"] is None
    assert kw["clients_per_round"] == 10


def test_client_options_carry_the_client_lr():
    kw = _kw("client-optimizer=hd", 'client-options={"hyper_lr": 0.001}', "client-lr=0.02")
    assert kw["client_optimizer"] == "hd"
    assert kw["client_options"] == {"hyper_lr": 0.001, "lr": 0.02}


def test_recovery_metrics_are_withheld_for_runs_that_never_learned():
    from simulations.report import summarize

    cfg = build_config("drift-digits", [])
    changepoints = read(cfg).world.drift.schedule().changepoint_rounds()
    assert changepoints == [20]
    flat = [{"round": r, "accuracy": 0.10 + (0.003 if r == 5 else 0.0)} for r in range(0, 41)]
    learned = [
        {"round": r, "accuracy": 0.1 if r == 0 else (0.9 if r < 20 else (0.3 if r == 20 else 0.88))}
        for r in range(0, 41)
    ]
    d_flat = summarize(flat, cfg, changepoints)["drifts"][0]
    assert d_flat["max-drop"] is None and "untrained" in d_flat["note"]
    d_learned = summarize(learned, cfg, changepoints)["drifts"][0]
    assert d_learned["max-drop"] == pytest.approx(0.6) and d_learned["rounds-to-recover"] == 1


def test_unset_server_lr_takes_each_methods_own_default():
    kw = _kw()  # quickstart: the default server method
    assert kw["server_optimizer"] == "cp-adam" and kw["server_options"]["lr"] == 0.1
    assert _kw("server-optimizer=sgd")["server_options"]["lr"] == 1.0  # FedAvg
    assert _kw("server-optimizer=hd-mult")["server_options"]["lr"] == 1.0
    assert "eta" not in _kw("strategy=fedadam")  # Flower's own eta
    assert _kw("strategy=fedavgm")["server_learning_rate"] == 1.0
    assert "lr" not in _kw("strategy=adaptive-fedavg")["server_options"]  # FedAvg: none to set
    assert _kw("strategy=flash", "server-lr=0.03")["server_options"] == {"lr": 0.03}


def test_the_oracle_gets_the_drift_schedules_changepoints():
    kw = _kw_of("drift-digits", "strategy=fedadam-oracle")
    assert kw["change_rounds"] == [20]
    kw = _kw_of("drift-recurring", "strategy=fedadam-oracle")
    assert kw["change_rounds"] == [15, 25, 35, 45, 55]
    assert "change_rounds" not in _kw("strategy=fedadam")
