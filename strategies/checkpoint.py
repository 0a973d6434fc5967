"""Checkpoints a resumed run continues bitwise from (CPU), loadable without unpickling objects.

A checkpoint is one ``torch.save`` file ``round-000006.pt`` (and ``latest.pt``, a copy) holding
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
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord

from . import records as R

if TYPE_CHECKING:
    from .orchestration import Orchestration

FORMAT = "fedadapt-strategy-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed by this strategy (corrupt or mismatched)."""


def checkpoint_path(directory: str | os.PathLike[str], server_round: int) -> Path:
    return Path(directory) / f"round-{server_round:06d}.pt"


def save_checkpoint(strategy: Orchestration, server_round: int, arrays: ArrayRecord) -> Path:
    """Write the checkpoint of ``server_round`` into ``strategy.checkpoint_dir``."""
    assert strategy.checkpoint_dir is not None
    strategy.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ids = sorted(strategy.client_lrs)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "identity": strategy.identity(),
        "round": int(server_round),
        "arrays": {k: R.array_to_tensor(a).clone() for k, a in arrays.items()},
        "server": strategy.server_state(),
        "clients": {
            "ids": ids,
            "lrs": [float(strategy.client_lrs[i]) for i in ids],
            "server-client-lr": -1.0
            if strategy.server_client_lr is None
            else float(strategy.server_client_lr),
        },
        "global-update": {}
        if strategy.global_update is None
        else {k: v.clone() for k, v in strategy.global_update.items()},
    }
    path = checkpoint_path(strategy.checkpoint_dir, server_round)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    latest = strategy.checkpoint_dir / "latest.pt"
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
    return data


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


def load_checkpoint(
    strategy: Orchestration, path: str | os.PathLike[str]
) -> tuple[int, ArrayRecord]:
    """Restore ``strategy`` from ``path`` (a file or a directory with ``latest.pt``).

    Returns ``(round, arrays)``; ``strategy.start`` then continues with ``round + 1``.
    """
    data = read_checkpoint(path)
    mine = strategy.identity()
    theirs = data["identity"]
    diffs = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
    if diffs:
        detail = ", ".join(
            f"{k}: checkpoint {a!r} vs strategy {b!r}" for k, (a, b) in diffs.items()
        )
        raise CheckpointError(
            f"checkpoint {path} was written by a different configuration ({detail})"
        )
    arrays = R.tensors_to_record(data["arrays"])
    try:
        strategy.load_server_state(data["server"], arrays)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint {path}: server state does not fit this strategy: {exc}"
        ) from exc
    clients = data["clients"]
    ids, lrs = list(clients.get("ids", [])), list(clients.get("lrs", []))
    if len(ids) != len(lrs):
        raise CheckpointError(f"checkpoint {path}: {len(ids)} client ids but {len(lrs)} lrs")
    strategy.client_lrs = {int(i): float(v) for i, v in zip(ids, lrs, strict=True)}
    scl = float(clients.get("server-client-lr", -1.0))
    strategy.server_client_lr = None if scl < 0 else scl
    gu = data.get("global-update") or {}
    strategy.global_update = {str(k): v for k, v in gu.items()} if gu else None
    return int(data["round"]), arrays
