"""A minority of clients can neither fire nor hide a change (issue 20 §4).

The detector counts clients (a claimed example count buys nothing), winsorizes the cohort's log
losses around their median, rate-limits alarms and reports the values it dropped.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedadapt import ChangeDetector

N = 10


def honest(rng, level, n, noise=0.25):
    return list(level * np.exp(rng.normal(0.0, noise, size=n)))


def run(rounds, cohort):
    """Feed ``cohort(t) -> (losses, weights)`` for rounds 1..rounds; return the alarm rounds."""
    det = ChangeDetector()
    for t in range(1, rounds + 1):
        losses, weights = cohort(t)
        det.update({"start-loss": losses}, {"start-loss": weights})
    return det.alarms


@pytest.mark.parametrize("attackers", [1, 2, 3, 4])
@pytest.mark.parametrize("claimed", [150.0, 1400.0, 1e12])
@pytest.mark.parametrize("seed", range(3))
def test_a_minority_cannot_fire_it(attackers, claimed, seed):
    rng = np.random.default_rng(seed)

    def cohort(t):
        losses = honest(rng, 0.7, N)
        if t >= 15:  # the attackers report a huge loss from round 15 on, or in pulses
            for i in range(attackers):
                losses[i] = 1e6 if (t % 2 or attackers < 3) else losses[i]
        return losses, [claimed] * attackers + [150.0] * (N - attackers)

    assert run(40, cohort) == []


@pytest.mark.parametrize("attackers", [1, 2, 3])
@pytest.mark.parametrize("seed", range(3))
def test_a_minority_inside_the_band_cannot_fire_it(attackers, seed):
    """Attackers who stay plausible (a tripled loss, inside the winsorizing band) count in the
    agreement but stay below it."""
    rng = np.random.default_rng(seed)

    def cohort(t):
        losses = honest(rng, 0.7, N)
        if t >= 15:
            losses[:attackers] = [2.1] * attackers
        return losses, [1e12] * attackers + [150.0] * (N - attackers)

    assert run(40, cohort) == []


@pytest.mark.parametrize("attackers", [1, 2, 3, 4])
@pytest.mark.parametrize("claimed", [150.0, 1e12])
@pytest.mark.parametrize("seed", range(3))
def test_a_minority_cannot_hide_a_change(attackers, claimed, seed):
    rng = np.random.default_rng(seed)

    def cohort(t):
        level = 0.7 if t < 20 else 2.1  # every honest client's loss triples at round 20
        losses = honest(rng, level, N)
        for i in range(attackers):
            losses[i] = 0.3  # steady, whatever happens
        return losses, [claimed] * attackers + [150.0] * (N - attackers)

    alarms = run(40, cohort)
    assert alarms and 20 <= alarms[0] <= 21, alarms


def test_a_pulsing_half_is_rate_limited():
    rng = np.random.default_rng(4)

    def cohort(t):
        losses = honest(rng, 0.3, N)
        if t > 4 and t % 2:
            losses[:5] = [1e6] * 5
        return losses, [150.0] * N

    alarms = run(36, cohort)
    gap = ChangeDetector().min_alarm_gap
    assert all(b - a >= gap for a, b in zip(alarms, alarms[1:], strict=False))
    assert len(alarms) <= 32 // gap + 1


def test_dropped_values_are_reported():
    det = ChangeDetector()
    det.update({"start-loss": [0.5, math.nan, math.inf, -1.0, 0.6]})
    assert det.last_info["start-loss-dropped"] == 3.0


def test_rate_limit_and_band_options_are_checked():
    with pytest.raises(ValueError, match="min_alarm_gap"):
        ChangeDetector(min_alarm_gap=0)
    with pytest.raises(ValueError, match="outlier_mads"):
        ChangeDetector(outlier_mads=0.0)
