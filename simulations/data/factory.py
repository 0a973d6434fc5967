"""The factory: a :class:`~simulations.data.ClientDataSource` from a data set's name and options.

Example:

>>> source = build_source("mnist1d", num_clients=4, options={"num_samples": 200})
>>> source.num_classes, source.input_shape
(10, (40,))
>>> build_source("mnist1d", num_clients=4, options={"samples": 200})
Traceback (most recent call last):
...
ValueError: unknown option(s) ['samples'] of dataset 'mnist1d'; accepted: correlated_noise, length, num_samples, seed, shear, stretch, white_noise
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

from simulations.data.builtin import load_digits_arrays, make_mnist1d, split_train_test
from simulations.data.hub import HubSource
from simulations.data.partitioned import PartitionedSource
from simulations.data.source import DEFAULT_CACHE_SIZE, Arrays, ClientDataSource
from simulations.data.synthetic import SyntheticSource

__all__ = ["DATASET_NAMES", "build_source"]

DATASET_NAMES: tuple[str, ...] = ("digits", "mnist1d", "synthetic", "hub", "custom")
_CUSTOM_OPTIONS = ("feature_column", "label_column", "loader", "loader_options")

T = TypeVar("T")


def _call_with_options(
    target: Callable[..., T],
    options: Mapping[str, object],
    dataset: str,
    given: Collection[str] = (),
    /,
    **arguments: object,
) -> T:
    """``target(**arguments, **options)`` once every name in ``options`` is one of ``target``'s
    keyword parameters but those in ``given`` (the factory's own ``arguments``); else
    ``ValueError`` listing the accepted ones."""
    parameters = inspect.signature(target).parameters.values()
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    _check_names(
        options, [p.name for p in parameters if p.kind in keywords and p.name not in given], dataset
    )
    return target(**arguments, **options)


def _check_names(options: Mapping[str, object], accepted: Collection[str], dataset: str) -> None:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} of dataset {dataset!r}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )


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
        ValueError: unknown name or option (the message lists the accepted ones) or bad
            parameters.
    """
    opts = dict(options or {})

    def partitioned(
        train: Arrays, test: Arrays, num_classes: int | None = None
    ) -> ClientDataSource:
        """A pool in memory, partitioned by flwr-datasets."""
        return PartitionedSource(
            train,
            test,
            num_clients=num_clients,
            partitioner=partitioner,
            partitioner_params=partitioner_params,
            num_classes=num_classes,
            seed=seed,
            cache_size=cache_size,
        )

    if name in ("digits", "mnist1d"):
        if name == "digits":
            if opts:
                raise ValueError(f"digits takes no options, got {sorted(opts)}")
            X, y = load_digits_arrays()
        else:
            opts.setdefault("seed", seed)
            X, y = _call_with_options(make_mnist1d, opts, name)
        train, test = split_train_test(X, y, test_fraction=test_fraction, seed=seed)
        return partitioned(train, test, num_classes=10)
    if name == "custom":  # the researcher's loader (simulations.plugins)
        from simulations.plugins import load_custom_arrays

        if "loader" not in opts:
            raise ValueError("dataset 'custom' needs options['loader'] ('package.module:function')")
        _check_names(opts, _CUSTOM_OPTIONS, name)
        loader_options = opts.get("loader_options") or {}
        if not isinstance(loader_options, Mapping):
            raise ValueError(
                f"options['loader_options'] of dataset 'custom' must be a mapping, got "
                f"{loader_options!r}"
            )
        pool, held_out = load_custom_arrays(
            str(opts["loader"]),
            dict(loader_options),
            label_column=str(opts.get("label_column", "label")),
            feature_column=str(opts.get("feature_column", "")),
        )
        if held_out is None:
            pool, test = split_train_test(*pool, test_fraction=test_fraction, seed=seed)
        else:
            test = held_out
        return partitioned(pool, test)
    if name == "synthetic":
        opts.setdefault("seed", seed)
        return _call_with_options(
            SyntheticSource,
            opts,
            name,
            ("num_clients", "cache_size"),
            num_clients=num_clients,
            cache_size=cache_size,
        )
    if name == "hub":
        if "dataset" not in opts:
            raise ValueError("dataset 'hub' needs options['dataset'] (a hub name, 'csv', ...)")
        dataset = str(opts.pop("dataset"))
        opts.setdefault("test_fraction", test_fraction)
        return _call_with_options(
            HubSource,
            opts,
            name,
            ("num_clients", "partitioner", "partitioner_params", "seed", "cache_size"),
            dataset=dataset,
            num_clients=num_clients,
            partitioner=partitioner,
            partitioner_params=partitioner_params,
            seed=seed,
            cache_size=cache_size,
        )
    raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASET_NAMES)}")
