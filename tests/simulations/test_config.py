"""Run-config keys: one table, shipped scenarios valid, bad input named before any worker."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from simulations.checks import resolve
from simulations.config import KEYS, ConfigError, available_scenarios, defaults, load_scenario
from simulations.reader import worker_count

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [
    "quickstart",
    "drift-digits",
    "drift-staggered",
    "covariate-gradual",
    "synthetic-hetero",
    "lr-robustness",
    "scale-1m",
    "cifar10-dirichlet",
    "label-shift",
    "drift-recurring",
    "synthetic-local",
    "mnist1d-local",
]


def test_pyproject_declares_exactly_the_key_table():
    # `flwr run --run-config FILE` only accepts keys declared in [tool.flwr.app.config].
    app_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert app_cfg == defaults()
    assert "federations" not in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]


def test_every_shipped_scenario_resolves_and_explains_itself():
    assert set(available_scenarios()) == set(SHIPPED)
    for name in SHIPPED:
        cfg = resolve(load_scenario(name))
        assert cfg["scenario"] == name
        text = (ROOT / "simulations" / "scenarios" / f"{name}.toml").read_text()
        assert text.startswith(f"# {name}:"), name


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match="unknown run-config key 'server-lrr'"):
        resolve({"server-lrr": 1.0})


def test_dotted_key_hint():
    with pytest.raises(ConfigError, match="did you mean drift.kind"):
        resolve({"kind": "rotation"})


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("num-server-rounds", 0, "an integer >= 1"),
        ("num-server-rounds", 2.5, "an integer"),
        ("client-lr", "fast", "a number"),
        ("client-lr", -0.1, "a number >= 1e-12"),
        ("online-prob", 1.5, "in [0, 1]"),
        ("dataset", "mnist", "one of digits, mnist1d, synthetic, hub"),
        ("client-lr-state", "keep", "one of auto, reset, persist, server"),
        ("server-optimizer", "lion", "one of"),
        # a server-only method is no local optimizer (its MethodSpec side), and refused here
        (
            "client-optimizer",
            "cp-adam",
            "one of auto, adam, autodrop, cprop, dsa, eg, fedhyper-cl, hd, hd-mult, sgd",
        ),
        ("client-optimizer", "fedexp", "one of auto, adam"),
        ("strategy", "fedsgd", "one of"),
        ("server-options", "{not json", "not a JSON object"),
        ("client-options", "[1, 2]", "expected a JSON object"),
        ("client-lr", float("nan"), "a number"),
        ("seed", True, "an integer"),
    ],
)
def test_bad_values_name_key_and_accepted(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        resolve({key: value})
    assert f"'{key}'" in str(info.value)
    assert fragment in str(info.value)


def test_cross_key_checks():
    with pytest.raises(ConfigError, match="clients-per-round"):
        resolve({"num-clients": 5, "clients-per-round": 6})
    with pytest.raises(ConfigError, match="drift.round"):
        resolve({"drift.kind": "rotation"})
    with pytest.raises(ConfigError, match="hub-dataset"):
        resolve({"dataset": "hub"})
    with pytest.raises(ConfigError, match="faults"):
        resolve({"faults.nan-fraction": 0.6, "faults.raise-fraction": 0.6})
    with pytest.raises(
        ConfigError,
        match=r"'server-optimizer' \('hd'\) is not used by strategy 'fedadam'.*'fedadapt'",
    ):
        resolve({"strategy": "fedadam", "server-optimizer": "hd"})


def test_cli_strings_are_parsed_per_key():
    cfg = resolve({"num-clients": "40", "client-lr": "0.5", "scenario": "123"})
    assert cfg["num-clients"] == 40 and cfg["client-lr"] == 0.5 and cfg["scenario"] == "123"


def test_unknown_scenario_lists_shipped():
    with pytest.raises(ConfigError, match="shipped scenarios: .*quickstart"):
        load_scenario("no-such-scenario")


def test_malformed_scenario_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("num-clients = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(str(bad))


def test_worker_count_default_is_parallel_slots_capped_at_cohort():
    cfg = resolve({"clients-per-round": 10})
    assert worker_count(cfg, cpus=2) == 2
    assert worker_count(resolve({"clients-per-round": 1}), cpus=16) == 1
    assert worker_count(resolve({"client-num-cpus": 0.5}), cpus=2) == 4
    assert worker_count(resolve({"num-supernodes": 3}), cpus=2) == 3
    assert worker_count(resolve({"client-num-gpus": 0.5}), cpus=16, gpus=1) == 2


def test_every_key_has_help_and_a_valid_default():
    for key in KEYS.values():
        assert key.help
        key.coerce(key.default)
