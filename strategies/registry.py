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
import os
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi

from . import records as R
from . import sampling
from .fedadapt_strategy import FedAdapt
from .orchestration import ConfigValue, Orchestration, RoundCallback

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- presets

FEDHYPER_VARIANTS = ("G", "GM", "SL", "CL", "FULL")


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

    def __init__(self, variant: str = "G", **kwargs: object) -> None:
        v = str(variant).upper()
        if v not in FEDHYPER_VARIANTS:
            raise ValueError(
                f"FedHyper variant must be one of {list(FEDHYPER_VARIANTS)}, got {variant!r}"
            )
        preset: Mapping[str, object] = {
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
        }[v]
        self.variant = v
        super().__init__(**{**preset, **kwargs})  # type: ignore[arg-type]

    def identity(self) -> dict[str, object]:
        return {**super().identity(), "variant": self.variant}


class FedExP(FedAdapt):
    """FedExP (Jhunjhunwala, Wang, Joshi, ICLR 2023, arXiv:2301.09604): the server lr is the
    extrapolation ``max(1, mean ||Delta_i||^2 / (2 (||mean Delta||^2 + eps)))``, computed by
    fedadapt's ``fedexp`` from the clients' squared update norms, which the replies carry
    (signal ``client_sq_norms_mean`` and ``num_clients``). ``server_options`` go to ``fedexp``
    (e.g. ``{"eps": 1e-3}``)."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("server_optimizer", "fedexp")
        kwargs.setdefault("server_options", {})
        super().__init__(**kwargs)  # type: ignore[arg-type]


class Flash(FedAdapt):
    """Flash (Panchal et al., "Flash: Concept Drift Adaptation in Federated Learning", ICML 2023)
    as a FedAdapt configuration: the server step is fedadapt's ``flash`` (drift-aware adaptive
    step, guarded denominator, docs/DRIFT.md); its clients stop local training early on a local
    validation split (the ``early-stop-gamma`` hint the method declares)."""

    preset_server_optimizer = "flash"

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

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("server_optimizer", "adaptive-fedavg")
        kwargs.setdefault("server_options", {})
        super().__init__(**kwargs)  # type: ignore[arg-type]


class OracleResetFedAdam(FedAdapt):
    """FedAdam whose whole state (both moments and the step counter) is reset at the *known*
    changepoint rounds: an oracle for studies only, the ceiling for any change detector.

    The server step is fedadapt's server ``adam`` (torch's Adam on the pseudo-gradient, with
    bias correction; betas (0.9, 0.99) as FedAdam in Reddi et al., ICLR 2021,
    arXiv:2003.00295; lr 0.1 = Flower's default ``eta``). ``change_rounds`` are the rounds
    whose data are the first of a new concept; the simulation passes its drift schedule's
    changepoints (``needs_change_rounds``)."""

    needs_change_rounds = True
    preset_server_optimizer = "adam"

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("server_optimizer", "adam")
        opts = dict(kwargs.get("server_options") or {})  # type: ignore[call-overload]
        opts.setdefault("lr", 0.1)
        opts.setdefault("betas", (0.9, 0.99))
        kwargs["server_options"] = opts
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

    def __init__(
        self,
        *,
        client_optimizer: str = "sgd",
        client_options: Mapping[str, object] | None = None,
        client_lr_state: str = "reset",
        num_clients: int | None = None,
        clients_per_round: int | None = None,
        evaluate_clients_per_round: int | None = None,
        num_workers: int | None = None,
        seed: int = 0,
        availability: sampling.Availability = 1.0,
        reply_mode: str = "mean",
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 0,
        on_round_end: RoundCallback | None = None,
        extra_train_config: Callable[[int], Mapping[str, ConfigValue]] | None = None,
        buffer_keys: Iterable[str] = (),
        worker_wait_timeout: float = 120.0,
        **flower_kwargs: object,
    ) -> None:
        self._flower.__init__(self, **flower_kwargs)  # type: ignore[arg-type]
        self._init_orchestration(
            client_optimizer=client_optimizer,
            client_options=client_options,
            client_lr_state=client_lr_state,
            num_clients=num_clients,
            clients_per_round=clients_per_round,
            evaluate_clients_per_round=evaluate_clients_per_round,
            num_workers=num_workers,
            seed=seed,
            availability=availability,
            reply_mode=reply_mode,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            on_round_end=on_round_end,
            extra_train_config=extra_train_config,
            buffer_keys=buffer_keys,
            worker_wait_timeout=worker_wait_timeout,
        )

    def summary(self) -> None:
        log.info(
            "%s with fedadapt sampling (population %s, %s per round)",
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


def _fedhyper(variant: str) -> Callable[..., FedHyper]:
    def build(**kwargs: object) -> FedHyper:
        return FedHyper(variant=variant, **kwargs)

    return build


_REGISTRY: dict[str, Callable[..., Orchestration]] = {
    "fedadapt": FedAdapt,
    "fedhyper-g": _fedhyper("G"),
    "fedhyper-gm": _fedhyper("GM"),
    "fedhyper-sl": _fedhyper("SL"),
    "fedhyper-cl": _fedhyper("CL"),
    "fedhyper-full": _fedhyper("FULL"),
    "fedexp": FedExP,
    "fedadam-oracle": OracleResetFedAdam,
    "flash": Flash,
    "adaptive-fedavg": AdaptiveFedAvg,
    "fedavg": SampledFedAvg,
    "fedavgm": SampledFedAvgM,
    "fedadam": SampledFedAdam,
    "fedyogi": SampledFedYogi,
    "fedadagrad": SampledFedAdagrad,
    "fedprox": SampledFedProx,
}


def available_strategies() -> list[str]:
    """Every name :func:`build_strategy` accepts, sorted."""
    return sorted(_REGISTRY)


def build_strategy(name: str, **kwargs: object) -> Orchestration:
    """Build a strategy by name (case-insensitive), e.g.
    ``build_strategy("fedadam", eta=0.01, num_clients=1000, clients_per_round=10, num_workers=5)``."""
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; accepted: {available_strategies()}")
    return _REGISTRY[key](**kwargs)
