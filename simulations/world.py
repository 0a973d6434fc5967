"""The one reader of a run configuration: a resolved config dict in, typed settings out.

:func:`read` is the only code that reads run-config keys (``simulations.config`` declares and
coerces them one by one; this module checks them together and turns them into dataclasses).
Everything downstream takes the objects it returns, never the dict:

* :class:`WorldSpec` (data source, partitions, drift schedule, heterogeneity, fault plan, model):
  what both sides of a run need; :func:`world` builds it (cached per process by the spec itself,
  the data source by its own settings, so runs that differ only in their strategy share it);
* :class:`TrainingSettings` (the ClientApp), :class:`EvaluationSettings` (the ServerApp's
  evaluation), :class:`StrategySettings` (:func:`strategy_arguments` maps them onto the strategy
  registry), :class:`OutputSettings` (run directory, checkpoints) and :class:`RuntimeSettings`
  (workers and their resources).

:func:`check_before_workers` constructs on a dummy what every option configures (the strategy
with its server and client optimizers and their options, the partitioner, the model, every
path), so that a malformed option fails with one :class:`~simulations.config.ConfigError` before
Ray or any worker starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedadapt.seeding import run_key as _run_key
from simulations.config import AUTO, KEYS, ConfigError, Value
from simulations.data import ClientDataSource, build_source
from simulations.drift import (
    Concept,
    DriftSchedule,
    apply_schedule,
    current_test_set,
    make_concepts,
)
from simulations.faults import KINDS as FAULT_KINDS
from simulations.faults import FaultPlan
from simulations.heterogeneity import Heterogeneity
from simulations.models import build_model
from strategies.registry import StrategySettings

log = logging.getLogger(__name__)
Config = Mapping[str, Value]

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
            self.dataset, num_clients=self.num_clients, partitioner=self.partitioner,
            partitioner_params=self.partitioner_params, seed=self.seed,
            cache_size=self.cache_size, test_fraction=self.test_fraction, options=self.options,
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
            self.timing, self.first_round, num_rounds=self.num_rounds, width=self.width,
            period=self.period, stagger=self.stagger, seed=self.seed,
        )

    def concepts(self, num_classes: int) -> list[Concept]:
        return make_concepts(self.kind, num_classes=num_classes, severity=self.severity,
                             num_concepts=2, seed=self.seed)


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
            return build_model(self.name, input_shape, num_classes, seed=self.seed,
                               **self.options)
        except TypeError as exc:
            raise ValueError(f"run-config key 'model-options' ({self.options}) for model "
                             f"{self.name!r}: {exc}") from None


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


# ----------------------------------------------------------------------------- the reader


def _unless_auto(value: Value) -> str | None:
    """A key's value, ``None`` for ``auto`` (the strategy's own default)."""
    return None if value == AUTO else str(value)


def worker_count(cfg: Config, cpus: float | None = None, gpus: float = 0.0) -> int:
    """Worker supernodes: explicit, or as many as Ray runs at once, capped at the cohort."""
    explicit = int(cfg["num-supernodes"])
    if explicit > 0:
        return explicit
    cpus = float(os.cpu_count() or 1) if cpus is None else cpus
    parallel = int(cpus // float(cfg["client-num-cpus"]))
    gpu_frac = float(cfg["client-num-gpus"])
    if gpu_frac > 0 and gpus > 0:
        parallel = min(parallel, int(gpus // gpu_frac))
    return max(1, min(parallel, int(cfg["clients-per-round"])))


def _json_object(cfg: Config, key: str) -> dict[str, Any]:
    text = str(cfg[key])
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"run-config key '{key}': not a JSON object ({exc}): {text!r}") from None
    if not isinstance(opts, dict):
        raise ConfigError(f"run-config key '{key}': expected a JSON object, got {text!r}")
    return opts


def _partitioner_params(cfg: Config) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {
        "dirichlet": {"alpha": float(cfg["partition-alpha"])},
        "pathological": {"classes_per_client": int(cfg["partition-classes"])},
        "shard": {"shards_per_client": int(cfg["partition-shards"])},
    }
    return table.get(str(cfg["partitioner"]), {})


def _source_options(cfg: Config) -> dict[str, Any]:
    if cfg["dataset"] == "custom":
        return {"loader": str(cfg["data-loader"]),
                "loader_options": _json_object(cfg, "data-options"),
                "label_column": str(cfg["hub-label-key"]),
                "feature_column": str(cfg["hub-feature-key"])}
    if cfg["dataset"] == "synthetic":
        return {"alpha": float(cfg["synthetic-alpha"]), "beta": float(cfg["synthetic-beta"])}
    if cfg["dataset"] == "hub":
        opts: dict[str, Any] = {
            "dataset": str(cfg["hub-dataset"]),
            "feature_columns": [str(cfg["hub-feature-key"])],
            "label_column": str(cfg["hub-label-key"]),
        }
        if cfg["hub-data-files"]:
            opts["data_files"] = str(cfg["hub-data-files"])
        return opts
    return {}


def check_config(cfg: Config) -> None:
    """Cross-key checks of a coerced config (called by ``simulations.config.resolve``)."""
    for key in ("server-options", "client-options", "model-options", "data-options"):
        _json_object(cfg, key)
    from simulations.plugins import check_path

    for key in ("model-factory", "data-loader"):
        if cfg[key]:
            try:
                check_path(key, str(cfg[key]))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    if (cfg["dataset"] == "custom") != bool(cfg["data-loader"]):
        raise ConfigError(
            "run-config keys 'dataset'/'data-loader': your own data needs both, dataset = "
            f"'custom' and data-loader = 'package.module:function' (got dataset "
            f"{cfg['dataset']!r}, data-loader {cfg['data-loader']!r})")
    if cfg["model-factory"] and cfg["model"] != "auto":
        raise ConfigError(
            f"run-config keys 'model' ({cfg['model']!r}) and 'model-factory' "
            f"({cfg['model-factory']!r}) both name a model; accepted: model = 'auto' with "
            "model-factory, or a built-in model without it")
    if int(cfg["clients-per-round"]) > int(cfg["num-clients"]):
        raise ConfigError(
            f"run-config key 'clients-per-round' ({cfg['clients-per-round']}) exceeds "
            f"'num-clients' ({cfg['num-clients']}); accepted: at most num-clients"
        )
    if cfg["dataset"] == "hub" and not cfg["hub-dataset"]:
        raise ConfigError("run-config key 'hub-dataset' must be set when dataset = 'hub'")
    if cfg["drift.kind"] != "none" and int(cfg["drift.round"]) < 1:
        raise ConfigError(
            f"run-config key 'drift.round': drift.kind is {cfg['drift.kind']!r} but drift.round "
            "is 0; accepted: a round >= 1"
        )
    if cfg["drift.kind"] != "none" and int(cfg["drift.round"]) > int(cfg["num-server-rounds"]):
        raise ConfigError(
            f"run-config key 'drift.round' ({cfg['drift.round']}) is after the last round "
            f"({cfg['num-server-rounds']})"
        )
    if cfg["drift.kind"] == "rotation" and cfg["dataset"] in ("synthetic", "mnist1d"):
        raise ConfigError(
            f"run-config key 'drift.kind': rotation needs images, dataset {cfg['dataset']!r} has "
            "none; accepted there: label-permutation, label-shift, noise, feature-shift"
        )
    if cfg["resume-from"]:
        from strategies import CheckpointError, read_checkpoint

        try:
            read_checkpoint(str(cfg["resume-from"]))
        except CheckpointError as exc:
            raise ConfigError(f"run-config key 'resume-from': {exc}") from None
    total_faults = sum(float(cfg[k]) for k in KEYS if k.startswith("faults."))
    if total_faults > 1.0:
        raise ConfigError(
            f"run-config keys 'faults.*' add up to {total_faults:g}; accepted: a total <= 1"
        )
    default_server = KEYS["server-optimizer"].default
    from strategies.registry import strategy_spec

    takes = strategy_spec(str(cfg["strategy"])).takes_server_optimizer
    if not takes and cfg["server-optimizer"] != default_server:
        # Only a strategy whose server method is the caller's choice applies it; say so
        # instead of ignoring it.
        from strategies.registry import available_strategies

        choosers = [n for n in available_strategies() if strategy_spec(n).takes_server_optimizer]
        raise ConfigError(
            f"run-config key 'server-optimizer' ({cfg['server-optimizer']!r}) is not used by "
            f"strategy {cfg['strategy']!r}; accepted: {default_server!r} (the default, unused) "
            f"or a strategy that takes a server method: {choosers}"
        )
    from simulations.attacks import check_config as check_attack  # the attack.* keys

    check_attack(cfg)


def read(cfg: Config) -> RunSpec:
    """Turn a resolved config (``simulations.config.resolve``) into a :class:`RunSpec`."""
    seed = int(cfg["seed"])
    num_clients = int(cfg["num-clients"])
    num_rounds = int(cfg["num-server-rounds"])
    key = _run_key(cfg)
    data = DataSettings(
        dataset=str(cfg["dataset"]), num_clients=num_clients, partitioner=str(cfg["partitioner"]),
        partitioner_params=_partitioner_params(cfg), options=_source_options(cfg),
        test_fraction=float(cfg["test-fraction"]), cache_size=int(cfg["cache-size"]), seed=seed,
    )
    drift = DriftSettings(
        kind=str(cfg["drift.kind"]), timing=str(cfg["drift.timing"]),
        first_round=int(cfg["drift.round"]), width=int(cfg["drift.width"]),
        period=int(cfg["drift.period"]), stagger=int(cfg["drift.stagger"]),
        severity=float(cfg["drift.severity"]), num_rounds=num_rounds, seed=seed,
    )
    steps = int(cfg["local-steps"])
    het = Heterogeneity(
        work_distribution=str(cfg["local-steps-dist"]),
        work_mean=float(steps if steps > 0 else cfg["local-epochs"]) or 1e-3,
        work_spread=float(cfg["local-steps-spread"]),
        integer_work=steps > 0,
        straggler_fraction=float(cfg["straggler-fraction"]),
        straggler_work=float(cfg["straggler-work"]),
        dropout_probability=float(cfg["dropout-prob"]),
        seed=seed,
    )
    fractions = tuple(
        (k, float(cfg[f"faults.{k}-fraction"]))
        for k in FAULT_KINDS if float(cfg[f"faults.{k}-fraction"]) > 0
    )
    faults = FaultPlan(fractions, seed, num_clients)
    model_name = str(cfg["model"])
    if cfg["model-factory"]:
        model_name = "custom"
    elif model_name == "auto":  # an MLP suits every built-in data set; hub images get the CNN
        model_name = "cnn" if cfg["dataset"] == "hub" else "mlp"
    model = ModelSpec(model_name, seed, str(cfg["model-factory"]),
                      _json_object(cfg, "model-options"))
    deployment = bool(cfg["deployment"])
    workers = worker_count(cfg)
    return RunSpec(
        config=dict(cfg),
        run_key=key,
        strategy=str(cfg["strategy"]),
        num_rounds=num_rounds,
        world=WorldSpec(data, drift, het, faults, model),
        training=TrainingSettings(
            run_key=key, batch_size=int(cfg["batch-size"]), exact_steps=steps > 0,
            round_timeout=float(cfg["round-timeout"]),
            client_timeout=float(cfg["client-timeout"]),
            use_cuda=float(cfg["client-num-gpus"]) > 0, deployment=deployment,
            num_clients=num_clients, seed=seed, worker_log=str(cfg["worker-log"]),
        ),
        evaluation=EvaluationSettings(
            every=int(cfg["eval-every"]), num_rounds=num_rounds, num_clients=num_clients,
            seed=seed,
        ),
        strategy_settings=StrategySettings(
            server_optimizer=str(cfg["server-optimizer"]),
            server_options=_json_object(cfg, "server-options"),
            server_lr=float(cfg["server-lr"]) or None,  # 0: the method's own default
            server_momentum=float(cfg["server-momentum"]),
            client_optimizer=_unless_auto(cfg["client-optimizer"]),
            client_options=_json_object(cfg, "client-options"),
            client_lr=float(cfg["client-lr"]),
            client_lr_state=_unless_auto(cfg["client-lr-state"]),
            client_lr_on_change=str(cfg["client-lr-on-change"]),
            proximal_mu=float(cfg["proximal-mu"]),
            num_clients=num_clients,
            clients_per_round=int(cfg["clients-per-round"]),
            num_workers=workers,
            num_rounds=num_rounds,
            seed=seed,
            availability=float(cfg["online-prob"]),
            worker_wait_timeout=float(cfg["worker-wait-timeout"]),
            deployment=deployment,
            change_rounds=tuple(int(cp.round) for cp in drift.schedule().changepoints),
            reply_mode=str(cfg["reply-mode"]),
            pipeline=pipeline_arguments(cfg),
        ),
        output=OutputSettings(
            out_dir=str(cfg["out-dir"]), scenario=str(cfg["scenario"]),
            strategy=str(cfg["strategy"]), seed=seed,
            checkpoint_every=int(cfg["checkpoint-every"]), resume_from=str(cfg["resume-from"]),
        ),
        runtime=RuntimeSettings(
            num_workers=workers, client_num_cpus=float(cfg["client-num-cpus"]),
            client_num_gpus=float(cfg["client-num-gpus"]),
            worker_wait_timeout=float(cfg["worker-wait-timeout"]), deployment=deployment,
        ),
    )


# ----------------------------------------------------------------------------- strategy arguments


def strategy_arguments(name: str, s: StrategySettings) -> dict[str, Any]:
    """The registry's constructor arguments for strategy ``name`` from the typed settings
    (``strategies.strategy_arguments``: each strategy's spec says where the server lr goes,
    each method's spec its server defaults), with Flower's federated evaluation switched off:
    evaluation runs on the server (centralized test set and a client panel)."""
    from strategies.registry import strategy_arguments as _arguments

    kwargs = _arguments(name, s)
    kwargs["fraction_evaluate"] = 0.0
    return kwargs


# ----------------------------------------------------------------------------- the world


@dataclass
class World:
    """The federation of a :class:`WorldSpec`: data source, concepts, schedule, plans."""

    spec: WorldSpec
    source: ClientDataSource
    concepts: list[Concept]
    schedule: DriftSchedule

    @property
    def het(self) -> Heterogeneity:
        return self.spec.heterogeneity

    @property
    def faults(self) -> FaultPlan:
        return self.spec.faults

    @property
    def seed(self) -> int:
        return self.spec.data.seed

    def model(self) -> torch.nn.Module:
        return self.spec.model.build(self.source.input_shape, self.source.num_classes)

    def template(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """A model of this world on ``device``, built once per process and device, for reading
        shapes, dtypes and keys and for copying; callers never train or modify it. (Building
        one costs ~1.1 ms, paid by every message a worker served: ``torch.manual_seed``
        records a stack trace for each lazily initialised accelerator backend.)"""
        key = str(torch.device(device))
        cache = self.__dict__.setdefault("_templates", {})
        if key not in cache:
            cache[key] = self.model().to(device)
        return cache[key]

    def client_data(self, client_id: int, server_round: int) -> tuple[np.ndarray, np.ndarray]:
        """The client's training data under its current concept in ``server_round``."""
        X, y = self.source.get(int(client_id))
        return apply_schedule(
            X, y, schedule=self.schedule, concepts=self.concepts, client_id=int(client_id),
            server_round=int(server_round), seed=self.seed,
        )

    def test_data(self, server_round: int) -> tuple[np.ndarray, np.ndarray]:
        """The centralized test set under the population's concept mix in ``server_round``."""
        X, y = self.source.test_set()
        return current_test_set(X, y, schedule=self.schedule, concepts=self.concepts,
                                server_round=max(int(server_round), 1), seed=self.seed)


_SOURCES: dict[str, ClientDataSource] = {}
_WORLDS: dict[str, World] = {}
_CACHE_LIMIT = 4


def world(spec: WorldSpec) -> World:
    """The (cached) federation of ``spec``: a worker builds it once and reuses it for every
    message; the data source is cached by its own settings."""
    key = spec.key()
    if key in _WORLDS:
        return _WORLDS[key]
    data_key = json.dumps(dataclasses.asdict(spec.data), sort_keys=True, default=str)
    source = _SOURCES.get(data_key)
    if source is None:
        source = spec.data.build()
        if len(_SOURCES) >= _CACHE_LIMIT:
            _SOURCES.clear()
        _SOURCES[data_key] = source
    w = World(spec, source, spec.drift.concepts(source.num_classes), spec.drift.schedule())
    if len(_WORLDS) >= _CACHE_LIMIT:
        _WORLDS.clear()
    _WORLDS[key] = w
    return w


# ----------------------------------------------------------------------------- checked before workers


def _check_output_path(key: str, path: Path, *, directory: bool) -> None:
    """``path`` can be created (or exists with the right kind) and its folder is writable."""
    if path.exists():
        if directory and not path.is_dir():
            raise ConfigError(f"run-config key '{key}': {path} exists and is not a directory; "
                              "accepted: a new or existing directory")
        if not directory and path.is_dir():
            raise ConfigError(f"run-config key '{key}': {path} is a directory; accepted: a file path")
    parent = path if path.exists() and directory else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"run-config key '{key}': {parent} (on the way to {path}) is not a "
                          "directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"run-config key '{key}': {parent} is not writable")


def _check_data_files(spec: DataSettings) -> None:
    files = spec.options.get("data_files")
    if not files or any(ch in str(files) for ch in "*?["):
        return
    for name in str(files).split(","):
        if not Path(name.strip()).expanduser().is_file():
            raise ConfigError(f"run-config key 'hub-data-files': no such file {name.strip()!r}")


def pipeline_arguments(cfg: Config) -> dict[str, Any]:
    """FedAdapt's pipeline stages from the run config (docs/PIPELINE.md); only the stages a
    key moves from its default, so a run that sets none builds exactly the default pipeline
    (and a Flower strategy, which has none, accepts it)."""
    from strategies import Aggregator, Clipping, GaussianPrivacy, ReplyLimits, WeightCap

    def moved(*keys: str) -> bool:
        return any(cfg[k] != KEYS[k].default for k in keys)

    out: dict[str, Any] = {}
    try:
        if moved("aggregator", "byzantine-clients", "trim-fraction"):
            out["aggregator"] = Aggregator(str(cfg["aggregator"]), int(cfg["byzantine-clients"]),
                                           float(cfg["trim-fraction"]))
        if moved("clip-norm", "clip-quantile", "clip-lr", "max-norm-ratio", "over-bound"):
            clip, q, ratio = (float(cfg["clip-norm"]), float(cfg["clip-quantile"]),
                              float(cfg["max-norm-ratio"]))
            out["clipping"] = Clipping(clip_norm=clip or None, quantile=q or None,
                                       clip_lr=float(cfg["clip-lr"]), max_ratio=ratio or None,
                                       action=str(cfg["over-bound"]))
        if moved("max-client-share"):
            out["weight_cap"] = WeightCap(float(cfg["max-client-share"]))
        if moved("max-client-examples", "max-reply-metrics", "max-metric-values"):
            out["reply_limits"] = ReplyLimits(int(cfg["max-client-examples"]),
                                              int(cfg["max-reply-metrics"]),
                                              int(cfg["max-metric-values"]))
        if float(cfg["dp-noise-multiplier"]) > 0:
            out["privacy"] = GaussianPrivacy(float(cfg["dp-noise-multiplier"]),
                                             delta=float(cfg["dp-delta"]),
                                             sample_rate=float(cfg["dp-sample-rate"]) or None,
                                             seed=int(cfg["seed"]))
        if cfg["sums-only"]:
            out["sums_only"] = True
    except ValueError as exc:
        raise ConfigError(f"run-config keys of the server pipeline: {exc}") from None
    return out


def check_before_workers(spec: RunSpec) -> None:
    """Construct on a dummy what every option configures; raise :class:`ConfigError` naming it.

    The strategy (its server optimizer and the clients' optimizer with their options, built on
    a one-element tensor), the flwr-datasets partitioner, the model (on the data set's real
    shapes, built-in data sets only: a hub data set is not downloaded here) and every path
    (``out-dir``, ``worker-log``, ``hub-data-files``; ``resume-from`` is read by validation).
    """
    from simulations.data import build_partitioner
    from strategies import build_strategy

    out = spec.output.directory()
    _check_output_path("out-dir", out, directory=True)
    if spec.training.worker_log:
        _check_output_path("worker-log", Path(spec.training.worker_log), directory=False)
    data = spec.world.data
    _check_data_files(data)
    try:
        arguments = strategy_arguments(spec.strategy, spec.strategy_settings)
    except ValueError as exc:
        raise ConfigError(f"run-config key 'strategy' ({spec.strategy!r}): {exc}") from None
    if "client_optimizer" in arguments:  # else the preset fixes the local method
        import fedadapt
        from strategies.registry import default_client

        method = arguments["client_optimizer"] or default_client(spec.strategy)[0]
        try:
            fedadapt.build_optimizer(method,
                                     [torch.nn.Parameter(torch.zeros(1))],
                                     **arguments["client_options"])
        except ValueError as exc:
            raise ConfigError(f"run-config keys 'client-optimizer'/'client-options'/'client-lr': "
                              f"{exc}") from None
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.ERROR)  # the probe's construction warnings would repeat at start
    try:
        probe = build_strategy(spec.strategy, **arguments)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"run-config key 'strategy' ({spec.strategy!r}) and its options "
                          f"('server-optimizer', 'server-options', 'server-lr', the pipeline's "
                          f"'aggregator', 'clip-*', 'dp-*', 'sums-only', 'reply-mode'): "
                          f"{exc}") from None
    finally:
        flwr_log.setLevel(level)

    def check_partitioner() -> None:
        try:
            build_partitioner(data.partitioner, num_partitions=data.num_clients, seed=data.seed,
                              params=data.partitioner_params)
        except ValueError as exc:
            raise ConfigError(f"run-config key 'partitioner' ({data.partitioner!r}): {exc}") from None

    # a partitioning kept from an earlier run of these exact settings was accepted by this
    # flwr-datasets then: it is not built again (nor is flwr-datasets imported, ~3 s)
    cached = False
    if data.dataset != "hub":
        try:
            w = world(spec.world)
        except (ValueError, OSError) as exc:
            if data.dataset == "custom" and str(exc).startswith("run-config key"):
                raise ConfigError(str(exc)) from None  # the loader's own key is named
            if data.dataset != "synthetic":
                check_partitioner()  # the partitioner's own error names its key
            key = "data-loader" if data.dataset == "custom" else "dataset"
            raise ConfigError(f"run-config key '{key}' ({data.dataset!r}): {exc}") from None
        cached = bool(getattr(w.source, "partitions_cached", False))
    if data.dataset != "synthetic" and not cached:
        check_partitioner()
    if data.dataset != "hub":
        try:  # a partitioner fails on the data, at the first partition a worker loads
            with warnings.catch_warnings():  # its retry warnings; the error says it all
                warnings.simplefilter("ignore")
                w.source.get(0)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"run-config keys 'partitioner'/'partition-*' "
                              f"({data.partitioner!r}, {data.partitioner_params}): {exc}") from None
        try:
            model = w.model()
        except ValueError as exc:
            if str(exc).startswith("run-config key"):
                raise ConfigError(str(exc)) from None
            raise ConfigError(f"run-config key 'model' ({spec.world.model.name!r}): {exc}") from None
        _check_forward(model, w)
        if spec.output.resume_from:
            _check_resume(probe, spec, model)


