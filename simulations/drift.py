"""Distribution shift: concepts, changepoint schedules and current-concept data.

A **concept** (:class:`Concept`) is a data distribution expressed as operators on the base data
``(X, y)``: a class-prior change (label shift: the client's examples are resampled with class
weights), input transforms (covariate shift: rotation of images, a feature shift, additive
Gaussian noise) and a label permutation (concept shift: P(y|x) changes). :func:`make_concepts`
builds a family of them from a drift kind and a severity; concept 0 is always the unchanged
data.

A **schedule** (:class:`DriftSchedule`) says which concept each client trains on in each
round, FedDrift-style (round x client -> concept), without a matrix: a short list of
changepoints ``(round, concept)`` shared by all clients, shifted per client by an offset drawn
from ``(seed, client id)`` in ``0 .. stagger_rounds`` (0: synchronous), optionally restricted to
a ``drifting_fraction`` of the clients. ``transition_rounds = k > 1`` makes each changepoint
gradual: ``k`` rounds during which a growing share ``(t - r + 1) / k`` of a client's examples
comes from the new concept; ``k = 1`` is sudden. Recurring drift is a periodic list of
changepoints cycling through the concepts (:meth:`DriftSchedule.recurring`).

For a round, :func:`apply_schedule` turns a client's base arrays into its current-concept
arrays, :func:`current_test_set` builds the centralized current-concept test set, and
:meth:`DriftSchedule.events` lists the changepoints that start in that round (for logs).

Example::

    concepts = make_concepts("label-permutation", num_classes=10, seed=0)
    schedule = DriftSchedule.from_settings("sudden", 20, stagger=4, num_rounds=50, seed=0)
    X_c, y_c = apply_schedule(X, y, schedule=schedule, concepts=concepts,
                              client_id=7, server_round=22, seed=0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fedadapt.seeding import generator, hashed_uniform

__all__ = [
    "DRIFT_KINDS",
    "DRIFT_TIMINGS",
    "Changepoint",
    "Concept",
    "DriftEvent",
    "DriftSchedule",
    "apply_concept",
    "apply_schedule",
    "current_test_set",
    "make_concepts",
    "concept_test_set",
]

DRIFT_KINDS: tuple[str, ...] = (
    "none",
    "label-permutation",
    "label-shift",
    "rotation",
    "noise",
    "feature-shift",
)
DRIFT_TIMINGS: tuple[str, ...] = ("sudden", "gradual", "recurring")

_OFFSET, _DRIFTS, _MIX, _TEST_MIX, _TEST_KEY = 0xD1, 0xD2, 0xD3, 0xD4, 0xD5

Arrays = tuple[np.ndarray, np.ndarray]


# ----------------------------------------------------------------------------------- concepts


@dataclass(frozen=True)
class Concept:
    """One data distribution, as operators applied to the base data in this order.

    1. ``class_weights`` (label shift): resample the examples, with replacement and keeping
       their number, with probability proportional to the weight of their (original) label.
    2. ``rotation_degrees`` (covariate shift): rotate images counter-clockwise about their
       centre (bilinear, zero fill). Inputs are ``(..., H, W)`` or flat with a square size.
    3. ``feature_shift`` (covariate shift): add a constant to every feature.
    4. ``noise_std`` (covariate shift): add Gaussian noise.
    5. ``label_permutation`` (concept shift): relabel ``y -> label_permutation[y]``.

    The default concept changes nothing.
    """

    label_permutation: tuple[int, ...] | None = None
    class_weights: tuple[float, ...] | None = None
    rotation_degrees: float = 0.0
    feature_shift: float = 0.0
    noise_std: float = 0.0
    name: str = "base"

    def __post_init__(self) -> None:
        perm = self.label_permutation
        if perm is not None and sorted(perm) != list(range(len(perm))):
            raise ValueError(f"label_permutation must be a permutation of 0..n-1, got {perm}")
        if self.class_weights is not None and (
            not self.class_weights or min(self.class_weights) <= 0
        ):
            raise ValueError(f"class_weights must all be > 0, got {self.class_weights}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

    @property
    def is_identity(self) -> bool:
        """True when the concept leaves the data unchanged."""
        perm = self.label_permutation
        return (
            (perm is None or list(perm) == list(range(len(perm))))
            and self.class_weights is None
            and self.rotation_degrees % 360 == 0
            and self.feature_shift == 0
            and self.noise_std == 0
        )


def _rotate(X: np.ndarray, degrees: float) -> np.ndarray:
    shape = X.shape
    if X.ndim == 2:
        side = math.isqrt(shape[1])
        if side * side != shape[1]:
            raise ValueError(
                f"rotation needs images (..., H, W) or a square number of features, got {shape}"
            )
        images = X.reshape(shape[0], side, side)
    elif X.ndim >= 3:
        images = X
    else:
        raise ValueError(f"rotation needs a batch of images, got shape {shape}")
    quarter = degrees / 90.0
    if float(quarter).is_integer():
        out = np.rot90(images, k=int(quarter) % 4, axes=(-2, -1))
    else:
        from scipy.ndimage import rotate

        out = rotate(images, degrees, axes=(-1, -2), reshape=False, order=1, mode="constant")
    return np.ascontiguousarray(out, dtype=np.float32).reshape(shape)


def apply_concept(
    X: np.ndarray,
    y: np.ndarray,
    concept: Concept,
    *,
    seed: int = 0,
    keys: Sequence[int] = (),
) -> Arrays:
    """Turn base data into ``concept``'s data (see :class:`Concept` for the operators).

    Args:
        X: Inputs, first axis indexes examples.
        y: Integer labels.
        concept: The concept.
        seed: Seed of the random operators (resampling, noise).
        keys: Extra integers folded into that seed (e.g. client id and round), so that each
            client and round gets its own draw.

    Returns:
        New arrays (the inputs are never modified in place).
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if concept.is_identity or len(y) == 0:
        return X, y
    rng = generator(seed, *keys)
    if concept.class_weights is not None:
        weights = np.asarray(concept.class_weights, dtype=np.float64)
        if y.max() >= len(weights):
            raise ValueError(f"class_weights has {len(weights)} entries but labels reach {y.max()}")
        p = weights[y]
        idx = rng.choice(len(y), size=len(y), replace=True, p=p / p.sum())
        X, y = X[idx], y[idx]
    if concept.rotation_degrees % 360 != 0:
        X = _rotate(X, concept.rotation_degrees)
    if concept.feature_shift != 0:
        X = X + np.float32(concept.feature_shift)
    if concept.noise_std > 0:
        X = X + rng.normal(0.0, concept.noise_std, size=X.shape).astype(np.float32)
    if concept.label_permutation is not None:
        perm = np.asarray(concept.label_permutation, dtype=np.int64)
        if y.max() >= len(perm):
            raise ValueError(
                f"label_permutation has {len(perm)} entries but labels reach {y.max()}"
            )
        y = perm[y]
    return np.asarray(X, dtype=np.float32), y


