"""flwr-datasets partitioners by name, over the digits pool."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.data import PARTITIONER_NAMES, PartitionedSource, build_partitioner, build_source

CASES = [
    ("iid", {}),
    ("dirichlet", {"alpha": 0.3}),
    ("pathological", {"classes_per_client": 2}),
    ("shard", {"shards_per_client": 2}),
    ("size", {}),
    ("size", {"distribution": "linear"}),
]


def _partitions(source: PartitionedSource) -> list[np.ndarray]:
    return [source.partition_indices(k) for k in range(source.num_clients)]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_every_partitioner_splits_digits_into_disjoint_nonempty_parts(
    name: str, params: dict[str, float | int | str]
) -> None:
    source = build_source(
        "digits", num_clients=12, partitioner=name, partitioner_params=params, seed=4
    )
    assert isinstance(source, PartitionedSource)
    parts = _partitions(source)
    assert all(len(p) > 0 for p in parts)
    rows = np.concatenate(parts)
    assert len(np.unique(rows)) == len(rows)  # disjoint
    X, y = source.get(5)
    assert len(X) == len(parts[5]) and X.shape[1:] == (1, 8, 8)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_partition_rows_are_flwr_datasets_own_answer_for_every_client(
    name: str, params: dict[str, float | int | str]
) -> None:
    """The per-client memo and the read of the partitioner's full assignment give exactly
    what ``load_partition`` gives, client by client, in any order of first requests."""
    source = build_source(
        "digits", num_clients=12, partitioner=name, partitioner_params=params, seed=4
    )
    assert isinstance(source, PartitionedSource)
    order = [7, 0, 11, 3, 7, 5, 1, 2, 4, 6, 8, 9, 10]
    fast = {k: source.partition_indices(k) for k in order}
    assert source.partition_indices(7) is fast[7]  # asked again: the kept answer
    reference = build_partitioner(name, num_partitions=12, seed=4, params=params)
    from datasets import Dataset

    reference.dataset = Dataset.from_dict({"idx": np.arange(len(source._y)), "label": source._y})
    for k in range(12):
        expected = np.asarray(
            reference.load_partition(k).with_format("numpy")["idx"], dtype=np.int64
        )
        np.testing.assert_array_equal(fast[k], expected)


def test_an_assignment_that_disagrees_with_load_partition_is_not_used(monkeypatch) -> None:
    """A partitioner whose private assignment is not what ``load_partition`` returns (an
    flwr-datasets change) is asked through its public API for every client."""
    monkeypatch.setenv("FEDADAPT_CACHE_DIR", "off")
    source = build_source(
        "digits", num_clients=6, partitioner="dirichlet", partitioner_params={"alpha": 0.5}, seed=1
    )
    assert isinstance(source, PartitionedSource)
    truth = _partitions(source)
    source2 = build_source(
        "digits", num_clients=6, partitioner="dirichlet", partitioner_params={"alpha": 0.5}, seed=1
    )
    assert isinstance(source2, PartitionedSource)
    real = source2._partitioner

    class Disagreeing:  # answers like the real one, but holds another private assignment
        _partition_id_to_indices = {k: [0] for k in range(6)}

        def __setattr__(self, name: str, value: object) -> None:
            setattr(real, name, value)

        def load_partition(self, k: int):  # type: ignore[no-untyped-def]
            return real.load_partition(k)

    source2._partitioner = Disagreeing()  # type: ignore[assignment]
    again = _partitions(source2)
    assert source2._assignment is None
    for a, b in zip(truth, again, strict=True):
        np.testing.assert_array_equal(a, b)


def _dirichlet(seed: int = 3, alpha: float = 0.4, clients: int = 9) -> PartitionedSource:
    source = build_source(
        "digits",
        num_clients=clients,
        partitioner="dirichlet",
        partitioner_params={"alpha": alpha},
        seed=seed,
    )
    assert isinstance(source, PartitionedSource)
    return source


def test_a_later_process_reads_the_kept_partitioning_without_flwr_datasets(
    monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("FEDADAPT_CACHE_DIR", str(tmp_path))
    first = _dirichlet()
    rows = _partitions(first)
    assert len(list((tmp_path / "partitions").glob("*.npz"))) == 1
    again = _dirichlet()  # what a worker process builds: no partitioner at all
    assert again._partitioner is None
    for a, b in zip(rows, _partitions(again), strict=True):
        np.testing.assert_array_equal(a, b)
    X, y = again.get(4)
    np.testing.assert_array_equal(y, first.get(4)[1])


def test_another_seed_or_parameter_is_another_partitioning(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FEDADAPT_CACHE_DIR", str(tmp_path))
    base = _partitions(_dirichlet())
    for other in (_dirichlet(seed=4), _dirichlet(alpha=0.5), _dirichlet(clients=8)):
        assert other._partitioner is not None  # not read from the first one's file
        _partitions(other)
    assert len(list((tmp_path / "partitions").glob("*.npz"))) == 4
    assert any(
        len(a) != len(b) or (a != b).any()
        for a, b in zip(base, _partitions(_dirichlet(seed=4)), strict=True)
    )


def test_a_damaged_cache_file_is_recomputed_and_replaced(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FEDADAPT_CACHE_DIR", str(tmp_path))
    truth = _partitions(_dirichlet())
    (path,) = (tmp_path / "partitions").glob("*.npz")
    for damage in (b"not a zip", b""):
        path.write_bytes(damage)
        source = _dirichlet()
        assert source._partitioner is not None
        for a, b in zip(truth, _partitions(source), strict=True):
            np.testing.assert_array_equal(a, b)
    np.savez(path, offsets=np.array([0, 5]), rows=np.arange(5))  # valid zip, wrong shape
    redo = _dirichlet()
    assert redo._partitioner is not None
    _partitions(redo)  # partitions again, and rewrites the file
    assert _dirichlet()._partitioner is None


def test_the_cache_can_be_turned_off_and_an_unwritable_one_only_warns(
    monkeypatch, tmp_path, caplog
) -> None:
    monkeypatch.setenv("FEDADAPT_CACHE_DIR", "off")
    _partitions(_dirichlet())
    assert not list(tmp_path.rglob("*.npz"))
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("FEDADAPT_CACHE_DIR", str(blocker))
    import logging

    with caplog.at_level(logging.WARNING):
        rows = _partitions(_dirichlet(seed=11))
    assert "not cached" in caplog.text and "FEDADAPT_CACHE_DIR" in caplog.text
    assert sum(len(r) for r in rows) > 0


def test_a_failed_cache_write_leaves_no_partial_file_and_an_incomplete_assignment_none(
    monkeypatch, tmp_path
) -> None:
    from simulations.data import partitions

    target = tmp_path / "partitions" / "x.npz"

    def broken_savez(fh, **arrays):  # the disk fills up mid-write
        fh.write(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr(partitions.np, "savez", broken_savez)
    partitions.write_partition_cache(target, {0: [1], 1: [2]}, 2)
    assert not list((tmp_path / "partitions").iterdir())
    monkeypatch.undo()
    partitions.write_partition_cache(target, {0: [1]}, 2)  # client 1 missing: nothing is kept
    assert not target.exists()
    partitions.write_partition_cache(target, {0: [1], 1: [2, 3]}, 2)
    assert [list(r) for r in partitions.read_partition_cache(target, 2, 10)] == [[1], [2, 3]]


def test_partitions_are_deterministic_for_a_seed() -> None:
    def parts(seed: int) -> list[np.ndarray]:
        source = build_source(
            "digits",
            num_clients=8,
            partitioner="dirichlet",
            partitioner_params={"alpha": 0.5},
            seed=seed,
        )
        assert isinstance(source, PartitionedSource)
        return _partitions(source)

    a, b, c = parts(1), parts(1), parts(2)
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
    assert any(len(pa) != len(pc) or (pa != pc).any() for pa, pc in zip(a, c, strict=True))


def test_pathological_gives_each_client_its_number_of_classes() -> None:
    source = build_source(
        "digits",
        num_clients=10,
        partitioner="pathological",
        partitioner_params={"classes-per-client": 3},
        seed=0,
    )
    for k in range(10):
        assert len(np.unique(source.get(k)[1])) == 3


def test_dirichlet_small_alpha_skews_labels() -> None:
    skewed = build_source(
        "digits",
        num_clients=10,
        partitioner="dirichlet",
        partitioner_params={"alpha": 0.05},
        seed=0,
    )
    flat = build_source("digits", num_clients=10, partitioner="iid", seed=0)
    n_skewed = np.mean([len(np.unique(skewed.get(k)[1])) for k in range(10)])
    n_flat = np.mean([len(np.unique(flat.get(k)[1])) for k in range(10)])
    assert n_skewed < 6 < n_flat == 10


def test_size_partitioner_skews_sizes() -> None:
    source = build_source(
        "digits",
        num_clients=10,
        partitioner="size",
        partitioner_params={"distribution": "power", "exponent": 1.0},
    )
    sizes = [len(source.get(k)[1]) for k in range(10)]
    assert sizes[0] > 3 * sizes[8]


def test_partitioning_is_lazy_until_a_client_is_asked_for() -> None:
    source = build_source("digits", num_clients=10, partitioner="dirichlet")
    assert isinstance(source, PartitionedSource)
    assert not source._partitioner.is_dataset_assigned()
    assert source.cached_client_ids() == []
    source.get(2)
    assert source._partitioner.is_dataset_assigned()
    assert source.cached_client_ids() == [2]


def test_empty_partitions_are_an_error_not_silent() -> None:
    source = build_source(
        "digits",
        num_clients=60,
        partitioner="size",
        partitioner_params={"distribution": "exponential"},
    )
    with pytest.raises(ValueError, match="greater than 0"):
        source.get(0)


def test_unknown_partitioner_names_accepted_values() -> None:
    with pytest.raises(ValueError) as info:
        build_partitioner("kmeans", num_partitions=3)
    for name in PARTITIONER_NAMES:
        assert name in str(info.value)


def test_unknown_parameter_names_accepted_ones() -> None:
    with pytest.raises(ValueError, match="accepted: alpha, min_partition_size, self_balancing"):
        build_partitioner("dirichlet", num_partitions=3, params={"beta": 1})
    with pytest.raises(ValueError, match="accepted: none"):
        build_partitioner("iid", num_partitions=3, params={"alpha": 1})


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("dirichlet", {"alpha": 0}, "alpha must be > 0"),
        ("pathological", {"classes_per_client": 0}, "classes_per_client"),
        ("pathological", {"class_assignment_mode": "x"}, "accepted: random"),
        ("shard", {"shards_per_client": 1.5}, "shards_per_client"),
        ("size", {"distribution": "zipf"}, "accepted: linear, square, exponential, power"),
    ],
)
def test_bad_parameters_raise(name: str, params: dict[str, float | str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_partitioner(name, num_partitions=3, params=params)


def test_bad_num_partitions_raises() -> None:
    with pytest.raises(ValueError, match="num_partitions"):
        build_partitioner("iid", num_partitions=0)
