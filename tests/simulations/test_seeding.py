"""One way to derive randomness (fedadapt.seeding), used by sampling, drift, faults,
heterogeneity and local training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedadapt import seeding
from simulations.cli import build_config
from simulations.reader import read


def test_generator_is_default_rng_of_the_key_list_so_cohorts_are_unchanged():
    # sampling's cohorts (and so checkpoints that store only the round) keep their sequence
    from strategies.sampling import round_generator, sample_cohort

    a = seeding.generator(7, 3, 0).permutation(50)
    np.testing.assert_array_equal(a, np.random.default_rng([7, 3, 0]).permutation(50))
    np.testing.assert_array_equal(round_generator(7, 3).permutation(50), a)
    first = sample_cohort(1000, 10, seed=7, server_round=3).client_ids
    assert first == sample_cohort(1000, 10, seed=7, server_round=3).client_ids
    assert first != sample_cohort(1000, 10, seed=7, server_round=4).client_ids


def test_streams_differ_in_every_key_and_negative_keys_are_refused():
    base = seeding.generator(1, 2, 3).random(4)
    for keys in ((2, 2, 3), (1, 3, 3), (1, 2, 4)):
        assert not np.array_equal(base, seeding.generator(*keys).random(4))
    with pytest.raises(ValueError, match="non-negative"):
        seeding.generator(1, -2)


def test_torch_generator_gives_a_reproducible_batch_order_per_client_and_round():
    def order(*keys: int) -> list[int]:
        return torch.randperm(20, generator=seeding.torch_generator(*keys)).tolist()

    assert order(0, 5, 1) == order(0, 5, 1)
    assert order(0, 5, 1) != order(0, 6, 1) and order(0, 5, 1) != order(0, 5, 2)
    assert 0 <= seeding.seed_int(3, 4) < 2**63


def test_run_key_is_one_digest_of_the_config_used_by_faults_and_messages():
    cfg = build_config("quickstart", ["faults.crash-fraction=0.1"])
    spec = read(cfg)
    assert spec.run_key == seeding.run_key(dict(reversed(list(cfg.items()))))
    assert spec.training.run_key == spec.run_key  # crash markers are kept per run
    other = read(build_config("quickstart", ["faults.crash-fraction=0.1", "client-lr=0.2"]))
    assert other.run_key != spec.run_key


def test_worlds_that_differ_only_in_the_strategy_share_the_data_source():
    from simulations.world import world

    a = read(build_config("quickstart", ["num-clients=4", "clients-per-round=2"]))
    b = read(
        build_config("quickstart", ["num-clients=4", "clients-per-round=2", "strategy=fedavg"])
    )
    assert a.world.key() == b.world.key()  # strategy keys do not define the world
    assert world(a.world) is world(b.world)
    c = read(
        build_config(
            "quickstart",
            ["num-clients=4", "clients-per-round=2", "drift.kind=noise", "drift.round=2"],
        )
    )
    assert c.world.key() != a.world.key() and world(c.world).source is world(a.world).source
