"""The data sets that need no download: scikit-learn's digits and a procedural 1-D digits set.

Both are NumPy pools ``(X float32, y int64)`` that :func:`split_train_test` splits into a
training pool (partitioned over the clients by :class:`~simulations.data.PartitionedSource`)
and a centralized test set.

Example:

>>> X, y = make_mnist1d(20, seed=3)
>>> X.shape, X.dtype.name, y.dtype.name
((20, 40), 'float32', 'int64')
>>> (X_train, y_train), (X_test, y_test) = split_train_test(X, y, test_fraction=0.5)
>>> len(y_train) + len(y_test)
20
"""

from __future__ import annotations

import functools

import numpy as np

from simulations.data.source import Arrays

__all__ = ["load_digits_arrays", "make_mnist1d", "split_train_test"]


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