def _check_forward(model: torch.nn.Module, w: World) -> None:
    """The model maps a batch of the data set to one logit per class (your own model or data
    are checked here, not at a worker's first round)."""
    X, _ = w.source.get(0)
    was_training = model.training
    model.eval()  # one or two examples: batch statistics would fail, not the model
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(X[:2])))
    except Exception as exc:  # noqa: BLE001 - a user's model: any error is reported as config
        raise ConfigError(f"run-config keys 'model'/'model-factory'/'model-options': the model "
                          f"fails on a batch of shape {tuple(X[:2].shape)}: {exc}") from None
    finally:
        model.train(was_training)
    want = (min(2, len(X)), w.source.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"run-config keys 'model'/'model-factory': the model maps a batch of "
                          f"shape {tuple(X[:2].shape)} to {got}; expected logits of shape {want}")


def _check_resume(strategy: Any, spec: RunSpec, model: torch.nn.Module) -> None:
    """The checkpoint to resume passes the checks of a freshly built state (strategy and
    server-method settings, finite tensors of the model's shapes, counters in range) and
    leaves rounds to run: before any worker starts, naming the field."""
    from flwr.app import ArrayRecord

    from strategies import CheckpointError
    from strategies import checkpoint as ckpt
    from strategies import records as R

    path = spec.output.resume_from
    try:
        rnd, arrays = strategy.load_checkpoint(path)
        ckpt.check_layout(R.layout_of(arrays), R.layout_of(ArrayRecord(model.state_dict())))
        ckpt.check_resume_round(path, rnd, spec.num_rounds)
    except CheckpointError as exc:
        raise ConfigError(f"run-config key 'resume-from': {exc}") from None
