"""Bounding each client's influence before aggregation (issue 20 §2; docs/PIPELINE.md).

Three stages, each a small object with its own checks, run by :class:`strategies.pipeline.
ServerPipeline` on the validated replies of a round (one reply = one client in a deployment
or with ``reply_mode="per-client"``; a worker's mean over its clients otherwise):

* :class:`ReplyLimits`: what a reply may carry (example counts, metrics entries and their
  sizes), checked before anything is aggregated or kept;
* :class:`WeightCap`: no client weighs more than ``max_share`` of the cohort (water-filling);
* :class:`Clipping`: the update norm ``||x_i - x_t||`` bounded by a fixed norm, by an adaptive
  quantile of the cohort's norms (Andrew et al., "Differentially Private Learning with
  Adaptive Clipping", arXiv:1905.03871) and by ``max_ratio`` times the cohort's median norm;
  an update above the bound is clipped to it (or dropped), a non-finite one is dropped.

Every dropped, clipped or capped client is named with the reason in the round's failures.
The defaults never touch an honest client of a shipped scenario (docs/PIPELINE.md says how
that was checked): they stop the probes of issue 20 (a reply of 1e30, 1e12 or 1e308 claimed
examples, a metrics list of millions of entries) without changing an honest run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from flwr.app import ConfigRecord, MetricRecord

from .validation import CheckedReply

# defaults (docs/PIPELINE.md, "Defaults")
MAX_EXAMPLES = 10**9  # claimed examples of one client
MAX_METRICS = 64  # entries of a reply's MetricRecord
MAX_METRIC_VALUES = 10_000  # numbers in all of them together
MAX_CLIENT_SHARE = 0.75  # synthetic-hetero's largest honest client holds 65% of a cohort
MAX_NORM_RATIO = 10.0  # times the cohort's median update norm
OVER_BOUND = ("clip", "drop")


def _number(
    value: object, what: str, low: float, high: float = math.inf, *, low_open: bool = False
) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    v = float(value) if ok else math.nan  # type: ignore[arg-type]
    inside = (v > low if low_open else v >= low) and v <= high
    if not (ok and math.isfinite(v) and inside):
        lo = f"({low:g}" if low_open else f"[{low:g}"
        raise ValueError(f"{what} must be a number in {lo}, {high:g}], got {value!r}")
    return v


@dataclass(frozen=True)
class ReplyLimits:
    """What one reply may carry. A reply beyond a limit is dropped with the reason.

    Args:
        max_examples: claimed examples per client (a claim of 1e12 would own the average,
            1e308 overflows the weights).
        max_metrics: entries of the reply's MetricRecord.
        max_metric_values: numbers in those entries together (lists count their length): a
            long metrics list would otherwise be kept in the run's history every round.
    """

    max_examples: int = MAX_EXAMPLES
    max_metrics: int = MAX_METRICS
    max_metric_values: int = MAX_METRIC_VALUES

    needs_per_client_values = False  # sizes travel in the clear under secure aggregation

    def __post_init__(self) -> None:
        for name in ("max_examples", "max_metrics", "max_metric_values"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")

    def violation(self, c: CheckedReply) -> str | None:
        """The reason ``c`` breaks a limit, or ``None``."""
        big = [n for n in c.client_num_examples if n > self.max_examples]
        if c.num_examples > self.max_examples * max(1, len(c.client_ids)) or big:
            claimed = big[0] if big else c.num_examples
            return (
                f"claims {claimed} examples, above the limit of {self.max_examples} per "
                "client (max-client-examples)"
            )
        msg = c.message
        if msg is None or not msg.has_content():
            return None
        records = [r for r in msg.content.values() if isinstance(r, MetricRecord | ConfigRecord)]
        entries = sum(len(r) for r in records if isinstance(r, MetricRecord))
        if entries > self.max_metrics:
            return (
                f"carries {entries} metrics entries, above the limit of {self.max_metrics} "
                "(max-reply-metrics)"
            )
        values = 0
        for r in records:
            for v in r.values():
                values += len(v) if isinstance(v, list) else 1
        # fedadapt's own per-client lists hold a few entries per client
        allowed = self.max_metric_values + 16 * len(c.client_ids)
        if values > allowed:
            return (
                f"carries {values} metric values, above the limit of {allowed} (max-metric-values)"
            )
        return None


@dataclass(frozen=True)
class WeightCap:
    """No client's weight above ``max_share`` of the round's total weight.

    The weights are the clients' example counts; the largest are lowered to a common level
    ``L`` chosen so that ``L <= max_share * sum_j min(n_j, L)`` (water-filling), so the others
    keep their proportions. With fewer than ``1 / max_share`` clients the cap is
    ``1 / num_clients`` (equal weights). ``max_share = 1`` disables it.
    """

    max_share: float = MAX_CLIENT_SHARE

    needs_per_client_values = False  # example counts travel in the clear

    def __post_init__(self) -> None:
        _number(self.max_share, "max_client_share", 0.0, 1.0, low_open=True)

    def cap(self, counts: Sequence[float]) -> list[float]:
        """The capped weights (``counts`` themselves, same objects, when nothing is capped)."""
        n = len(counts)
        total = math.fsum(counts)
        share = max(self.max_share, 1.0 / n) if n else 1.0
        if n == 0 or share >= 1.0 or max(counts) <= share * total:
            return list(counts)
        # water-filling: the k largest take level L = share * rest / (1 - k * share)
        order = sorted(counts, reverse=True)
        rest = total
        for k in range(1, n + 1):
            rest -= order[k - 1]
            denom = 1.0 - k * share
            level = share * rest / denom if denom > 0 else math.inf
            if k == n or order[k] <= level:
                break
        return [min(float(c), level) for c in counts]


@dataclass
class Clipping:
    """Bound each update's norm ``||x_i - x_t||_2`` (parameters only, float64).

    The bound of a round is the smallest of: ``clip_norm`` (fixed), the adaptive bound
    ``C_t`` when ``quantile`` is set, and ``max_ratio`` times the cohort's median norm. An
    update above it is scaled to it (``action="clip"``) or dropped (``"drop"``); a non-finite
    norm is always dropped.

    **Adaptive quantile clipping** (Andrew, Thakkar, McMahan, Ramaswamy, "Differentially
    Private Learning with Adaptive Clipping", arXiv:1905.03871, Alg. 1): with
    :math:`b_i = 1[\\|\\Delta_i\\| \\le C_t]` (the update was *not* clipped) and
    :math:`\\bar b_t` their mean,

    .. math::

        C_{t+1} = C_t \\exp\\bigl(-\\eta_C (\\bar b_t - \\gamma)\\bigr)

    so ``C`` shrinks while more than a share ``gamma = quantile`` of the updates fit under it
    and grows otherwise: it settles at the ``gamma``-quantile of the norms. (Flower 1.41's
    ``adaptiveclipping`` reads the bit with the opposite sign and drifts away from the
    quantile, FIELD.md §9.) Under differential privacy :math:`\\sum_i b_i` gets Gaussian noise
    of std ``bit_noise`` (the paper's :math:`\\sigma_b`, set by :class:`strategies.privacy.
    GaussianPrivacy`).

    Args:
        clip_norm: fixed bound (``None``: none); with ``quantile`` it is the initial ``C_0``.
        quantile: target quantile ``gamma`` in (0, 1) of the adaptive bound (``None``: off).
        clip_lr: the geometric step ``eta_C`` (the paper's 0.2).
        max_ratio: bound relative to the cohort's median norm (``None``: off; default 10).
        action: ``"clip"`` or ``"drop"`` an update above the bound.
    """

    clip_norm: float | None = None
    quantile: float | None = None
    clip_lr: float = 0.2
    max_ratio: float | None = MAX_NORM_RATIO
    action: str = "clip"
    initial_norm: float = 0.1  # C_0 of the adaptive bound when clip_norm is not given

    def __post_init__(self) -> None:
        if self.clip_norm is not None:
            self.clip_norm = _number(self.clip_norm, "clip_norm", 0.0, low_open=True)
        if self.quantile is not None:
            self.quantile = _number(self.quantile, "clip_quantile", 0.0, 1.0, low_open=True)
            if self.quantile >= 1.0:
                raise ValueError(f"clip_quantile must be in (0, 1), got {self.quantile!r}")
        self.clip_lr = _number(self.clip_lr, "clip_lr", 0.0, low_open=True)
        if self.max_ratio is not None:
            self.max_ratio = _number(self.max_ratio, "max_norm_ratio", 1.0)
        if self.action not in OVER_BOUND:
            raise ValueError(f"over_bound must be one of {list(OVER_BOUND)}, got {self.action!r}")
        self.bound = float(self.clip_norm if self.clip_norm is not None else self.initial_norm)
        self.bit_noise = 0.0  # sigma_b, set by the privacy stage
        self.last_bound = math.nan

    @property
    def per_client(self) -> bool:
        """A fixed or adaptive clip: needs each client's update (not the worker's mean)."""
        return self.clip_norm is not None or self.quantile is not None

    needs_per_client_values = True  # each update's norm

    @property
    def active(self) -> bool:
        return self.per_client or self.max_ratio is not None

    def round_bound(self, norms: Sequence[float]) -> tuple[float, str]:
        """This round's bound and which rule set it."""
        cands: list[tuple[float, str]] = []
        if self.quantile is not None:
            cands.append((self.bound, f"adaptive {self.quantile:g}-quantile bound"))
        elif self.clip_norm is not None:
            cands.append((self.clip_norm, "clip-norm"))
        finite = sorted(v for v in norms if math.isfinite(v))
        if self.max_ratio is not None and finite:
            k = len(finite)
            med = finite[k // 2] if k % 2 else 0.5 * (finite[k // 2 - 1] + finite[k // 2])
            cands.append((self.max_ratio * med, f"{self.max_ratio:g} x the cohort's median norm"))
        if not cands:
            return math.inf, ""
        return min(cands, key=lambda c: c[0])

    def adapt(self, norms: Sequence[float], rng_normal: float = 0.0) -> None:
        """Andrew et al.'s update of the adaptive bound from the round's norms
        (``rng_normal``: a standard normal draw, scaled by ``bit_noise`` under DP)."""
        self.last_bound = self.bound
        if self.quantile is None or not norms:
            return
        fit = sum(1 for v in norms if math.isfinite(v) and v <= self.bound)
        frac = (fit + self.bit_noise * rng_normal) / len(norms)
        self.bound *= math.exp(-self.clip_lr * (frac - self.quantile))

    def state_dict(self) -> dict[str, float]:
        return {"bound": float(self.bound)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        b = state.get("bound")
        if not (isinstance(b, int | float) and math.isfinite(b) and b > 0):
            raise ValueError(f"clipping.bound must be a finite number > 0, got {b!r}")
        self.bound = float(b)


def client_ids(c: CheckedReply) -> list[int | None]:
    """The ids a failure of this reply names."""
    return list(c.client_ids) or [None]


__all__ = [
    "MAX_CLIENT_SHARE",
    "MAX_EXAMPLES",
    "MAX_METRICS",
    "MAX_METRIC_VALUES",
    "MAX_NORM_RATIO",
    "OVER_BOUND",
    "Clipping",
    "ReplyLimits",
    "WeightCap",
    "client_ids",
]
