"""A method's declarations live in its MethodSpec and every builder obeys them."""

from __future__ import annotations

import pytest
import torch

import fedadapt


def _param() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize("name", fedadapt.methods_for("server"))
def test_server_methods_are_built_on_the_server(name):
    server = fedadapt.ServerOptimizer([torch.zeros(3)], name)
    assert server.spec is fedadapt.method_spec(name)


@pytest.mark.parametrize(
    "name", sorted(set(fedadapt.available_optimizers()) - set(fedadapt.methods_for("client")))
)
def test_a_server_only_method_is_refused_as_a_client_optimizer(name):
    with pytest.raises(ValueError, match=rf"'{name}' runs only on the server.*client methods: \["):
        fedadapt.build_optimizer(name, _param())


def test_every_method_declares_a_side_and_the_server_only_ones_are_the_server_rules():
    server_only = {
        n for n in fedadapt.available_optimizers() if fedadapt.method_spec(n).side == "server"
    }
    assert server_only == {
        "fedexp",
        "cp-adam",
        "flash",
        "adaptive-fedavg",
        "fedhyper-g",
        "fedhyper-gm",
    }
    for name in fedadapt.methods_for("client"):
        fedadapt.build_optimizer(name, _param())  # builds, no error


def test_default_server_lr_is_read_from_the_spec():
    assert fedadapt.default_server_lr("cp-adam") == 0.1
    assert fedadapt.default_server_lr("sgd") == 1.0
    assert fedadapt.default_server_lr("adaptive-fedavg") is None


def test_client_default_lr_is_the_factorys_own():
    assert fedadapt.method_spec("sgd").client_lr == 0.01
    assert fedadapt.method_spec("adam").client_lr == 1e-3
    assert fedadapt.method_spec("cp-adam").client_lr is None  # never a client optimizer


def test_spec_values_are_validated():
    with pytest.raises(ValueError, match="side must be one of"):
        fedadapt.MethodSpec(side="edge")
    with pytest.raises(ValueError, match="server_lr must be a finite number > 0"):
        fedadapt.MethodSpec(server_lr=0.0)
    with pytest.raises(ValueError, match="carried_lr_bounds"):
        fedadapt.MethodSpec(carried_lr_bounds=(2.0, 10.0))
    with pytest.raises(ValueError, match="carried_lr_bounds"):
        fedadapt.MethodSpec(carried_lr_bounds=(0.1, float("inf")))


def test_carried_lr_is_clamped_to_the_methods_bounds_around_the_configured_lr():
    hd = fedadapt.method_spec("hd")
    assert hd.clamp_carried_lr(5.0, 0.001) == pytest.approx(1.0)  # 1e3 x configured
    assert hd.clamp_carried_lr(1e-9, 0.1) == pytest.approx(1e-4)
    assert hd.clamp_carried_lr(0.3, 0.1) == 0.3
    # a method that does not adapt its scalar lr carries nothing: the configured lr
    assert fedadapt.method_spec("sgd").clamp_carried_lr(0.3, 0.1) == 0.1


def test_signals_imply_per_client_values():
    assert fedadapt.method_spec("fedexp").per_client_values
    assert fedadapt.method_spec("cp-adam").per_client_values  # the detector's per-client losses
    assert not fedadapt.method_spec("hd").per_client_values


def test_fixed_client_hints_come_from_the_spec():
    server = fedadapt.ServerOptimizer([torch.zeros(3)], "flash")
    assert server.client_hints() == {"early-stop-gamma": 0.04}


@pytest.mark.parametrize(
    "name", [n for n in fedadapt.methods_for("server") if fedadapt.default_server_lr(n) is not None]
)
def test_a_server_optimizer_built_without_an_lr_steps_at_its_specs_server_lr(name):
    # ServerOptimizer(params, "adam") is FedAdam at eta 0.1, not torch Adam's client 1e-3, and
    # "sgd" is FedAvg at 1.0, not SGD's 0.01: the same default a strategy would take
    server = fedadapt.ServerOptimizer([torch.zeros(3)], name)
    assert server.optimizer.param_groups[0]["lr"] == fedadapt.default_server_lr(name)
    assert (
        fedadapt.ServerOptimizer([torch.zeros(3)], name, lr=0.5).optimizer.param_groups[0]["lr"]
        == 0.5
    )
