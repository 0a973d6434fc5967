"""Registry of optimizers by name: ``build_optimizer``, ``available_optimizers``, ``step_size_stats``,
and each method's :class:`MethodSpec` (what it needs from the federation), read with
:func:`method_spec`.

The spec is the one place that says what a method needs besides its own hyperparameters: the
per-client signals the server step requires or can use, whether a client-side method needs the
previous global update, and server-side defaults that depend on the federation's shape. Callers
(Flower strategies, applications) read the spec; they never test a method's name.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch.optim import Optimizer

__all__ = [
    "KNOWN_SIGNALS",
    "SIG_CLIENT_SQ_MEAN",
    "SIG_CLIENT_SQ_NORMS_MEAN",
    "SIG_NUM_CLIENTS",
    "Federation",
    "MethodSpec",
    "available_optimizers",
    "build_optimizer",
    "method_spec",
    "one_pass_window",
    "register_optimizer",
    "step_size_stats",
]

# ---------------------------------------------------------------- signal names (docs/CONTRACTS.md §1)
# Keyword arguments of ``ServerOptimizer.step`` / ``step_from_mean``, computed over a round's
# successful clients with weights w_i = n_i / sum n.
SIG_CLIENT_SQ_NORMS_MEAN = "client_sq_norms_mean"  # sum_i w_i ||x_i - x_t||^2 (FedExP)
SIG_NUM_CLIENTS = "num_clients"  # |S|, the number of successful clients
SIG_CLIENT_SQ_MEAN = "client_sq_mean"  # sum_i w_i (x_i - x_t)^2 per coordinate (conformity)
KNOWN_SIGNALS = (SIG_CLIENT_SQ_NORMS_MEAN, SIG_NUM_CLIENTS, SIG_CLIENT_SQ_MEAN)


@dataclass(frozen=True)
class Federation:
    """The federation's shape, as far as it is known (``None`` = unknown, e.g. a deployment's
    population): population size, clients per round, number of rounds."""

    num_clients: int | None = None
    clients_per_round: int | None = None
    num_rounds: int | None = None


def _no_defaults(federation: Federation) -> dict[str, object]:
    return {}


@dataclass(frozen=True)
class MethodSpec:
    """What a fedadapt method needs beyond its hyperparameters.

    Attributes:
        signals: per-client signals the server step cannot run without (names from
            :data:`KNOWN_SIGNALS`), e.g. FedExP's ``client_sq_norms_mean`` and ``num_clients``.
        optional_signals: signals the server step uses when given (server ``cprop``'s
            conformity across clients); a strategy requests them too, so a method that can use
            a statistic never silently falls back.
        needs_global_update: as a *client* method, needs x_t - x_{t-1} (FedHyper-CL).
        defaults: ``Federation -> dict`` of server-side hyperparameter defaults that depend on
            the federation (read through :meth:`server_defaults`); explicit options win.
    """

    signals: tuple[str, ...] = ()
    optional_signals: tuple[str, ...] = ()
    needs_global_update: bool = False
    defaults: Callable[[Federation], Mapping[str, object]] = field(
        default=_no_defaults, compare=False
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.signals + self.optional_signals) - set(KNOWN_SIGNALS))
        if unknown:
            raise ValueError(f"unknown signals {unknown}; known: {list(KNOWN_SIGNALS)}")

    @property
    def wanted_signals(self) -> tuple[str, ...]:
        """Required then optional signals, without repeats: what a strategy must request."""
        return tuple(dict.fromkeys(self.signals + self.optional_signals))

    def server_defaults(self, federation: Federation) -> dict[str, object]:
        """Server-side hyperparameter defaults for this federation (explicit options win)."""
        return dict(self.defaults(federation))


def one_pass_window(federation: Federation) -> dict[str, object]:
    """Server AutoDrop's ``window`` counted in rounds: one expected pass over the population,
    ``ceil(num_clients / clients_per_round)``, capped at a quarter of the run (at least 2), so
    a run of a few dozen rounds closes windows (the client default of 50 steps would not)."""
    quarter = (federation.num_rounds // 4 or 2) if federation.num_rounds else 2
    if federation.num_clients and federation.clients_per_round:
        per_pass = math.ceil(federation.num_clients / federation.clients_per_round)
    else:
        per_pass = quarter  # unknown population (deployment): a quarter of the run
    return {"window": max(2, min(per_pass, quarter))}


_REGISTRY: dict[str, Callable[..., Optimizer]] = {}
_SPECS: dict[str, MethodSpec] = {}


def register_optimizer(
    name: str, factory: Callable[..., Optimizer], spec: MethodSpec | None = None
) -> None:
    """Register ``factory(params, **hparams) -> Optimizer`` under ``name`` with what the
    method needs (``spec``, default: nothing)."""
    _REGISTRY[name] = factory
    _SPECS[name] = spec if spec is not None else MethodSpec()


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` registered with ``name``; unknown names raise ``ValueError``."""
    if name not in _SPECS:
        raise ValueError(f"unknown optimizer {name!r}; accepted: {available_optimizers()}")
    return _SPECS[name]


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
    return list(_accepted_names(factory))


@functools.cache
def _accepted_names(factory: Callable[..., Optimizer]) -> tuple[str, ...]:
    # once per factory: inspect.signature costs ~0.1 ms, paid by every client of every round
    sig = inspect.signature(factory)
    return tuple(n for n, p in sig.parameters.items() if n != "params" and p.kind is not p.VAR_KEYWORD)


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
