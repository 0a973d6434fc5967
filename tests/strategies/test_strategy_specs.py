"""What a method needs lives with the method (fedadapt.MethodSpec), what a strategy takes lives
with the strategy (StrategySpec), and strategy_arguments maps an app's settings through them."""

from __future__ import annotations

import ast
import logging
import math
from pathlib import Path

import pytest
import torch

import fedadapt
from strategies import (
    StrategySettings,
    available_strategies,
    build_strategy,
    strategy_arguments,
    strategy_spec,
)

SETTINGS = StrategySettings(
    server_optimizer="hd-mult",
    server_options={},
    server_lr=1.0,
    server_momentum=0.9,
    client_optimizer="sgd",
    client_options={},
    client_lr=0.05,
    client_lr_state="reset",
    proximal_mu=0.01,
    num_clients=20,
    clients_per_round=10,
    num_workers=2,
    num_rounds=30,
    seed=0,
    availability=1.0,
    worker_wait_timeout=120.0,
)
BASE = {
    "client_optimizer": "sgd",
    "client_options": {"lr": 0.05},
    "client_lr_state": "reset",
    "client_lr_on_change": "keep",
    "reply_mode": "mean",
    "num_clients": 20,
    "clients_per_round": 10,
    "num_workers": 2,
    "seed": 0,
    "availability": 1.0,
    "worker_wait_timeout": 120.0,
}
NO_CLIENT_OPT = {k: v for k, v in BASE.items() if k != "client_optimizer"}
NO_CLIENT_OPT_STATE = {k: v for k, v in NO_CLIENT_OPT.items() if k != "client_lr_state"}
# what simulations' run-config mapping produced for each strategy before the specs existed
EXPECTED = {
    "fedadapt": {**BASE, "server_optimizer": "hd-mult", "server_options": {"lr": 1.0}},
    "fedhyper-g": {**BASE, "server_options": {"lr": 1.0}},
    "fedhyper-gm": {**BASE, "server_options": {"lr": 1.0}},
    "fedhyper-sl": {**NO_CLIENT_OPT_STATE, "server_options": {"lr": 1.0}},
    "fedhyper-cl": {**NO_CLIENT_OPT, "server_options": {"lr": 1.0}},
    "fedhyper-full": {**NO_CLIENT_OPT, "server_options": {"lr": 1.0}},
    "fedexp": {**BASE, "server_options": {}},
    "fedavg": BASE,
    "fedavgm": {**BASE, "server_learning_rate": 1.0, "server_momentum": 0.9},
    "fedadam": {**BASE, "eta": 1.0, "eta_l": 0.05},
    "fedyogi": {**BASE, "eta": 1.0, "eta_l": 0.05},
    "fedadagrad": {**BASE, "eta": 1.0, "eta_l": 0.05},
    "fedprox": {**BASE, "proximal_mu": 0.01},
    "flash": {**BASE, "server_options": {"lr": 1.0}},
    "adaptive-fedavg": {**BASE, "server_options": {}},  # a method without a server lr
    "fedadam-oracle": {**BASE, "server_options": {"lr": 1.0}, "change_rounds": []},
}


def test_every_strategy_has_an_expected_mapping():
    assert sorted(EXPECTED) == available_strategies()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_strategy_arguments_match_the_mapping_and_build(name):
    kw = strategy_arguments(name, SETTINGS)
    assert kw == EXPECTED[name]
    build_strategy(name, **kw)  # every argument is one the strategy accepts


def test_server_lr_goes_where_each_strategy_keeps_it():
    s = StrategySettings(
        server_lr=0.3, client_lr=0.2, server_optimizer="adam", num_clients=20, clients_per_round=10
    )
    assert strategy_arguments("fedadapt", s)["server_options"] == {"lr": 0.3}
    assert strategy_arguments("fedhyper-gm", s)["server_options"] == {"lr": 0.3}
    adam = strategy_arguments("fedadam", s)
    assert adam["eta"] == 0.3 and adam["eta_l"] == 0.2
    assert strategy_arguments("fedavgm", s)["server_learning_rate"] == 0.3


@pytest.mark.parametrize("name", ["fedavg", "fedexp", "fedprox"])
def test_a_server_lr_a_strategy_does_not_have_warns_and_the_rest_still_maps(name, caplog):
    s = StrategySettings(server_lr=0.3, server_options={"eps": 0.01} if name == "fedexp" else {})
    with caplog.at_level(logging.WARNING):
        kw = strategy_arguments(name, s)
    assert "not used by strategy" in caplog.text
    assert not strategy_spec(name).has_server_lr
    if name == "fedprox":
        assert kw["proximal_mu"] == 0.01  # (the old mapping dropped it when server-lr was set)
    if name == "fedexp":
        assert kw["server_options"] == {"eps": 0.01}


def test_server_defaults_come_from_the_method_spec():
    # one pass over the population: ceil(20 / 10) = 2 rounds; capped at a quarter of the run
    s = StrategySettings(
        server_optimizer="autodrop", num_clients=100, clients_per_round=10, num_rounds=80
    )
    assert strategy_arguments("fedadapt", s)["server_options"]["window"] == 10
    short = StrategySettings(
        server_optimizer="autodrop", num_clients=100, clients_per_round=10, num_rounds=12
    )
    assert strategy_arguments("fedadapt", short)["server_options"]["window"] == 3
    mine = StrategySettings(
        server_optimizer="autodrop",
        server_options={"window": 7},
        num_clients=100,
        clients_per_round=10,
        num_rounds=80,
    )
    assert strategy_arguments("fedadapt", mine)["server_options"]["window"] == 7
    spec = fedadapt.method_spec("autodrop")
    assert spec.server_defaults(fedadapt.Federation(20, 10, 30)) == {"window": 2}


