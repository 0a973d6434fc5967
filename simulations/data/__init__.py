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
(:func:`build_partitioner`). The partitioner indexes the pool once (on the first ``get``);
per-client arrays are only built when a client is asked for. A partitioner that assigns every
client at once has that assignment kept on disk (:func:`partition_cache_dir`,
``FEDADAPT_CACHE_DIR``; ``off`` disables), so that simulation workers and later runs of the same
partitioning read it instead of importing flwr-datasets and partitioning again.

The package by job: :mod:`~simulations.data.source` (the interface and its LRU cache),
:mod:`~simulations.data.builtin` (digits, mnist1d, the stratified split),
:mod:`~simulations.data.partitioned`, :mod:`~simulations.data.synthetic` and
:mod:`~simulations.data.hub` (one source each), :mod:`~simulations.data.partitions` (the
flwr-datasets partitioners and the partition cache) and :mod:`~simulations.data.factory`
(:func:`build_source`). Every public name is importable from ``simulations.data``.

Example:

>>> source = build_source("digits", num_clients=20, partitioner="dirichlet",
...                       partitioner_params={"alpha": 0.5}, seed=1)
>>> X, y = source.get(3)
>>> X.shape[1:], X.dtype.name, y.dtype.name, source.num_classes
((1, 8, 8), 'float32', 'int64', 10)
>>> X_test, y_test = source.test_set()
>>> len(y_test)  # a stratified fifth of the 1797 images
359
"""

from simulations.data.builtin import load_digits_arrays, make_mnist1d, split_train_test
from simulations.data.factory import DATASET_NAMES, build_source
from simulations.data.hub import HubSource
from simulations.data.partitioned import PartitionedSource
from simulations.data.partitions import (
    PARTITIONER_NAMES,
    PARTITIONER_PARAMS,
    SIZE_DISTRIBUTIONS,
    build_partitioner,
    partition_cache_dir,
    partition_cache_file,
    read_partition_cache,
    write_partition_cache,
)
from simulations.data.source import DEFAULT_CACHE_SIZE, Arrays, ClientDataSource
from simulations.data.synthetic import SyntheticSource

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_CACHE_SIZE",
    "PARTITIONER_NAMES",
    "PARTITIONER_PARAMS",
    "SIZE_DISTRIBUTIONS",
    "Arrays",
    "ClientDataSource",
    "HubSource",
    "PartitionedSource",
    "SyntheticSource",
    "build_partitioner",
    "build_source",
    "load_digits_arrays",
    "make_mnist1d",
    "partition_cache_dir",
    "partition_cache_file",
    "read_partition_cache",
    "split_train_test",
    "write_partition_cache",
]
