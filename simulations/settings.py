"""The typed settings of one run: what :func:`simulations.reader.read` makes of a resolved
config, and what everything downstream takes instead of the dict.

* :class:`WorldSpec` (data source, partitions, drift schedule, heterogeneity, fault plan, model):
  what both sides of a run need; :func:`simulations.world.world` builds it;
* :class:`TrainingSettings` (the ClientApp), :class:`EvaluationSettings` (the ServerApp's
  evaluation), :class:`~strategies.StrategySettings` (the strategy registry's arguments),
  :class:`OutputSettings` (run directory, checkpoints) and :class:`RuntimeSettings` (workers
  and their resources), all held by one :class:`RunSpec`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from simulations.config import Value
from simulations.data import ClientDataSource, build_source
from simulations.drift import Concept, DriftSchedule, make_concepts
from simulations.faults import FaultPlan
from simulations.heterogeneity import Heterogeneity
from simulations.models import build_model
from strategies.registry import StrategySettings

__all__ = [
    "RUN_KEY",
    "DataSettings",
    "DriftSettings",
    "EvaluationSettings",
    "ModelSpec",
    "OutputSettings",
    "RunSpec",
    "RuntimeSettings",
    "TrainingSettings",
    "WorldSpec",
]

RUN_KEY = "fedadapt.run-key"  # train-config entry naming the run a message belongs to


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class DataSettings:
    """The client data source: data set, population, partitioner (flwr-datasets)."""

    dataset: str
    num_clients: int
    partitioner: str
    partitioner_params: dict[str, Any]
    options: dict[str, Any]
    test_fraction: float
    cache_size: int
    seed: int

    def build(self) -> ClientDataSource:
        return build_source(
            self.dataset,
            num_clients=self.num_clients,
            partitioner=self.partitioner,
            partitioner_params=self.partitioner_params,
            seed=self.seed,
            cache_size=self.cache_size,
            test_fraction=self.test_fraction,
            options=self.options,
        )


@dataclass(frozen=True)
class DriftSettings:
    """The concept operator and the schedule of changepoints."""

    kind: str
    timing: str
    first_round: int
    width: int
    period: int
    stagger: int
    severity: float
    num_rounds: int
    seed: int

    def schedule(self) -> DriftSchedule:
        if self.kind == "none":
            return DriftSchedule.none()
        return DriftSchedule.from_settings(
            self.timing,
            self.first_round,
            num_rounds=self.num_rounds,
            width=self.width,
            period=self.period,
            stagger=self.stagger,
            seed=self.seed,
        )

    def concepts(self, num_classes: int) -> list[Concept]:
        return make_concepts(
            self.kind,
            num_classes=num_classes,
            severity=self.severity,
            num_concepts=2,
            seed=self.seed,
        )


@dataclass(frozen=True)
class ModelSpec:
    """The model architecture (``auto`` already resolved; ``custom``: ``factory``, an import
    path), its keyword options and its initialisation seed."""

    name: str
    seed: int
    factory: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
        if self.factory:
            from simulations.plugins import build_custom_model

            with torch.random.fork_rng(devices=[]):  # a seeded initialisation, as built-ins
                torch.manual_seed(self.seed)
                return build_custom_model(self.factory, input_shape, num_classes, self.options)
        try:
            return build_model(self.name, input_shape, num_classes, seed=self.seed, **self.options)
        except TypeError as exc:
            raise ValueError(
                f"run-config key 'model-options' ({self.options}) for model {self.name!r}: {exc}"
            ) from None


@dataclass(frozen=True)
class WorldSpec:
    """Everything that defines the federation both sides see; its fields are the cache key."""

    data: DataSettings
    drift: DriftSettings
    heterogeneity: Heterogeneity
    faults: FaultPlan
    model: ModelSpec

    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)


@dataclass(frozen=True)
class TrainingSettings:
    """What a ClientApp needs besides the world and the train message."""

    run_key: str  # names the run's crash markers (faults.crash-fraction)
    batch_size: int
    exact_steps: bool  # local work counts steps (local-steps > 0), else epochs
    round_timeout: float
    client_timeout: float  # 0: share of the round timeout
    use_cuda: bool
    deployment: bool
    num_clients: int
    seed: int
    worker_log: str

    def device(self) -> torch.device:
        """CUDA when the run gives workers a GPU share and one is visible, else CPU."""
        return torch.device("cuda" if self.use_cuda and torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class EvaluationSettings:
    """The ServerApp's evaluation: how often, over which population, with which seed."""

    every: int
    num_rounds: int
    num_clients: int
    seed: int


@dataclass(frozen=True)
class OutputSettings:
    """Where the run writes (run directory, checkpoints) and what it resumes from."""

    out_dir: str
    scenario: str
    strategy: str
    seed: int
    checkpoint_every: int
    resume_from: str

    def directory(self) -> Path:
        """``out-dir``, or ``$FEDADAPT_RUNS_DIR`` (``runs``) / scenario-strategy-seed-time."""
        if self.out_dir:
            return Path(self.out_dir)
        root = Path(os.environ.get("FEDADAPT_RUNS_DIR", "runs"))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return root / f"{self.scenario}-{self.strategy}-s{self.seed}-{stamp}"


@dataclass(frozen=True)
class RuntimeSettings:
    """Workers of a simulation and their Ray resources."""

    num_workers: int
    client_num_cpus: float
    client_num_gpus: float
    worker_wait_timeout: float
    deployment: bool


@dataclass(frozen=True)
class RunSpec:
    """One run, read from its resolved config (:func:`read`)."""

    config: dict[str, Value] = field(repr=False)  # written to the run directory as is
    run_key: str
    strategy: str
    num_rounds: int
    world: WorldSpec
    training: TrainingSettings
    evaluation: EvaluationSettings
    strategy_settings: StrategySettings
    output: OutputSettings
    runtime: RuntimeSettings