def test_an_unset_server_lr_is_each_methods_own_default():
    s = StrategySettings(server_lr=None, server_optimizer="cp-adam")
    assert strategy_arguments("fedadapt", s)["server_options"] == {"lr": 0.1}
    assert (
        strategy_arguments("fedadapt", StrategySettings(server_optimizer="adaptive-fedavg"))[
            "server_options"
        ]
        == {}
    )
    assert "eta" not in strategy_arguments("fedadam", s)  # Flower's own eta
    assert strategy_arguments("fedavgm", s)["server_learning_rate"] == 1.0
    assert strategy_arguments("flash", s)["server_options"] == {}  # the preset's own
    oracle = strategy_arguments("fedadam-oracle", StrategySettings(change_rounds=(5, 9)))
    assert oracle["change_rounds"] == [5, 9]
    build_strategy("fedadam-oracle", **oracle)


def test_deployment_settings_have_no_population():
    kw = strategy_arguments(
        "fedadapt",
        StrategySettings(num_clients=20, clients_per_round=2, num_workers=4, deployment=True),
    )
    assert kw["num_clients"] is None and kw["num_workers"] is None


@pytest.mark.parametrize("name", fedadapt.available_optimizers())
def test_method_specs_agree_with_the_optimizers(name):
    """The spec a strategy reads says what the optimizer itself requires and uses."""
    spec = fedadapt.method_spec(name)
    lr = fedadapt.default_server_lr(name)
    server = fedadapt.ServerOptimizer([torch.zeros(2)], name, **({} if lr is None else {"lr": lr}))
    assert set(spec.signals) == set(server.required_signals)
    assert set(spec.optional_signals) == set(server.optional_signals)
    side = "server" if spec.side == "server" else "client"
    opt = fedadapt.build_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], side=side)
    assert spec.needs_global_update == hasattr(opt, "set_global_update")
    if spec.carried_lr_bounds is not None:  # the carried bounds are the method's own lr bounds
        g = fedadapt.build_optimizer(
            name, [torch.nn.Parameter(torch.zeros(2))], lr=0.5
        ).param_groups[0]
        lo, hi = spec.carried_lr_bounds
        assert g["min_lr"] == pytest.approx(lo * 0.5) or g["min_lr"] == 0.0
        assert g["max_lr"] == pytest.approx(hi * 0.5) or g["max_lr"] == math.inf
    assert (spec.client_lr is not None) == spec.on_client


def test_specs_reject_unknown_names_and_signals():
    with pytest.raises(ValueError, match="accepted"):
        fedadapt.method_spec("nope")
    with pytest.raises(ValueError, match="unknown signals"):
        fedadapt.MethodSpec(signals=("client_norm",))
    with pytest.raises(ValueError, match="accepted: .*fedadam"):
        strategy_spec("nope")


def _names() -> set[str]:
    return set(fedadapt.available_optimizers()) | set(available_strategies())


def test_no_strategy_module_tests_a_method_name():
    """`x == "fedexp"`, `name in ("fedavg", ...)`, `name.startswith("fedhyper")`: none left."""
    names = _names()
    root = Path(__file__).resolve().parents[2] / "strategies"
    found = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            consts: list[ast.expr] = []
            if isinstance(node, ast.Compare):
                consts = [node.left, *node.comparators]
                consts += [
                    e
                    for c in node.comparators
                    if isinstance(c, ast.Tuple | ast.Set | ast.List)
                    for e in c.elts
                ]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("startswith", "endswith")
            ):
                consts = list(node.args)
            for c in consts:
                if (
                    isinstance(c, ast.Constant)
                    and isinstance(c.value, str)
                    and (c.value in names or c.value.startswith("fedhyper"))
                ):
                    found.append(f"{path.name}:{node.lineno}: {c.value!r}")
    assert not found, found


def test_an_unknown_strategy_argument_names_itself_and_the_accepted_ones():
    with pytest.raises(
        ValueError, match=r"unknown strategy arguments \['num_client'\].*num_clients"
    ):
        build_strategy("fedadapt", num_client=10)
    with pytest.raises(ValueError, match=r"\['etaa'\].*'eta'"):
        build_strategy("fedadam", etaa=0.1)


def test_fedadapt_takes_the_methods_own_defaults():
    """The README's adoption line: ``FedAdapt(server_optimizer="cp-adam")`` runs cp-adam at
    its own lr 0.1 (not 1.0), and ``FedAdapt()`` runs fedadapt's default method."""
    from strategies import FedAdapt

    assert FedAdapt(server_optimizer="cp-adam").server_options == {"lr": 0.1}
    default = FedAdapt()
    assert default.server_optimizer == fedadapt.DEFAULT_SERVER_METHOD == "cp-adam"
    assert default.server_options == {"lr": 0.1}
    assert FedAdapt(server_optimizer="sgd").server_options == {"lr": 1.0}
    assert FedAdapt(server_optimizer="cp-adam", server_options={"lr": 0.03}).server_options == {
        "lr": 0.03
    }
    assert FedAdapt(server_optimizer="adaptive-fedavg").server_options == {}


def test_a_server_only_method_is_refused_as_the_client_optimizer_before_any_round():
    from strategies import FedAdapt

    with pytest.raises(ValueError, match="client_optimizer='fedexp'.*runs only on the server"):
        FedAdapt(client_optimizer="fedexp")
