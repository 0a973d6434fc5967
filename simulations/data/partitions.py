"""flwr-datasets partitioners built from a name and a few parameters.

:func:`build_partitioner` maps scenario settings onto flwr-datasets' own partitioners (no
partitioning logic is re-implemented here):

============== ============================================= =====================================
name           flwr-datasets partitioner                     parameters (default)
============== ============================================= =====================================
``iid``        ``IidPartitioner``                            none
``dirichlet``  ``DirichletPartitioner``                      ``alpha`` (0.5),
                                                             ``min_partition_size`` (2),
                                                             ``self_balancing`` (False)
``pathological`` ``PathologicalPartitioner``                 ``classes_per_client`` (2),
                                                             ``class_assignment_mode`` ("random")
``shard``      ``ShardPartitioner``                          ``shards_per_client`` (2),
                                                             ``shard_size`` (None: as large as
                                                             fits)
``size``       ``Linear``/``Square``/``Exponential``/        ``distribution`` ("power"),
               ``IdToSizeFncPartitioner``                    ``exponent`` (1.0, for "power")
============== ============================================= =====================================

``size`` gives partition ``k`` a share proportional to ``k + 1`` (linear), ``(k + 1)^2``
(square), ``e^k`` (exponential) or ``(k + 1)^-exponent`` (power law), of contiguous rows (so
shuffle the pool first). Parameter names may be written in snake_case or kebab-case.

Minimum sizes: every partitioner here needs at least one example per client; ``dirichlet``
retries and then raises when a client would get fewer than ``min_partition_size`` rows, and the
size partitioners raise when a client's share rounds to zero (``exponential`` does so beyond a
few dozen clients). :class:`simulations.data.PartitionedSource` raises a ``ValueError`` on an
empty partition rather than training on nothing.

**The partition cache.** A partitioner that assigns every client at once (flwr-datasets'
Dirichlet, pathological, shard and size partitioners) has that assignment kept on disk
(:func:`partition_cache_dir`, ``FEDADAPT_CACHE_DIR``; ``off`` disables), named by a digest of
everything the answer depends on (:func:`partition_cache_file`), so that simulation workers and
later runs of the same partitioning read it (:func:`read_partition_cache`) instead of importing
flwr-datasets and partitioning again.

Example (a cache round trip; a file that is not a partitioning of the pool reads as None):

>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "p.npz"
>>> write_partition_cache(path, {0: [3, 1], 1: [0], 2: [2]}, num_clients=3)
>>> [rows.tolist() for rows in read_partition_cache(path, num_clients=3, pool_size=4)]
[[3, 1], [0], [2]]
>>> read_partition_cache(path, num_clients=3, pool_size=3) is None  # row 3 is out of range
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from flwr_datasets.partitioner import Partitioner

__all__ = [
    "PARTITIONER_NAMES",
    "PARTITIONER_PARAMS",
    "SIZE_DISTRIBUTIONS",
    "build_partitioner",
    "full_assignment",
    "partition_cache_dir",
    "partition_cache_file",
    "read_partition_cache",
    "write_partition_cache",
]

log = logging.getLogger(__name__)

PARTITIONER_PARAMS: dict[str, tuple[str, ...]] = {
    "iid": (),
    "dirichlet": ("alpha", "min_partition_size", "self_balancing"),
    "pathological": ("classes_per_client", "class_assignment_mode"),
    "shard": ("shards_per_client", "shard_size"),
    "size": ("distribution", "exponent"),
}
PARTITIONER_NAMES: tuple[str, ...] = tuple(PARTITIONER_PARAMS)
SIZE_DISTRIBUTIONS: tuple[str, ...] = ("linear", "square", "exponential", "power")
_ASSIGNMENT_MODES = ("random", "deterministic", "first-deterministic")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if float(value) != int(value) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _power_share(partition_id: np.ndarray, exponent: float) -> np.ndarray:
    return np.power(np.asarray(partition_id, dtype=np.float64) + 1.0, -exponent)


def build_partitioner(
    name: str,
    *,
    num_partitions: int,
    seed: int = 0,
    params: Mapping[str, float | int | str | bool] | None = None,
    partition_by: str = "label",
) -> Partitioner:
    """Build a flwr-datasets partitioner from its name and parameters.

    Args:
        name: One of :data:`PARTITIONER_NAMES`.
        num_partitions: Number of clients.
        seed: Seed of the partitioner's shuffling and sampling.
        params: Parameters of that partitioner (see the module table); unknown ones raise.
        partition_by: Label column used by the label-aware partitioners.

    Returns:
        An unbound ``flwr_datasets.partitioner.Partitioner`` (assign ``.dataset`` once).

    Raises:
        ValueError: unknown name or parameter (the message lists the accepted ones), or a
            parameter out of range.

    Example:

    >>> import datasets
    >>> p = build_partitioner("iid", num_partitions=3)
    >>> p.dataset = datasets.Dataset.from_dict({"label": [0, 1, 2, 3] * 6})
    >>> len(p.load_partition(0))
    8
    >>> build_partitioner("dirichlet", num_partitions=3, params={"alfa": 0.3})
    Traceback (most recent call last):
    ...
    ValueError: unknown parameter(s) ['alfa'] for partitioner 'dirichlet'; accepted: alpha, min_partition_size, self_balancing
    """
    if name not in PARTITIONER_PARAMS:
        raise ValueError(f"unknown partitioner {name!r}; accepted: {', '.join(PARTITIONER_NAMES)}")
    num_partitions = _positive_int("num_partitions", num_partitions)
    given = {str(k).replace("-", "_"): v for k, v in (params or {}).items()}
    unknown = sorted(set(given) - set(PARTITIONER_PARAMS[name]))
    if unknown:
        accepted = ", ".join(PARTITIONER_PARAMS[name]) or "none"
        raise ValueError(
            f"unknown parameter(s) {unknown} for partitioner {name!r}; accepted: {accepted}"
        )

    from flwr_datasets import partitioner as fp

    if name == "iid":
        return fp.IidPartitioner(num_partitions=num_partitions)
    if name == "dirichlet":
        alpha = given.get("alpha", 0.5)
        if isinstance(alpha, bool | str) or float(alpha) <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        min_size = given.get("min_partition_size", 2)
        if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 0:
            raise ValueError(f"min_partition_size must be an integer >= 0, got {min_size!r}")
        return fp.DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by=partition_by,
            alpha=float(alpha),
            min_partition_size=int(min_size),
            self_balancing=bool(given.get("self_balancing", False)),
            shuffle=True,
            seed=seed,
        )
    if name == "pathological":
        k = _positive_int("classes_per_client", given.get("classes_per_client", 2))
        mode = str(given.get("class_assignment_mode", "random"))
        if mode not in _ASSIGNMENT_MODES:
            raise ValueError(
                f"unknown class_assignment_mode {mode!r}; accepted: {', '.join(_ASSIGNMENT_MODES)}"
            )
        return fp.PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by=partition_by,
            num_classes_per_partition=k,
            class_assignment_mode=mode,
            shuffle=True,
            seed=seed,
        )
    if name == "shard":
        shards = _positive_int("shards_per_client", given.get("shards_per_client", 2))
        shard_size = given.get("shard_size")
        return fp.ShardPartitioner(
            num_partitions=num_partitions,
            partition_by=partition_by,
            num_shards_per_partition=shards,
            shard_size=None if shard_size is None else _positive_int("shard_size", shard_size),
            shuffle=True,
            seed=seed,
        )
    # name == "size"
    distribution = str(given.get("distribution", "power"))
    if distribution == "linear":
        return fp.LinearPartitioner(num_partitions=num_partitions)
    if distribution == "square":
        return fp.SquarePartitioner(num_partitions=num_partitions)
    if distribution == "exponential":
        return fp.ExponentialPartitioner(num_partitions=num_partitions)
    if distribution == "power":
        exponent = given.get("exponent", 1.0)
        if isinstance(exponent, bool | str) or float(exponent) < 0:
            raise ValueError(f"exponent must be >= 0, got {exponent!r}")
        return fp.IdToSizeFncPartitioner(
            num_partitions=num_partitions,
            partition_id_to_size_fn=partial(_power_share, exponent=float(exponent)),
        )
    raise ValueError(
        f"unknown size distribution {distribution!r}; accepted: {', '.join(SIZE_DISTRIBUTIONS)}"
    )


# ---------------------------------------------------------------------- the partition cache

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


def partition_cache_file(
    partitioner: str,
    params: Mapping[str, object] | None,
    num_clients: int,
    seed: int,
    labels: np.ndarray,
) -> Path | None:
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
    head = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "flwr-datasets": fds,
            "partitioner": partitioner,
            "params": {str(k): v for k, v in (params or {}).items()},
            "num-clients": int(num_clients),
            "seed": int(seed),
        },
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(head.encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return root / f"{partitioner}-{num_clients}-{digest.hexdigest()[:24]}.npz"


def read_partition_cache(
    path: Path | None, num_clients: int, pool_size: int
) -> list[np.ndarray] | None:
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
    if (
        offsets.shape != (num_clients + 1,)
        or offsets[0] != 0
        or offsets[-1] != len(rows)
        or (np.diff(offsets) < 0).any()
        or (rows.size and (rows.min() < 0 or rows.max() >= pool_size))
    ):
        return None
    return [rows[offsets[k] : offsets[k + 1]] for k in range(num_clients)]


def write_partition_cache(
    path: Path | None, assignment: Mapping[int, object], num_clients: int
) -> None:
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
            np.savez(
                fh, offsets=offsets, rows=np.concatenate(parts) if parts else np.zeros(0, np.int64)
            )
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        key = str(path.parent)
        if key not in _cache_warned:
            _cache_warned.add(key)
            log.warning(
                "fedadapt: partitions are not cached (%s); set FEDADAPT_CACHE_DIR to a "
                "writable folder, or to 'off'",
                exc,
            )
    finally:
        if tmp is not None:  # a half-written file is not left behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def full_assignment(
    partitioner: object, cid: int, idx: np.ndarray, num_clients: int
) -> Mapping[int, object] | None:
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
