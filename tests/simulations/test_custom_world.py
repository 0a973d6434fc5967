"""The researcher's own model and data (issue 21 §2): named by import path in the run config,
partitioned by the configured flwr-datasets partitioner, drifted by the drift engine, and
checked before any worker starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simulations.checks import resolve
from simulations.config import ConfigError
from simulations.preflight import check_before_workers
from simulations.reader import read
from simulations.world import world

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    """``custom_world`` importable, as a researcher's module on PYTHONPATH would be."""
    monkeypatch.syspath_prepend(str(HERE))


BASE = {
    "dataset": "custom",
    "data-loader": "custom_world:blobs",
    "num-clients": 6,
    "clients-per-round": 3,
    "partitioner": "dirichlet",
    "partition-alpha": 0.5,
    "num-server-rounds": 4,
    "strategy": "fedavg",
}


def spec(tmp_path, **overrides):
    cfg = resolve({**BASE, "out-dir": str(tmp_path / "run"), **overrides})
    s = read(cfg)
    check_before_workers(s)
    return s


@pytest.mark.parametrize(
    "loader", ["custom_world:blobs", "custom_world:blobs_split", "custom_world:blobs_dataset"]
)
def test_own_data_is_partitioned_and_sized(tmp_path, loader):
    w = world(spec(tmp_path, **{"data-loader": loader}).world)
    assert w.source.input_shape == (5,) and w.source.num_classes == 3
    sizes = [len(w.source.get(c)[1]) for c in range(6)]
    assert sum(sizes) + len(w.source.test_set()[1]) == 600  # the loader's pool, all of it
    assert len(set(sizes)) > 1  # Dirichlet: unequal clients
    assert 110 <= len(w.source.test_set()[1]) <= 130  # test-fraction 0.2, or the loader's split


def test_data_options_reach_the_loader(tmp_path):
    w = world(spec(tmp_path, **{"data-options": '{"n": 300, "seed": 4}'}).world)
    assert len(w.source.test_set()[1]) + sum(len(w.source.get(c)[1]) for c in range(6)) == 300


def test_own_data_drifts(tmp_path):
    s = spec(tmp_path, **{"drift.kind": "label-permutation", "drift.round": 3})
    w = world(s.world)
    before, after = w.client_data(0, 1)[1], w.client_data(0, 3)[1]
    assert not np.array_equal(before, after)  # the concept changed: labels permuted
    assert np.array_equal(w.client_data(0, 2)[1], before)


def test_own_model_with_options(tmp_path):
    s = spec(
        tmp_path, **{"model-factory": "custom_world:build_model", "model-options": '{"width": 7}'}
    )
    model = world(s.world).model()
    assert model[1].out_features == 7
    again = world(s.world).model()
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True)
    )  # seeded initialisation


def test_builtin_mlp_width_is_an_option(tmp_path):
    s = spec(tmp_path, model="mlp", **{"model-options": '{"hidden": 9}'})
    assert world(s.world).model()[1].out_features == 9


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"data-loader": "custom_world"}, "'data-loader'"),
        ({"data-loader": ""}, "dataset = 'custom' and data-loader"),
        ({"dataset": "digits"}, "dataset = 'custom' and data-loader"),
        ({"data-loader": "no_such_module:f"}, "PYTHONPATH"),
        ({"data-loader": "custom_world:nope"}, "has no 'nope'"),
        ({"data-loader": "custom_world:not_data"}, "returned str"),
        ({"data-loader": "custom_world:nan_data"}, "NaN"),
        ({"data-options": '{"bad": 1}'}, "'data-options'"),
        ({"data-options": "[1]"}, "'data-options'"),
        ({"model-factory": "custom_world:not_a_model"}, "not a torch.nn.Module"),
        ({"model-factory": "custom_world:wrong_head"}, "expected logits of shape (2, 3)"),
        (
            {"model-factory": "custom_world:build_model", "model-options": '{"depth": 2}'},
            "'model-options'",
        ),
        ({"model-factory": "custom_world:build_model", "model": "cnn"}, "both name a model"),
        ({"model": "mlp", "model-options": '{"depth": 2}'}, "'model-options'"),
    ],
)
def test_bad_own_model_or_data_fails_before_workers_naming_the_key(tmp_path, overrides, fragment):
    with pytest.raises(ConfigError) as info:
        spec(tmp_path, **overrides)
    assert fragment in str(info.value)
