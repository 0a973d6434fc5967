"""Fault injection through scenario keys (``faults.*``), for testing that runs survive.

A share of the *population* is faulty, chosen from ``(seed, client id)``: the same clients
misbehave every time they are sampled, so a run with ``faults.raise-fraction = 0.2`` has 20% of
its clients failing in every round they take part in. The share is exact (``round(fraction *
num_clients)`` clients per kind): clients are ranked by a seeded affine permutation of
``0..num_clients-1``, which needs no population-sized array. Kinds:

=================== ====================================================================
``raise``           training raises; the worker reports the client with the exception
``nan``             the client returns NaN weights; the worker's check drops it
``bad-shape``       the client returns a wrongly shaped array; the worker's check drops it
``hang``            the client sleeps past the round timeout; the worker's whole reply is
                    late and the server reports its clients as missing
``crash``           the worker process exits hard (``os._exit``) the first time in the run
                    that it serves such a client (a marker file remembers it, so a crash is
                    a transient event, as an OOM kill or a segfault would be): its Ray actor
                    dies with every client of that message; ``fedadapt simulate`` asks Ray
                    to restart crashed actors (Flower alone would not, FLOWER.md §6.2)
=================== ====================================================================

Byzantine clients (``attack.*``: sign flip, scaling, ALIE, IPM, free rider) are another
matter: they reply on time with a well-formed, finite model crafted to hurt;
:mod:`simulations.attacks` simulates them at the server side.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fedadapt.seeding import seed_int

KINDS = ("raise", "crash", "nan", "bad-shape", "hang")
_RANK_STREAM = 0xFA


def seeded_rank(client_id: int, seed: int, num_clients: int, stream: int) -> int:
    """Position of ``client_id`` in a seeded permutation of ``0..num_clients-1`` (a bijection
    ``c -> (a c + b) mod N`` with ``a`` coprime to ``N``, ``b`` from ``(seed, stream)``); the
    fault plan and the attack plan (:mod:`simulations.attacks`) use streams of their own."""
    n = max(1, num_clients)
    a = 2_654_435_761 % n or 1
    while math.gcd(a, n) != 1:
        a += 1
    b = seed_int(seed, stream) % n
    return (a * int(client_id) + b) % n


class InjectedFault(RuntimeError):
    """The exception an injected ``raise`` fault throws."""


@dataclass(frozen=True)
class FaultPlan:
    """Shares of the population per fault kind (they add up to at most 1) and the seed.

    Which clients are faulty depends on these fields only (part of the world's cache key);
    the run itself is named where it matters, by the crash markers' ``run_key``.
    """

    fractions: tuple[tuple[str, float], ...] = ()
    seed: int = 0
    num_clients: int = 1

    def rank(self, client_id: int) -> int:
        """Position of ``client_id`` in a seeded permutation of the population
        (:func:`seeded_rank`)."""
        return seeded_rank(client_id, self.seed, self.num_clients, _RANK_STREAM)

    @staticmethod
    def _first_crash(client_id: int, run_key: str) -> bool:
        """True exactly once per (run, client): the marker file is created atomically."""
        folder = Path(tempfile.gettempdir()) / "fedadapt-crash-markers" / run_key
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(folder / str(int(client_id)), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def kind(self, client_id: int) -> str | None:
        """The fault ``client_id`` has, or None (a fixed property of the client)."""
        if not self.fractions:
            return None
        r = self.rank(client_id)
        edge = 0
        for name, frac in self.fractions:
            edge += round(frac * self.num_clients)
            if r < edge:
                return name
        return None

    def before_training(
        self,
        kind: str | None,
        client_id: int,
        server_round: int,
        *,
        timeout: float,
        run_key: str = "",
    ) -> None:
        """Raise, hang or crash as ``kind`` says (``run_key`` names the run's crash markers,
        :func:`fedadapt.seeding.run_key`)."""
        if kind == "raise":
            raise InjectedFault(
                f"injected fault: client {client_id} raised in round {server_round}"
            )
        if kind == "hang":
            time.sleep(timeout + 2.0)
        if kind == "crash" and self._first_crash(client_id, run_key):
            os._exit(17)

    def corrupt(self, kind: str | None, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if kind == "nan":
            return {
                k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
                for k, v in state.items()
            }
        if kind == "bad-shape":
            first = next(k for k, v in state.items() if v.is_floating_point())
            out = dict(state)
            out[first] = torch.zeros(tuple(s + 1 for s in state[first].shape))
            return out
        return state
