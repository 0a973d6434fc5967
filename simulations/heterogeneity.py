"""Compute and availability heterogeneity as pure functions of seeds.

Everything here is a deterministic function of ``(seed, client id[, round])`` computed by a
counter-based hash (SplitMix64), vectorised over a cohort of client ids. So a client's draw does
not depend on which other clients were sampled with it, nor on the order in which workers ask,
and nothing of the size of the population is ever allocated: a cohort of 50 out of 1,000,000
costs 50 hashes.

- Local work (:func:`local_work`): per client and round, local steps or epochs drawn from a
  ``fixed``, ``uniform`` (mean +- spread * mean) or ``lognormal`` (sigma = spread, mean kept)
  distribution.
- Stragglers (:func:`straggler_mask`, :func:`effective_work`): a persistent ``fraction`` of
  clients (slow devices, chosen from ``(seed, client id)``) completes only ``work_fraction`` of
  its planned work.
- Mid-round dropout (:func:`dropout_mask`): a sampled client drops out mid-round (its reply is
  lost) with probability ``dropout_probability``; :func:`dropout_point` says how far it got.
  Whether a client is online at all is decided by the strategy's sampler
  (``strategies.sampling.is_online``, run-config key ``online-prob``), not here.
- :class:`Heterogeneity` bundles the settings and :meth:`Heterogeneity.plan` draws all of them
  for a cohort at once (a :class:`CohortPlan`).

Example::

    het = Heterogeneity(work_distribution="lognormal", work_mean=10, work_spread=0.5,
                        straggler_fraction=0.2, dropout_probability=0.1, seed=7)
    plan = het.plan(np.array([3, 17, 999_999]), server_round=4)
    plan.work, plan.dropped
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedadapt.seeding import hashed_normal, hashed_uniform

__all__ = [
    "WORK_DISTRIBUTIONS",
    "CohortPlan",
    "Heterogeneity",
    "dropout_mask",
    "dropout_point",
    "effective_work",
    "local_work",
    "straggler_mask",
]

WORK_DISTRIBUTIONS: tuple[str, ...] = ("fixed", "uniform", "lognormal")

IntOrArray = int | np.ndarray

# Stream tags, so that independent draws for the same (seed, client, round) never coincide.
_WORK, _WORK2, _STRAGGLER, _DROPOUT, _DROP_AT = 0x11, 0x12, 0x21, 0x41, 0x42


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def local_work(
    client_ids: IntOrArray,
    server_round: int,
    *,
    seed: int,
    distribution: str = "fixed",
    mean: float = 1.0,
    spread: float = 0.0,
    integer: bool = True,
) -> np.ndarray:
    r"""Planned local work (steps or epochs) per client for one round.

    - ``fixed``: ``mean`` for everyone.
    - ``uniform``: :math:`\mathcal{U}[\text{mean}(1 - s), \text{mean}(1 + s)]`, :math:`s` = ``spread``.
    - ``lognormal``: :math:`\text{mean} \cdot \exp(s z - s^2 / 2)`, :math:`z \sim N(0, 1)`
      (the mean stays ``mean``; heavy right tail).

    Args:
        client_ids: One id or an array of ids.
        server_round: The round (a fresh draw every round).
        seed: Run seed.
        distribution: One of :data:`WORK_DISTRIBUTIONS`.
        mean: Mean work (> 0).
        spread: ``s`` above (>= 0; uniform needs <= 1).
        integer: Round to whole steps, at least 1 (for steps); False keeps fractions, at
            least 1e-3 (for epochs).

    Returns:
        A float array with one entry per client id (whole numbers when ``integer``).
    """
    if distribution not in WORK_DISTRIBUTIONS:
        raise ValueError(
            f"unknown work distribution {distribution!r}; accepted: {', '.join(WORK_DISTRIBUTIONS)}"
        )
    if mean <= 0:
        raise ValueError(f"mean must be > 0, got {mean}")
    if spread < 0:
        raise ValueError(f"spread must be >= 0, got {spread}")
    ids = np.atleast_1d(np.asarray(client_ids))
    if distribution == "fixed":
        work = np.full(ids.shape, float(mean))
    elif distribution == "uniform":
        if spread > 1:
            raise ValueError(f"uniform spread must be <= 1, got {spread}")
        u = hashed_uniform(seed, _WORK, server_round, ids)
        work = mean * (1.0 - spread + 2.0 * spread * u)
    else:
        z = hashed_normal(seed, _WORK2, server_round, ids)
        work = mean * np.exp(spread * z - 0.5 * spread**2)
    if integer:
        return np.maximum(1.0, np.rint(work))
    return np.maximum(1e-3, work)


def straggler_mask(client_ids: IntOrArray, *, seed: int, fraction: float) -> np.ndarray:
    """Which clients are stragglers: a persistent share ``fraction`` of the population."""
    _check_probability("straggler fraction", fraction)
    ids = np.atleast_1d(np.asarray(client_ids))
    return hashed_uniform(seed, _STRAGGLER, ids) < fraction


def effective_work(
    planned: np.ndarray,
    stragglers: np.ndarray,
    *,
    work_fraction: float,
    integer: bool = True,
) -> np.ndarray:
    """Work actually done: stragglers do ``work_fraction`` of ``planned`` (at least 1 step)."""
    _check_probability("straggler work fraction", work_fraction)
    done = np.where(stragglers, planned * work_fraction, planned)
    if integer:
        return np.maximum(1.0, np.floor(done))
    return np.maximum(1e-3, done)


def dropout_mask(
    client_ids: IntOrArray, server_round: int, *, seed: int, probability: float
) -> np.ndarray:
    """Whether each client drops out mid-round in ``server_round`` (its reply is lost)."""
    _check_probability("dropout probability", probability)
    ids = np.atleast_1d(np.asarray(client_ids))
    return hashed_uniform(seed, _DROPOUT, server_round, ids) < probability


def dropout_point(client_ids: IntOrArray, server_round: int, *, seed: int) -> np.ndarray:
    """Fraction of its work, in [0, 1), a client completes before dropping out this round."""
    ids = np.atleast_1d(np.asarray(client_ids))
    return hashed_uniform(seed, _DROP_AT, server_round, ids)


@dataclass(frozen=True)
class CohortPlan:
    """Per-client draws for one round, aligned with ``client_ids``.

    Attributes:
        client_ids: The cohort.
        planned_work: Work drawn from the distribution.
        straggler: Whether the client is a straggler.
        work: Work to do this round (stragglers' share applied).
        dropped: Whether the client drops out mid-round.
        dropout_point: Fraction of ``work`` completed before dropping out.
    """

    client_ids: np.ndarray
    planned_work: np.ndarray
    straggler: np.ndarray
    work: np.ndarray
    dropped: np.ndarray
    dropout_point: np.ndarray


@dataclass(frozen=True)
class Heterogeneity:
    """Compute and availability heterogeneity settings; :meth:`plan` draws a cohort's values.

    Args:
        work_distribution: ``fixed``, ``uniform`` or ``lognormal`` (:func:`local_work`).
        work_mean: Mean local steps (``integer_work``) or epochs.
        work_spread: Spread of the distribution.
        integer_work: Whole steps (True) or fractional epochs (False).
        straggler_fraction: Share of clients that are stragglers.
        straggler_work: Fraction of their work stragglers complete.
        dropout_probability: Probability that a client drops out mid-round.
        seed: Run seed.
    """

    work_distribution: str = "fixed"
    work_mean: float = 1.0
    work_spread: float = 0.0
    integer_work: bool = True
    straggler_fraction: float = 0.0
    straggler_work: float = 0.5
    dropout_probability: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.work_distribution not in WORK_DISTRIBUTIONS:
            raise ValueError(
                f"unknown work distribution {self.work_distribution!r}; "
                f"accepted: {', '.join(WORK_DISTRIBUTIONS)}"
            )
        if self.work_mean <= 0:
            raise ValueError(f"work_mean must be > 0, got {self.work_mean}")
        if self.work_spread < 0 or (self.work_distribution == "uniform" and self.work_spread > 1):
            raise ValueError(
                f"work_spread out of range for {self.work_distribution}: {self.work_spread}"
            )
        for name in (
            "straggler_fraction",
            "straggler_work",
            "dropout_probability",
        ):
            _check_probability(name, getattr(self, name))

    def plan(self, client_ids: IntOrArray, server_round: int) -> CohortPlan:
        """Draw every per-client value of ``server_round`` for the cohort ``client_ids``."""
        ids = np.atleast_1d(np.asarray(client_ids)).astype(np.int64)
        planned = local_work(
            ids,
            server_round,
            seed=self.seed,
            distribution=self.work_distribution,
            mean=self.work_mean,
            spread=self.work_spread,
            integer=self.integer_work,
        )
        stragglers = straggler_mask(ids, seed=self.seed, fraction=self.straggler_fraction)
        work = effective_work(
            planned, stragglers, work_fraction=self.straggler_work, integer=self.integer_work
        )
        dropped = dropout_mask(
            ids, server_round, seed=self.seed, probability=self.dropout_probability
        )
        return CohortPlan(
            client_ids=ids,
            planned_work=planned,
            straggler=stragglers,
            work=work,
            dropped=dropped,
            dropout_point=dropout_point(ids, server_round, seed=self.seed),
        )
