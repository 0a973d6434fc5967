"""A researcher's own model and data, as ``model-factory`` / ``data-loader`` name them
(``tests/simulations/test_custom_world.py``; the README's example has the same shape)."""

from __future__ import annotations

import numpy as np
import torch


def build_model(input_shape, num_classes, width=16):
    """A two-layer MLP whose width is a keyword option (``model-options``)."""
    d = int(np.prod(input_shape))
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(d, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, num_classes),
    )


def blobs(n=600, features=5, classes=3, seed=0):
    """``(X, y)``: Gaussian blobs, one per class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    centers = rng.normal(0, 3, size=(classes, features))
    return (centers[y] + rng.normal(size=(n, features))).astype(np.float32), y


def blobs_split(n=600):
    """``((X_train, y_train), (X_test, y_test))``."""
    X, y = blobs(n)
    k = int(0.8 * n)
    return (X[:k], y[:k]), (X[k:], y[k:])


def blobs_dataset(n=600):
    """A ``datasets.Dataset`` with feature columns ``a``..``e`` and ``label``."""
    from datasets import Dataset

    X, y = blobs(n)
    return Dataset.from_dict({**{c: X[:, i] for i, c in enumerate("abcde")}, "label": y})


def not_data():
    return "nope"


def nan_data():
    X, y = blobs(50)
    X[0, 0] = np.nan
    return X, y


def not_a_model(input_shape, num_classes):
    return "nope"


def wrong_head(input_shape, num_classes):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(input_shape)), 2))
