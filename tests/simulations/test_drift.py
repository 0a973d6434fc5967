"""Drift: schedules on hand-made cases, concept operators, current-concept data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulations import drift
from simulations.drift import (
    DRIFT_KINDS,
    DRIFT_TIMINGS,
    Changepoint,
    Concept,
    DriftSchedule,
    apply_concept,
    apply_schedule,
    current_test_set,
    make_concepts,
)

# ------------------------------------------------------------------------------- schedules


def test_sudden_synchronous_switch() -> None:
    s = DriftSchedule.sudden([5])
    assert [s.concept_for(k, 4) for k in (0, 1, 999_999)] == [0, 0, 0]
    assert [s.concept_for(k, 5) for k in (0, 1, 999_999)] == [1, 1, 1]
    assert s.mix_weight(3, 5) == 1.0
    assert s.changepoint_rounds() == [5]


def test_multiple_changepoints_with_explicit_concepts() -> None:
    s = DriftSchedule.sudden([3, 6, 8], concepts=[2, 0, 1])
    assert [s.concept_for(0, t) for t in range(1, 10)] == [0, 0, 2, 2, 2, 0, 0, 1, 1]


def test_gradual_mixing_ramps_over_k_rounds() -> None:
    s = DriftSchedule.gradual([5], transition_rounds=4)
    weights = [s.mix_weight(0, t) for t in range(3, 11)]
    concepts = [s.concept_for(0, t) for t in range(3, 11)]
    assert weights == [1.0, 1.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert concepts == [0, 0, 1, 1, 1, 1, 1, 1]
    previous, current, weight = s.mixture(np.array([0, 1]), 6)
    assert previous.tolist() == [0, 0] and current.tolist() == [1, 1]
    assert weight.tolist() == [0.5, 0.5]


def test_recurring_cycles_through_concepts() -> None:
    s = DriftSchedule.recurring(start=4, period=3, num_rounds=15, num_concepts=3)
    assert [(c.round, c.concept) for c in s.changepoints] == [(4, 1), (7, 2), (10, 0), (13, 1)]
    expected = "000111222000111"
    assert "".join(str(s.concept_for(0, t)) for t in range(1, 16)) == expected


def test_staggered_offsets_shift_each_clients_changepoint() -> None:
    s = DriftSchedule.sudden([10], stagger_rounds=3, seed=5)
    ids = np.arange(4000)
    offsets = s.offset(ids)
    assert set(offsets.tolist()) == {0, 1, 2, 3}
    assert np.allclose(np.bincount(offsets) / len(ids), 0.25, atol=0.03)
    np.testing.assert_array_equal(offsets[:50], s.offset(ids[:50]))  # pure in (seed, id)
    for k in (0, 1, 2, 17):
        o = int(offsets[k])
        assert s.concept_for(k, 9 + o) == 0 and s.concept_for(k, 10 + o) == 1
    # round 11: clients with offset <= 1 have switched
    _, current, _ = s.mixture(ids, 11)
    np.testing.assert_array_equal(current, (offsets <= 1).astype(int))
    assert not np.array_equal(
        offsets, DriftSchedule.sudden([10], stagger_rounds=3, seed=6).offset(ids)
    )


def test_events_list_the_changepoints_starting_in_a_round() -> None:
    s = DriftSchedule.sudden([10, 20], concepts=[1, 0], stagger_rounds=2)
    assert s.events(9) == [] and s.events(13) == []
    events = [s.events(t) for t in (10, 11, 12, 20)]
    assert [len(e) for e in events] == [1, 1, 1, 1]
    assert [e[0].offset for e in events] == [0, 1, 2, 0]
    assert events[3][0].from_concept == 1 and events[3][0].to_concept == 0
    assert events[0][0].expected_fraction == pytest.approx(1 / 3)
    json.dumps([e.to_dict() for e in events[0]])


def test_partial_drift_keeps_other_clients_on_the_initial_concept() -> None:
    s = DriftSchedule.sudden([2], drifting_fraction=0.3, seed=1)
    _, current, _ = s.mixture(np.arange(10_000), 5)
    assert abs(current.mean() - 0.3) < 0.02


def test_from_settings_maps_the_run_config_keys() -> None:
    assert DriftSchedule.from_settings("sudden", 0, num_rounds=10).changepoints == ()
    assert DriftSchedule.from_settings("sudden", 4, num_rounds=10).changepoints == (
        Changepoint(4, 1),
    )
    g = DriftSchedule.from_settings("gradual", 4, num_rounds=10, width=3)
    assert g.transition_rounds == 3
    once = DriftSchedule.from_settings("recurring", 4, num_rounds=10, period=0)
    assert once.changepoint_rounds() == [4]
    rec = DriftSchedule.from_settings("recurring", 4, num_rounds=10, period=3, stagger=2)
    assert rec.changepoint_rounds() == [4, 7, 10] and rec.stagger_rounds == 2
    with pytest.raises(ValueError) as info:
        DriftSchedule.from_settings("seasonal", 4, num_rounds=10)
    for name in DRIFT_TIMINGS:
        assert name in str(info.value)


def test_schedule_validation() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        DriftSchedule(changepoints=(Changepoint(5, 1), Changepoint(5, 2)))
    with pytest.raises(ValueError, match=">= 1"):
        DriftSchedule(changepoints=(Changepoint(0, 1),))
    with pytest.raises(ValueError, match="transition_rounds"):
        DriftSchedule.gradual([3], transition_rounds=0)


# -------------------------------------------------------------------------------- concepts

X_IMG = np.arange(2 * 1 * 8 * 8, dtype=np.float32).reshape(2, 1, 8, 8)
Y10 = np.arange(10, dtype=np.int64)


def test_label_permutation_relabels_the_chosen_classes() -> None:
    half = make_concepts("label-permutation", num_classes=10, severity=0.5, seed=3)[1]
    X, y = apply_concept(np.zeros((10, 2), np.float32), Y10, half)
    assert (y != Y10).sum() == 5 and sorted(y.tolist()) == Y10.tolist()
    full = make_concepts("label-permutation", num_classes=10, severity=1.0)[1]
    assert (apply_concept(np.zeros((10, 2), np.float32), Y10, full)[1] != Y10).all()
    swap = Concept(label_permutation=(1, 0, 2))
    swapped = apply_concept(np.zeros((3, 1), np.float32), np.array([0, 1, 2]), swap)[1]
    assert swapped.tolist() == [1, 0, 2]


def test_label_shift_resamples_towards_the_class_weights() -> None:
    y = np.repeat(np.arange(2), 5000)
    X = y[:, None].astype(np.float32)
    concept = Concept(class_weights=(1.0, 4.0))
    Xs, ys = apply_concept(X, y, concept, seed=0, keys=(1, 2))
    assert len(ys) == len(y) and abs(ys.mean() - 0.8) < 0.02
    np.testing.assert_array_equal(Xs[:, 0], ys)  # rows move with their labels
    again = apply_concept(X, y, concept, seed=0, keys=(1, 2))[1]
    np.testing.assert_array_equal(ys, again)


def test_rotation_by_quarter_turns_equals_rot90_on_images_and_flat_inputs() -> None:
    rot = Concept(rotation_degrees=90.0)
    Xr, _ = apply_concept(X_IMG, np.zeros(2, np.int64), rot)
    np.testing.assert_array_equal(Xr, np.rot90(X_IMG, 1, axes=(-2, -1)))
    flat = X_IMG.reshape(2, 64)
    Xf, _ = apply_concept(flat, np.zeros(2, np.int64), rot)
    np.testing.assert_array_equal(Xf.reshape(2, 1, 8, 8), Xr)
    small = apply_concept(X_IMG, np.zeros(2, np.int64), Concept(rotation_degrees=30.0))[0]
    assert small.shape == X_IMG.shape and not np.allclose(small, X_IMG)
    with pytest.raises(ValueError, match="square"):
        apply_concept(np.zeros((2, 60), np.float32), np.zeros(2, np.int64), rot)


def test_noise_and_feature_shift_change_inputs_only_and_not_in_place() -> None:
    X = np.zeros((100, 5), np.float32)
    y = np.arange(100) % 3
    Xs, ys = apply_concept(X, y, Concept(feature_shift=0.5))
    assert np.all(Xs == 0.5) and np.array_equal(ys, y) and np.all(X == 0)
    Xn, _ = apply_concept(X, y, Concept(noise_std=2.0), seed=1, keys=(3,))
    assert abs(Xn.std() - 2.0) < 0.1
    np.testing.assert_array_equal(
        Xn, apply_concept(X, y, Concept(noise_std=2.0), seed=1, keys=(3,))[0]
    )
    assert not np.array_equal(Xn, apply_concept(X, y, Concept(noise_std=2.0), seed=1, keys=(4,))[0])


def test_make_concepts_kinds_and_errors() -> None:
    for kind in DRIFT_KINDS:
        concepts = make_concepts(kind, num_classes=10, num_concepts=3, seed=0)
        assert len(concepts) == 3 and concepts[0].is_identity
        assert concepts[1].is_identity == (kind == "none")
    assert (
        make_concepts("rotation", num_classes=10, severity=0.5, num_concepts=3)[2].rotation_degrees
        == 90.0
    )
    with pytest.raises(ValueError) as info:
        make_concepts("swap", num_classes=10)
    for kind in DRIFT_KINDS:
        assert kind in str(info.value)
    with pytest.raises(ValueError, match="permutation"):
        Concept(label_permutation=(0, 0, 1))


# ------------------------------------------------------------------------ current-concept data

SHIFT = [Concept(), Concept(feature_shift=100.0, name="far")]


def _on_new_concept(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1).max(axis=1) > 50


def test_apply_schedule_sudden_switches_the_whole_client() -> None:
    X = np.zeros((40, 3), np.float32)
    y = np.arange(40) % 4
    s = DriftSchedule.sudden([5])
    before = apply_schedule(X, y, schedule=s, concepts=SHIFT, client_id=3, server_round=4)[0]
    after = apply_schedule(X, y, schedule=s, concepts=SHIFT, client_id=3, server_round=5)[0]
    assert not _on_new_concept(before).any() and _on_new_concept(after).all()


def test_apply_schedule_gradual_grows_the_switched_share_monotonically() -> None:
    X = np.zeros((2000, 3), np.float32)
    y = np.zeros(2000, np.int64)
    s = DriftSchedule.gradual([5], transition_rounds=4, seed=2)
    shares = [
        _on_new_concept(
            apply_schedule(X, y, schedule=s, concepts=SHIFT, client_id=9, server_round=t)[0]
        ).mean()
        for t in range(4, 10)
    ]
    assert shares[0] == 0.0 and shares[-1] == 1.0 and shares[-2] == 1.0
    assert shares == sorted(shares)
    assert shares[1:4] == pytest.approx([0.25, 0.5, 0.75], abs=0.04)


def test_current_test_set_follows_the_populations_mixture() -> None:
    X = np.zeros((4000, 2), np.float32)
    y = np.zeros(4000, np.int64)
    sync = DriftSchedule.sudden([3])
    assert not _on_new_concept(
        current_test_set(X, y, schedule=sync, concepts=SHIFT, server_round=2)[0]
    ).any()
    assert _on_new_concept(
        current_test_set(X, y, schedule=sync, concepts=SHIFT, server_round=3)[0]
    ).all()
    staggered = DriftSchedule.sudden([3], stagger_rounds=3, seed=1)
    share = _on_new_concept(
        current_test_set(X, y, schedule=staggered, concepts=SHIFT, server_round=4)[0]
    ).mean()
    assert abs(share - 0.5) < 0.03  # offsets 0 and 1 of 0..3 have switched
    fixed = drift.concept_test_set(X, y, SHIFT[1])
    assert _on_new_concept(fixed[0]).all()


def test_schedule_using_an_undefined_concept_raises() -> None:
    s = DriftSchedule.sudden([2], concepts=[5])
    with pytest.raises(ValueError, match="concept 5"):
        apply_schedule(
            np.zeros((3, 1), np.float32),
            np.zeros(3, np.int64),
            schedule=s,
            concepts=SHIFT,
            client_id=0,
            server_round=2,
        )