def make_concepts(
    kind: str,
    *,
    num_classes: int,
    severity: float = 1.0,
    num_concepts: int = 2,
    seed: int = 0,
) -> list[Concept]:
    """A family of ``num_concepts`` concepts of one kind; concept 0 is the base data.

    Concept ``j >= 1`` of each kind:

    - ``label-permutation``: ``max(2, round(severity * num_classes))`` classes (capped at
      ``num_classes``), chosen from the seed, relabelled by a cyclic shift (none keeps its label).
    - ``label-shift``: class weights ``exp(-3 * severity * rank / (num_classes - 1))`` over a
      seeded random ranking of the classes (severity 1: the rarest class is e^3 ~ 20x rarer).
    - ``rotation``: ``j * severity * 90`` degrees.
    - ``noise``: Gaussian noise of std ``j * severity``.
    - ``feature-shift``: every feature shifted by ``j * severity``.
    - ``none``: every concept is the base data.

    Raises:
        ValueError: unknown kind (the message lists the accepted kinds) or bad numbers.
    """
    if kind not in DRIFT_KINDS:
        raise ValueError(f"unknown drift kind {kind!r}; accepted: {', '.join(DRIFT_KINDS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_concepts < 1:
        raise ValueError(f"num_concepts must be >= 1, got {num_concepts}")
    if severity < 0:
        raise ValueError(f"severity must be >= 0, got {severity}")
    concepts = [Concept()]
    for j in range(1, num_concepts):
        rng = generator(seed, 0xC0, j)
        name = f"{kind}-{j}"
        if kind == "none":
            concepts.append(Concept(name=name))
        elif kind == "label-permutation":
            m = min(num_classes, max(2, int(round(severity * num_classes))))
            chosen = rng.permutation(num_classes)[:m]
            perm = np.arange(num_classes)
            perm[chosen] = np.roll(chosen, 1)
            concepts.append(Concept(label_permutation=tuple(int(v) for v in perm), name=name))
        elif kind == "label-shift":
            rank = rng.permutation(num_classes)
            weights = np.exp(-3.0 * severity * rank / (num_classes - 1))
            concepts.append(Concept(class_weights=tuple(float(w) for w in weights), name=name))
        elif kind == "rotation":
            concepts.append(Concept(rotation_degrees=90.0 * severity * j, name=name))
        elif kind == "noise":
            concepts.append(Concept(noise_std=severity * j, name=name))
        else:  # feature-shift
            concepts.append(Concept(feature_shift=severity * j, name=name))
    return concepts


# ----------------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class Changepoint:
    """From round ``round`` on (plus the client's offset), clients train on ``concept``."""

    round: int
    concept: int


@dataclass(frozen=True)
class DriftEvent:
    """A changepoint that starts for a group of clients in ``round`` (for logging).

    Attributes:
        round: The round.
        changepoint: Index of the changepoint in the schedule.
        changepoint_round: Its base round (before per-client offsets).
        from_concept: Concept clients leave.
        to_concept: Concept clients move to.
        offset: Client offset this group has (``round - changepoint_round``).
        expected_fraction: Expected share of the population switching now.
        transition_rounds: Rounds the switch takes (1: sudden).
    """

    round: int
    changepoint: int
    changepoint_round: int
    from_concept: int
    to_concept: int
    offset: int
    expected_fraction: float
    transition_rounds: int

    def to_dict(self) -> dict[str, int | float]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class DriftSchedule:
    """Which concept each client trains on in each round, defined by a few numbers.

    Client ``k`` with offset :math:`o_k \\in \\{0..S\\}` (``S`` = ``stagger_rounds``, drawn
    from ``(seed, k)``) reaches changepoint ``(r, c)`` at round :math:`r + o_k`; from then on
    it trains on concept ``c``, mixed with the previous concept during the first ``k =
    transition_rounds`` rounds: in round ``t`` a share :math:`\\min(1, (t - r - o_k + 1) / k)`
    of its examples comes from ``c``. A client outside the ``drifting_fraction`` (also drawn
    from ``(seed, k)``) stays on ``initial_concept``.

    Args:
        changepoints: ``Changepoint``\\ s (sorted by round, rounds >= 1, distinct).
        initial_concept: Concept before the first changepoint.
        transition_rounds: 1 for sudden changes; ``k > 1`` for gradual ones.
        stagger_rounds: 0 for synchronous changes; ``S > 0`` spreads clients over ``S + 1``
            consecutive rounds.
        drifting_fraction: Share of clients subject to drift.
        seed: Seed of offsets and mixing.
    """

    changepoints: tuple[Changepoint, ...] = ()
    initial_concept: int = 0
    transition_rounds: int = 1
    stagger_rounds: int = 0
    drifting_fraction: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        rounds = [cp.round for cp in self.changepoints]
        if any(r < 1 for r in rounds):
            raise ValueError(f"changepoint rounds must be >= 1, got {rounds}")
        if rounds != sorted(set(rounds)):
            raise ValueError(f"changepoint rounds must be strictly increasing, got {rounds}")
        if any(cp.concept < 0 for cp in self.changepoints) or self.initial_concept < 0:
            raise ValueError("concept ids must be >= 0")
        if self.transition_rounds < 1:
            raise ValueError(f"transition_rounds must be >= 1, got {self.transition_rounds}")
        if self.stagger_rounds < 0:
            raise ValueError(f"stagger_rounds must be >= 0, got {self.stagger_rounds}")
        if not 0.0 <= self.drifting_fraction <= 1.0:
            raise ValueError(f"drifting_fraction must be in [0, 1], got {self.drifting_fraction}")

    # ------------------------------------------------------------------ constructors

    @classmethod
    def none(cls) -> DriftSchedule:
        """No drift: every client on concept 0 forever."""
        return cls()

    @classmethod
    def sudden(
        cls,
        rounds: Sequence[int],
        concepts: Sequence[int] | None = None,
        *,
        stagger_rounds: int = 0,
        drifting_fraction: float = 1.0,
        seed: int = 0,
    ) -> DriftSchedule:
        """Sudden changes at ``rounds`` to ``concepts`` (default 1, 2, 3, ...)."""
        targets = list(concepts) if concepts is not None else list(range(1, len(rounds) + 1))
        if len(targets) != len(rounds):
            raise ValueError(f"{len(rounds)} rounds but {len(targets)} concepts")
        return cls(
            changepoints=tuple(
                Changepoint(int(r), int(c)) for r, c in zip(rounds, targets, strict=True)
            ),
            stagger_rounds=stagger_rounds,
            drifting_fraction=drifting_fraction,
            seed=seed,
        )

    @classmethod
    def gradual(
        cls,
        rounds: Sequence[int],
        transition_rounds: int,
        concepts: Sequence[int] | None = None,
        *,
        stagger_rounds: int = 0,
        drifting_fraction: float = 1.0,
        seed: int = 0,
    ) -> DriftSchedule:
        """Gradual changes starting at ``rounds``, each mixing in over ``transition_rounds``."""
        base = cls.sudden(
            rounds,
            concepts,
            stagger_rounds=stagger_rounds,
            drifting_fraction=drifting_fraction,
            seed=seed,
        )
        return cls(
            changepoints=base.changepoints,
            transition_rounds=transition_rounds,
            stagger_rounds=stagger_rounds,
            drifting_fraction=drifting_fraction,
            seed=seed,
        )

    @classmethod
    def recurring(
        cls,
        start: int,
        period: int,
        num_rounds: int,
        *,
        num_concepts: int = 2,
        transition_rounds: int = 1,
        stagger_rounds: int = 0,
        drifting_fraction: float = 1.0,
        seed: int = 0,
    ) -> DriftSchedule:
        """Concepts cycle ``0 -> 1 -> ... -> num_concepts - 1 -> 0`` every ``period`` rounds
        from ``start`` until ``num_rounds``."""
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        if num_concepts < 2:
            raise ValueError(f"recurring drift needs num_concepts >= 2, got {num_concepts}")
        rounds = range(start, num_rounds + 1, period)
        cps = tuple(Changepoint(r, (i + 1) % num_concepts) for i, r in enumerate(rounds))
        return cls(
            changepoints=cps,
            transition_rounds=transition_rounds,
            stagger_rounds=stagger_rounds,
            drifting_fraction=drifting_fraction,
            seed=seed,
        )

    @classmethod
    def from_settings(
        cls,
        timing: str,
        first_round: int,
        *,
        num_rounds: int,
        width: int = 1,
        period: int = 0,
        stagger: int = 0,
        num_concepts: int = 2,
        drifting_fraction: float = 1.0,
        seed: int = 0,
    ) -> DriftSchedule:
        """The schedule named by the run-config drift keys.

        Args:
            timing: ``sudden``, ``gradual`` or ``recurring`` (:data:`DRIFT_TIMINGS`).
            first_round: Round of the (first) changepoint; 0 means no drift.
            num_rounds: Last round of the run (bounds recurring changepoints).
            width: Gradual: rounds over which the new concept mixes in.
            period: Recurring: rounds between switches (0: a single switch).
            stagger: 0 synchronous; ``S > 0``: client offsets in ``0..S``.
            num_concepts: Concepts cycled by recurring drift.
            drifting_fraction: Share of clients that drift.
            seed: Run seed.
        """
        if timing not in DRIFT_TIMINGS:
            raise ValueError(
                f"unknown drift timing {timing!r}; accepted: {', '.join(DRIFT_TIMINGS)}"
            )
        if first_round == 0:
            return cls.none()
        kw = {"stagger_rounds": stagger, "drifting_fraction": drifting_fraction, "seed": seed}
        if timing == "recurring" and period > 0:
            return cls.recurring(first_round, period, num_rounds, num_concepts=num_concepts, **kw)  # type: ignore[arg-type]
        k = width if timing == "gradual" else 1
        return cls.gradual([first_round], k, **kw)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ queries

    def changepoint_rounds(self) -> list[int]:
        """Base rounds of the changepoints (for recovery metrics)."""
        return [cp.round for cp in self.changepoints]

    def offset(self, client_ids: int | np.ndarray) -> np.ndarray:
        """Per-client offsets in ``0 .. stagger_rounds`` (zeros when synchronous)."""
        ids = np.atleast_1d(np.asarray(client_ids))
        if self.stagger_rounds == 0:
            return np.zeros(ids.shape, dtype=np.int64)
        u = hashed_uniform(self.seed, _OFFSET, ids)
        return np.minimum((u * (self.stagger_rounds + 1)).astype(np.int64), self.stagger_rounds)

    def drifts(self, client_ids: int | np.ndarray) -> np.ndarray:
        """Whether each client is subject to drift at all."""
        ids = np.atleast_1d(np.asarray(client_ids))
        if self.drifting_fraction >= 1.0:
            return np.ones(ids.shape, dtype=bool)
        return hashed_uniform(self.seed, _DRIFTS, ids) < self.drifting_fraction

    def mixture(
        self, client_ids: int | np.ndarray, server_round: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(previous, current, weight)`` per client: current concept, the one it replaces,
        and the share of examples drawn from ``current`` (1.0 outside transitions)."""
        ids = np.atleast_1d(np.asarray(client_ids))
        n = ids.shape
        concepts = np.array(
            [self.initial_concept] + [cp.concept for cp in self.changepoints], dtype=np.int64
        )
        if not self.changepoints:
            return np.full(n, self.initial_concept), np.full(n, self.initial_concept), np.ones(n)
        rounds = np.array(self.changepoint_rounds(), dtype=np.int64)
        local_t = int(server_round) - self.offset(ids)
        idx = np.searchsorted(rounds, local_t, side="right")  # changepoints reached
        idx = np.where(self.drifts(ids), idx, 0)
        current = concepts[idx]
        previous = concepts[np.maximum(idx - 1, 0)]
        since = local_t - np.where(idx > 0, rounds[np.maximum(idx - 1, 0)], 0)
        weight = np.where(idx > 0, np.minimum(1.0, (since + 1) / self.transition_rounds), 1.0)
        return previous, current, weight

    def concept_for(self, client_id: int, server_round: int) -> int:
        """The concept ``client_id`` is on (or moving to) in ``server_round``."""
        return int(self.mixture(client_id, server_round)[1][0])

    def mix_weight(self, client_id: int, server_round: int) -> float:
        """Share of ``client_id``'s examples from :meth:`concept_for` (1.0 when not mixing)."""
        return float(self.mixture(client_id, server_round)[2][0])

    def events(self, server_round: int) -> list[DriftEvent]:
        """Changepoints that start for some clients in ``server_round``."""
        out: list[DriftEvent] = []
        share = self.drifting_fraction / (self.stagger_rounds + 1)
        for j, cp in enumerate(self.changepoints):
            offset = int(server_round) - cp.round
            if 0 <= offset <= self.stagger_rounds and share > 0:
                before = self.changepoints[j - 1].concept if j > 0 else self.initial_concept
                out.append(
                    DriftEvent(
                        round=int(server_round),
                        changepoint=j,
                        changepoint_round=cp.round,
                        from_concept=before,
                        to_concept=cp.concept,
                        offset=offset,
                        expected_fraction=share,
                        transition_rounds=self.transition_rounds,
                    )
                )
        return out


# ------------------------------------------------------------------------- current-concept data


def _apply_groups(
    X: np.ndarray,
    y: np.ndarray,
    concept_of_row: np.ndarray,
    concepts: Sequence[Concept],
    *,
    seed: int,
    keys: Sequence[int],
) -> Arrays:
    ids = np.unique(concept_of_row)
    if ids.max(initial=0) >= len(concepts):
        raise ValueError(f"schedule uses concept {ids.max()} but only {len(concepts)} are defined")
    if len(ids) == 1:
        return apply_concept(X, y, concepts[int(ids[0])], seed=seed, keys=(*keys, int(ids[0])))
    parts = [
        apply_concept(
            X[concept_of_row == c],
            y[concept_of_row == c],
            concepts[int(c)],
            seed=seed,
            keys=(*keys, int(c)),
        )
        for c in ids
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def apply_schedule(
    X: np.ndarray,
    y: np.ndarray,
    *,
    schedule: DriftSchedule,
    concepts: Sequence[Concept],
    client_id: int,
    server_round: int,
    seed: int = 0,
) -> Arrays:
    """A client's current-concept training arrays for ``server_round``.

    During a gradual transition, example ``i`` of the client comes from the new concept when
    a uniform number fixed per ``(seed, client, i)`` is below the mixing weight, so the set of
    switched examples only grows from round to round. Label-shift concepts resample, so rows
    are regrouped by concept (training shuffles anyway).
    """
    y = np.asarray(y, dtype=np.int64)
    prev_arr, cur_arr, w_arr = schedule.mixture(client_id, server_round)
    previous, current, w = int(prev_arr[0]), int(cur_arr[0]), float(w_arr[0])
    keys = (int(client_id), int(server_round))
    if w >= 1.0 or previous == current:
        rows = np.full(len(y), current, dtype=np.int64)
    else:
        u = hashed_uniform(schedule.seed, _MIX, int(client_id), np.arange(len(y)))
        rows = np.where(u < w, current, previous)
    return _apply_groups(np.asarray(X, dtype=np.float32), y, rows, concepts, seed=seed, keys=keys)


def current_test_set(
    X: np.ndarray,
    y: np.ndarray,
    *,
    schedule: DriftSchedule,
    concepts: Sequence[Concept],
    server_round: int,
    seed: int = 0,
) -> Arrays:
    """The centralized test set as the population sees it in ``server_round``.

    Test example ``i`` stands for client id ``i``: it takes that client's offset, drift
    membership and mixing weight, so under staggered or partial drift the test set holds each
    concept in the share the population does. The random operators use keys fixed across
    rounds (noise does not flicker from round to round). Synchronous sudden drift gives the
    whole test set the current concept.
    """
    y = np.asarray(y, dtype=np.int64)
    ids = np.arange(len(y))
    previous, current, weight = schedule.mixture(ids, server_round)
    u = hashed_uniform(schedule.seed, _TEST_MIX, ids)
    rows = np.where(u < weight, current, previous)
    return _apply_groups(
        np.asarray(X, dtype=np.float32), y, rows, concepts, seed=seed, keys=(_TEST_KEY,)
    )


def concept_test_set(X: np.ndarray, y: np.ndarray, concept: Concept, *, seed: int = 0) -> Arrays:
    """The test set entirely under ``concept`` (fixed draws, for per-concept accuracy)."""
    return apply_concept(X, y, concept, seed=seed, keys=(_TEST_KEY,))
