"""Checkpoints a resumed run continues bitwise from (CPU), loadable without unpickling objects.

This module only handles the file format: what goes in it is the strategy's
``state_dict()`` (and ``load_state_dict()`` restores it). A checkpoint is one ``torch.save`` file ``round-000006.pt`` (and ``latest.pt``, a copy) holding
only tensors, Python scalars, strings, lists and str-keyed dicts, so
``torch.load(path, weights_only=True)`` reads it:

* ``format``/``version``; ``identity`` (strategy class, seed, population, optimizers) which a
  resuming strategy must match;
* ``round``: the last completed round. Sampling draws from ``default_rng([seed, round,
  stream])``, so the round *is* the generator state: nothing else is needed to continue the
  same cohort sequence;
* ``arrays``: the global model after that round (key -> tensor, with the model's dtypes);
* ``server``: the server method's state (``fedadapt.ServerOptimizer.state_dict()`` for
  ``FedAdapt``; the moment arrays for Flower's FedOpt family);
* ``clients``: per-client carried step sizes (``ids``/``lrs`` lists) and the broadcast lr.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch
from flwr.app import ArrayRecord

from . import records as R

FORMAT = "fedadapt-strategy-checkpoint"
VERSION = 1


class Stateful(Protocol):
    """What a checkpoint needs from a strategy (``strategies.Orchestration`` provides it)."""

    @property
    def checkpoint_dir(self) -> Path | None: ...

    def state_dict(self) -> dict[str, object]: ...

    def load_state_dict(self, state: Mapping[str, object], arrays: ArrayRecord) -> None: ...


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed by this strategy (corrupt or mismatched)."""


def checkpoint_path(directory: str | os.PathLike[str], server_round: int) -> Path:
    return Path(directory) / f"round-{server_round:06d}.pt"


def save_checkpoint(strategy: Stateful, server_round: int, arrays: ArrayRecord) -> Path:
    """Write the checkpoint of ``server_round`` into ``strategy.checkpoint_dir``."""
    directory = strategy.checkpoint_dir
    assert directory is not None
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "round": int(server_round),
        "arrays": {k: R.array_to_tensor(a).clone() for k, a in arrays.items()},
        **strategy.state_dict(),
    }
    path = checkpoint_path(directory, server_round)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    latest = directory / "latest.pt"
    tmp_latest = latest.with_suffix(".tmp")
    torch.save(payload, tmp_latest)
    os.replace(tmp_latest, latest)
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> dict:
    """Load and sanity-check a checkpoint file (``weights_only=True``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "latest.pt"
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, not a zip, unsafe content...
        raise CheckpointError(f"{p} is not a readable fedadapt checkpoint: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{p} is not a fedadapt strategy checkpoint (format {data.get('format') if isinstance(data, dict) else type(data).__name__!r})"
        )
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{p}: checkpoint version {data.get('version')}, this code reads {VERSION}"
        )
    for key in ("identity", "round", "arrays", "server", "clients"):
        if key not in data:
            raise CheckpointError(f"{p}: checkpoint lacks {key!r}")
    if not isinstance(data["arrays"], dict) or not all(
        isinstance(v, torch.Tensor) for v in data["arrays"].values()
    ):
        raise CheckpointError(f"{p}: 'arrays' must map names to tensors")
    rnd = data["round"]
    if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
        raise CheckpointError(f"{p}: 'round' must be an int >= 0, got {rnd!r}")
    for k, t in data["arrays"].items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{p}: model array {k!r} holds non-finite values (NaN or inf)")
    return data


def check_moments(
    state: Mapping[str, object], name: str, arrays: ArrayRecord, *, nonneg: bool = False
) -> None:
    """A saved per-parameter moment (Flower FedOpt's ``m_t``/``v_t``): one finite array per
    model entry with the model's shape (``nonneg``: a second moment, >= 0); ``ValueError``
    names the entry."""
    saved = state.get(name)
    if saved is None:
        return
    if not isinstance(saved, Mapping):
        raise ValueError(f"server.{name} must map parameter names to tensors")
    layout = R.layout_of(arrays)
    for k, t in saved.items():
        if k not in layout:
            raise ValueError(f"server.{name}[{k!r}]: the model has no such entry")
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(layout[k][1]):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"server.{name}[{k!r}] is {shape}, the model's is {layout[k][1]}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"server.{name}[{k!r}] holds non-finite values (NaN or inf)")
        if nonneg and bool((t < 0).any()):
            raise ValueError(f"server.{name}[{k!r}] holds negative values (a second moment)")


def check_layout(
    saved: dict[str, tuple[str, tuple[int, ...]]], model: dict[str, tuple[str, tuple[int, ...]]]
) -> None:
    """Raise :class:`CheckpointError` unless keys, dtypes and shapes agree."""
    if list(saved) != list(model):
        diff = sorted(set(saved) ^ set(model))
        raise CheckpointError(
            f"checkpoint model keys differ from the initial arrays' (e.g. {diff[:5]})"
        )
    for k in saved:
        if saved[k] != model[k]:
            raise CheckpointError(
                f"checkpoint array {k!r} is {saved[k]}, the model's is {model[k]}"
            )


def load_checkpoint(strategy: Stateful, path: str | os.PathLike[str]) -> tuple[int, ArrayRecord]:
    """Restore ``strategy`` from ``path`` (a file or a directory with ``latest.pt``).

    Returns ``(round, arrays)``; ``strategy.start`` then continues with ``round + 1``.
    """
    data = read_checkpoint(path)
    arrays = R.tensors_to_record(data["arrays"])
    state = {k: v for k, v in data.items() if k not in ("format", "version", "round", "arrays")}
    try:
        strategy.load_state_dict(state, arrays)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any mismatch is a checkpoint this strategy can't use
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    return int(data["round"]), arrays


def check_resume_round(path: str | os.PathLike[str], saved_round: int, num_rounds: int) -> None:
    """A checkpoint of round ``saved_round`` can continue a run of ``num_rounds`` rounds."""
    if saved_round > num_rounds:
        raise CheckpointError(
            f"checkpoint {path} is of round {saved_round}, past the run's last round "
            f"{num_rounds}: nothing would run (raise num_rounds / num-server-rounds, or resume "
            "from an earlier checkpoint)"
        )
