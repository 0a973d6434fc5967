"""Cohort sampling: reproducible, distinct, O(cohort) memory, availability, workers."""

from __future__ import annotations

import tracemalloc

import pytest
from flwr.app import ArrayRecord, ConfigRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_fakes import FakeGrid, tiny_model

from strategies import FedAdapt, WorkersNotReady, sample_cohort, sample_nodes, split_over_workers
from strategies.sampling import is_online, wait_for_nodes


def test_same_seed_same_cohorts_and_different_seeds_differ():
    a = [sample_cohort(1_000_000, 8, seed=3, server_round=r).client_ids for r in range(1, 6)]
    b = [sample_cohort(1_000_000, 8, seed=3, server_round=r).client_ids for r in range(1, 6)]
    c = [sample_cohort(1_000_000, 8, seed=4, server_round=r).client_ids for r in range(1, 6)]
    assert a == b
    assert a != c
    assert a[0] != a[1]  # rounds differ too


@settings(max_examples=40, deadline=None)
@given(
    population=st.integers(1, 50_000),
    k=st.integers(0, 64),
    seed=st.integers(0, 2**31),
    rnd=st.integers(1, 10_000),
)
def test_cohort_is_distinct_in_range_and_full(population, k, seed, rnd):
    ids = sample_cohort(population, k, seed=seed, server_round=rnd).client_ids
    assert len(ids) == min(k, population)
    assert len(set(ids)) == len(ids)
    assert all(0 <= i < population for i in ids)


def test_availability_is_deterministic_and_skips_offline():
    c1 = sample_cohort(100_000, 20, seed=1, server_round=7, availability=0.5)
    c2 = sample_cohort(100_000, 20, seed=1, server_round=7, availability=0.5)
    assert c1 == c2
    assert len(c1.client_ids) == 20 and len(set(c1.client_ids)) == 20
    assert c1.offline_ids, "with p=0.5 some candidates are offline"
    assert all(is_online(i, 7, 1, 0.5) for i in c1.client_ids)
    assert not any(is_online(i, 7, 1, 0.5) for i in c1.offline_ids)
    # a callable availability: odd ids never online
    c3 = sample_cohort(
        1000, 10, seed=1, server_round=2, availability=lambda cid, r: float(cid % 2 == 0)
    )
    assert all(i % 2 == 0 for i in c3.client_ids) and len(c3.client_ids) == 10


def test_split_over_sorted_workers():
    split = split_over_workers([10, 11, 12, 13, 14], [9, 3, 5])
    assert split == [(3, [10, 11]), (5, [12, 13]), (9, [14])]
    assert split_over_workers([1], [4, 2]) == [(2, [1])]


def test_million_population_four_workers_no_population_sized_structure():
    strat = FedAdapt(
        num_clients=1_000_000,
        clients_per_round=8,
        num_workers=4,
        seed=0,
        client_options={"lr": 0.1},
    )
    grid = FakeGrid([40, 10, 30, 20])
    arrays = ArrayRecord(tiny_model().state_dict())
    strat.configure_train(1, arrays, ConfigRecord(), grid)  # warm-up (imports, caches)
    tracemalloc.start()
    msgs = list(strat.configure_train(2, arrays, ConfigRecord(), grid))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(msgs) == 4
    assert sorted(m.metadata.dst_node_id for m in msgs) == [10, 20, 30, 40]
    ids = [c for m in msgs for c in m.content["config"]["fedadapt.client-ids"]]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert all(len(m.content["config"]["fedadapt.client-ids"]) == 2 for m in msgs)
    assert peak < 1_000_000, f"peak {peak} bytes: something population-sized was allocated"


def test_cohorts_do_not_depend_on_node_ids_or_worker_count():
    def cohort(nodes, workers):
        s = FedAdapt(num_clients=5000, clients_per_round=8, num_workers=workers, seed=9)
        msgs = s.configure_train(
            3, ArrayRecord(tiny_model().state_dict()), ConfigRecord(), FakeGrid(nodes)
        )
        return sorted(c for m in msgs for c in m.content["config"]["fedadapt.client-ids"])

    assert cohort([1, 2], 2) == cohort([77, 88, 99, 5, 6, 7, 8, 9], 8)


def test_deployment_mode_samples_sorted_node_ids():
    nodes = [905, 17, 333, 42, 8]
    a = sample_nodes(nodes, 3, seed=1, server_round=1)
    assert a == sample_nodes(list(reversed(nodes)), 3, seed=1, server_round=1)
    strat = FedAdapt(clients_per_round=3, seed=1, min_available_nodes=2)
    msgs = list(
        strat.configure_train(
            1, ArrayRecord(tiny_model().state_dict()), ConfigRecord(), FakeGrid(nodes)
        )
    )
    assert len(msgs) == 3
    for m in msgs:  # client id = node id
        assert m.content["config"]["fedadapt.client-ids"] == [m.metadata.dst_node_id]
    assert sorted(m.metadata.dst_node_id for m in msgs) == sorted(a.client_ids)


def test_waiting_for_workers_names_the_disagreeing_settings():
    calls = []

    def nodes():
        calls.append(1)
        return [1, 2] if len(calls) > 2 else [1]

    assert wait_for_nodes(nodes, 2, timeout=5, poll=0.01) == [1, 2]
    with pytest.raises(WorkersNotReady, match="num-supernodes"):
        wait_for_nodes(lambda: [1], 3, timeout=0.2, poll=0.05)
    strat = FedAdapt(num_clients=100, clients_per_round=4, num_workers=3, worker_wait_timeout=0.2)
    with pytest.raises(WorkersNotReady, match="num_workers"):
        strat.configure_train(
            1, ArrayRecord(tiny_model().state_dict()), ConfigRecord(), FakeGrid([1, 2])
        )


def test_without_num_workers_the_strategy_waits_for_the_count_to_settle():
    from strategies.sampling import wait_for_stable_nodes

    calls = []

    def nodes():
        calls.append(1)
        return [3, 1, 2][: min(3, len(calls))]

    assert wait_for_stable_nodes(nodes, settle=0.1, poll=0.01, timeout=5) == [1, 2, 3]
    with pytest.raises(WorkersNotReady, match="num-supernodes"):
        wait_for_stable_nodes(lambda: [], settle=0.05, poll=0.01, timeout=0.1)
