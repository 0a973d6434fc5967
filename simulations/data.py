"""Datasets for simulated federations, loaded lazily per client id.

Every dataset is a pair of NumPy arrays ``(X float32, y int64)``. A federation reads its data
through a :class:`ClientDataSource`: ``get(client_id)`` returns that client's training arrays,
built on demand inside the worker and kept in a small bounded LRU cache; ``test_set()`` returns
the centralized test arrays; ``num_classes`` and ``input_shape`` size the model.

Five families (``build_source(name, ...)``):

- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, bundled in the wheel), pixels
  scaled to [0, 1], shaped ``(1, 8, 8)`` (an MLP flattens them to 64 features).
- ``mnist1d``: a procedural 1-D digits set written for this project (:func:`make_mnist1d`):
  ten hand-drawn templates of length 40, randomly stretched, shifted, sheared and noised.
- ``synthetic``: Synthetic(alpha, beta) of FedProx/LEAF (:class:`SyntheticSource`), generated
  from ``(seed, client id)`` on demand, so a population of 1,000,000 costs nothing per client.
- ``hub``: any dataset readable by flwr-datasets' ``FederatedDataset`` (a Hugging Face hub name,
  or local ``csv``/``parquet``/``json`` files through ``data_files``), columns named by config.
- ``custom``: the researcher's own loader, named by import path (``options["loader"]``,
  :mod:`simulations.plugins`): arrays or a ``datasets.Dataset``, partitioned like the others.

The real-data families are partitioned with flwr-datasets partitioners
(:func:`simulations.partitions.build_partitioner`). The partitioner indexes the pool once (on the
first ``get``); per-client arrays are only built when a client is asked for. A partitioner that
assigns every client at once has that assignment kept on disk (:func:`partition_cache_dir`,
``FEDADAPT_CACHE_DIR``; ``off`` disables), so that simulation workers and later runs of the same
partitioning read it instead of importing flwr-datasets and partitioning again.

Example::

    source = build_source("digits", num_clients=20, partitioner="dirichlet",
                          partitioner_params={"alpha": 0.5}, seed=1)
    X, y = source.get(3)
    X_test, y_test = source.test_set()
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simulations.partitions import build_partitioner

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict
    from flwr_datasets import FederatedDataset
    from flwr_datasets.partitioner import Partitioner

__all__ = [
    "DATASET_NAMES",
    "Arrays",
    "ClientDataSource",
    "HubSource",
    "PartitionedSource",
    "SyntheticSource",
    "build_source",
    "load_digits_arrays",
    "make_mnist1d",
    "split_train_test",
]

log = logging.getLogger(__name__)

Arrays = tuple[np.ndarray, np.ndarray]
"""``(X float32, y int64)``."""

DATASET_NAMES: tuple[str, ...] = ("digits", "mnist1d", "synthetic", "hub", "custom")

DEFAULT_CACHE_SIZE = 64


# ----------------------------------------------------------------------------------- arrays


def split_train_test(
    X: np.ndarray, y: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Arrays, Arrays]:
    """Shuffle and split ``(X, y)`` into ``(train, test)``, stratified by label.

    Args:
        X: Inputs, first axis indexes examples.
        y: Integer labels.
        test_fraction: Fraction of examples held out, in (0, 1).
        seed: Seed of the shuffle.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng([seed, 0x5E11])
    train_idx: list[np.ndarray] = []
    test_idx: list[np.ndarray] = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    return (X[tr], y[tr]), (X[te], y[te])


@functools.cache
def _digits() -> Arrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    return X, y


def load_digits_arrays() -> Arrays:
    """scikit-learn's digits: ``X`` of shape ``(1797, 1, 8, 8)`` in [0, 1], ``y`` in 0..9.

    The file is parsed once per process; each call returns fresh copies.
    """
    X, y = _digits()
    return X.copy(), y.copy()


