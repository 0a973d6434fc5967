"""Cohort sampling that is reproducible, independent of Flower's node ids, and O(cohort).

Every draw uses a NumPy generator seeded by ``(seed, round, stream)``, so the same seed gives
the same cohorts in every run and a resumed run continues the same sequence: the round number
is the whole generator state (a checkpoint only needs the round). Nothing here allocates
anything of population size once the population is large: candidates are drawn one by one
with rejection of repeats (a set of at most a few cohorts' size); small populations
(``<= max(4 * k, 10_000)``) use a permutation, which is then no larger than a few cohorts.

Availability: client ``c`` is online in round ``t`` with probability ``p`` (a float, or a
callable ``(client_id, round) -> p``), decided by its own generator seeded by
``(seed, round, c, AVAILABILITY_STREAM)``: independent of how the cohort was drawn. Offline
candidates are skipped and the next candidate of the same sequence is drawn, so a cohort is
deterministic given (seed, round).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedadapt.seeding import generator

log = logging.getLogger(__name__)

TRAIN_STREAM = 0
EVALUATE_STREAM = 1
AVAILABILITY_STREAM = 0xA7A11AB1E

Availability = float | Callable[[int, int], float]


@dataclass(frozen=True)
class Cohort:
    """One round's cohort: ``client_ids`` (online, distinct, in draw order) and the candidates
    that were drawn but found offline."""

    client_ids: list[int]
    offline_ids: list[int] = field(default_factory=list)


def round_generator(
    seed: int, server_round: int, stream: int = TRAIN_STREAM
) -> np.random.Generator:
    """The generator for one round and stream (``fedadapt.seeding.generator(seed, round, stream)``,
    i.e. ``np.random.default_rng([seed, round, stream])``)."""
    return generator(seed, server_round, stream)


def _candidates(rng: np.random.Generator, population: int, k: int) -> Iterator[int]:
    """Distinct indices in ``range(population)`` in a random order, without allocating the
    population when it is large (rejection of repeats; expected draws ~ k for k << n)."""
    if population <= max(4 * k, 10_000):
        yield from (int(i) for i in rng.permutation(population))
        return
    seen: set[int] = set()
    while len(seen) < population:
        i = int(rng.integers(0, population))
        if i not in seen:
            seen.add(i)
            yield i


def is_online(client_id: int, server_round: int, seed: int, availability: Availability) -> bool:
    """Whether ``client_id`` is online in ``server_round`` (deterministic in (seed, round, id))."""
    p = availability(client_id, server_round) if callable(availability) else availability
    if p >= 1.0:
        return True
    if p <= 0.0:
        return False
    rng = generator(seed, server_round, client_id, AVAILABILITY_STREAM)
    return bool(rng.random() < p)


def sample_cohort(
    population: int,
    k: int,
    *,
    seed: int,
    server_round: int,
    availability: Availability = 1.0,
    stream: int = TRAIN_STREAM,
    max_offline: int | None = None,
) -> Cohort:
    """Sample up to ``k`` distinct online client ids from ``range(population)``.

    Offline candidates are skipped; at most ``max_offline`` (default ``10 * k + 100``) of them
    are drawn before giving up, so a round with very low availability returns a smaller cohort
    instead of scanning the population.
    """
    if population < 0 or k < 0:
        raise ValueError(f"population and k must be >= 0, got {population}, {k}")
    k = min(k, population)
    limit = 10 * k + 100 if max_offline is None else max_offline
    rng = round_generator(seed, server_round, stream)
    chosen: list[int] = []
    offline: list[int] = []
    if k == 0:
        return Cohort(chosen, offline)
    for cid in _candidates(rng, population, k):
        if is_online(cid, server_round, seed, availability):
            chosen.append(cid)
            if len(chosen) == k:
                break
        else:
            offline.append(cid)
            if len(offline) >= limit:
                break
    return Cohort(chosen, offline)


def sample_nodes(
    node_ids: Sequence[int],
    k: int,
    *,
    seed: int,
    server_round: int,
    availability: Availability = 1.0,
    stream: int = TRAIN_STREAM,
) -> Cohort:
    """Deployment mode: sample among the connected node ids (sorted first); client id = node id.

    Availability is evaluated on the node id, like a client id in simulation mode.
    """
    nodes = sorted(int(n) for n in node_ids)
    k = min(k, len(nodes))
    limit = 10 * k + 100
    rng = round_generator(seed, server_round, stream)
    chosen: list[int] = []
    offline: list[int] = []
    if k == 0:
        return Cohort(chosen, offline)
    for idx in _candidates(rng, len(nodes), k):
        nid = nodes[idx]
        if is_online(nid, server_round, seed, availability):
            chosen.append(nid)
            if len(chosen) == k:
                break
        else:
            offline.append(nid)
            if len(offline) >= limit:
                break
    return Cohort(chosen, offline)


def split_over_workers(
    client_ids: Sequence[int], worker_ids: Sequence[int]
) -> list[tuple[int, list[int]]]:
    """Split the cohort into contiguous chunks over the sorted workers.

    The first ``len(ids) % W`` workers get one extra client; workers with no client get no
    message. Returns ``[(worker_node_id, [client ids]), ...]``.
    """
    workers = sorted(int(w) for w in worker_ids)
    if not workers:
        raise ValueError("no worker nodes to split the cohort over")
    n, w = len(client_ids), len(workers)
    base, extra = divmod(n, w)
    out: list[tuple[int, list[int]]] = []
    start = 0
    for i, wid in enumerate(workers):
        size = base + (1 if i < extra else 0)
        if size:
            out.append((wid, [int(c) for c in client_ids[start : start + size]]))
        start += size
    return out


def one_per_client(
    client_ids: Sequence[int], worker_ids: Sequence[int]
) -> list[tuple[int, list[int]]]:
    """``reply_mode="per-client"``: one message per client, dealt round-robin over the workers."""
    workers = sorted(int(w) for w in worker_ids)
    if not workers:
        raise ValueError("no worker nodes to send messages to")
    return [(workers[i % len(workers)], [int(c)]) for i, c in enumerate(client_ids)]


class WorkersNotReady(RuntimeError):
    """Not enough worker nodes registered in time (simulation start-up race or bad config)."""


def wait_for_nodes(
    get_node_ids: Callable[[], Iterable[int]],
    expected: int,
    *,
    timeout: float = 120.0,
    poll: float = 0.5,
    what: str = "worker",
    hint: str | None = None,
) -> list[int]:
    """Poll ``get_node_ids`` until at least ``expected`` nodes registered; return them sorted.

    Raises :class:`WorkersNotReady` after ``timeout`` seconds naming the settings that must
    agree (``hint`` replaces the simulation wording, e.g. with a deployment's).
    """
    deadline = time.monotonic() + timeout
    logged = -1
    while True:
        nodes = sorted(int(n) for n in get_node_ids())
        if len(nodes) >= expected:
            return nodes
        if time.monotonic() >= deadline:
            if hint is not None:
                raise WorkersNotReady(
                    f"only {len(nodes)} {what}(s) connected after {timeout:.0f} s, expected "
                    f"{expected}. {hint}"
                )
            raise WorkersNotReady(
                f"only {len(nodes)} {what} node(s) registered after {timeout:.0f} s, expected "
                f"{expected}. The strategy's `num_workers` (run config `num-supernodes`) must "
                f"not exceed the federation's `options.num-supernodes` (simulation) or the "
                f"number of SuperNodes started (deployment); make the two settings agree."
            )
        if len(nodes) != logged:
            log.info("waiting for %s nodes: %d of %d registered", what, len(nodes), expected)
            logged = len(nodes)
        time.sleep(poll)


def wait_for_stable_nodes(
    get_node_ids: Callable[[], Iterable[int]],
    *,
    settle: float = 1.0,
    timeout: float = 120.0,
    poll: float = 0.2,
) -> list[int]:
    """Without an expected count: wait until at least one node registered and the count has not
    changed for ``settle`` seconds; return the sorted ids. Prefer an explicit ``num_workers``."""
    deadline = time.monotonic() + timeout
    last: list[int] = []
    since = time.monotonic()
    while True:
        nodes = sorted(int(n) for n in get_node_ids())
        now = time.monotonic()
        if len(nodes) != len(last):
            last, since = nodes, now
        elif nodes and now - since >= settle:
            return nodes
        if now >= deadline:
            if nodes:
                return nodes
            raise WorkersNotReady(
                f"no worker node registered after {timeout:.0f} s: check the federation's "
                f"`options.num-supernodes` (and set the strategy's `num_workers` to match it)"
            )
        time.sleep(poll)
