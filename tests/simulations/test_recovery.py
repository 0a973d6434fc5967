"""Recovery metrics on hand-made accuracy curves with answers worked out by hand."""

from __future__ import annotations

import json
import math

import pytest

from simulations.recovery import (
    Recovery,
    recovery_metrics,
    rounds_to_target,
    summarize,
    time_averaged_accuracy,
)


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-12)


def test_drop_and_recovery_after_one_changepoint() -> None:
    acc = [0.5, 0.7, 0.8, 0.8, 0.8, 0.3, 0.5, 0.7, 0.78, 0.8]  # rounds 1..10
    (r,) = recovery_metrics(acc, [6], window=3)
    # pre = mean(0.8, 0.8, 0.8); 95% of it = 0.76, first reached at round 9
    assert r.changepoint_round == 6
    assert r.pre_drift_accuracy == approx(0.8)
    assert (r.min_accuracy, r.min_round) == (0.3, 6)
    assert r.max_drop == approx(0.5)
    assert (r.recovered_round, r.rounds_to_recover) == (9, 3)
    assert r.area_under_drop == approx(0.5 + 0.3 + 0.1 + 0.02 + 0.0)


def test_never_recovering_gives_none() -> None:
    (r,) = recovery_metrics([0.9, 0.9, 0.4, 0.5, 0.6], [3], window=2)
    assert r.pre_drift_accuracy == approx(0.9) and r.max_drop == approx(0.5)
    assert r.rounds_to_recover is None and r.recovered_round is None
    assert r.area_under_drop == approx(0.5 + 0.4 + 0.3)


def test_each_changepoint_is_measured_on_its_own_segment() -> None:
    acc = [0.6, 0.6, 0.2, 0.6, 0.6, 0.1, 0.3, 0.6]
    first, second = recovery_metrics(acc, [6, 3], window=2)  # order of input does not matter
    assert first.changepoint_round == 3 and second.changepoint_round == 6
    assert first.max_drop == approx(0.4) and first.rounds_to_recover == 1
    assert first.area_under_drop == approx(0.4)  # segment is rounds 3..5 only
    assert second.pre_drift_accuracy == approx(0.6)  # rounds 4 and 5
    assert second.max_drop == approx(0.5) and second.rounds_to_recover == 2
    assert second.area_under_drop == approx(0.5 + 0.3)


def test_recovery_is_counted_from_the_minimum_for_a_delayed_drop() -> None:
    (r,) = recovery_metrics([0.8, 0.8, 0.79, 0.4, 0.8], [3], window=2)
    assert r.min_round == 4 and r.rounds_to_recover == 2
    assert r.area_under_drop == approx(0.01 + 0.4)


def test_no_drop_means_zero_drop_and_immediate_recovery() -> None:
    (r,) = recovery_metrics([0.5, 0.5, 0.6, 0.7], [3], window=2)
    assert r.max_drop == 0.0 and r.rounds_to_recover == 0 and r.area_under_drop == 0.0


def test_explicit_rounds_with_gaps_and_missing_values() -> None:
    (r,) = recovery_metrics([0.1, 0.8, math.nan, 0.4, 0.8], [5], window=1, rounds=[0, 2, 4, 6, 8])
    assert r.pre_drift_accuracy == approx(0.8)
    assert (r.min_round, r.recovered_round, r.rounds_to_recover) == (6, 8, 3)
    assert r.max_drop == approx(0.4) and r.area_under_drop == approx(0.4)


def test_window_longer_than_the_history_uses_what_there_is() -> None:
    (r,) = recovery_metrics([0.4, 0.8, 0.2, 0.9], [3], window=10)
    assert r.pre_drift_accuracy == approx(0.6)
    assert r.rounds_to_recover == 1


def test_uncomputable_metrics_are_none() -> None:
    (at_start,) = recovery_metrics([0.5, 0.6], [1])
    assert at_start == Recovery(1, None, None, None, None, None, None, None)
    (after_end,) = recovery_metrics([0.5, 0.6], [5], window=2)
    assert after_end.pre_drift_accuracy == approx(0.55) and after_end.max_drop is None


def test_time_averaged_accuracy_and_rounds_to_target() -> None:
    assert time_averaged_accuracy([0.5, 0.7, 0.9]) == approx(0.7)
    assert time_averaged_accuracy([0.5, 0.7, 0.9], from_round=2) == approx(0.8)
    assert time_averaged_accuracy([0.5, math.nan, 0.9]) == approx(0.7)
    assert time_averaged_accuracy([]) is None
    acc = [0.2, 0.5, 0.81, 0.7, 0.9]
    assert rounds_to_target(acc, 0.8) == 3
    assert rounds_to_target(acc, 0.8, start_round=0) == 2
    assert rounds_to_target(acc, 0.95) is None


