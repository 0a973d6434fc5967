"""The options every fedadapt strategy shares, as one typed, validated object.

``FedAdapt(...)``, the presets and the ``Sampled*`` Flower strategies take these as keyword
arguments (or as ``options=StrategyOptions(...)``); :func:`split_options` separates them from
the strategy's own and Flower's arguments. Validation happens once, here, before any worker
starts: a bad value raises ``ValueError`` naming the key and what is accepted.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import records as R
from . import sampling

CLIENT_LR_STATES = ("reset", "persist", "server")
# Waiting for nodes: Ray's virtual SuperNodes register within seconds; SuperNodes of a
# deployment are started by hand or by an orchestrator and may take minutes.
SIMULATION_WAIT_S = 120.0
DEPLOYMENT_WAIT_S = 600.0

RoundCallback = Callable[[dict[str, object]], None]
ConfigValue = (
    int
    | float
    | str
    | bool
    | bytes
    | list[int]
    | list[float]
    | list[str]
    | list[bool]
    | list[bytes]
)


def check_optimizer_name(name: str, what: str, side: str) -> None:
    """``name`` is a fedadapt method that runs on ``side`` (its spec), or ``ValueError``
    naming ``what`` and the methods accepted there."""
    import fedadapt

    accepted = fedadapt.methods_for(side)
    if name not in fedadapt.available_optimizers():
        raise ValueError(f"{what}={name!r} is not a fedadapt optimizer; accepted: {accepted}")
    fedadapt.check_side(name, side, what)


@dataclass(frozen=True)
class StrategyOptions:
    """Options shared by every fedadapt strategy (see :class:`strategies.FedAdapt` for each).

    ``num_clients=None`` is deployment mode (each SuperNode is one client, client id = node
    id); otherwise a population of ``num_clients`` ids is sampled (``clients_per_round``) and
    split over ``num_workers`` worker nodes. ``worker_wait_timeout=None`` waits
    ``SIMULATION_WAIT_S`` (120 s) for workers in simulation and ``DEPLOYMENT_WAIT_S`` (600 s)
    for SuperNodes in a deployment.
    """

    # None: the strategy's own default (``Orchestration.default_client``): fedadapt's default
    # client configuration for ``FedAdapt``, ``sgd`` / ``reset`` for Flower's strategies and
    # the presets that reproduce a published method
    client_optimizer: str | None = None
    client_options: Mapping[str, object] = field(default_factory=dict)
    client_lr_state: str | None = None
    client_lr_on_change: str = "keep"
    num_clients: int | None = None
    clients_per_round: int | None = None
    evaluate_clients_per_round: int | None = None
    num_workers: int | None = None
    seed: int = 0
    availability: sampling.Availability = 1.0
    reply_mode: str = "mean"
    checkpoint_dir: str | os.PathLike[str] | None = None
    checkpoint_every: int = 0
    on_round_end: RoundCallback | None = None
    extra_train_config: Callable[[int], Mapping[str, ConfigValue]] | None = None
    buffer_keys: frozenset[str] = frozenset()
    worker_wait_timeout: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once
        set_(self, "client_options", dict(self.client_options or {}))
        set_(self, "buffer_keys", frozenset(self.buffer_keys))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        if self.client_optimizer is not None:
            check_optimizer_name(self.client_optimizer, "client_optimizer", "client")
        from .client_state import CLIENT_LR_ON_CHANGE

        if self.client_lr_on_change not in CLIENT_LR_ON_CHANGE:
            raise ValueError(
                f"client_lr_on_change must be one of {list(CLIENT_LR_ON_CHANGE)}, "
                f"got {self.client_lr_on_change!r}"
            )
        if self.client_lr_state is not None and self.client_lr_state not in CLIENT_LR_STATES:
            raise ValueError(
                f"client_lr_state must be one of {list(CLIENT_LR_STATES)}, got {self.client_lr_state!r}"
            )
        if self.reply_mode not in R.REPLY_MODES:
            raise ValueError(
                f"reply_mode must be one of {list(R.REPLY_MODES)}, got {self.reply_mode!r}"
            )
        n, k = self.num_clients, self.clients_per_round
        if n is not None and n < 1:
            raise ValueError(f"num_clients must be >= 1 or None (deployment mode), got {n}")
        if k is not None and k < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {k}")
        if n is not None and k is None:
            raise ValueError("simulation mode (num_clients set) needs clients_per_round")
        if n is not None and k is not None and k > n:
            raise ValueError(f"clients_per_round={k} exceeds num_clients={n}")
        if self.num_workers is not None and self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if not callable(self.availability) and not 0.0 < float(self.availability) <= 1.0:
            raise ValueError(
                f"availability must be in (0, 1] or a callable, got {self.availability}"
            )
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.checkpoint_every and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every > 0 needs checkpoint_dir")
        if self.worker_wait_timeout is not None and not float(self.worker_wait_timeout) > 0:
            raise ValueError(
                f"worker_wait_timeout must be > 0 seconds or None, got {self.worker_wait_timeout}"
            )
        try:
            opts = json.loads(json.dumps(dict(self.client_options), sort_keys=True))
        except TypeError as exc:
            raise ValueError(f"client_options must be JSON-serializable: {exc}") from exc
        import fedadapt

        # bad local hyperparameters fail here, not on every client of every round
        if self.client_optimizer is not None:
            fedadapt.build_optimizer(
                self.client_optimizer, [torch.nn.Parameter(torch.zeros(1))], **opts
            )

    def with_client_defaults(self, optimizer: str, lr_state: str) -> StrategyOptions:
        """These options with an unset ``client_optimizer`` / ``client_lr_state`` filled in."""
        changes = {}
        if self.client_optimizer is None:
            changes["client_optimizer"] = optimizer
        if self.client_lr_state is None:
            changes["client_lr_state"] = lr_state
        return self.replace(**changes) if changes else self

    # ------------------------------------------------------------------ derived
    @property
    def simulation_mode(self) -> bool:
        return self.num_clients is not None

    @property
    def wait_timeout(self) -> float:
        if self.worker_wait_timeout is not None:
            return float(self.worker_wait_timeout)
        return SIMULATION_WAIT_S if self.simulation_mode else DEPLOYMENT_WAIT_S

    @property
    def checkpoint_path(self) -> Path | None:
        return Path(self.checkpoint_dir) if self.checkpoint_dir is not None else None

    def client_options_json(self) -> str:
        return json.dumps(dict(self.client_options), sort_keys=True)

    def replace(self, **changes: object) -> StrategyOptions:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(StrategyOptions))


def split_options(
    options: StrategyOptions | None, kwargs: Mapping[str, object]
) -> tuple[StrategyOptions, dict[str, object]]:
    """``(options, rest)``: the shared options (from ``options`` and/or keyword arguments; a
    keyword overrides the same field of ``options``) and everything else (Flower's arguments)."""
    mine = {k: v for k, v in kwargs.items() if k in OPTION_NAMES}
    rest = {k: v for k, v in kwargs.items() if k not in OPTION_NAMES}
    if options is None:
        opts = StrategyOptions(**mine)  # type: ignore[arg-type]
    else:
        opts = options.replace(**mine) if mine else options
    return opts, rest


def init_flower(init: Callable[..., None], strategy: object, kwargs: Mapping[str, object]) -> None:
    """Call a Flower strategy's ``__init__`` with the remaining keywords; an unknown keyword
    raises ``ValueError`` naming it and what is accepted (not a bare ``TypeError``)."""
    import inspect

    accepted = [n for n in inspect.signature(init).parameters if n != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown strategy arguments {unknown}; accepted: the shared options "
            f"{sorted(OPTION_NAMES)} and {getattr(init, '__qualname__', 'Flower')}'s {accepted}"
        )
    init(strategy, **kwargs)


__all__ = [
    "CLIENT_LR_STATES",
    "ConfigValue",
    "DEPLOYMENT_WAIT_S",
    "OPTION_NAMES",
    "RoundCallback",
    "SIMULATION_WAIT_S",
    "StrategyOptions",
    "check_optimizer_name",
    "init_flower",
    "split_options",
]