# Ten hand-drawn 1-D "digit" strokes, 12 control points each (this project's own templates).
_MNIST1D_TEMPLATES = np.array(
    [
        [0.0, 1.0, 2.0, 2.4, 2.0, 1.0, 0.0, -1.0, -2.0, -2.4, -2.0, -1.0],  # 0: one full wave
        [0.0, 0.0, 0.3, 2.5, 2.5, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # 1: a single spike
        [1.5, 2.0, 1.0, 0.0, -1.0, -1.5, -1.5, -1.5, 1.5, 1.5, 1.5, 1.5],  # 2
        [2.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, -1.0, 0.0, -1.0],  # 3: double hump
        [-2.0, -2.0, -1.0, 0.0, 1.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0],  # 4: ramp and drop
        [2.0, 2.0, 2.0, -2.0, -2.0, -2.0, 0.0, 1.0, 2.0, 1.0, 0.0, -1.0],  # 5
        [0.0, -1.0, -2.0, -2.0, -1.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0],  # 6: valley then plateau
        [2.5, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -2.5],  # 7: long descent
        [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0],  # 8: zigzag
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -2.5, -2.5, 2.5, 2.5, 0.0, 0.0],  # 9: late step pair
    ],
    dtype=np.float64,
)


def make_mnist1d(
    num_samples: int = 5000,
    *,
    length: int = 40,
    seed: int = 42,
    stretch: float = 0.2,
    shear: float = 0.75,
    correlated_noise: float = 0.25,
    white_noise: float = 0.1,
) -> Arrays:
    """A procedural 1-D digits set: 10 classes, each a hand-drawn 12-point stroke.

    Each example picks a class template, stretches it to ``24 * (1 +- stretch)`` points,
    multiplies it by an amplitude in [0.8, 1.2], places it at a random shift in a zero canvas
    of ``length`` points, adds a random linear slope (shear) and smoothed plus white Gaussian
    noise, then standardises the canvas. Classes are balanced up to rounding. Written for this
    project in the spirit of Greydanus's MNIST-1D (no code taken from it).

    Args:
        num_samples: Number of examples.
        length: Length of each example (>= 16).
        seed: Generator seed; equal seeds give equal arrays.
        stretch: Relative spread of the template's length.
        shear: Largest slope added across the canvas.
        correlated_noise: Std of the smoothed noise.
        white_noise: Std of the per-point noise.

    Returns:
        ``X`` of shape ``(num_samples, length)`` float32 and ``y`` int64 in 0..9.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if length < 16:
        raise ValueError(f"length must be >= 16, got {length}")
    rng = np.random.default_rng([seed, 0x1D])
    y = rng.permutation(np.arange(num_samples) % 10).astype(np.int64)
    X = np.zeros((num_samples, length), dtype=np.float64)
    base = max(8, int(round(0.6 * length)))
    grid = np.linspace(0.0, 1.0, _MNIST1D_TEMPLATES.shape[1])
    canvas_pos = np.linspace(-1.0, 1.0, length)
    kernel = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
    kernel /= kernel.sum()
    for i in range(num_samples):
        width = int(round(base * rng.uniform(1.0 - stretch, 1.0 + stretch)))
        width = min(max(width, 6), length)
        stroke = np.interp(np.linspace(0.0, 1.0, width), grid, _MNIST1D_TEMPLATES[y[i]])
        stroke *= rng.uniform(0.8, 1.2)
        start = int(rng.integers(0, length - width + 1))
        X[i, start : start + width] = stroke
        X[i] += rng.uniform(-shear, shear) * canvas_pos
        X[i] += correlated_noise * np.convolve(rng.normal(size=length), kernel, mode="same") * 2
        X[i] += white_noise * rng.normal(size=length)
    X = (X - X.mean(axis=1, keepdims=True)) / (X.std(axis=1, keepdims=True) + 1e-6)
    return X.astype(np.float32), y


# ---------------------------------------------------------------------------------- sources


class ClientDataSource(ABC):
    """Per-client training data loaded on demand, with a bounded LRU cache.

    Subclasses implement :meth:`_load` (one client's arrays) and :meth:`test_set`. Nothing
    whose size is the population is allocated: only the ``cache_size`` most recently used
    clients are held.

    Args:
        num_clients: The population size; valid ids are ``0 .. num_clients - 1``.
        cache_size: How many clients' arrays to keep (>= 0; 0 disables the cache).
    """

    def __init__(self, num_clients: int, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.num_clients = int(num_clients)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, Arrays] = OrderedDict()

    @property
    @abstractmethod
    def num_classes(self) -> int:
        """Number of classes."""

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example (without the batch axis)."""

    @abstractmethod
    def _load(self, client_id: int) -> Arrays:
        """Build one client's training arrays (uncached)."""

    @abstractmethod
    def test_set(self) -> Arrays:
        """The centralized test arrays ``(X, y)``."""

    def get(self, client_id: int) -> Arrays:
        """Client ``client_id``'s training arrays ``(X float32, y int64)``, cached (LRU)."""
        cid = int(client_id)
        if not 0 <= cid < self.num_clients:
            raise ValueError(f"client_id must be in [0, {self.num_clients}), got {client_id}")
        hit = self._cache.get(cid)
        if hit is not None:
            self._cache.move_to_end(cid)
            return hit
        arrays = self._load(cid)
        if self.cache_size > 0:
            self._cache[cid] = arrays
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return arrays

    def cached_client_ids(self) -> list[int]:
        """Ids currently held in the cache, least recently used first."""
        return list(self._cache)

    def clear_cache(self) -> None:
        """Drop every cached client."""
        self._cache.clear()


_CACHE_FORMAT = 1
_cache_warned: set[str] = set()


def partition_cache_dir() -> Path | None:
    """Where partitions are kept between processes: ``$FEDADAPT_CACHE_DIR`` (``off`` disables),
    else ``$XDG_CACHE_HOME/fedadapt`` or ``~/.cache/fedadapt``, subfolder ``partitions``."""
    env = os.environ.get("FEDADAPT_CACHE_DIR")
    if env is not None and env.strip().lower() in ("", "off", "0", "none"):
        return None
    if env:
        base = Path(env).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedadapt"
    return base / "partitions"


def partition_cache_file(partitioner: str, params: Mapping[str, Any] | None, num_clients: int, seed: int,
                         labels: np.ndarray) -> Path | None:
    """The cache file of one partitioning: named by a digest of everything the partitioner's
    answer depends on (its name, parameters, client count, seed, the pool's labels in order,
    and flwr-datasets' version)."""
    root = partition_cache_dir()
    if root is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        fds = version("flwr-datasets")
    except PackageNotFoundError:  # pragma: no cover - a dependency
        fds = "unknown"
    head = json.dumps({"format": _CACHE_FORMAT, "flwr-datasets": fds, "partitioner": partitioner,
                       "params": {str(k): v for k, v in (params or {}).items()},
                       "num-clients": int(num_clients), "seed": int(seed)}, sort_keys=True, default=str)
    digest = hashlib.sha256(head.encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return root / f"{partitioner}-{num_clients}-{digest.hexdigest()[:24]}.npz"


def read_partition_cache(path: Path | None, num_clients: int, pool_size: int) -> list[np.ndarray] | None:
    """The rows of every client from ``path``, or None when it is absent or not a valid
    partitioning of ``pool_size`` rows over ``num_clients`` clients (then it is recomputed)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            offsets = np.asarray(z["offsets"], dtype=np.int64)
            rows = np.asarray(z["rows"], dtype=np.int64)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if (offsets.shape != (num_clients + 1,) or offsets[0] != 0 or offsets[-1] != len(rows)
            or (np.diff(offsets) < 0).any() or (rows.size and (rows.min() < 0 or rows.max() >= pool_size))):
        return None
    return [rows[offsets[k]:offsets[k + 1]] for k in range(num_clients)]


def write_partition_cache(path: Path | None, assignment: Mapping[int, Any], num_clients: int) -> None:
    """Keep a full assignment in ``path`` (atomically: a reader never sees half a file). A
    cache that cannot be written costs only the time it would have saved: one warning."""
    if path is None:
        return
    try:
        parts = [np.asarray(assignment[k], dtype=np.int64).reshape(-1) for k in range(num_clients)]
    except (KeyError, TypeError, ValueError):  # not a full assignment after all: nothing kept
        return
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, offsets=offsets, rows=np.concatenate(parts) if parts else np.zeros(0, np.int64))
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        key = str(path.parent)
        if key not in _cache_warned:
            _cache_warned.add(key)
            log.warning("fedadapt: partitions are not cached (%s); set FEDADAPT_CACHE_DIR to a "
                        "writable folder, or to 'off'", exc)
    finally:
        if tmp is not None:  # a half-written file is not left behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _full_assignment(partitioner: Any, cid: int, idx: np.ndarray, num_clients: int) -> Mapping[int, Any] | None:
    """The partitioner's own client -> rows assignment, when it holds one for every client and
    it gives ``idx`` for ``cid`` (the rows its public ``load_partition`` returned); else None."""
    mapping = getattr(partitioner, "_partition_id_to_indices", None)
    if not isinstance(mapping, Mapping) or len(mapping) != num_clients:
        return None
    if not all(k in mapping for k in (0, cid, num_clients - 1)):
        return None
    try:
        same = np.array_equal(np.asarray(mapping[cid], dtype=np.int64), idx)
    except (TypeError, ValueError):
        return None
    return mapping if same else None


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
        partitioner: Partitioner name (see :data:`simulations.partitions.PARTITIONER_NAMES`).
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
        self._assignment: Mapping[int, Any] | Sequence[np.ndarray] | None = None
        self._partitioner_ready = False
        self._cache_file = partition_cache_file(partitioner, partitioner_params, num_clients, seed, self._y)
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
                self._assignment = _full_assignment(self._partitioner, cid, idx, self.num_clients)
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


class SyntheticSource(ClientDataSource):
    r"""Synthetic(alpha, beta) of FedProx/LEAF, generated per client from ``(seed, client id)``.

    Client :math:`k` has its own linear-softmax labelling model and its own input mean:

    .. math::
        u_k \sim N(0, \alpha^2),\; W_k, b_k \sim N(u_k, 1),\;
        B_k \sim N(0, \beta^2),\; v_k \sim N(B_k, 1),\;
        x \sim N(v_k, \Sigma),\ \Sigma_{jj} = j^{-1.2},\;
        y = \arg\max (W_k x + b_k)

    ``alpha`` controls how much the labelling models differ across clients, ``beta`` how much
    the inputs do. Client sizes follow a truncated power law (Pareto):
    :math:`n_k = \min(\text{max\_samples}, \lfloor \text{min\_samples}\, U^{-1/a} \rfloor)`,
    :math:`U \sim \mathcal{U}(0, 1]`, :math:`a` = ``size_exponent``. ``iid=True`` gives all
    clients one shared model and input mean (:math:`u = B = 0`), the paper's IID variant.

    Nothing is stored per client: :meth:`get` regenerates a client from its seed (and caches
    the last few). The centralized test set is drawn from ``num_test_clients`` clients spread
    evenly over the population, from a stream separate from their training data.

    Deviation: the LEAF generator draws sizes from a lognormal(4, 2) + 50; this uses a Pareto
    tail (the papers' "power law") capped at ``max_samples`` so one client cannot be huge.
    LEAF's code uses alpha and beta as standard deviations, as here.

    Args:
        num_clients: Population size (any size: nothing per client is allocated).
        alpha: Spread of the labelling models (>= 0).
        beta: Spread of the input means (>= 0).
        iid: Share one model and input mean across clients.
        num_features: Input dimension (60 in the papers).
        num_classes: Number of classes (10 in the papers).
        min_samples: Smallest client size (>= 1).
        max_samples: Largest client size.
        size_exponent: Pareto tail exponent ``a`` (> 0; smaller is more skewed).
        num_test_clients: Clients contributing to the centralized test set.
        test_samples_per_client: Test examples from each of them.
        seed: Seed of the whole population.
        cache_size: LRU cache size.

    References:
        Li et al., "Federated Optimization in Heterogeneous Networks" (FedProx), arXiv:1812.06127;
        Caldas et al., "LEAF: A Benchmark for Federated Settings", arXiv:1812.01097.
    """

    def __init__(
        self,
        num_clients: int,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        iid: bool = False,
        num_features: int = 60,
        num_classes: int = 10,
        min_samples: int = 50,
        max_samples: int = 1000,
        size_exponent: float = 1.5,
        num_test_clients: int = 100,
        test_samples_per_client: int = 20,
        seed: int = 0,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        super().__init__(num_clients, cache_size=cache_size)
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        if num_features < 1 or num_classes < 2:
            raise ValueError(
                f"need num_features >= 1 and num_classes >= 2, got {num_features}, {num_classes}"
            )
        if not 1 <= min_samples <= max_samples:
            raise ValueError(
                f"need 1 <= min_samples <= max_samples, got {min_samples}, {max_samples}"
            )
        if size_exponent <= 0:
            raise ValueError(f"size_exponent must be > 0, got {size_exponent}")
        if num_test_clients < 1 or test_samples_per_client < 1:
            raise ValueError(
                "num_test_clients and test_samples_per_client must be >= 1, got "
                f"{num_test_clients}, {test_samples_per_client}"
            )
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.iid = bool(iid)
        self.num_features = int(num_features)
        self._num_classes = int(num_classes)
        self.min_samples = int(min_samples)
        self.max_samples = int(max_samples)
        self.size_exponent = float(size_exponent)
        self.num_test_clients = int(min(num_test_clients, num_clients))
        self.test_samples_per_client = int(test_samples_per_client)
        self.seed = int(seed)
        self._std = np.power(np.arange(1, num_features + 1, dtype=np.float64), -0.6)  # sqrt(j^-1.2)
        self._test: Arrays | None = None

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.num_features,)

    def client_size(self, client_id: int) -> int:
        """Number of training examples of ``client_id`` (no data is generated)."""
        rng = np.random.default_rng([self.seed, int(client_id), 0])
        u = 1.0 - rng.random()  # (0, 1]
        n = math.floor(self.min_samples * u ** (-1.0 / self.size_exponent))
        return int(min(self.max_samples, max(self.min_samples, n)))

    def _client_model(self, client_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d, c = self.num_features, self._num_classes
        key = [self.seed, 0xFFFFFFFF] if self.iid else [self.seed, int(client_id), 1]
        rng = np.random.default_rng(key)
        u = 0.0 if self.iid else rng.normal(0.0, self.alpha)
        big_b = 0.0 if self.iid else rng.normal(0.0, self.beta)
        W = rng.normal(u, 1.0, size=(d, c))
        b = rng.normal(u, 1.0, size=c)
        v = np.zeros(d) if self.iid else rng.normal(big_b, 1.0, size=d)
        return W, b, v

    def _generate(self, client_id: int, n: int, stream: int) -> Arrays:
        W, b, v = self._client_model(client_id)
        rng = np.random.default_rng([self.seed, int(client_id), stream])
        X = v + rng.normal(size=(n, self.num_features)) * self._std
        y = np.argmax(X @ W + b, axis=1)
        return X.astype(np.float32), y.astype(np.int64)

    def _load(self, client_id: int) -> Arrays:
        return self._generate(client_id, self.client_size(client_id), stream=2)

    def test_client_ids(self) -> np.ndarray:
        """The clients whose held-out examples form :meth:`test_set`."""
        return np.unique(
            np.linspace(0, self.num_clients - 1, self.num_test_clients).round().astype(np.int64)
        )

    def test_set(self) -> Arrays:
        if self._test is None:
            parts = [
                self._generate(int(k), self.test_samples_per_client, stream=3)
                for k in self.test_client_ids()
            ]
            self._test = (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
        return self._test


class HubSource(ClientDataSource):
    """Any dataset through flwr-datasets' ``FederatedDataset``, partitioned per client.

    Works on the Hugging Face hub (online) and on local files: ``dataset="csv"`` (or
    ``"parquet"``, ``"json"``) with ``data_files="train.csv"`` or
    ``{"train": ..., "test": ...}``. The dataset is opened on the first :meth:`get` or
    :meth:`test_set` call, not at construction. Features are the ``feature_columns`` (one
    image/array column, or several scalar columns stacked in order; default: every column but
    the label); images are scaled from [0, 255] to [0, 1] and given a leading channel axis when
    they have none. Without a test split, ``test_fraction`` of the train split is held out.

    Args:
        dataset: Hub name or builder (``"csv"``, ``"parquet"``, ``"json"``).
        num_clients: Number of partitions of the train split.
        label_column: Name of the label column (integer labels).
        feature_columns: Feature column names (None: all but the label).
        partitioner: Partitioner name; ``partitioner_params`` its parameters.
        data_files: Local files for the csv/parquet/json builders.
        subset: Hub configuration name.
        train_split: Split partitioned over the clients.
        test_split: Split used as the centralized test set (held out if absent).
        test_fraction: Fraction held out when there is no test split.
        num_classes: Number of classes (default: from the dataset's ClassLabel or max + 1).
        cache_dir: Hugging Face datasets cache directory (default: the library's).
        seed: Seed of partitioner and hold-out.
        cache_size: LRU cache size.
    """

    def __init__(
        self,
        dataset: str,
        *,
        num_clients: int,
        label_column: str = "label",
        feature_columns: Sequence[str] | None = None,
        partitioner: str = "iid",
        partitioner_params: Mapping[str, float | int | str] | None = None,
        data_files: str | Sequence[str] | Mapping[str, str | Sequence[str]] | None = None,
        subset: str | None = None,
        train_split: str = "train",
        test_split: str = "test",
        test_fraction: float = 0.2,
        num_classes: int | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        super().__init__(num_clients, cache_size=cache_size)
        self.dataset = dataset
        self.cache_dir = cache_dir
        self.label_column = label_column
        self.feature_columns = list(feature_columns) if feature_columns is not None else None
        self.partitioner_name = partitioner
        self._partitioner = build_partitioner(
            partitioner,
            num_partitions=num_clients,
            seed=seed,
            params=partitioner_params,
            partition_by=label_column,
        )
        self.data_files = data_files
        self.subset = subset
        self.train_split = train_split
        self.test_split = test_split
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)
        self._num_classes_arg = num_classes
        self._fds: FederatedDataset | None = None
        self._test: Arrays | None = None
        self._num_classes: int | None = None

    def _federated(self) -> FederatedDataset:
        if self._fds is None:
            from flwr_datasets import FederatedDataset

            train, test = self.train_split, self.test_split
            frac, seed = self.test_fraction, self.seed

            def preprocess(dd: DatasetDict) -> DatasetDict:
                from datasets import DatasetDict

                out: dict[str, Dataset] = {"train": dd[train]}
                if test in dd:
                    out["test"] = dd[test]
                else:
                    parts = dd[train].train_test_split(test_size=frac, seed=seed)
                    out = {"train": parts["train"], "test": parts["test"]}
                return DatasetDict(out)

            kwargs: dict[str, str | Sequence[str] | Mapping[str, str | Sequence[str]]] = {}
            if self.data_files is not None:
                kwargs["data_files"] = self.data_files
            if self.cache_dir is not None:
                kwargs["cache_dir"] = self.cache_dir
            self._fds = FederatedDataset(
                dataset=self.dataset,
                subset=self.subset,
                preprocessor=preprocess,
                partitioners={"train": self._partitioner},
                seed=self.seed,
                **kwargs,
            )
        return self._fds

    def _to_arrays(self, ds: Dataset) -> Arrays:
        cols = self.feature_columns
        if cols is None:
            cols = [c for c in ds.column_names if c != self.label_column]
        if not cols:
            raise ValueError(f"no feature columns besides label column '{self.label_column}'")
        missing = [c for c in [*cols, self.label_column] if c not in ds.column_names]
        if missing:
            raise ValueError(f"columns {missing} not in the dataset's columns {ds.column_names}")
        raw = np.asarray(ds.with_format("numpy")[self.label_column])
        try:
            y = raw.astype(np.int64)
        except (TypeError, ValueError):
            raise ValueError(
                f"label column '{self.label_column}' must hold integer class ids (or a "
                f"ClassLabel), got values like {raw[:3].tolist()}"
            ) from None
        if len(cols) == 1:
            first = ds[0][cols[0]] if len(ds) else None
            is_image = first is not None and first.__class__.__module__.startswith("PIL")
            X = (
                np.stack([np.asarray(v, dtype=np.float32) for v in ds[cols[0]]])
                if len(ds)
                else (np.zeros((0, 1), dtype=np.float32))
            )
            if is_image:
                X = X / 255.0
                X = X[:, None] if X.ndim == 3 else np.moveaxis(X, -1, 1)
        else:
            table = ds.with_format("numpy")
            X = np.stack([np.asarray(table[c], dtype=np.float32) for c in cols], axis=1)
        return np.ascontiguousarray(X, dtype=np.float32), y

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            if self._num_classes_arg is not None:
                self._num_classes = int(self._num_classes_arg)
            else:
                fds = self._federated()
                feature = fds.load_split("test").features.get(self.label_column)
                names = getattr(feature, "names", None)
                if names:
                    self._num_classes = len(names)
                else:
                    train = fds.load_split("train").with_format("numpy")
                    top = int(np.max(np.asarray(train[self.label_column])))
                    self._num_classes = max(top, int(self.test_set()[1].max(initial=0))) + 1
        return self._num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.test_set()[0].shape[1:])

    def test_set(self) -> Arrays:
        if self._test is None:
            self._test = self._to_arrays(self._federated().load_split("test"))
        return self._test

    def _load(self, client_id: int) -> Arrays:
        part = self._federated().load_partition(int(client_id), "train")
        if len(part) == 0:
            raise ValueError(
                f"client {client_id} received no examples from partitioner "
                f"'{self.partitioner_name}' over '{self.dataset}'; use fewer clients"
            )
        return self._to_arrays(part)


# ---------------------------------------------------------------------------------- factory


def build_source(
    name: str,
    *,
    num_clients: int,
    partitioner: str = "iid",
    partitioner_params: Mapping[str, float | int | str] | None = None,
    seed: int = 0,
    cache_size: int = DEFAULT_CACHE_SIZE,
    test_fraction: float = 0.2,
    options: Mapping[str, object] | None = None,
) -> ClientDataSource:
    """Build a :class:`ClientDataSource` by dataset name.

    Args:
        name: One of :data:`DATASET_NAMES`.
        num_clients: Population size.
        partitioner: Partitioner name for digits/mnist1d/hub (ignored by synthetic).
        partitioner_params: Its parameters.
        seed: Seed of data generation, splits and partitioning.
        cache_size: LRU cache size per source.
        test_fraction: Held-out fraction for digits and mnist1d.
        options: Dataset-specific keyword arguments: for ``mnist1d`` those of
            :func:`make_mnist1d` (``num_samples``, ``length``, noise levels...); for
            ``synthetic`` those of :class:`SyntheticSource` (``alpha``, ``beta``, ``iid``...);
            for ``hub`` those of :class:`HubSource` (``dataset`` is required).

    Raises:
        ValueError: unknown name (the message lists the accepted names) or bad parameters.
    """
    opts = dict(options or {})
    if name in ("digits", "mnist1d"):  # a pool in memory, partitioned by flwr-datasets
        if name == "digits":
            if opts:
                raise ValueError(f"digits takes no options, got {sorted(opts)}")
            X, y = load_digits_arrays()
        else:
            opts.setdefault("seed", seed)
            X, y = make_mnist1d(**opts)  # type: ignore[arg-type]
        train, test = split_train_test(X, y, test_fraction=test_fraction, seed=seed)
        return PartitionedSource(
            train,
            test,
            num_clients=num_clients,
            partitioner=partitioner,
            partitioner_params=partitioner_params,
            num_classes=10,
            seed=seed,
            cache_size=cache_size,
        )
    if name == "custom":  # the researcher's loader (simulations.plugins)
        from simulations.plugins import load_custom_arrays

        if "loader" not in opts:
            raise ValueError("dataset 'custom' needs options['loader'] ('package.module:function')")
        pool, held_out = load_custom_arrays(
            str(opts["loader"]), dict(opts.get("loader_options") or {}),  # type: ignore[call-overload]
            label_column=str(opts.get("label_column", "label")),
            feature_column=str(opts.get("feature_column", "")))
        if held_out is None:
            pool, test = split_train_test(*pool, test_fraction=test_fraction, seed=seed)
        else:
            test = held_out
        return PartitionedSource(
            pool,
            test,
            num_clients=num_clients,
            partitioner=partitioner,
            partitioner_params=partitioner_params,
            seed=seed,
            cache_size=cache_size,
        )
    if name == "synthetic":
        opts.setdefault("seed", seed)
        return SyntheticSource(num_clients, cache_size=cache_size, **opts)  # type: ignore[arg-type]
    if name == "hub":
        if "dataset" not in opts:
            raise ValueError("dataset 'hub' needs options['dataset'] (a hub name, 'csv', ...)")
        dataset = str(opts.pop("dataset"))
        opts.setdefault("test_fraction", test_fraction)
        return HubSource(
            dataset,
            num_clients=num_clients,
            partitioner=partitioner,
            partitioner_params=partitioner_params,
            seed=seed,
            cache_size=cache_size,
            **opts,  # type: ignore[arg-type]
        )
    raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASET_NAMES)}")
