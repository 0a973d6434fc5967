"""The researcher's own model and data, named by import path in the run config.

``model-factory = "package.module:build_model"`` names a function
``build_model(input_shape, num_classes, **model_options) -> torch.nn.Module``;
``data-loader = "package.module:load_data"`` (with ``dataset = "custom"``) names a function
``load_data(**data_options)`` returning one of

* ``(X, y)``: arrays (first axis: examples; ``y`` integer class ids); ``test-fraction`` of them
  is held out, stratified, as the centralized test set;
* ``((X_train, y_train), (X_test, y_test))``: the split is the loader's;
* a ``datasets.Dataset`` (held out like arrays) or a ``datasets.DatasetDict`` with ``train``
  and optionally ``test``: the label column is ``hub-label-key``, the feature column
  ``hub-feature-key`` when the data set has it, else every other column in order.

The training pool is partitioned over ``num-clients`` clients by the configured flwr-datasets
partitioner and drifted by the drift engine like the built-in data sets. Both are imported and
called once before any worker starts (:func:`simulations.preflight.check_before_workers`); every
worker imports them again, so the module must be importable there too: installed
(``pip install -e .``) or on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["check_path", "import_object", "load_custom_arrays"]

_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")

Arrays = tuple[np.ndarray, np.ndarray]


def check_path(key: str, path: str) -> None:
    """``package.module:name`` syntax, or ``ValueError`` naming ``key``."""
    if not _PATH.match(path):
        raise ValueError(
            f"run-config key '{key}': {path!r} is not an import path; accepted: "
            "'package.module:function'"
        )


def import_object(key: str, path: str) -> Callable[..., Any]:
    """The callable at ``package.module:name``; ``ValueError`` naming ``key`` and the fix."""
    check_path(key, path)
    module_name, attr = path.split(":", 1)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"run-config key '{key}': cannot import {module_name!r} ({exc}); the "
            "module must be importable here and on every worker: install it or "
            "put its folder on PYTHONPATH"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"run-config key '{key}': module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"run-config key '{key}': {path!r} is not callable")
    return obj


def build_custom_model(
    path: str, input_shape: tuple[int, ...], num_classes: int, options: Mapping[str, Any]
) -> Any:
    """Call the model factory; a wrong signature or return type is a ``ValueError``."""
    import torch

    factory = import_object("model-factory", path)
    try:
        model = factory(tuple(input_shape), int(num_classes), **dict(options))
    except TypeError as exc:
        raise ValueError(
            f"run-config keys 'model-factory'/'model-options': {path}"
            f"(input_shape, num_classes, **{dict(options)}) failed: {exc}"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise ValueError(
            f"run-config key 'model-factory': {path} returned "
            f"{type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _as_arrays(what: str, X: Any, y: Any) -> Arrays:
    Xa = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    ya_raw = np.asarray(y)
    if ya_raw.ndim != 1 or Xa.ndim < 2 or len(Xa) != len(ya_raw):
        raise ValueError(
            f"run-config key 'data-loader': {what}: X must be (examples, ...) and y "
            f"(examples,), got X {Xa.shape} and y {ya_raw.shape}"
        )
    if not np.issubdtype(ya_raw.dtype, np.integer):
        if not (np.issubdtype(ya_raw.dtype, np.floating) and np.all(ya_raw == np.round(ya_raw))):
            raise ValueError(
                f"run-config key 'data-loader': {what}: labels must be integer "
                f"class ids, got dtype {ya_raw.dtype}"
            )
    ya = ya_raw.astype(np.int64)
    if len(ya) and ya.min() < 0:
        raise ValueError(f"run-config key 'data-loader': {what}: labels must be >= 0")
    if not np.isfinite(Xa).all():
        raise ValueError(f"run-config key 'data-loader': {what}: X holds NaN or inf")
    return Xa, ya


def _dataset_arrays(ds: Any, label_column: str, feature_column: str) -> Arrays:
    cols = [c for c in ds.column_names if c != label_column]
    if label_column not in ds.column_names:
        raise ValueError(
            f"run-config key 'data-loader': the data set has no label column "
            f"{label_column!r} (hub-label-key); columns: {ds.column_names}"
        )
    if feature_column in ds.column_names:
        cols = [feature_column]
    if not cols:
        raise ValueError("run-config key 'data-loader': the data set has no feature column")
    table = ds.with_format("numpy")
    if len(cols) == 1:
        X = (
            np.stack([np.asarray(v, dtype=np.float32) for v in table[cols[0]]])
            if len(ds)
            else np.zeros((0, 1), np.float32)
        )
    else:
        X = np.stack([np.asarray(table[c], dtype=np.float32) for c in cols], axis=1)
    return _as_arrays("data set", X, table[label_column])


def load_custom_arrays(
    path: str, options: Mapping[str, Any], *, label_column: str = "label", feature_column: str = ""
) -> tuple[Arrays, Arrays | None]:
    """``(train, test)`` from the loader (``test`` None: hold out from ``train``)."""
    loader = import_object("data-loader", path)
    try:
        out = loader(**dict(options))
    except TypeError as exc:
        raise ValueError(
            f"run-config keys 'data-loader'/'data-options': {path}(**{dict(options)}) failed: {exc}"
        ) from None
    try:
        from datasets import Dataset, DatasetDict
    except ImportError:  # pragma: no cover - flwr-datasets brings it
        Dataset = DatasetDict = ()  # type: ignore[assignment,misc]
    if Dataset and isinstance(out, Dataset):
        return _dataset_arrays(out, label_column, feature_column), None
    if DatasetDict and isinstance(out, DatasetDict):
        if "train" not in out:
            raise ValueError(
                f"run-config key 'data-loader': the DatasetDict has no 'train' "
                f"split; splits: {list(out)}"
            )
        test = _dataset_arrays(out["test"], label_column, feature_column) if "test" in out else None
        return _dataset_arrays(out["train"], label_column, feature_column), test
    if isinstance(out, Sequence) and len(out) == 2:
        a, b = out
        if (
            isinstance(a, Sequence)
            and isinstance(b, Sequence)
            and len(a) == 2
            and len(b) == 2
            and not isinstance(a, np.ndarray)
        ):
            return _as_arrays("train", *a), _as_arrays("test", *b)
        return _as_arrays("arrays", a, b), None
    raise ValueError(
        f"run-config key 'data-loader': {path} returned {type(out).__name__}; "
        "accepted: (X, y), ((X_train, y_train), (X_test, y_test)), a "
        "datasets.Dataset or a datasets.DatasetDict"
    )
