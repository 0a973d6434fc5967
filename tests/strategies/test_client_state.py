"""Carried client step sizes: what the server aggregates, the method's bounds, and alarms."""

from __future__ import annotations

import math

import pytest

from strategies import records as R
from strategies.client_state import ClientState, aggregate_lrs
from strategies.validation import CheckedReply


def _reply(ids: list[int], lrs: list[float], examples: list[int] | None = None) -> CheckedReply:
    examples = examples or [10] * len(ids)
    stats = {k: [math.nan] * len(ids) for k in R.CLIENT_STAT_KEYS}
    stats[R.C_LR] = list(lrs)
    return CheckedReply(0, sum(examples), 0.0, {}, ids, examples, stats, None, None)


def test_server_lr_is_a_geometric_mean_over_clients():
    # log space: 0.01 and 1.0 average to 0.1, not 0.505
    assert aggregate_lrs([0.01, 1.0]) == pytest.approx(0.1)
    assert aggregate_lrs([0.2]) == pytest.approx(0.2)


def test_one_clients_outlier_cannot_move_the_server_lr_beyond_the_others():
    honest = [0.09, 0.1, 0.11, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    for outlier in (1e6, 1e-9, math.inf, math.nan):
        got = aggregate_lrs([*honest, outlier])
        assert min(honest) <= got <= max(honest)


def test_claimed_example_counts_do_not_weight_the_server_lr():
    cs = ClientState("server", False, "hd", configured_lr=0.1)
    cs.update([_reply([0, 1, 2], [0.1, 0.1, 0.1], [10, 10, 10]), _reply([3], [1.0], [10**12])])
    # four clients, one trimmed at each end: the 1e12-example client's 1.0 is dropped
    assert cs.server_lr == pytest.approx(0.1)


def test_carried_lrs_stay_within_the_methods_bounds_of_the_configured_lr():
    # hd carries at most 1e3 x and at least 1e-3 x the configured lr; eg 10x / 0.1x
    cs = ClientState("persist", False, "hd", configured_lr=0.01)
    cs.update([_reply([0, 1, 2], [1e3, 1e-9, 0.05])])
    assert cs.lrs == {0: pytest.approx(10.0), 1: pytest.approx(1e-5), 2: pytest.approx(0.05)}
    eg = ClientState("server", False, "eg", configured_lr=0.01)
    eg.update([_reply([0, 1, 2], [5.0, 5.0, 5.0])])
    assert eg.server_lr == pytest.approx(0.1)
    # rounds cannot walk it further: the bound is anchored to the configured lr
    eg.update([_reply([0, 1, 2], [1.0, 1.0, 1.0])])
    assert eg.server_lr == pytest.approx(0.1)


def test_non_finite_or_non_positive_lrs_are_never_carried():
    cs = ClientState("persist", False, "hd", configured_lr=0.1)
    cs.update([_reply([0, 1, 2], [math.nan, -1.0, 0.0])])
    assert cs.lrs == {}
    assert cs.carried_lr(0) == R.NO_LR


def test_an_alarm_restarts_carried_lrs_from_the_configured_lr_when_asked():
    cs = ClientState("server", False, "hd", configured_lr=0.1, on_change="restart")
    cs.update([_reply([0, 1], [0.5, 0.5])])
    assert cs.carried_lr(7) == pytest.approx(0.5)
    cs.on_change()
    assert cs.carried_lr(7) == R.NO_LR and cs.restarts == 1
    persist = ClientState("persist", False, "hd", configured_lr=0.1, on_change="restart")
    persist.update([_reply([0, 1], [0.5, 0.3])])
    persist.on_change()
    assert persist.lrs == {}


def test_by_default_alarms_keep_the_carried_lrs_and_bad_policies_are_refused():
    cs = ClientState("server", False, "hd", configured_lr=0.1)
    cs.update([_reply([0], [0.5])])
    cs.on_change()
    assert cs.carried_lr(0) == pytest.approx(0.5)
    with pytest.raises(
        ValueError, match=r"client_lr_on_change must be one of \['restart', 'keep'\]"
    ):
        ClientState("server", False, "hd", on_change="reopen")


def test_loaded_carried_lrs_must_be_finite_and_positive():
    cs = ClientState("persist", False, "hd")
    with pytest.raises(ValueError, match="clients.lrs: client 3"):
        cs.load_state_dict({"ids": [3], "lrs": [math.nan]})
    with pytest.raises(ValueError, match="server-client-lr"):
        cs.load_state_dict({"ids": [], "lrs": [], "server-client-lr": math.inf})


@pytest.mark.parametrize("policy", ["restart", "keep"])
def test_the_strategy_applies_its_on_change_policy_when_its_detector_fires(policy):
    """On the strategy (fake grid, no Ray): the oracle's known change at round 3 makes round
    4's clients start from the configured lr again (restart), or carry on (keep)."""
    from flwr.app import ArrayRecord, MessageType
    from strategy_fakes import FakeGrid, tiny_model

    from strategies import FedAdapt

    seen: list[dict] = []
    strategy = FedAdapt(
        server_optimizer="cp-adam",
        change_rounds=[3],
        client_optimizer="hd",
        client_options={"lr": 0.05, "hyper_lr": 0.01},
        client_lr_state="server",
        client_lr_on_change=policy,
        num_clients=6,
        clients_per_round=3,
        num_workers=1,
        on_round_end=seen.append,
        fraction_evaluate=0.0,
    )
    grid = FakeGrid([1])
    strategy.start(grid, ArrayRecord(tiny_model().state_dict()), num_rounds=4)
    sent = [m.content["config"] for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]
    carried = [list(c[R.CFG_CLIENT_LRS]) for c in sent]
    assert all(v == R.NO_LR for v in carried[0])  # round 1: nothing carried yet
    assert all(v > 0 for v in carried[1] + carried[2])  # rounds 2-3: the broadcast lr
    assert seen[2]["server-change"] == 1.0
    if policy == "restart":
        assert all(v == R.NO_LR for v in carried[3])  # round 4: restarted after the alarm
        assert strategy.client_state.restarts == 1
    else:
        assert all(v > 0 for v in carried[3]) and strategy.client_state.restarts == 0
