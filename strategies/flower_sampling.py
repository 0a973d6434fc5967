"""Flower's own strategies with fedadapt's sampling, messages and reply validation.

Flower's FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad and FedProx are wrapped by
:class:`FlowerSampling`: fedadapt's cohort sampling, messages and reply validation, then
Flower's own aggregation on replies stripped to exactly one ``ArrayRecord`` and one
``MetricRecord`` (``num-examples``, ``train-loss``), with the result cast back to the model's
dtypes (Flower's FedAdam returns float64 for a float32 model). No aggregation is re-written
here: each ``Sampled*`` class is ``FlowerSampling`` mixed into Flower's class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from logging import INFO
from typing import cast

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi

from . import records as R
from .checkpoint import check_moments
from .options import StrategyOptions, init_flower, split_options
from .orchestration import Orchestration

__all__ = [
    "FlowerSampling",
    "SampledFedAdagrad",
    "SampledFedAdam",
    "SampledFedAvg",
    "SampledFedAvgM",
    "SampledFedProx",
    "SampledFedYogi",
]


class _ProbeGrid:
    """A grid with exactly enough fake nodes for Flower's own ``configure_train`` to run for
    its side effects (FedOpt keeps the current arrays, FedProx adds ``proximal-mu``): it only
    asks the grid for its node ids."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))


class FlowerSampling(Orchestration, FedAvg):
    """Mixin for a Flower strategy: fedadapt's sampling, messages and validation; Flower's
    aggregation. Use through the ``Sampled*`` classes or :func:`strategies.build_strategy`.

    ``FedAvg`` is a base for the type checker (every Flower strategy wrapped here is one); in a
    ``Sampled*`` class Flower's own class (``_flower``) comes right after the mixins, so the
    method order is ``FlowerSampling``, ``Orchestration``, then Flower's."""

    _flower: type[FedAvg] = FedAvg
    momentum_vector: list[np.ndarray] | None  # FedAvgM's server momentum

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
        # Flower's configure_train only calls get_node_ids on the grid it is given
        probe = cast(Grid, _ProbeGrid(max(self.min_available_nodes, self.min_train_nodes, 1)))
        flower_logger = logging.getLogger("flwr")
        level = flower_logger.level
        flower_logger.setLevel(logging.WARNING)  # its "Sampled 2 nodes" line: about the probe
        try:
            theirs = list(self._flower.configure_train(self, server_round, arrays, config, probe))
        finally:
            flower_logger.setLevel(level)
        if not theirs:
            return []
        cfg = theirs[0].content.config_records[self.configrecord_key]
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
            met = MetricRecord({self.weighted_by_key: int(c.num_examples)})
            content = RecordDict(
                {self.arrayrecord_key: c.message.content[R.ARRAYS], R.METRICS: met}
            )
            stripped.append(Message(content=content, metadata=c.message.metadata))  # type: ignore[call-overload]
        arrays, _ = self._flower.aggregate_train(self, server_round, stripped)
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
            moments = state.get(name)
            if isinstance(moments, Mapping):  # checked above: parameter name -> tensor
                setattr(self, name, {k: t.numpy() for k, t in moments.items()})
        momentum = state.get("momentum_vector")
        if isinstance(momentum, Sequence):
            self.momentum_vector = [t.numpy() for t in momentum]
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
