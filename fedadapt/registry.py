"""Registry of optimizers by name: ``build_optimizer``, ``available_optimizers``, ``step_size_stats``,
and each method's :class:`MethodSpec` (what it needs from the federation), read with
:func:`method_spec`.

The spec is the one place that says what a method needs besides its own hyperparameters: the
per-client signals the server step requires or can use, whether a client-side method needs the
previous global update, and server-side defaults that depend on the federation's shape. Callers
(Flower strategies, applications) read the spec; they never test a method's name.
"""

from __future__ import annotations

import dataclasses
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
    "DEFAULT_CLIENT_LR_STATE",
    "DEFAULT_CLIENT_METHOD",
    "DEFAULT_SERVER_METHOD",
    "SIDES",
    "available_optimizers",
    "build_optimizer",
    "check_side",
    "method_spec",
    "methods_for",
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


SIDES = ("client", "server", "both")
# fedadapt's default server method: what ``strategy = "fedadapt"`` and ``FedAdapt()`` run when
# no server method is named (docs/DRIFT.md)
DEFAULT_SERVER_METHOD = "cp-adam"
# fedadapt's default client configuration: the local method and how its adapted step size is
# carried across rounds. The client-method study (RESULTS.md §8) found no client configuration
# that wins: its held-in winner (hd, carried by the server) diverged with many local steps, so
# local SGD stays.
DEFAULT_CLIENT_METHOD = "sgd"
DEFAULT_CLIENT_LR_STATE = "reset"


