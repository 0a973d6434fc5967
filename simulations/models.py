"""Small PyTorch models sized for the simulation data sets.

:func:`build_model` builds one by name for an input shape and a number of classes, with a
deterministic initialisation from ``seed`` (the global torch RNG is left untouched):

- ``mlp``: flatten, one hidden layer (``hidden`` units, ReLU), linear head. Any input shape.
- ``cnn``: for images ``(C, H, W)`` two 3x3 convolutions (16, 32 channels), 2x2 max-pool, a
  64-unit hidden layer; for 1-D signals ``(L,)`` or ``(C, L)`` the same with 1-D convolutions
  (kernel 5). Sized for digits ``(1, 8, 8)`` and mnist1d ``(40,)``.
- ``logreg``: multinomial logistic regression (flatten, linear), seeded init.
- ``tiny``: a linear layer initialised to zero: the cheapest model, for scale tests.

Example::

    model = build_model("cnn", (1, 8, 8), 10, seed=0)
    logits = model(torch.zeros(4, 1, 8, 8))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MODEL_NAMES", "build_model"]

MODEL_NAMES: tuple[str, ...] = ("mlp", "cnn", "logreg", "tiny")


def _num_features(input_shape: Sequence[int]) -> int:
    return int(math.prod(int(d) for d in input_shape))


def _cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) == 3:
        c, h, w = input_shape
        if h < 2 or w < 2:
            raise ValueError(f"cnn needs images of at least 2x2, got input_shape={input_shape}")
        return nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (h // 2) * (w // 2), 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )
    if len(input_shape) in (1, 2):
        c, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape
        if length < 2:
            raise ValueError(f"cnn needs signals of length >= 2, got input_shape={input_shape}")
        layers: list[nn.Module] = [nn.Unflatten(1, (1, length))] if len(input_shape) == 1 else []
        return nn.Sequential(
            *layers,
            nn.Conv1d(c, 16, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Flatten(),
            nn.Linear(32 * (length // 2), 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )
    raise ValueError(f"cnn takes (L,), (C, L) or (C, H, W) inputs, got input_shape={input_shape}")


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    seed: int = 0,
    hidden: int = 64,
) -> nn.Module:
    """Build a model by name with a deterministic initialisation.

    Args:
        name: One of :data:`MODEL_NAMES`.
        input_shape: Shape of one example, without the batch axis (e.g. ``(1, 8, 8)``).
        num_classes: Number of output logits (>= 2).
        seed: Initialisation seed; equal seeds give equal parameters.
        hidden: Hidden units of the ``mlp``.

    Raises:
        ValueError: unknown name (the message lists the accepted names) or bad shapes.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(MODEL_NAMES)}")
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"input_shape must be non-empty and positive, got {tuple(input_shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if hidden < 1:
        raise ValueError(f"hidden must be >= 1, got {hidden}")
    d = _num_features(shape)
    devices: list[torch.device] = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if name == "mlp":
            model: nn.Module = nn.Sequential(
                nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
            )
        elif name == "cnn":
            model = _cnn(shape, num_classes)
        elif name == "logreg":
            model = nn.Sequential(nn.Flatten(), nn.Linear(d, num_classes))
        else:  # tiny
            model = nn.Sequential(nn.Flatten(), nn.Linear(d, num_classes))
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
    return model
