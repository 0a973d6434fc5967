"""Recovery metrics of an accuracy curve around drift changepoints (FIELD.md section 4a).

An accuracy curve is one value per evaluated round; ``rounds`` gives the round numbers
(default ``start_round, start_round + 1, ...``). ``NaN`` entries (rounds without evaluation)
are ignored. For each changepoint round ``c`` (the first round trained on the new concept),
its **segment** runs from ``c`` to the round before the next changepoint (or the end):

- ``pre_drift_accuracy``: mean of the last ``window`` evaluated values before ``c``;
- ``min_accuracy`` / ``min_round``: the lowest value in the segment and where it occurs;
- ``max_drop``: ``max(0, pre - min)``;
- ``rounds_to_recover``: ``r - c`` for the first round ``r`` at or after ``min_round`` whose
  accuracy reaches ``threshold * pre`` (0.95 by default), ``None`` if it never does within
  the segment;
- ``area_under_drop``: the sum over the segment's evaluated rounds of ``max(0, pre - acc)``
  (accuracy x rounds when every round is evaluated).

Metrics that cannot be computed (no evaluated round before ``c``, or none in its segment) are
``None``. Whole-curve numbers: :func:`time_averaged_accuracy`, :func:`rounds_to_target`,
:func:`summarize`.

Example::

    rec = recovery_metrics([0.8, 0.8, 0.8, 0.3, 0.7, 0.8], [4], window=3)[0]
    rec.max_drop, rec.rounds_to_recover   # (0.5 up to rounding, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "Recovery",
    "recovery_metrics",
    "rounds_to_target",
    "summarize",
    "time_averaged_accuracy",
]


@dataclass(frozen=True)
class Recovery:
    """Recovery of the accuracy curve after one changepoint (see the module docstring)."""

    changepoint_round: int
    pre_drift_accuracy: float | None
    min_accuracy: float | None
    min_round: int | None
    max_drop: float | None
    rounds_to_recover: int | None
    recovered_round: int | None
    area_under_drop: float | None
    # rounds from the changepoint until the accuracy is back within 2 points (0.02) of the
    # pre-drift level, and the mean accuracy from the changepoint to the next one (or the end)
    rounds_to_within_2pt: int | None = None
    mean_after: float | None = None

    def to_dict(self) -> dict[str, int | float | None]:
        """A JSON-ready dict."""
        return asdict(self)


def _curve(
    accuracy: Sequence[float], rounds: Sequence[int] | None, start_round: int
) -> tuple[np.ndarray, np.ndarray]:
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.ndim != 1:
        raise ValueError(f"accuracy must be a 1-D sequence, got shape {acc.shape}")
    if rounds is None:
        rnd = np.arange(start_round, start_round + len(acc), dtype=np.int64)
    else:
        rnd = np.asarray(rounds, dtype=np.int64)
        if rnd.shape != acc.shape:
            raise ValueError(f"{len(rnd)} rounds for {len(acc)} accuracy values")
        if np.any(np.diff(rnd) <= 0):
            raise ValueError("rounds must be strictly increasing")
    keep = ~np.isnan(acc)
    return acc[keep], rnd[keep]


def recovery_metrics(
    accuracy: Sequence[float],
    changepoints: Sequence[int],
    *,
    window: int = 3,
    threshold: float = 0.95,
    rounds: Sequence[int] | None = None,
    start_round: int = 1,
) -> list[Recovery]:
    """Per-changepoint recovery metrics, in the order of the (sorted) changepoint rounds.

    Args:
        accuracy: Accuracy per evaluated round.
        changepoints: Changepoint rounds (first round on the new concept).
        window: Evaluated rounds averaged for the pre-drift accuracy (>= 1).
        threshold: Share of the pre-drift accuracy that counts as recovered, in (0, 1].
        rounds: Round numbers of ``accuracy`` (default: consecutive from ``start_round``).
        start_round: Round of ``accuracy[0]`` when ``rounds`` is not given.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    acc, rnd = _curve(accuracy, rounds, start_round)
    cps = sorted(int(c) for c in changepoints)
    if len(set(cps)) != len(cps):
        raise ValueError(f"changepoint rounds must be distinct, got {cps}")
    out: list[Recovery] = []
    for j, c in enumerate(cps):
        end = cps[j + 1] if j + 1 < len(cps) else None
        before = acc[rnd < c]
        seg = (rnd >= c) if end is None else ((rnd >= c) & (rnd < end))
        seg_acc, seg_rnd = acc[seg], rnd[seg]
        if len(before) == 0 or len(seg_acc) == 0:
            out.append(
                Recovery(
                    c,
                    float(before[-window:].mean()) if len(before) else None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                )
            )
            continue
        pre = float(before[-window:].mean())
        i_min = int(np.argmin(seg_acc))
        recovered = np.flatnonzero(seg_acc[i_min:] >= threshold * pre - 1e-12)
        rec_round = int(seg_rnd[i_min + recovered[0]]) if len(recovered) else None
        within = np.flatnonzero(seg_acc[i_min:] >= pre - 0.02 - 1e-12)
        within_round = int(seg_rnd[i_min + within[0]]) if len(within) else None
        out.append(
            Recovery(
                changepoint_round=c,
                pre_drift_accuracy=pre,
                min_accuracy=float(seg_acc[i_min]),
                min_round=int(seg_rnd[i_min]),
                max_drop=max(0.0, pre - float(seg_acc[i_min])),
                rounds_to_recover=None if rec_round is None else rec_round - c,
                recovered_round=rec_round,
                area_under_drop=float(np.clip(pre - seg_acc, 0.0, None).sum()),
                rounds_to_within_2pt=None if within_round is None else within_round - c,
                mean_after=float(seg_acc.mean()),
            )
        )
    return out


