"""Presets (FedHyper, FedExP), Flower's strategies with fedadapt's sampling, and one registry.

``build_strategy(name, **kwargs)`` reaches every strategy by name; ``available_strategies()``
lists the names. Flower's FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad and FedProx are wrapped
by :class:`FlowerSampling`: fedadapt's cohort sampling, messages and reply validation, then
Flower's own aggregation on replies stripped to exactly one ``ArrayRecord`` and one
``MetricRecord`` (``num-examples``, ``train-loss``), with the result cast back to the model's
dtypes (Flower's FedAdam returns float64 for a float32 model).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi

import fedadapt

from . import records as R
from .checkpoint import check_moments
from .fedadapt_strategy import FedAdapt
from .options import StrategyOptions, init_flower, split_options
from .orchestration import Orchestration

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- presets

# What each FedHyper variant fixes; every FedAdapt argument may still be given and overrides it.
FEDHYPER_PRESETS: dict[str, Mapping[str, object]] = {
    "G": {"server_optimizer": "fedhyper-g", "server_options": {"lr": 1.0}},
    "GM": {"server_optimizer": "fedhyper-gm", "server_options": {"lr": 1.0}},
    "SL": {
        "server_optimizer": "sgd",
        "server_options": {"lr": 1.0},
        "client_optimizer": "hd",
        "client_lr_state": "server",
    },
    "CL": {
        "server_optimizer": "sgd",
        "server_options": {"lr": 1.0},
        "client_optimizer": "fedhyper-cl",
    },
    "FULL": {
        "server_optimizer": "fedhyper-gm",
        "server_options": {"lr": 1.0},
        "client_optimizer": "fedhyper-cl",
    },
}
FEDHYPER_VARIANTS = tuple(FEDHYPER_PRESETS)
FEDEXP_PRESET: Mapping[str, object] = {"server_optimizer": "fedexp", "server_options": {}}


class FedHyper(FedAdapt):
    """FedHyper (Wang, Wang, Li, ICLR 2024, arXiv:2310.03156) as a FedAdapt configuration.

    ============  ======================================  ===================================
    variant       server step                             client side
    ============  ======================================  ===================================
    ``"G"``       ``fedhyper-g`` (global lr by HD)         ``client_optimizer`` (default sgd)
    ``"GM"``      ``fedhyper-gm`` (G with momentum)        same
    ``"SL"``      ``sgd`` lr 1 (FedAvg)                    ``hd`` locally, ``client_lr_state=
                                                           "server"``: the mean final local lr
                                                           is broadcast next round
    ``"CL"``      ``sgd`` lr 1 (FedAvg)                    ``fedhyper-cl`` per local step
    ``"FULL"``    ``fedhyper-gm``                          ``fedhyper-cl``
    ============  ======================================  ===================================

    Every FedAdapt argument may still be given and overrides the preset. Deviation: the
    paper's SL computes the local lr on the server from the global hypergradient; here the
    clients adapt their lr with HD and the server broadcasts their example-weighted mean
    (``client_lr_state="server"``), which needs no step-size math in the strategy. The
    released code's SL is a no-op (arXiv:2310.03156; docs/METHODS.md §9, FedHyper).
    """

    # the published method trains its clients with plain SGD unless its variant fixes more
    default_client = ("sgd", "reset")

    def __init__(self, variant: str = "G", **kwargs: object) -> None:
        v = str(variant).upper()
        if v not in FEDHYPER_PRESETS:
            raise ValueError(
                f"FedHyper variant must be one of {list(FEDHYPER_VARIANTS)}, got {variant!r}"
            )
        self.variant = v
        super().__init__(**{**FEDHYPER_PRESETS[v], **kwargs})  # type: ignore[arg-type]

    def identity(self) -> dict[str, object]:
        return {**super().identity(), "variant": self.variant}


class FedExP(FedAdapt):
    """FedExP (Jhunjhunwala, Wang, Joshi, ICLR 2023, arXiv:2301.09604): the server lr is the
    extrapolation ``max(1, mean ||Delta_i||^2 / (2 (||mean Delta||^2 + eps)))``, computed by
    fedadapt's ``fedexp`` from the clients' squared update norms (signal
    ``client_sq_norms_mean`` and ``num_clients``, which its method spec requires). With
    fedadapt's client calls the replies carry them; with a standard Flower ClientApp in a
    deployment the server computes them from each reply's model. ``server_options`` go to
    ``fedexp`` (e.g. ``{"eps": 1e-3}``)."""

    default_client = ("sgd", "reset")  # FedExP's clients run local SGD

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**{**FEDEXP_PRESET, **kwargs})  # type: ignore[arg-type]


class Flash(FedAdapt):
    """Flash (Panchal et al., "Flash: Concept Drift Adaptation in Federated Learning", ICML 2023)
    as a FedAdapt configuration: the server step is fedadapt's ``flash`` (drift-aware adaptive
    step, guarded denominator, docs/DRIFT.md); its clients stop local training early on a local
    validation split (the ``early-stop-gamma`` hint the method declares)."""

    preset_server_optimizer = "flash"
    default_client = ("sgd", "reset")  # Flash's clients run local SGD (with early stopping)

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("server_optimizer", "flash")
        kwargs.setdefault("server_options", {})
        super().__init__(**kwargs)  # type: ignore[arg-type]


class AdaptiveFedAvg(FedAdapt):
    """Adaptive-FedAvg (Canonaco et al., "Adaptive Federated Learning in Presence of Concept
    Drift", IJCNN 2021) as a FedAdapt configuration: FedAvg on the server whose parameter-
    variance ratio schedules the clients' lr (fedadapt's ``adaptive-fedavg`` declares the
    ``lr-scale`` hint, which the client calls apply)."""

    preset_server_optimizer = "adaptive-fedavg"
    default_client = ("sgd", "reset")  # its server schedules the clients' SGD lr

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("server_optimizer", "adaptive-fedavg")
        kwargs.setdefault("server_options", {})
        super().__init__(**kwargs)  # type: ignore[arg-type]


class OracleResetFedAdam(FedAdapt):
    """FedAdam whose state is reset at the *known* changepoint rounds: an oracle for studies
    only, the ceiling for fedadapt's change detector.

    The server step is ``cp-adam`` (FedAdam, Reddi et al., ICLR 2021, arXiv:2003.00295: eta
    0.1, betas (0.9, 0.99), with cp-adam's scale-free floor) with its detector replaced by the
    known rounds: at each one the same reaction as the default method (the first moment
    restarts, 3x local work for 5 rounds; ``server_options={"reset": "all"}`` restarts both
    moments). ``change_rounds`` are the rounds whose data are the first of a new concept; the
    simulation passes its drift schedule's changepoints (``needs_change_rounds``). Its
    clients run fedadapt's default client configuration, like ``FedAdapt``'s: it is the
    ceiling of the default method."""

    needs_change_rounds = True
    preset_server_optimizer = "cp-adam"

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("server_optimizer", "cp-adam")
        kwargs["server_options"] = dict(kwargs.get("server_options") or {})  # type: ignore[call-overload]
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def identity(self) -> dict[str, object]:
        return {**super().identity(), "change-rounds": list(self.change_rounds)}


# ------------------------------------------------------------------- Flower's own strategies


class _ProbeGrid:
    """A grid with exactly enough fake nodes for Flower's own ``configure_train`` to run for
    its side effects (FedOpt keeps the current arrays, FedProx adds ``proximal-mu``)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))


