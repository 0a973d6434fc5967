"""The argument mapping: an application's strategy settings -> a strategy's constructor arguments.

An application (the simulations' run config, a script) states its settings once, independent
of the strategy (:class:`StrategySettings`: ``server_lr``, ``client_lr``, the population...).
Each registered strategy declares which of them it takes and where (:class:`StrategySpec`):
FedAdapt and its presets keep the server lr in ``server_options["lr"]``, Flower's FedAvgM in
``server_learning_rate``, FedOpt in ``eta`` (and the client lr in ``eta_l``), FedProx its
``proximal_mu``. :func:`spec_arguments` reads the spec (and the server method's
``fedadapt.MethodSpec``: its default lr, its federation-dependent defaults); nothing here tests
a strategy's name. ``strategies.strategy_arguments(name, settings)`` looks the spec up by name.

Example (Flower's FedAdam: the server lr is its ``eta``, the client lr its ``eta_l`` and the
start of the clients' own lr):

>>> from strategies import strategy_arguments
>>> settings = StrategySettings(server_lr=0.3, client_lr=0.2, num_clients=20, clients_per_round=5)
>>> kw = strategy_arguments("fedadam", settings)
>>> kw["eta"], kw["eta_l"], kw["client_options"]
(0.3, 0.2, {'lr': 0.2})

FedAdapt with fedadapt's ``cp-adam`` and no server lr: the method's own default lr.

>>> strategy_arguments("fedadapt", StrategySettings(server_optimizer="cp-adam"))["server_options"]
{'lr': 0.1}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import fedadapt

from .orchestration import Orchestration

__all__ = ["StrategySettings", "StrategySpec", "spec_arguments"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StrategySpec:
    """What a registered strategy is and which settings it takes (read by
    :func:`spec_arguments`; nothing tests a strategy's name).

    Attributes:
        factory: builds the strategy from keyword arguments.
        preset: the FedAdapt arguments a preset fixes (FedHyper's variants, FedExP); a fixed
            ``client_optimizer`` / ``client_lr_state`` is then not taken from the settings.
        fedadapt_server: the server step is a fedadapt method (``server_optimizer`` /
            ``server_options``; the method's spec supplies federation-dependent defaults).
        server_lr_option: the server lr is ``server_options["lr"]``.
        server_lr_fallback: an unset server lr is filled in from
            ``fedadapt.default_server_lr(method)``; ``False``: left to the strategy's own
            default (the Flash, Adaptive-FedAvg and oracle FedAdam presets).
        needs_change_rounds: the strategy takes the drift schedule's ``change_rounds`` (an
            oracle for studies).
        flower_defaults: the value a Flower argument takes when its settings field is unset
            (otherwise it is left out: Flower's own default).
        flower_arguments: Flower constructor argument -> :class:`StrategySettings` field
            (FedAvgM's ``server_learning_rate``, FedOpt's ``eta`` and ``eta_l``, FedProx's
            ``proximal_mu``).
        default_client: the client method and lr state the strategy runs when the settings
            name none.
    """

    factory: Callable[..., Orchestration]
    preset: Mapping[str, object] = field(default_factory=dict)
    fedadapt_server: bool = False
    server_lr_option: bool = False
    flower_arguments: Mapping[str, str] = field(default_factory=dict)
    server_lr_fallback: bool = True
    needs_change_rounds: bool = False
    flower_defaults: Mapping[str, float] = field(default_factory=dict)
    default_client: tuple[str, str] = Orchestration.default_client

    @property
    def takes_server_optimizer(self) -> bool:
        """The strategy steps with a fedadapt server method the caller chooses
        (``server_optimizer``): FedAdapt itself, not a preset that fixes one."""
        return self.fedadapt_server and "server_optimizer" not in self.preset

    @property
    def server_method(self) -> str | None:
        """The fedadapt server method a preset fixes (``None``: the settings choose)."""
        m = self.preset.get("server_optimizer")
        return str(m) if m is not None else None

    @property
    def has_server_lr(self) -> bool:
        return self.server_lr_option or "server_lr" in self.flower_arguments.values()

    @property
    def fixed(self) -> frozenset[str]:
        """Constructor arguments the preset fixes."""
        return frozenset(self.preset)


@dataclass(frozen=True)
class StrategySettings:
    """An application's strategy settings, independent of the strategy chosen.

    ``server_lr`` is the server step size in each strategy's own terms (``server_options
    ["lr"]``, ``server_learning_rate``, ``eta``; a warning when set != 1 for a strategy without
    one); ``None`` (the default) means the method's own default (``fedadapt.default_server_lr``
    for a fedadapt server method, Flower's defaults for its strategies); ``client_lr`` is the
    start of the local lr (``client_options["lr"]`` unless given there, and FedOpt's ``eta_l``).
    ``num_workers`` is the number of worker nodes in simulation; ``deployment=True`` means each
    SuperNode is a client (no population, no workers).
    """

    server_optimizer: str = "sgd"
    server_options: Mapping[str, object] = field(default_factory=dict)
    server_lr: float | None = None
    server_momentum: float = 0.9
    client_optimizer: str | None = None  # None: the strategy's own default (default_client)
    client_options: Mapping[str, object] = field(default_factory=dict)
    client_lr: float = 0.01
    client_lr_state: str | None = None
    client_lr_on_change: str = "keep"
    proximal_mu: float = 0.01
    num_clients: int | None = None
    clients_per_round: int | None = None
    num_workers: int | None = None
    num_rounds: int | None = None
    seed: int = 0
    availability: float = 1.0
    worker_wait_timeout: float | None = None
    deployment: bool = False
    change_rounds: tuple[int, ...] = ()  # the drift schedule's changepoints (oracle presets)
    reply_mode: str = "mean"
    # the server pipeline's stages (FedAdapt's aggregator, clipping, privacy, weight_cap,
    # reply_limits, sums_only); a Flower strategy accepts none but the defaults
    pipeline: Mapping[str, object] = field(default_factory=dict)


def spec_arguments(spec: StrategySpec, settings: StrategySettings, name: str) -> dict[str, object]:
    """The constructor arguments of the strategy ``spec`` describes (registered as ``name``,
    which messages name) for ``settings``, driven by the spec and its server method's
    ``fedadapt.MethodSpec`` (server defaults from the federation's shape, e.g. server AutoDrop's
    window of one pass over the population). Application arguments (``fraction_evaluate``,
    ``on_round_end``, checkpoints...) are added by the caller."""
    client_options = dict(settings.client_options)
    client_options.setdefault("lr", float(settings.client_lr))
    kwargs: dict[str, object] = {
        "client_optimizer": settings.client_optimizer,
        "client_options": client_options,
        "client_lr_state": settings.client_lr_state,
        "client_lr_on_change": settings.client_lr_on_change,
        "num_clients": None if settings.deployment else settings.num_clients,
        "clients_per_round": settings.clients_per_round,
        "num_workers": None if settings.deployment else settings.num_workers,
        "seed": int(settings.seed),
        "availability": float(settings.availability),
        "worker_wait_timeout": settings.worker_wait_timeout,
        "reply_mode": settings.reply_mode,
    }
    if settings.pipeline and spec.fedadapt_server:
        kwargs.update(settings.pipeline)
    elif settings.pipeline:
        raise ValueError(
            f"strategy {name!r} is Flower's own and has no server pipeline; the settings "
            f"{sorted(settings.pipeline)} need a fedadapt strategy (e.g. 'fedadapt' with "
            "server-optimizer 'adam' or 'cp-adam')"
        )
    for key in spec.fixed & {"client_optimizer", "client_lr_state"}:
        kwargs.pop(key)  # the preset's local method
    given = None if settings.server_lr is None else float(settings.server_lr)
    takes_lr = False
    if spec.fedadapt_server:
        method = spec.server_method or settings.server_optimizer
        if spec.server_method is None:
            kwargs["server_optimizer"] = method
        method_lr = fedadapt.default_server_lr(method)  # None: the method has no step size
        takes_lr = spec.server_lr_option and method_lr is not None
        lr = given if takes_lr else None
        if lr is None and takes_lr and spec.server_lr_fallback:
            lr = method_lr
        federation = fedadapt.Federation(
            settings.num_clients, settings.clients_per_round, settings.num_rounds
        )
        defaults = fedadapt.method_spec(method).server_defaults(federation)
        kwargs["server_options"] = {
            **({"lr": lr} if lr is not None else {}),
            **defaults,
            **dict(settings.server_options),
        }
    for argument, source in spec.flower_arguments.items():
        value = getattr(settings, source)
        if value is None:
            value = spec.flower_defaults.get(argument)
        if value is not None:  # else unset: Flower's own default
            kwargs[argument] = float(value)
    if spec.needs_change_rounds:
        kwargs["change_rounds"] = [int(r) for r in settings.change_rounds]
    has_lr = spec.has_server_lr and (not spec.fedadapt_server or takes_lr)
    if given is not None and not has_lr and not math.isclose(given, 1.0):
        log.warning(
            "server-lr=%g is not used by strategy %r (it has no server step size)", given, name
        )
    return kwargs
