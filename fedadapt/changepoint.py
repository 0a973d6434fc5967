"""A change detector for federated rounds: one-sided CUSUM tests on per-round server signals.

Federated data drift shows first in the clients' training loss *at the start* of local
training: the global model was fit to the old concept, so every client that now sees the new
one starts from a high loss. Heterogeneity and the changing cohort make that loss noisy, and
early training makes it fall steadily; a good detector must ignore both. This one

1. works per *channel* (a named signal per round, e.g. ``"start-loss"``), on a robust mean of
   the clients' log values: each client counts once (a claimed example count buys no
   influence), and values beyond ``median +- outlier_mads`` scaled median absolute deviations
   are pulled to that band (a winsorized mean, Huber's idea; "Robust Statistics", 1981), so a
   loss going 0.7 -> 2.1 and one going 0.07 -> 0.21 are the same event and a minority of huge
   or tiny values moves it by at most the band;
2. tests each channel against its own history: an exponentially weighted mean and standard
   deviation of the past rounds (the reference), the standardised residual
   ``z_t = (x_t - mu_{t-1}) / max(sigma_{t-1}, min_std)`` and a one-sided CUSUM
   ``S_t = max(0, S_{t-1} + z_t - slack)`` (Page, "Continuous inspection schemes",
   Biometrika 1954; the same test as Page-Hinkley on a standardised series). A falling loss
   (training) drives ``z`` negative and keeps ``S`` at 0;
3. raises an alarm when ``S_t > threshold`` *and*, where per-client values are given, at least
   ``agreement`` of the cohort's *clients* (counted, not weighted by their claimed examples;
   outliers beyond the band never agree) sit above the reference by the same margin: a
   minority below ``agreement`` cannot fire it, whatever it claims;
4. waits ``warmup`` rounds before testing (and again after each alarm, while the reference
   re-learns the new level), so the first rounds' transients never fire it, and raises at most
   one alarm per ``min_alarm_gap`` rounds (a pulsing minority cannot keep the server in its
   post-change mode).

Non-finite and non-positive values are dropped and counted (``last_info["<channel>-dropped"]``).
Attacks on the detector (a minority firing or hiding a change): FIELD.md §9 and docs/DRIFT.md.

Channels with no data in a round are skipped. The detector is pure Python (no torch, no flwr);
its state is a dict of floats (``state_dict``/``load_state_dict``), so checkpoints and Ray
pickling carry it. Every round's statistics are in :attr:`last_info`.

Example (four clients' round-start losses, which jump at round 10):

    >>> det = ChangeDetector()
    >>> rounds = [[1.0, 1.1, 0.9, 1.05]] * 10 + [[3.0, 3.2, 2.9, 3.1]] * 3
    >>> sizes = [10, 20, 30, 40]
    >>> for t, losses in enumerate(rounds):
    ...     if det.update({"start-loss": losses}, weights={"start-loss": sizes}):
    ...         print("change at round", t)
    change at round 10
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["ChangeDetector"]


def _median(srt: Sequence[float]) -> float:
    k = len(srt)
    return srt[k // 2] if k % 2 else 0.5 * (srt[k // 2 - 1] + srt[k // 2])


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


class ChangeDetector:
    """One-sided CUSUM change detection on the log of per-round signals.

    Args:
        warmup: rounds whose values only build the reference (at the start and after an alarm).
        threshold: CUSUM level ``h`` that raises an alarm (in reference standard deviations).
        slack: CUSUM drift ``k`` subtracted from every residual (ignores small upward noise).
        agreement: share of the cohort's clients (each counted once) that must lie above the
            reference by ``margin`` (only checked when per-client values are given).
        margin: log-space margin of the agreement test: a client agrees when its value exceeds
            the reference by this much (default ``log 1.5``, a 50% rise).
        smoothing: weight of a new round in the reference's mean and variance (EWMA).
        min_std: floor of the reference's standard deviation (log units): keeps the test from
            firing on a tiny wobble after a stretch of identical values.
        channels: the signals that may raise an alarm; any other channel given to
            :meth:`update` is tracked and reported but never alarms.
        outlier_mads: half-width of the winsorizing band around the cohort's median log value,
            in scaled median absolute deviations (1.4826 MAD, a standard deviation under
            normal noise), at least ``margin``.
        min_alarm_gap: rounds that must pass after an alarm before the next one can fire.
    """

    def __init__(
        self,
        *,
        warmup: int = 3,
        threshold: float = 3.0,
        slack: float = 1.0,
        agreement: float = 0.5,
        margin: float = math.log(1.5),
        smoothing: float = 0.2,
        min_std: float = 0.1,
        channels: Sequence[str] = ("start-loss",),
        outlier_mads: float = 5.0,
        min_alarm_gap: int = 8,
    ) -> None:
        _check(
            isinstance(warmup, int) and warmup >= 1, f"warmup must be an int >= 1, got {warmup!r}"
        )
        _check(
            threshold > 0 and math.isfinite(threshold), f"threshold must be > 0, got {threshold!r}"
        )
        _check(slack >= 0 and math.isfinite(slack), f"slack must be >= 0, got {slack!r}")
        _check(0.0 <= agreement <= 1.0, f"agreement must be in [0, 1], got {agreement!r}")
        _check(margin >= 0 and math.isfinite(margin), f"margin must be >= 0, got {margin!r}")
        _check(0.0 < smoothing <= 1.0, f"smoothing must be in (0, 1], got {smoothing!r}")
        _check(min_std > 0, f"min_std must be > 0, got {min_std!r}")
        _check(
            len(channels) > 0 and all(isinstance(c, str) for c in channels),
            f"channels must be a non-empty list of names, got {channels!r}",
        )
        _check(
            outlier_mads > 0 and math.isfinite(outlier_mads),
            f"outlier_mads must be > 0, got {outlier_mads!r}",
        )
        _check(
            isinstance(min_alarm_gap, int) and min_alarm_gap >= 1,
            f"min_alarm_gap must be an int >= 1, got {min_alarm_gap!r}",
        )
        self.outlier_mads = float(outlier_mads)
        self.min_alarm_gap = min_alarm_gap
        self.warmup = warmup
        self.threshold = float(threshold)
        self.slack = float(slack)
        self.agreement = float(agreement)
        self.margin = float(margin)
        self.smoothing = float(smoothing)
        self.min_std = float(min_std)
        self.channels = tuple(channels)
        self.rounds = 0
        self.alarms: list[int] = []
        self._ch: dict[str, dict[str, float]] = {}
        self.last_info: dict[str, float] = {}

    # ------------------------------------------------------------------ one round
    def update(
        self,
        values: Mapping[str, float | Sequence[float] | None],
        weights: Mapping[str, Sequence[float]] | None = None,
    ) -> bool:
        """Feed one round; return ``True`` when it raises an alarm.

        ``values[name]`` is a scalar (already aggregated: the sums-only form, e.g. the cohort's
        mean loss under secure aggregation) or the per-client values of the round's cohort.
        Non-positive and non-finite values are
        ignored (the log needs a positive signal); a channel left with nothing is skipped.
        ``weights`` only mark entries to drop (a weight that is not a finite number > 0):
        every remaining client counts once in the level and in the agreement.
        """
        self.rounds += 1
        alarm = False
        info: dict[str, float] = {}
        for name, raw in values.items():
            xs, ws = self._values(raw, (weights or {}).get(name))
            if raw is not None and not isinstance(raw, int | float):
                info[f"{name}-dropped"] = float(len(raw) - len(xs))  # type: ignore[arg-type]
            if not xs:
                continue
            logs, inside = self._winsorized([math.log(x) for x in xs])
            n = len(logs)
            x = math.fsum(logs) / n  # each client counts once
            ch = self._ch.setdefault(name, {"n": 0.0, "mean": x, "var": 0.0, "cusum": 0.0})
            # the rounds' sampling noise: the cohort's spread over its size (a heterogeneous
            # cohort moves its mean more from round to round), averaged like the reference
            se2 = 0.0
            if n > 1:
                spread = math.fsum((v - x) ** 2 for v in logs) / n
                se2 = spread / n
            ch.setdefault("se2", se2)
            std = max(math.sqrt(ch["var"]), math.sqrt(ch["se2"]), self.min_std)
            z = (x - ch["mean"]) / std
            testing = ch["n"] >= self.warmup
            fired = False
            share = math.nan
            if testing:
                ch["cusum"] = max(0.0, ch["cusum"] + z - self.slack)
                if n > 1:
                    # an outlier pulled into the band never agrees: a minority far from the
                    # cohort cannot make up the agreement with the honest clients' noise
                    share = (
                        sum(
                            1
                            for v, ok in zip(logs, inside, strict=True)
                            if ok and v > ch["mean"] + self.margin
                        )
                        / n
                    )
                fired = ch["cusum"] > self.threshold and (
                    math.isnan(share) or share >= self.agreement
                )
                if fired and self.alarms and self.rounds - self.alarms[-1] < self.min_alarm_gap:
                    fired = False
                    info[f"{name}-suppressed"] = 1.0  # rate-limited: reported, no alarm
            info[f"{name}"] = math.exp(x)  # geometric mean
            info[f"{name}-z"] = z
            info[f"{name}-cusum"] = ch["cusum"]
            if not math.isnan(share):
                info[f"{name}-share"] = share
            if fired and name in self.channels:
                alarm = True
            if fired:
                # the new level becomes the reference; test again after a fresh warm-up
                ch.update(n=1.0, mean=x, cusum=0.0)
            else:
                # learn the round into the reference
                a = self.smoothing if ch["n"] > 0 else 1.0
                # a rise is clipped to 3 sigma (one odd round moves the reference little), a
                # fall is followed at once (the loss of a federation that learns)
                delta = min(x - ch["mean"], 3.0 * std) if ch["n"] > 0 else 0.0
                ch["mean"] += a * delta
                # the test is one-sided, so is its noise scale: an upward semi-variance (x2, the
                # variance of symmetric noise); a falling loss (training, the recovery after a
                # change) must not widen the band that the next rise is measured against
                up = max(delta, 0.0)
                ch["var"] = (1.0 - a) * (ch["var"] + a * 2.0 * up * up)
                ch["se2"] += a * (se2 - ch["se2"])
                ch["n"] += 1.0
        if alarm:
            self.alarms.append(self.rounds)
        info["alarm"] = 1.0 if alarm else 0.0
        self.last_info = info
        return alarm

    def _winsorized(self, logs: list[float]) -> tuple[list[float], list[bool]]:
        """Values pulled into ``median +- max(outlier_mads * 1.4826 MAD, margin)``, and which
        were inside the band already."""
        if len(logs) < 3:
            return logs, [True] * len(logs)
        srt = sorted(logs)
        med = _median(srt)
        mad = _median(sorted(abs(v - med) for v in logs))
        half = max(self.outlier_mads * 1.4826 * mad, self.margin)
        inside = [med - half <= v <= med + half for v in logs]
        return [min(max(v, med - half), med + half) for v in logs], inside

    @staticmethod
    def _values(
        raw: float | Sequence[float] | None, w: Sequence[float] | None
    ) -> tuple[list[float], list[float]]:
        if raw is None:
            return [], []
        if isinstance(raw, int | float):
            raw, w = [float(raw)], [1.0]
        xs = [float(v) for v in raw]
        ws = [1.0] * len(xs) if w is None else [float(v) for v in w]
        _check(len(ws) == len(xs), f"got {len(xs)} values but {len(ws)} weights")
        keep = [
            (x, v)
            for x, v in zip(xs, ws, strict=True)
            if math.isfinite(x) and x > 0 and math.isfinite(v) and v > 0
        ]
        return [k[0] for k in keep], [k[1] for k in keep]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, object]:
        """Python scalars only (``torch.load(weights_only=True)`` safe)."""
        return {
            "rounds": self.rounds,
            "alarms": list(self.alarms),
            "channels": {k: dict(v) for k, v in self._ch.items()},
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore :meth:`state_dict`; a state a detector could not have reached (NaN or
        negative variances, a CUSUM below 0, alarms after the last round...) raises
        ``ValueError`` naming the field, before anything is changed: a NaN reference would
        never alarm again."""
        rounds, alarms, channels = self._checked_state(state)
        self.rounds, self.alarms, self._ch = rounds, alarms, channels

    @staticmethod
    def _checked_state(
        state: Mapping[str, object],
    ) -> tuple[int, list[int], dict[str, dict[str, float]]]:
        _check(
            isinstance(state, Mapping), f"detector state must be a dict, got {type(state).__name__}"
        )
        for key in ("rounds", "alarms", "channels"):
            _check(key in state, f"detector state lacks {key!r}")
        rounds = state["rounds"]
        _check(
            isinstance(rounds, int) and not isinstance(rounds, bool) and rounds >= 0,
            f"detector.rounds must be an int >= 0, got {rounds!r}",
        )
        assert isinstance(rounds, int)
        alarms = state["alarms"]
        _check(
            isinstance(alarms, list | tuple)
            and all(
                isinstance(a, int) and not isinstance(a, bool) and 1 <= a <= rounds for a in alarms
            )
            and list(alarms) == sorted(set(alarms)),
            f"detector.alarms must be increasing rounds in [1, {rounds}], got {alarms!r}",
        )
        channels = state["channels"]
        _check(isinstance(channels, Mapping), "detector.channels must be a dict")
        assert isinstance(channels, Mapping) and isinstance(alarms, list | tuple)
        out: dict[str, dict[str, float]] = {}
        for name, ch in channels.items():
            where = f"detector.channels[{name!r}]"
            _check(isinstance(ch, Mapping), f"{where} must be a dict")
            vals: dict[str, float] = {}
            for k in ("n", "mean", "var", "cusum"):
                _check(k in ch, f"{where} lacks {k!r}")
            for k, v in ch.items():
                _check(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
                    f"{where}.{k} must be a finite number, got {v!r}",
                )
                vals[str(k)] = float(v)
            for k in ("n", "var", "cusum", "se2"):
                if k in vals:
                    _check(vals[k] >= 0, f"{where}.{k} must be >= 0, got {vals[k]!r}")
            _check(
                vals["n"] <= rounds, f"{where}.n = {vals['n']} exceeds detector.rounds = {rounds}"
            )
            out[str(name)] = vals
        return rounds, [int(a) for a in alarms], out