def test_summarize_is_json_ready() -> None:
    out = summarize([0.5, 0.7, 0.8, 0.8, 0.8, 0.3, 0.5, 0.7, 0.78, 0.8], [6], target=0.75)
    assert out["final_accuracy"] == 0.8 and out["best_accuracy"] == 0.8
    assert out["best_round"] == 3 and out["rounds_to_target"] == 3
    assert out["time_averaged_accuracy"] == approx(6.68 / 10)
    recovery = out["recovery"]
    assert isinstance(recovery, list) and recovery[0]["rounds_to_recover"] == 3
    json.dumps(out)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "window"),
        ({"threshold": 0.0}, "threshold"),
        ({"rounds": [1, 2]}, "rounds for"),
        ({"rounds": [1, 1, 2]}, "strictly increasing"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recovery_metrics([0.1, 0.2, 0.3], [2], **kwargs)  # type: ignore[arg-type]


def test_duplicate_changepoints_raise() -> None:
    with pytest.raises(ValueError, match="distinct"):
        recovery_metrics([0.1, 0.2, 0.3], [2, 2])


def test_an_in_process_fedavg_run_drops_at_a_label_swap_and_recovers() -> None:
    """The layer end to end, without Flower: digits split by Dirichlet, a sudden label
    permutation at round 5, FedAvg over 6 clients, accuracy on the current-concept test set."""
    import torch

    from simulations.data import build_source
    from simulations.drift import DriftSchedule, apply_schedule, current_test_set, make_concepts
    from simulations.models import build_model

    source = build_source(
        "digits", num_clients=6, partitioner="dirichlet", partitioner_params={"alpha": 1.0}
    )
    concepts = make_concepts("label-permutation", num_classes=10, seed=0)
    schedule = DriftSchedule.sudden([5])
    model = build_model("mlp", source.input_shape, source.num_classes, seed=0)
    X_test, y_test = source.test_set()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    accuracy = []
    try:
        for rnd in range(1, 9):
            start = [p.detach().clone() for p in model.parameters()]
            total = [torch.zeros_like(p) for p in start]
            count = 0
            for cid in range(6):
                X, y = apply_schedule(
                    *source.get(cid),
                    schedule=schedule,
                    concepts=concepts,
                    client_id=cid,
                    server_round=rnd,
                )
                with torch.no_grad():
                    for p, s in zip(model.parameters(), start, strict=True):
                        p.copy_(s)
                for _ in range(10):
                    model.zero_grad()
                    loss = torch.nn.functional.cross_entropy(
                        model(torch.from_numpy(X)), torch.from_numpy(y)
                    )
                    loss.backward()
                    with torch.no_grad():
                        for p in model.parameters():
                            p -= 0.5 * p.grad
                for t, p in zip(total, model.parameters(), strict=True):
                    t += len(y) * p.detach()
                count += len(y)
            with torch.no_grad():
                for p, t in zip(model.parameters(), total, strict=True):
                    p.copy_(t / count)
                Xc, yc = current_test_set(
                    X_test, y_test, schedule=schedule, concepts=concepts, server_round=rnd
                )
                accuracy.append(float((model(torch.from_numpy(Xc)).argmax(1).numpy() == yc).mean()))
    finally:
        torch.set_num_threads(threads)
    (r,) = recovery_metrics(accuracy, schedule.changepoint_rounds(), window=2)
    assert r.pre_drift_accuracy is not None and r.pre_drift_accuracy > 0.7
    assert r.min_round == 5 and r.max_drop is not None and r.max_drop > 0.3
    assert r.rounds_to_recover is not None and r.rounds_to_recover <= 3


def test_within_two_points_and_mean_after_the_change():
    acc = [0.8, 0.8, 0.8, 0.2, 0.5, 0.75, 0.79, 0.81]
    (r,) = recovery_metrics(acc, [4], window=3)
    # back within 0.02 of 0.8 at round 7 (0.79), 3 rounds after the change; 95% (0.76) too
    assert r.rounds_to_within_2pt == 3 and r.rounds_to_recover == 3
    assert r.mean_after == approx((0.2 + 0.5 + 0.75 + 0.79 + 0.81) / 5)
    (never,) = recovery_metrics([0.8, 0.8, 0.8, 0.2, 0.5, 0.77], [4], window=3)
    assert never.rounds_to_within_2pt is None and never.rounds_to_recover == 2
