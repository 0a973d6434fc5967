"""Crafted checkpoints are refused before any worker starts, naming the field (issue 20 §5).

A resumed state passes the checks of a freshly built one: the server method's settings, the
adapted lr within its bounds, finite tensors of the model's shapes, squared accumulators >= 0,
counters in range, the detector's state, the plasticity countdown, a round that leaves rounds
to run. Every server method's own checkpoint still loads.
"""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ArrayRecord
from strategy_fakes import FakeGrid, tiny_model

import fedadapt
from strategies import CheckpointError, FedAdapt, build_strategy


def _make(tmp, server_optimizer="cp-adam", **kw):
    return FedAdapt(
        server_optimizer=server_optimizer,
        num_clients=20,
        clients_per_round=4,
        num_workers=2,
        seed=3,
        client_options={"lr": 0.05},
        checkpoint_dir=tmp,
        checkpoint_every=1,
        **kw,
    )


_SAVED: dict[str, dict] = {}


@pytest.fixture
def saved(tmp_path_factory):
    """cp-adam's checkpoint of round 3 (with a detector state), written once per module."""
    if "d" not in _SAVED:
        tmp = tmp_path_factory.mktemp("ckpt")
        s = _make(tmp)
        s.start(FakeGrid([1, 2]), ArrayRecord(tiny_model().state_dict()), num_rounds=3)
        _SAVED["d"] = torch.load(tmp / "round-000003.pt", weights_only=True)
    return _SAVED["d"]


def _opt(d):
    return d["server"]["server_optimizer"]["optimizer"]


def _group(d):
    return _opt(d)["param_groups"][0]


def _moments(d):
    return _opt(d)["state"][0]


def _set(path, value):
    def edit(d):
        *head, last = path
        for k in head:
            d = d[k]
        d[last] = value

    return edit


def _fill(key, value):
    def edit(d):
        _moments(d)[key].fill_(value)

    return edit


def _detector(field, value):
    def edit(d):
        d["server"]["server_optimizer"]["detector"]["channels"]["start-loss"][field] = value

    return edit


CRAFTED = {
    "nan first moment": (_fill("exp_avg", math.nan), "exp_avg"),
    "inf second moment": (_fill("exp_avg_sq", math.inf), "exp_avg_sq"),
    "negative second moment": (_fill("exp_avg_sq", -1.0), "exp_avg_sq"),
    "moment of the wrong shape": (
        lambda d: _moments(d).__setitem__("exp_avg", torch.zeros(7)),
        "shape",
    ),
    "nan lr": (lambda d: _group(d).__setitem__("lr", math.nan), "lr"),
    "negative lr": (lambda d: _group(d).__setitem__("lr", -0.1), "lr"),
    "huge lr": (lambda d: _group(d).__setitem__("lr", 1e6), "lr"),
    "beta out of range": (lambda d: _group(d).__setitem__("betas", (1.5, 0.99)), "betas"),
    "other betas": (lambda d: _group(d).__setitem__("betas", (0.5, 0.5)), "betas"),
    "huge local work": (lambda d: _group(d).__setitem__("local_work", 1e6), "local_work"),
    "negative step counter": (lambda d: _group(d).__setitem__("step", -4), "step"),
    "step counter past the round": (lambda d: _group(d).__setitem__("step", 10**6), "step"),
    "permanent extra local work": (
        _set(("server", "server_optimizer", "plastic_left"), 10**9),
        "plastic_left",
    ),
    "nan detector reference": (_detector("mean", math.nan), "detector"),
    "negative detector variance": (_detector("var", -1.0), "detector"),
    "negative cusum": (_detector("cusum", -5.0), "detector"),
    "alarms after the last round": (
        _set(("server", "server_optimizer", "detector", "alarms"), [999]),
        "alarms",
    ),
    "server round past the checkpoint's": (
        _set(("server", "server_optimizer", "round"), 50),
        "round",
    ),
    "nan model": (lambda d: next(iter(d["arrays"].values())).fill_(math.nan), "non-finite"),
    "negative round": (_set(("round",), -1), "round"),
    "missing parameter group entry": (lambda d: _group(d).pop("eps"), "eps"),
    "state for a parameter the model lacks": (
        lambda d: _opt(d)["state"].__setitem__(9, {"exp_avg": torch.zeros(1)}),
        "parameter",
    ),
    "nan previous pseudo-gradient": (
        lambda d: d["server"]["server_optimizer"]["prev_pseudo_grad"][0].fill_(math.nan),
        "prev_pseudo_grad",
    ),
}


def _clone(d):
    import copy

    return copy.deepcopy(d)


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_checkpoint_is_refused_naming_the_field(case, saved, tmp_path):
    edit, field = CRAFTED[case]
    d = _clone(saved)
    edit(d)
    torch.save(d, tmp_path / "bad.pt")
    s = _make(tmp_path / "run")
    with pytest.raises(CheckpointError, match=field):
        s.load_checkpoint(tmp_path / "bad.pt")


def test_a_round_past_the_end_is_refused_before_any_message(saved, tmp_path):
    torch.save(_clone(saved), tmp_path / "r3.pt")
    s = _make(tmp_path / "run")
    s.load_checkpoint(tmp_path / "r3.pt")
    grid = FakeGrid([1, 2])
    with pytest.raises(CheckpointError, match="past the run's last round"):
        s.start(grid, ArrayRecord(tiny_model().state_dict()), num_rounds=2)
    assert grid.sent == []


@pytest.mark.parametrize("name", fedadapt.methods_for("server"))
def test_every_server_methods_own_checkpoint_loads(name, tmp_path):
    s = _make(tmp_path, server_optimizer=name)
    s.start(FakeGrid([1, 2]), ArrayRecord(tiny_model().state_dict()), num_rounds=3)
    resumed = _make(tmp_path, server_optimizer=name)
    assert resumed.load_checkpoint(tmp_path)[0] == 3


@pytest.mark.parametrize("bad", ["nan", "shape"])
def test_flower_fedadam_moments_are_checked(bad, tmp_path):
    kw = dict(
        num_clients=20,
        clients_per_round=4,
        num_workers=2,
        seed=3,
        client_options={"lr": 0.05},
        checkpoint_dir=tmp_path,
        checkpoint_every=1,
    )
    s = build_strategy("fedadam", **kw)
    s.start(FakeGrid([1, 2]), ArrayRecord(tiny_model().state_dict()), num_rounds=2)
    d = torch.load(tmp_path / "latest.pt", weights_only=True)
    key = next(iter(d["server"]["v_t"]))
    if bad == "nan":
        d["server"]["v_t"][key].fill_(math.nan)
    else:
        d["server"]["v_t"][key] = torch.zeros(2, 2, 2)
    torch.save(d, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="v_t"):
        build_strategy("fedadam", **kw).load_checkpoint(tmp_path / "bad.pt")
