"""Any data set flwr-datasets' ``FederatedDataset`` reads: the Hugging Face hub or local files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from simulations.data.partitions import build_partitioner
from simulations.data.source import DEFAULT_CACHE_SIZE, Arrays, ClientDataSource

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict
    from flwr_datasets import FederatedDataset

__all__ = ["HubSource"]


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
