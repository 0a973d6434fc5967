"""Checked before any worker starts: :func:`check_before_workers` constructs on a dummy what
every option of a :class:`~simulations.settings.RunSpec` configures (the strategy with its
server and client optimizers and their options, the partitioner, the model on the data set's
real shapes, every path, the checkpoint to resume), so that a malformed option fails with one
:class:`~simulations.config.ConfigError` naming it, before Ray or any worker starts.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulations.config import ConfigError
from simulations.reader import strategy_arguments
from simulations.settings import DataSettings, RunSpec
from simulations.world import World, world

__all__ = ["check_before_workers"]


def _check_output_path(key: str, path: Path, *, directory: bool) -> None:
    """``path`` can be created (or exists with the right kind) and its folder is writable."""
    if path.exists():
        if directory and not path.is_dir():
            raise ConfigError(
                f"run-config key '{key}': {path} exists and is not a directory; "
                "accepted: a new or existing directory"
            )
        if not directory and path.is_dir():
            raise ConfigError(
                f"run-config key '{key}': {path} is a directory; accepted: a file path"
            )
    parent = path if path.exists() and directory else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(
            f"run-config key '{key}': {parent} (on the way to {path}) is not a directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"run-config key '{key}': {parent} is not writable")


def _check_data_files(spec: DataSettings) -> None:
    files = spec.options.get("data_files")
    if not files or any(ch in str(files) for ch in "*?["):
        return
    for name in str(files).split(","):
        if not Path(name.strip()).expanduser().is_file():
            raise ConfigError(f"run-config key 'hub-data-files': no such file {name.strip()!r}")


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
            fedadapt.build_optimizer(
                method, [torch.nn.Parameter(torch.zeros(1))], **arguments["client_options"]
            )
        except ValueError as exc:
            raise ConfigError(
                f"run-config keys 'client-optimizer'/'client-options'/'client-lr': {exc}"
            ) from None
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.ERROR)  # the probe's construction warnings would repeat at start
    try:
        probe = build_strategy(spec.strategy, **arguments)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"run-config key 'strategy' ({spec.strategy!r}) and its options "
            f"('server-optimizer', 'server-options', 'server-lr', the pipeline's "
            f"'aggregator', 'clip-*', 'dp-*', 'sums-only', 'reply-mode'): "
            f"{exc}"
        ) from None
    finally:
        flwr_log.setLevel(level)

    def check_partitioner() -> None:
        try:
            build_partitioner(
                data.partitioner,
                num_partitions=data.num_clients,
                seed=data.seed,
                params=data.partitioner_params,
            )
        except ValueError as exc:
            raise ConfigError(
                f"run-config key 'partitioner' ({data.partitioner!r}): {exc}"
            ) from None

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
            raise ConfigError(
                f"run-config keys 'partitioner'/'partition-*' "
                f"({data.partitioner!r}, {data.partitioner_params}): {exc}"
            ) from None
        try:
            model = w.model()
        except ValueError as exc:
            if str(exc).startswith("run-config key"):
                raise ConfigError(str(exc)) from None
            raise ConfigError(
                f"run-config key 'model' ({spec.world.model.name!r}): {exc}"
            ) from None
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
        raise ConfigError(
            f"run-config keys 'model'/'model-factory'/'model-options': the model "
            f"fails on a batch of shape {tuple(X[:2].shape)}: {exc}"
        ) from None
    finally:
        model.train(was_training)
    want = (min(2, len(X)), w.source.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"run-config keys 'model'/'model-factory': the model maps a batch of "
            f"shape {tuple(X[:2].shape)} to {got}; expected logits of shape {want}"
        )


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