class FlowerSampling(Orchestration):
    """Mixin for a Flower strategy: fedadapt's sampling, messages and validation; Flower's
    aggregation. Use through the ``Sampled*`` classes or :func:`build_strategy`."""

    _flower: type[FedAvg] = FedAvg

    def __init__(self, *, options: StrategyOptions | None = None, **kwargs: object) -> None:
        opts, flower_kwargs = split_options(options, kwargs)
        init_flower(self._flower.__init__, self, flower_kwargs)
        self._init_orchestration(opts)

    def summary(self) -> None:
        flwr_log(
            INFO,
            "\t└──> %s with fedadapt sampling (population %s, %s per round)",
            self._flower.__name__,
            self.num_clients,
            self.clients_per_round,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        probe = _ProbeGrid(max(self.min_available_nodes, self.min_train_nodes, 1))  # type: ignore[attr-defined]
        flwr_log = logging.getLogger("flwr")
        level = flwr_log.level
        flwr_log.setLevel(logging.WARNING)  # its "Sampled 2 nodes" line would be about the probe
        try:
            theirs = list(self._flower.configure_train(self, server_round, arrays, config, probe))  # type: ignore[arg-type]
        finally:
            flwr_log.setLevel(level)
        if not theirs:
            return []
        cfg = theirs[0].content.config_records[self.configrecord_key]  # type: ignore[attr-defined]
        return self._train_messages(server_round, arrays, cfg, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        t0 = time.perf_counter()
        checked, failures = self._check_replies(server_round, replies)
        if not checked:
            info = self._round_info(server_round, [], failures, {}, time.perf_counter() - t0)
            self._finish_round(server_round, info, None)
            return None, self._metric_record(info)
        stripped = []
        for c in checked:
            assert c.message is not None
            met = MetricRecord({self.weighted_by_key: int(c.num_examples)})  # type: ignore[attr-defined]
            content = RecordDict(
                {self.arrayrecord_key: c.message.content[R.ARRAYS], R.METRICS: met}
            )  # type: ignore[attr-defined]
            stripped.append(Message(content=content, metadata=c.message.metadata))  # type: ignore[call-overload]
        arrays, _ = self._flower.aggregate_train(self, server_round, stripped)  # type: ignore[arg-type]
        if arrays is not None:
            arrays = self._cast_to_model(arrays)
            if isinstance(getattr(self, "current_arrays", None), ArrayRecord):
                self.current_arrays = arrays  # FedAvgM keeps the record it returned
        self._update_client_state(checked)
        info = self._round_info(server_round, checked, failures, {}, time.perf_counter() - t0)
        self._finish_round(server_round, info, arrays)
        return arrays, self._metric_record(info)

    def _cast_to_model(self, arrays: ArrayRecord) -> ArrayRecord:
        assert self._layout is not None
        out = {}
        for k, (dtype, _) in self._layout.items():
            a = arrays[k]
            if str(a.dtype) == dtype:
                out[k] = a
                continue
            x = a.numpy()
            if not np.issubdtype(np.dtype(dtype), np.floating):
                x = np.rint(x)
            out[k] = Array(np.ascontiguousarray(x.astype(dtype)))
        return ArrayRecord(out)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._evaluate_messages(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self._aggregate_evaluate_checked(server_round, replies)

    # checkpoints: Flower's moment arrays as tensors
    def identity(self) -> dict[str, object]:
        return {**super().identity(), "flower-strategy": self._flower.__name__}

    def server_state(self) -> dict[str, object]:
        state: dict[str, object] = {}
        for name in ("m_t", "v_t"):
            v = getattr(self, name, None)
            if v:
                state[name] = {k: torch.from_numpy(np.array(a)) for k, a in v.items()}
        mv = getattr(self, "momentum_vector", None)
        if mv is not None:
            state["momentum_vector"] = [torch.from_numpy(np.array(a)) for a in mv]
        return state

    def load_server_state(self, state: Mapping[str, object], arrays: ArrayRecord) -> None:
        check_moments(state, "m_t", arrays)
        check_moments(state, "v_t", arrays, nonneg=True)
        for name in ("m_t", "v_t"):
            if name in state:
                setattr(self, name, {k: t.numpy() for k, t in state[name].items()})  # type: ignore[attr-defined]
        if "momentum_vector" in state:
            self.momentum_vector = [t.numpy() for t in state["momentum_vector"]]  # type: ignore[attr-defined]
        if hasattr(self, "current_arrays") and isinstance(self, FedAvgM):
            self.current_arrays = arrays


def _sampled(flower_cls: type[FedAvg]) -> type[FlowerSampling]:
    doc = (
        f"Flower's ``{flower_cls.__name__}`` with fedadapt's sampling, validation and metrics. "
        f"Takes FlowerSampling's keyword arguments plus {flower_cls.__name__}'s own."
    )
    return type(
        f"Sampled{flower_cls.__name__}",
        (FlowerSampling, flower_cls),
        {"_flower": flower_cls, "__doc__": doc},
    )


SampledFedAvg = _sampled(FedAvg)
SampledFedAvgM = _sampled(FedAvgM)
SampledFedAdam = _sampled(FedAdam)
SampledFedYogi = _sampled(FedYogi)
SampledFedAdagrad = _sampled(FedAdagrad)
SampledFedProx = _sampled(FedProx)

# ---------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class StrategySpec:
    """What a registered strategy is and which settings it takes (read by
    :func:`strategy_arguments`; nothing tests a strategy's name).

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
    """

    factory: Callable[..., Orchestration]
    preset: Mapping[str, object] = field(default_factory=dict)
    fedadapt_server: bool = False
    server_lr_option: bool = False
    flower_arguments: Mapping[str, str] = field(default_factory=dict)
    server_lr_fallback: bool = True
    needs_change_rounds: bool = False
    flower_defaults: Mapping[str, float] = field(default_factory=dict)

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
    for a fedadapt server method, Flower's defaults for its strategies); ``client_lr`` is the start of the local lr (``client_options["lr"]`` unless given
    there, and FedOpt's ``eta_l``). ``num_workers`` is the number of worker nodes in
    simulation; ``deployment=True`` means each SuperNode is a client (no population, no
    workers).
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


def _fedhyper(variant: str) -> Callable[..., FedHyper]:
    def build(**kwargs: object) -> FedHyper:
        return FedHyper(variant=variant, **kwargs)

    return build


def _fedhyper_spec(variant: str) -> StrategySpec:
    return StrategySpec(
        _fedhyper(variant), FEDHYPER_PRESETS[variant], fedadapt_server=True, server_lr_option=True
    )


def _preset_spec(cls: type[FedAdapt]) -> StrategySpec:
    """A FedAdapt preset class with its own server method (and its own default server lr)."""
    return StrategySpec(
        cls,
        {"server_optimizer": cls.preset_server_optimizer},  # type: ignore[attr-defined]
        fedadapt_server=True,
        server_lr_option=True,
        server_lr_fallback=False,
        needs_change_rounds=bool(getattr(cls, "needs_change_rounds", False)),
    )


_SPECS: dict[str, StrategySpec] = {
    "fedadapt": StrategySpec(FedAdapt, fedadapt_server=True, server_lr_option=True),
    "fedhyper-g": _fedhyper_spec("G"),
    "fedhyper-gm": _fedhyper_spec("GM"),
    "fedhyper-sl": _fedhyper_spec("SL"),
    "fedhyper-cl": _fedhyper_spec("CL"),
    "fedhyper-full": _fedhyper_spec("FULL"),
    "fedexp": StrategySpec(FedExP, FEDEXP_PRESET, fedadapt_server=True),
    "fedadam-oracle": _preset_spec(OracleResetFedAdam),
    "flash": _preset_spec(Flash),
    "adaptive-fedavg": _preset_spec(AdaptiveFedAvg),
    "fedavg": StrategySpec(SampledFedAvg),
    "fedavgm": StrategySpec(
        SampledFedAvgM,
        flower_arguments={"server_learning_rate": "server_lr", "server_momentum": "server_momentum"},
        flower_defaults={"server_learning_rate": 1.0},
    ),
    "fedadam": StrategySpec(SampledFedAdam, flower_arguments={"eta": "server_lr", "eta_l": "client_lr"}),
    "fedyogi": StrategySpec(SampledFedYogi, flower_arguments={"eta": "server_lr", "eta_l": "client_lr"}),
    "fedadagrad": StrategySpec(
        SampledFedAdagrad, flower_arguments={"eta": "server_lr", "eta_l": "client_lr"}
    ),
    "fedprox": StrategySpec(SampledFedProx, flower_arguments={"proximal_mu": "proximal_mu"}),
}


# name -> factory (kept for callers that read a factory's class attributes)
_REGISTRY: dict[str, Callable[..., Orchestration]] = {n: sp.factory for n, sp in _SPECS.items()}


def available_strategies() -> list[str]:
    """Every name :func:`build_strategy` accepts, sorted."""
    return sorted(_SPECS)


def strategy_spec(name: str) -> StrategySpec:
    """The :class:`StrategySpec` of ``name`` (case-insensitive); unknown names raise
    ``ValueError`` listing the accepted ones."""
    key = str(name).lower()
    if key not in _SPECS:
        raise ValueError(f"unknown strategy {name!r}; accepted: {available_strategies()}")
    return _SPECS[key]


def default_client(name: str) -> tuple[str, str]:
    """The client method and lr state strategy ``name`` runs when none is named: fedadapt's
    default client configuration for ``fedadapt`` (and the oracle of its default), ``sgd`` /
    ``reset`` for Flower's strategies and the presets of published methods."""
    factory = strategy_spec(name).factory
    return tuple(getattr(factory, "default_client", Orchestration.default_client))  # type: ignore[return-value]


def build_strategy(name: str, **kwargs: object) -> Orchestration:
    """Build a strategy by name (case-insensitive), e.g.
    ``build_strategy("fedadam", eta=0.01, num_clients=1000, clients_per_round=10, num_workers=5)``."""
    return strategy_spec(name).factory(**kwargs)


def strategy_arguments(name: str, settings: StrategySettings) -> dict[str, object]:
    """The constructor arguments of strategy ``name`` for ``settings``, driven by its
    :class:`StrategySpec` and its server method's ``fedadapt.MethodSpec`` (server defaults
    from the federation's shape, e.g. server AutoDrop's window of one pass over the
    population). ``build_strategy(name, **strategy_arguments(name, settings), **app_args)``;
    application arguments (``fraction_evaluate``, ``on_round_end``, checkpoints...) are added
    by the caller."""
    spec = strategy_spec(name)
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
            "server-optimizer 'adam' or 'cp-adam')")
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


__all__ = [
    "FEDHYPER_PRESETS",
    "FEDHYPER_VARIANTS",
    "FedExP",
    "FedHyper",
    "FlowerSampling",
    "SampledFedAdagrad",
    "SampledFedAdam",
    "SampledFedAvg",
    "SampledFedAvgM",
    "SampledFedProx",
    "SampledFedYogi",
    "StrategySettings",
    "StrategySpec",
    "available_strategies",
    "build_strategy",
    "default_client",
    "strategy_arguments",
    "strategy_spec",
]
