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
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from flwr_datasets.partitioner import Partitioner

__all__ = ["PARTITIONER_NAMES", "PARTITIONER_PARAMS", "SIZE_DISTRIBUTIONS", "build_partitioner"]

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

    Example::

        p = build_partitioner("dirichlet", num_partitions=10, params={"alpha": 0.3})
        p.dataset = datasets.Dataset.from_dict({"label": labels})
        rows = p.load_partition(0)
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
            class_assignment_mode=mode,  # type: ignore[arg-type]
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
