"""The one reader of a run configuration: a resolved config dict in
(:func:`simulations.checks.resolve`), a :class:`~simulations.settings.RunSpec` out.

:func:`read` is the only code that reads run-config keys into settings (:mod:`simulations.config`
declares and coerces them one by one, :mod:`simulations.checks` checks them together). It also
maps settings onto the strategy registry's arguments (:func:`strategy_arguments`) and the
server pipeline's stages (:func:`pipeline_arguments`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fedadapt.seeding import run_key as _run_key
from simulations.checks import json_object
from simulations.config import AUTO, KEYS, ConfigError, Value
from simulations.faults import KINDS as FAULT_KINDS
from simulations.faults import FaultPlan
from simulations.heterogeneity import Heterogeneity
from simulations.settings import (
    DataSettings,
    DriftSettings,
    EvaluationSettings,
    ModelSpec,
    OutputSettings,
    RunSpec,
    RuntimeSettings,
    TrainingSettings,
    WorldSpec,
)
from strategies.registry import StrategySettings

__all__ = ["pipeline_arguments", "read", "strategy_arguments", "worker_count"]

Config = Mapping[str, Value]


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


def _partitioner_params(cfg: Config) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {
        "dirichlet": {"alpha": float(cfg["partition-alpha"])},
        "pathological": {"classes_per_client": int(cfg["partition-classes"])},
        "shard": {"shards_per_client": int(cfg["partition-shards"])},
    }
    return table.get(str(cfg["partitioner"]), {})


def _source_options(cfg: Config) -> dict[str, Any]:
    if cfg["dataset"] == "custom":
        return {
            "loader": str(cfg["data-loader"]),
            "loader_options": json_object(cfg, "data-options"),
            "label_column": str(cfg["hub-label-key"]),
            "feature_column": str(cfg["hub-feature-key"]),
        }
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


def read(cfg: Config) -> RunSpec:
    """Turn a resolved config (:func:`simulations.checks.resolve`) into a :class:`RunSpec`."""
    seed = int(cfg["seed"])
    num_clients = int(cfg["num-clients"])
    num_rounds = int(cfg["num-server-rounds"])
    key = _run_key(cfg)
    data = DataSettings(
        dataset=str(cfg["dataset"]),
        num_clients=num_clients,
        partitioner=str(cfg["partitioner"]),
        partitioner_params=_partitioner_params(cfg),
        options=_source_options(cfg),
        test_fraction=float(cfg["test-fraction"]),
        cache_size=int(cfg["cache-size"]),
        seed=seed,
    )
    drift = DriftSettings(
        kind=str(cfg["drift.kind"]),
        timing=str(cfg["drift.timing"]),
        first_round=int(cfg["drift.round"]),
        width=int(cfg["drift.width"]),
        period=int(cfg["drift.period"]),
        stagger=int(cfg["drift.stagger"]),
        severity=float(cfg["drift.severity"]),
        num_rounds=num_rounds,
        seed=seed,
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
        for k in FAULT_KINDS
        if float(cfg[f"faults.{k}-fraction"]) > 0
    )
    faults = FaultPlan(fractions, seed, num_clients)
    model_name = str(cfg["model"])
    if cfg["model-factory"]:
        model_name = "custom"
    elif model_name == "auto":  # an MLP suits every built-in data set; hub images get the CNN
        model_name = "cnn" if cfg["dataset"] == "hub" else "mlp"
    model = ModelSpec(
        model_name, seed, str(cfg["model-factory"]), json_object(cfg, "model-options")
    )
    deployment = bool(cfg["deployment"])
    workers = worker_count(cfg)
    return RunSpec(
        config=dict(cfg),
        run_key=key,
        strategy=str(cfg["strategy"]),
        num_rounds=num_rounds,
        world=WorldSpec(data, drift, het, faults, model),
        training=TrainingSettings(
            run_key=key,
            batch_size=int(cfg["batch-size"]),
            exact_steps=steps > 0,
            round_timeout=float(cfg["round-timeout"]),
            client_timeout=float(cfg["client-timeout"]),
            use_cuda=float(cfg["client-num-gpus"]) > 0,
            deployment=deployment,
            num_clients=num_clients,
            seed=seed,
            worker_log=str(cfg["worker-log"]),
        ),
        evaluation=EvaluationSettings(
            every=int(cfg["eval-every"]),
            num_rounds=num_rounds,
            num_clients=num_clients,
            seed=seed,
        ),
        strategy_settings=StrategySettings(
            server_optimizer=str(cfg["server-optimizer"]),
            server_options=json_object(cfg, "server-options"),
            server_lr=float(cfg["server-lr"]) or None,  # 0: the method's own default
            server_momentum=float(cfg["server-momentum"]),
            client_optimizer=_unless_auto(cfg["client-optimizer"]),
            client_options=json_object(cfg, "client-options"),
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
            out_dir=str(cfg["out-dir"]),
            scenario=str(cfg["scenario"]),
            strategy=str(cfg["strategy"]),
            seed=seed,
            checkpoint_every=int(cfg["checkpoint-every"]),
            resume_from=str(cfg["resume-from"]),
        ),
        runtime=RuntimeSettings(
            num_workers=workers,
            client_num_cpus=float(cfg["client-num-cpus"]),
            client_num_gpus=float(cfg["client-num-gpus"]),
            worker_wait_timeout=float(cfg["worker-wait-timeout"]),
            deployment=deployment,
        ),
    )


def strategy_arguments(name: str, s: StrategySettings) -> dict[str, Any]:
    """The registry's constructor arguments for strategy ``name`` from the typed settings
    (``strategies.strategy_arguments``: each strategy's spec says where the server lr goes,
    each method's spec its server defaults), with Flower's federated evaluation switched off:
    evaluation runs on the server (centralized test set and a client panel)."""
    from strategies.registry import strategy_arguments as _arguments

    kwargs = _arguments(name, s)
    kwargs["fraction_evaluate"] = 0.0
    return kwargs


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
            out["aggregator"] = Aggregator(
                str(cfg["aggregator"]), int(cfg["byzantine-clients"]), float(cfg["trim-fraction"])
            )
        if moved("clip-norm", "clip-quantile", "clip-lr", "max-norm-ratio", "over-bound"):
            clip, q, ratio = (
                float(cfg["clip-norm"]),
                float(cfg["clip-quantile"]),
                float(cfg["max-norm-ratio"]),
            )
            out["clipping"] = Clipping(
                clip_norm=clip or None,
                quantile=q or None,
                clip_lr=float(cfg["clip-lr"]),
                max_ratio=ratio or None,
                action=str(cfg["over-bound"]),
            )
        if moved("max-client-share"):
            out["weight_cap"] = WeightCap(float(cfg["max-client-share"]))
        if moved("max-client-examples", "max-reply-metrics", "max-metric-values"):
            out["reply_limits"] = ReplyLimits(
                int(cfg["max-client-examples"]),
                int(cfg["max-reply-metrics"]),
                int(cfg["max-metric-values"]),
            )
        if float(cfg["dp-noise-multiplier"]) > 0:
            out["privacy"] = GaussianPrivacy(
                float(cfg["dp-noise-multiplier"]),
                delta=float(cfg["dp-delta"]),
                sample_rate=float(cfg["dp-sample-rate"]) or None,
                seed=int(cfg["seed"]),
            )
        if cfg["sums-only"]:
            out["sums_only"] = True
    except ValueError as exc:
        raise ConfigError(f"run-config keys of the server pipeline: {exc}") from None
    return out
