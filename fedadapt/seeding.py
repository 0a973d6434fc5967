"""One way to derive randomness from a run seed: run keys, per-round generators, per-client draws.

Every random choice of a run is a pure function of ``(seed, keys...)``, where the keys are
non-negative integers naming what is drawn (a stream tag, a round, a client id). Two kinds:

* :func:`generator` / :func:`torch_generator`: a NumPy / torch generator for a sequence of draws
  (cohort sampling, drift operators, a client's minibatch order), seeded through NumPy's
  ``SeedSequence`` from the whole key list, so streams that differ in any key are independent.
* :func:`hashed_uniform` / :func:`hashed_normal`: one number per client id from a counter-based
  hash (SplitMix64), vectorised over a cohort, so a client's draw never depends on which other
  clients were drawn with it and nothing population-sized is allocated (heterogeneity, drift
  offsets, fault assignment).

:func:`run_key` is the digest of a run's resolved configuration (workers shared by several runs
find a message's run by it; crash markers are kept per run under it).

Lives in ``fedadapt`` (the bottom layer) so that ``strategies`` (sampling) and ``simulations``
(drift, faults, heterogeneity, training) use the same functions; it imports NumPy only
(torch when :func:`torch_generator` is called).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["generator", "hashed_normal", "hashed_uniform", "run_key", "seed_int", "torch_generator"]

IntOrArray = int | np.ndarray
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _keys(seed: int, keys: tuple[int, ...]) -> list[int]:
    out = [int(seed), *(int(k) for k in keys)]
    if any(k < 0 for k in out):
        raise ValueError(f"seed and keys must be non-negative integers, got {out}")
    return out


def generator(seed: int, *keys: int) -> np.random.Generator:
    """``np.random.default_rng([seed, *keys])``: the generator of one stream of draws."""
    return np.random.default_rng(_keys(seed, keys))


def seed_int(seed: int, *keys: int, bits: int = 63) -> int:
    """A ``bits``-bit integer derived from ``(seed, *keys)`` (for libraries that take one int)."""
    state = np.random.SeedSequence(_keys(seed, keys)).generate_state(1, np.uint64)[0]
    return int(state) >> (64 - bits)


def torch_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, *keys)`` (e.g. a client's batch order)."""
    import torch

    return torch.Generator().manual_seed(seed_int(seed, *keys))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _as_u64(value: IntOrArray) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"keys must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64).astype(np.uint64) & _MASK64


def hashed_uniform(seed: int, *keys: IntOrArray) -> np.ndarray:
    """Uniform numbers in [0, 1) that are a pure function of ``seed`` and integer ``keys``.

    Keys broadcast against each other (e.g. a scalar round and an array of client ids), so
    ``hashed_uniform(seed, TAG, server_round, client_ids)`` draws one number per client.
    """
    h = _splitmix64(np.atleast_1d(_as_u64(seed)))
    for key in keys:
        h = _splitmix64(h ^ _as_u64(key))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def hashed_normal(seed: int, *keys: IntOrArray) -> np.ndarray:
    """Standard normal numbers from :func:`hashed_uniform` (Box-Muller)."""
    u1 = hashed_uniform(seed, *keys, 1)
    u2 = hashed_uniform(seed, *keys, 2)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def run_key(config: Mapping[str, object]) -> str:
    """A 16-hex-digit digest of a resolved run configuration (stable across processes)."""
    text = json.dumps(dict(config), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]