@dataclass(frozen=True)
class MethodSpec:
    """Everything a fedadapt method declares besides its own hyperparameters: where it runs,
    its default step sizes, the bounds of a carried step size, what it needs from the
    federation and what it asks of the clients. Every entry point (``build_optimizer``,
    ``ServerOptimizer``, the strategies, the CLI, the docs) reads these; none tests a name.

    Attributes:
        side: where the method runs: ``"client"`` (a local optimizer only; none of the
            built-in methods: FedHyper-CL's server form is the same rule over the
            pseudo-gradient), ``"server"`` (a rule over the
            aggregated pseudo-gradient only: FedExP, cp-adam, Flash, Adaptive-FedAvg, the
            FedHyper server rules) or ``"both"``. :func:`build_optimizer` (the client's
            builder) refuses a server-only method; ``ServerOptimizer`` a client-only one.
        server_lr: the server step size when a run names none (``None``: the method has no
            step size to set, e.g. Adaptive-FedAvg, whose server step is FedAvg's). 1.0 is
            FedAvg's unit: server ``sgd`` at 1.0 is FedAvg and the scalar rules start there.
        client_lr: the client step size when a run names none; ``None`` at registration means
            the factory's own ``lr`` default (filled in by :func:`register_optimizer`).
        carried_lr_bounds: ``(low, high)`` multiples of the *configured* client lr within which
            a client step size carried across rounds (``client-lr-state`` ``persist`` or
            ``server``) is kept; ``None`` = the method does not adapt its scalar step size, so
            there is nothing to carry. The bounds are the method's own lr bounds (e.g. HD's
            ``[1e-3, 1e3] x lr``), anchored to the configured lr, not to last round's carried
            value, so rounds cannot walk a step size out of them.
        uses_change_detector: the server method acts on a detected change (a
            :class:`fedadapt.ChangeDetector` is on by default).
        client_hints: fixed hints the server method sends every client (e.g. Flash's
            ``early-stop-gamma``); a method computing hints per round defines
            ``client_hints()`` on its optimizer instead.
        per_client_values: the server step needs values of single clients (per-client norms,
            per-coordinate conformity, per-client losses for the detector), not only sums over
            the cohort; ``False`` is what secure aggregation leaves a server.
        signals: per-client signals the server step cannot run without (names from
            :data:`KNOWN_SIGNALS`), e.g. FedExP's ``client_sq_norms_mean`` and ``num_clients``.
        optional_signals: signals the server step uses when given (server ``cprop``'s
            conformity across clients); a strategy requests them too, so a method that can use
            a statistic never silently falls back.
        needs_global_update: as a *client* method, needs x_t - x_{t-1} (FedHyper-CL).
        defaults: ``Federation -> dict`` of server-side hyperparameter defaults that depend on
            the federation (read through :meth:`server_defaults`); explicit options win.
    """

    side: str = "both"
    server_lr: float | None = 1.0
    client_lr: float | None = None
    carried_lr_bounds: tuple[float, float] | None = None
    uses_change_detector: bool = False
    client_hints: Mapping[str, float] = field(default_factory=dict)
    per_client_values: bool = False
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
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {list(SIDES)}, got {self.side!r}")
        for what, lr in (("server_lr", self.server_lr), ("client_lr", self.client_lr)):
            if lr is not None and not (math.isfinite(lr) and lr > 0):
                raise ValueError(f"{what} must be a finite number > 0 or None, got {lr!r}")
        b = self.carried_lr_bounds
        if b is not None and not (len(b) == 2 and 0 < b[0] <= 1.0 <= b[1] < math.inf):
            raise ValueError(
                f"carried_lr_bounds must be (low, high) with 0 < low <= 1 <= high < inf, got {b!r}"
            )
        if self.signals or self.optional_signals:
            object.__setattr__(self, "per_client_values", True)  # signals are per-client

    @property
    def on_client(self) -> bool:
        """The method can be a client's local optimizer."""
        return self.side in ("client", "both")

    @property
    def on_server(self) -> bool:
        """The method can be the server's step."""
        return self.side in ("server", "both")

    @property
    def wanted_signals(self) -> tuple[str, ...]:
        """Required then optional signals, without repeats: what a strategy must request."""
        return tuple(dict.fromkeys(self.signals + self.optional_signals))

    def server_defaults(self, federation: Federation) -> dict[str, object]:
        """Server-side hyperparameter defaults for this federation (explicit options win)."""
        return dict(self.defaults(federation))

    def clamp_carried_lr(self, lr: float, configured: float) -> float:
        """``lr`` held within :attr:`carried_lr_bounds` times the configured lr."""
        if self.carried_lr_bounds is None:
            return float(configured)
        lo, hi = self.carried_lr_bounds
        return float(min(max(lr, lo * configured), hi * configured))


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
    """Register ``factory(params, **hparams) -> Optimizer`` under ``name`` with its
    :class:`MethodSpec` (default: runs on both sides, needs nothing). A spec without a
    ``client_lr`` takes the factory's own ``lr`` default."""
    spec = spec if spec is not None else MethodSpec()
    # the spec is what every entry point reads: a class's own signal declarations must be in it
    for attr, field_name, listed in (
        ("required_signals", "signals", spec.signals),
        ("optional_signals", "optional_signals", spec.optional_signals),
    ):
        own = tuple(getattr(factory, attr, ()) or ())
        if not set(own) <= set(listed):
            raise ValueError(
                f"register_optimizer({name!r}): the class declares {attr} {list(own)}; "
                f"its MethodSpec must list them in {field_name} (has {list(listed)})"
            )
    if spec.client_lr is None and spec.on_client:
        lr = inspect.signature(factory).parameters.get("lr")
        if lr is not None and isinstance(lr.default, int | float) and lr.default > 0:
            spec = dataclasses.replace(spec, client_lr=float(lr.default))
    _REGISTRY[name] = factory
    _SPECS[name] = spec


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` registered with ``name``; unknown names raise ``ValueError``."""
    if name not in _SPECS:
        raise ValueError(f"unknown optimizer {name!r}; accepted: {available_optimizers()}")
    return _SPECS[name]


def methods_for(side: str) -> list[str]:
    """Registered names that run on ``side`` (``"client"`` or ``"server"``), sorted."""
    if side not in ("client", "server"):
        raise ValueError(f"side must be 'client' or 'server', got {side!r}")
    return sorted(n for n, sp in _SPECS.items() if sp.side in (side, "both"))


def check_side(name: str, side: str, what: str | None = None) -> None:
    """Raise ``ValueError`` when method ``name`` does not run on ``side``, naming the methods
    that do (``what``: the setting that named it, e.g. ``client-optimizer``)."""
    spec = method_spec(name)
    if spec.side not in (side, "both"):
        where = f"{what}={name!r}: " if what else ""
        raise ValueError(
            f"{where}{name!r} runs only on the {spec.side} (its MethodSpec side) and cannot be "
            f"a {side} optimizer; {side} methods: {methods_for(side)}"
        )


def _torch_sgd(
    params: Iterable,
    lr: float = 0.01,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> Optimizer:
    """torch's own SGD (foreach)."""
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        foreach=True,
    )


def _torch_adam(
    params: Iterable,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> Optimizer:
    """torch's own Adam (foreach)."""
    return torch.optim.Adam(
        params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=True
    )


def _accepted(factory: Callable[..., Optimizer]) -> list[str]:
    return list(_accepted_names(factory))


@functools.cache
def _accepted_names(factory: Callable[..., Optimizer]) -> tuple[str, ...]:
    # once per factory: inspect.signature costs ~0.1 ms, paid by every client of every round
    sig = inspect.signature(factory)
    return tuple(
        n for n, p in sig.parameters.items() if n != "params" and p.kind is not p.VAR_KEYWORD
    )


def available_optimizers() -> list[str]:
    """Names accepted by :func:`build_optimizer`, sorted."""
    return sorted(_REGISTRY)


def build_optimizer(
    name: str, params: Iterable, *, side: str = "client", **hparams: object
) -> Optimizer:
    """Build the optimizer registered as ``name`` over ``params``.

    ``side`` is where it will run: ``"client"`` (default: a local optimizer; a server-only
    method such as ``cp-adam`` or ``fedexp`` is refused) or ``"server"`` (what
    :class:`fedadapt.ServerOptimizer` asks for; a client-only method is refused). Unknown names
    and unknown or invalid hyperparameters raise ``ValueError`` naming the accepted values.

    Example:

        >>> opt = fedadapt.build_optimizer("hd", model.parameters(), lr=0.01, hyper_lr=1e-3)
        >>> type(opt).__name__
        'HypergradientDescent'
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; accepted: {available_optimizers()}")
    check_side(name, side)
    factory = _REGISTRY[name]
    accepted = _accepted(factory)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"optimizer {name!r} got unknown hyperparameters {unknown}; accepted: {accepted}"
        )
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
# torch's Adam as a *server* method steps the pseudo-gradient as FedAdam does: its server lr is
# FedAdam's eta, 0.1 (Flower's FedAdam; Reddi et al., "Adaptive Federated Optimization", ICLR 2021,
# arXiv:2003.00295). At lr 1 Adam's first step moves every coordinate by about 1 (the adoption
# probe, RESULTS.md §11: central loss 1.6 -> 16 in round 1). On a client it keeps torch's 1e-3.
register_optimizer("adam", _torch_adam, MethodSpec(server_lr=0.1))