def time_averaged_accuracy(
    accuracy: Sequence[float],
    *,
    rounds: Sequence[int] | None = None,
    start_round: int = 1,
    from_round: int | None = None,
) -> float | None:
    """Mean accuracy over the evaluated rounds (from ``from_round`` on); None if there are none."""
    acc, rnd = _curve(accuracy, rounds, start_round)
    if from_round is not None:
        acc = acc[rnd >= from_round]
    return float(acc.mean()) if len(acc) else None


def rounds_to_target(
    accuracy: Sequence[float],
    target: float,
    *,
    rounds: Sequence[int] | None = None,
    start_round: int = 1,
) -> int | None:
    """The first round whose accuracy reaches ``target``, or None if none does."""
    acc, rnd = _curve(accuracy, rounds, start_round)
    hit = np.flatnonzero(acc >= target)
    return int(rnd[hit[0]]) if len(hit) else None


def summarize(
    accuracy: Sequence[float],
    changepoints: Sequence[int] = (),
    *,
    target: float | None = None,
    window: int = 3,
    threshold: float = 0.95,
    rounds: Sequence[int] | None = None,
    start_round: int = 1,
) -> dict[str, float | int | None | list[dict[str, int | float | None]]]:
    """Final, best and time-averaged accuracy, rounds to ``target`` and per-changepoint
    recovery, as a JSON-ready dict (the accuracy part of ``summary.json``)."""
    acc, rnd = _curve(accuracy, rounds, start_round)
    return {
        "final_accuracy": float(acc[-1]) if len(acc) else None,
        "best_accuracy": float(acc.max()) if len(acc) else None,
        "best_round": int(rnd[int(np.argmax(acc))]) if len(acc) else None,
        "time_averaged_accuracy": float(acc.mean()) if len(acc) else None,
        "target_accuracy": target,
        "rounds_to_target": (
            None if target is None else rounds_to_target(acc.tolist(), target, rounds=rnd.tolist())
        ),
        "recovery": [
            r.to_dict()
            for r in recovery_metrics(
                acc.tolist(), changepoints, window=window, threshold=threshold, rounds=rnd.tolist()
            )
        ],
    }
