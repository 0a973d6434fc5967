"""A pool split over clients by a flwr-datasets partitioner, per client on demand.

:class:`PartitionedSource` is the source of every in-memory pool: the built-in digits and
mnist1d (:mod:`simulations.data.builtin`) and the researcher's own loader (``custom``). The
partitioner indexes the pool once (on the first ``get``); per-client arrays are only built when
a client is asked for; a full assignment is read from and kept in the partition cache
(:mod:`simulations.data.partitions`).

Example (a pool of 20 examples, IID over 4 clients):

>>> import numpy as np
>>> X, y = np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20) % 2
>>> source = PartitionedSource((X, y), (X[:4], y[:4]), num_clients=4, partitioner="iid")
>>> X0, y0 = source.get(0)
>>> len(y0), source.num_classes, source.input_shape
(5, 2, (2,))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from simulations.data.partitions import (
    build_partitioner,
    full_assignment,
    partition_cache_file,
    read_partition_cache,
    write_partition_cache,
)
from simulations.data.source import DEFAULT_CACHE_SIZE, Arrays, ClientDataSource

if TYPE_CHECKING:  # pragma: no cover
    from flwr_datasets.partitioner import Partitioner

__all__ = ["PartitionedSource"]


class PartitionedSource(ClientDataSource):
    """A pool of examples split over clients by a flwr-datasets partitioner.

    The partitioner sees an in-memory ``datasets.Dataset`` with two columns, ``idx`` (row of
    the pool) and ``label``; a client's partition is a list of pool rows, turned into arrays
    only when :meth:`get` asks for that client. The pool is shuffled once (seeded) because the
    size partitioners assign contiguous rows.

    Args:
        train: The pool ``(X, y)`` to partition.
        test: The centralized test set.
        num_clients: Number of partitions.
        partitioner: Partitioner name (see :data:`simulations.data.partitions.PARTITIONER_NAMES`).
        partitioner_params: Its parameters (e.g. ``{"alpha": 0.5}``).
        num_classes: Number of classes (default: ``max label + 1`` over train and test).
        seed: Seed of the shuffle and of the partitioner.
        cache_size: LRU cache size.
    """

    def __init__(
        self,
        train: Arrays,
        test: Arrays,
        *,
        num_clients: int,
        partitioner: str = "iid",
        partitioner_params: Mapping[str, float | int | str] | None = None,
        num_classes: int | None = None,
        seed: int = 0,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        super().__init__(num_clients, cache_size=cache_size)
        X, y = train
        if len(X) != len(y):
            raise ValueError(f"X and y lengths differ: {len(X)} != {len(y)}")
        if num_clients > len(y):
            raise ValueError(
                f"num_clients={num_clients} exceeds the {len(y)} training examples of this "
                f"pool; every client needs at least one example (use 'synthetic' for larger "
                f"populations)"
            )
        perm = np.random.default_rng([seed, 0xB001]).permutation(len(y))
        self._X = np.ascontiguousarray(X[perm], dtype=np.float32)
        self._y = np.ascontiguousarray(y[perm], dtype=np.int64)
        self._test = (np.asarray(test[0], dtype=np.float32), np.asarray(test[1], dtype=np.int64))
        self._num_classes = (
            int(num_classes)
            if num_classes is not None
            else int(max(self._y.max(), self._test[1].max(initial=0)) + 1)
        )
        self.partitioner_name = partitioner
        self._indices: dict[int, np.ndarray] = {}
        self._assignment: Mapping[int, object] | Sequence[np.ndarray] | None = None
        self._partitioner_ready = False
        self._cache_file = partition_cache_file(
            partitioner, partitioner_params, num_clients, seed, self._y
        )
        cached = read_partition_cache(self._cache_file, num_clients, len(self._y))
        if cached is not None:  # flwr-datasets' own answer from an earlier process
            self._assignment = cached
            self._partitioner: Partitioner | None = None
        else:
            self._partitioner = build_partitioner(
                partitioner,
                num_partitions=num_clients,
                seed=seed,
                params=partitioner_params,
            )

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._X.shape[1:])

    @property
    def partitions_cached(self) -> bool:
        """Every client's rows came from the partition cache (no partitioner was built)."""
        return self._partitioner is None

    def test_set(self) -> Arrays:
        return self._test

    def partition_indices(self, client_id: int) -> np.ndarray:
        """Rows of the (shuffled) pool owned by ``client_id``.

        The partitioner's answer is kept per client (one int64 per example in all), so each
        client goes through ``datasets`` once per process: a ``load_partition`` plus reading
        its column costs ~10 ms, most of a small client's local round (profiled: 52% of a
        worker's time in ``benchmarks/simulation_overhead.py``). The partitioners that assign
        every client at their first call keep the assignment in ``_partition_id_to_indices``
        (flwr-datasets' Dirichlet, pathological, shard and size partitioners); when that
        assignment agrees with the public answer for the first client, the others are read
        from it directly, and otherwise each still goes through ``load_partition``.
        """
        cid = int(client_id)
        hit = self._indices.get(cid)
        if hit is not None:
            return hit
        if self._assignment is not None:
            idx = np.asarray(self._assignment[cid], dtype=np.int64)
        else:
            assert self._partitioner is not None
            if not self._partitioner_ready:
                from datasets import Dataset

                self._partitioner.dataset = Dataset.from_dict(
                    {"idx": np.arange(len(self._y), dtype=np.int64), "label": self._y}
                )
                self._partitioner_ready = True
            part = self._partitioner.load_partition(cid)
            idx = np.asarray(part.with_format("numpy")["idx"], dtype=np.int64)
            if not self._indices:
                self._assignment = full_assignment(self._partitioner, cid, idx, self.num_clients)
                if self._assignment is not None:
                    write_partition_cache(self._cache_file, self._assignment, self.num_clients)
        self._indices[cid] = idx
        return idx

    def _load(self, client_id: int) -> Arrays:
        idx = self.partition_indices(client_id)
        if idx.size == 0:
            raise ValueError(
                f"client {client_id} received no examples from partitioner "
                f"'{self.partitioner_name}' ({self.num_clients} clients over {len(self._y)} "
                f"examples); use fewer clients or other partitioner parameters"
            )
        return self._X[idx], self._y[idx]
