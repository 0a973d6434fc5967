"""Registry of optimizers by name: ``build_optimizer``, ``available_optimizers``, ``step_size_stats``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer

__all__ = ["build_optimizer", "available_optimizers", "step_size_stats", "register_optimizer"]

_REGISTRY: dict[str, Callable[..., Optimizer]] = {}


def register_optimizer(name: str, factory: Callable[..., Optimizer]) -> None:
    """Register ``factory(params, **hparams) -> Optimizer`` under ``name``."""
    _REGISTRY[name] = factory


def _torch_sgd(params: Iterable, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
               weight_decay: float = 0.0, nesterov: bool = False) -> Optimizer:
    """torch's own SGD (foreach)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=dampening,
                           weight_decay=weight_decay, nesterov=nesterov, foreach=True)


def _torch_adam(params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                eps: float = 1e-8, weight_decay: float = 0.0) -> Optimizer:
    """torch's own Adam (foreach)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=True)


def _accepted(factory: Callable[..., Optimizer]) -> list[str]:
    sig = inspect.signature(factory)
    return [n for n, p in sig.parameters.items() if n != "params" and p.kind is not p.VAR_KEYWORD]


def available_optimizers() -> list[str]:
    """Names accepted by :func:`build_optimizer`, sorted."""
    return sorted(_REGISTRY)


def build_optimizer(name: str, params: Iterable, **hparams: object) -> Optimizer:
    """Build the optimizer registered as ``name`` over ``params``.

    Unknown names and unknown or invalid hyperparameters raise ``ValueError`` naming the
    accepted values.

    Example::

        opt = fedadapt.build_optimizer("hd", model.parameters(), lr=0.01, hyper_lr=1e-3)
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; accepted: {available_optimizers()}")
    factory = _REGISTRY[name]
    accepted = _accepted(factory)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(f"optimizer {name!r} got unknown hyperparameters {unknown}; accepted: {accepted}")
    try:
        return factory(params, **hparams)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"optimizer {name!r}: invalid hyperparameters {hparams}: {exc}") from exc


def step_size_stats(optimizer: Optimizer) -> dict[str, float]:
    """``{"lr", "step-mean", "step-min", "step-max"}`` of ``optimizer``.

    ``lr`` is group 0's step size. Scalar methods (and torch's own optimizers) report
    ``step-mean == step-min == step-max == lr``; per-coordinate methods (``dsa``, ``cprop``,
    ``eg``) report the effective per-coordinate step ``lr * Gamma`` over all coordinates.
    May synchronise with the device; call it once per round, not per step.
    """
    stats = getattr(optimizer, "step_size_stats", None)
    if callable(stats):
        return stats()
    lr = float(optimizer.param_groups[0]["lr"])
    return {"lr": lr, "step-mean": lr, "step-min": lr, "step-max": lr}


register_optimizer("sgd", _torch_sgd)
register_optimizer("adam", _torch_adam)
