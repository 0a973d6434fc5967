"""Seeded per-client work, stragglers and mid-round dropout."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedadapt.seeding import hashed_uniform
from simulations.heterogeneity import (
    WORK_DISTRIBUTIONS,
    Heterogeneity,
    dropout_mask,
    effective_work,
    local_work,
    straggler_mask,
)

IDS = np.arange(20_000)


def test_hashed_uniform_is_deterministic_in_range_and_cohort_independent() -> None:
    u = hashed_uniform(3, 7, IDS)
    np.testing.assert_array_equal(u, hashed_uniform(3, 7, IDS))
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    # a client's draw does not depend on who else is in the cohort
    assert hashed_uniform(3, 7, np.array([5]))[0] == hashed_uniform(3, 7, np.array([1, 5, 9]))[1]
    assert not np.array_equal(u, hashed_uniform(4, 7, IDS))
    assert not np.array_equal(u, hashed_uniform(3, 8, IDS))


def test_local_work_distributions() -> None:
    fixed = local_work(IDS, 1, seed=0, distribution="fixed", mean=5)
    assert (fixed == 5).all()
    uni = local_work(IDS, 1, seed=0, distribution="uniform", mean=10, spread=0.5)
    assert uni.min() == 5 and uni.max() == 15 and abs(uni.mean() - 10) < 0.1
    logn = local_work(IDS, 1, seed=0, distribution="lognormal", mean=20, spread=0.5, integer=False)
    assert abs(logn.mean() - 20) < 0.5 and np.median(logn) < logn.mean()
    assert local_work(IDS, 1, seed=0, distribution="lognormal", mean=1, spread=2).min() == 1


def test_local_work_changes_with_round_but_not_with_call() -> None:
    a = local_work(IDS[:100], 1, seed=2, distribution="uniform", mean=10, spread=1)
    b = local_work(IDS[:100], 2, seed=2, distribution="uniform", mean=10, spread=1)
    np.testing.assert_array_equal(
        a, local_work(IDS[:100], 1, seed=2, distribution="uniform", mean=10, spread=1)
    )
    assert not np.array_equal(a, b)


def test_stragglers_are_a_persistent_share_doing_part_of_their_work() -> None:
    mask = straggler_mask(IDS, seed=1, fraction=0.25)
    assert abs(mask.mean() - 0.25) < 0.01
    np.testing.assert_array_equal(mask[:10], straggler_mask(IDS[:10], seed=1, fraction=0.25))
    work = effective_work(
        np.full(4, 10.0), np.array([True, False, True, False]), work_fraction=0.35
    )
    assert work.tolist() == [3.0, 10.0, 3.0, 10.0]
    assert effective_work(np.array([2.0]), np.array([True]), work_fraction=0.1).tolist() == [1.0]


def test_dropout_rate_and_fresh_draws_per_round() -> None:
    assert not dropout_mask(IDS, 4, seed=0, probability=0.0).any()
    assert dropout_mask(IDS, 4, seed=0, probability=1.0).all()
    drop = dropout_mask(IDS, 4, seed=0, probability=0.1)
    assert abs(drop.mean() - 0.1) < 0.01
    assert not np.array_equal(drop, dropout_mask(IDS, 5, seed=0, probability=0.1))


def test_plan_on_a_cohort_of_a_million_clients_allocates_only_cohort_sized_arrays() -> None:
    het = Heterogeneity(
        work_distribution="lognormal",
        work_mean=10,
        work_spread=0.5,
        straggler_fraction=0.2,
        dropout_probability=0.1,
        seed=9,
    )
    cohort = np.random.default_rng(0).choice(1_000_000, size=50, replace=False)
    tracemalloc.start()
    try:
        plan = het.plan(cohort, server_round=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000
    assert plan.work.shape == (50,) and (plan.work <= plan.planned_work).all()
    assert 0 < plan.dropped.sum() < 50
    again = het.plan(cohort, server_round=3)
    np.testing.assert_array_equal(plan.work, again.work)
    np.testing.assert_array_equal(plan.dropped, again.dropped)


def test_bad_settings_raise_with_accepted_values() -> None:
    with pytest.raises(ValueError) as info:
        local_work(IDS, 1, seed=0, distribution="pareto")
    for name in WORK_DISTRIBUTIONS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="dropout probability"):
        dropout_mask(IDS, 1, seed=0, probability=1.5)
    with pytest.raises(ValueError, match="work_spread"):
        Heterogeneity(work_distribution="uniform", work_spread=2.0)
    with pytest.raises(ValueError, match="straggler_fraction"):
        Heterogeneity(straggler_fraction=-0.1)


@settings(max_examples=30, deadline=None)
@given(
    mean=st.floats(0.5, 50),
    spread=st.floats(0, 1),
    distribution=st.sampled_from(WORK_DISTRIBUTIONS),
    work_fraction=st.floats(0, 1),
)
def test_work_is_positive_and_stragglers_never_do_more(
    mean: float, spread: float, distribution: str, work_fraction: float
) -> None:
    planned = local_work(IDS[:64], 1, seed=0, distribution=distribution, mean=mean, spread=spread)
    assert (planned >= 1).all() and np.isfinite(planned).all()
    done = effective_work(planned, np.ones(64, dtype=bool), work_fraction=work_fraction)
    assert (done >= 1).all() and (done <= planned).all()
