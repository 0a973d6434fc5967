"""Registry, presets, validation of settings, client step-size state, round metrics."""

from __future__ import annotations

import math

import pytest
from flwr.app import ArrayRecord, ConfigRecord
from strategy_fakes import FakeGrid, tiny_model, worker

import strategies
from strategies import FedAdapt, FedExP, FedHyper, available_strategies, build_strategy

FLOWER = ["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedprox"]


def test_registry_reaches_every_strategy():
    names = available_strategies()
    for n in [
        "fedadapt",
        "fedexp",
        "fedhyper-g",
        "fedhyper-gm",
        "fedhyper-sl",
        "fedhyper-cl",
        "fedhyper-full",
        *FLOWER,
    ]:
        assert n in names
    with pytest.raises(ValueError, match="accepted: .*fedadam"):
        build_strategy("fedmagic")


@pytest.mark.parametrize("name", FLOWER)
def test_flower_strategies_run_with_fedadapt_sampling_and_keep_dtype(name):
    kw = (
        {"proximal_mu": 0.1}
        if name == "fedprox"
        else {"server_momentum": 0.9}
        if name == "fedavgm"
        else {}
    )
    s = build_strategy(
        name, num_clients=100, clients_per_round=4, num_workers=2, client_options={"lr": 0.1}, **kw
    )
    grid = FakeGrid([1, 2])
    res = s.start(grid, ArrayRecord(tiny_model().state_dict()), num_rounds=2)
    assert {a.dtype for a in res.arrays.values()} == {"float32"}
    assert res.train_metrics_clientapp[2]["num-succeeded"] == 4
    cfg = grid.sent[0].content["config"]
    assert cfg["fedadapt.optimizer"] == "sgd" and len(cfg["fedadapt.client-ids"]) == 2
    if name == "fedprox":
        assert cfg["proximal-mu"] == 0.1


def test_unknown_names_and_bad_settings_raise_listing_accepted_values():
    with pytest.raises(ValueError, match="accepted: .*'sgd'"):
        FedAdapt(server_optimizer="nope")
    with pytest.raises(ValueError, match="accepted"):
        FedAdapt(client_optimizer="nope")
    with pytest.raises(ValueError, match="reset"):
        FedAdapt(client_lr_state="sometimes")
    with pytest.raises(ValueError, match="reply_mode"):
        FedAdapt(reply_mode="all")
    with pytest.raises(ValueError, match="variant"):
        FedHyper(variant="X")
    with pytest.raises(ValueError, match="clients_per_round"):
        FedAdapt(num_clients=10)
    with pytest.raises(ValueError, match="exceeds"):
        FedAdapt(num_clients=10, clients_per_round=11)
    with pytest.raises(ValueError):
        FedAdapt(server_optimizer="sgd", server_options={"lr": 1.0, "bogus": 2})
    with pytest.raises(ValueError, match="availability"):
        FedAdapt(num_clients=10, clients_per_round=2, availability=0.0)


def test_presets_configure_fedadapt():
    assert FedHyper(variant="G").server_optimizer == "fedhyper-g"
    assert FedHyper(variant="gm").server_optimizer == "fedhyper-gm"
    sl = FedHyper(variant="SL")
    assert sl.client_lr_state == "server" and sl.server_optimizer == "sgd"
    assert FedHyper(variant="CL").client_optimizer == "fedhyper-cl"
    full = FedHyper(variant="FULL")
    assert full.server_optimizer == "fedhyper-gm" and full.client_optimizer == "fedhyper-cl"
    fx = FedExP()
    assert fx.server_optimizer == "fedexp" and "client_sq_norms_mean" in fx.client_signals()
    gm = build_strategy("fedhyper-gm")
    assert isinstance(gm, FedAdapt) and gm.preset is strategies.PRESETS["fedhyper-gm"]


def test_presets_are_data_and_checkpoints_still_name_the_method():
    """One FedAdapt runs every published method (no strategy class shares a name with a
    fedadapt optimizer); a checkpoint still records the method, FedHyper's variant and the
    oracle's known rounds, as when each preset was a subclass, so old checkpoints resume."""
    import fedadapt

    classes = {n for n in strategies.__all__ if isinstance(getattr(strategies, n), type)}
    assert not classes & set(fedadapt.__all__)
    ident = FedHyper(variant="gm").identity()
    assert (ident["strategy"], ident["variant"], ident["server-optimizer"]) == (
        "FedHyper",
        "GM",
        "fedhyper-gm",
    )
    assert FedExP().identity()["strategy"] == "FedExP"
    oracle = build_strategy("fedadam-oracle", change_rounds=[7, 3])
    assert oracle.identity()["strategy"] == "OracleResetFedAdam"
    assert oracle.identity()["change-rounds"] == [3, 7]
    # the oracle is the ceiling of fedadapt's default: its clients run fedadapt's default client
    assert strategies.default_client("fedadam-oracle") == FedAdapt.default_client
    assert oracle.client_optimizer == FedAdapt.default_client[0]
    assert strategies.Flash().client_optimizer == "sgd" == strategies.default_client("flash")[0]
    assert strategies.AdaptiveFedAvg(server_options={}).server_optimizer == "adaptive-fedavg"


def _two_rounds(**kw):
    s = FedAdapt(
        num_clients=6,
        clients_per_round=6,
        num_workers=2,
        seed=1,
        client_optimizer="hd",
        client_options={"lr": 0.05, "hyper_lr": 1e-3},
        **kw,
    )
    grid = FakeGrid([1, 2])
    s.start(grid, ArrayRecord(tiny_model().state_dict()), num_rounds=2)
    round2 = [
        m
        for m in grid.sent
        if m.content["config"]["server-round"] == 2 and m.metadata.message_type == "train"
    ]
    return s, {
        c: lr
        for m in round2
        for c, lr in zip(
            m.content["config"]["fedadapt.client-ids"],
            m.content["config"]["fedadapt.client-lrs"],
            strict=True,
        )
    }


def test_client_lr_state_modes():
    s, sent = _two_rounds(client_lr_state="reset")
    assert set(sent.values()) == {-1.0} and s.client_lrs == {}
    s, sent = _two_rounds(client_lr_state="persist")
    assert set(s.client_lrs) == set(range(6))
    assert all(v > 0 for v in sent.values())
    assert len(set(sent.values())) > 1  # each client its own carried lr
    s, sent = _two_rounds(client_lr_state="server")
    assert len(set(sent.values())) == 1 and next(iter(sent.values())) > 0
    assert s.history[0]["broadcast-client-lr"] == pytest.approx(next(iter(sent.values())))


def test_round_callback_and_result_metrics():
    seen = []
    s = FedAdapt(
        server_optimizer="hd",
        server_options={"lr": 1.0, "hyper_lr": 1e-3},
        num_clients=50,
        clients_per_round=4,
        num_workers=2,
        on_round_end=seen.append,
        seed=3,
        extra_train_config=lambda r: {"local-epochs": 1 + r},
    )
    grid = FakeGrid([1, 2])
    res = s.start(grid, ArrayRecord(tiny_model().state_dict()), num_rounds=3)
    assert [d["round"] for d in seen] == [1, 2, 3]
    last = seen[-1]
    for key in [
        "server-lr",
        "server-cosine",
        "client-lr",
        "client-step-mean",
        "train-loss",
        "sampled-ids",
        "succeeded-ids",
        "failed-ids",
        "failed-reasons",
    ]:
        assert key in last, key
    assert math.isfinite(last["server-cosine"]) and math.isnan(seen[0]["server-cosine"])
    assert res.train_metrics_clientapp[3]["server-lr"] == last["server-lr"]
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert train[-1].content["config"]["local-epochs"] == 4


def test_fedhyper_cl_clients_receive_the_previous_global_update():
    s = FedHyper(variant="CL", num_clients=10, clients_per_round=2, num_workers=2)
    grid = FakeGrid([1, 2])
    s.start(grid, ArrayRecord(tiny_model().state_dict()), num_rounds=2)
    r1 = [m for m in grid.sent if m.content["config"]["server-round"] == 1]
    r2 = [m for m in grid.sent if m.content["config"]["server-round"] == 2]
    assert "fedadapt.global-update" not in r1[0].content
    assert set(r2[0].content["fedadapt.global-update"].keys()) == {"weight", "bias"}


def test_per_client_reply_mode_sends_one_message_per_client():
    s = FedAdapt(num_clients=100, clients_per_round=6, num_workers=2, reply_mode="per-client")
    msgs = list(
        s.configure_train(
            1, ArrayRecord(tiny_model().state_dict()), ConfigRecord(), FakeGrid([1, 2])
        )
    )
    assert len(msgs) == 6 and all(
        len(m.content["config"]["fedadapt.client-ids"]) == 1 for m in msgs
    )
    out, met = s.aggregate_train(1, [worker(m) for m in msgs])
    assert out is not None and met["num-succeeded"] == 6
    assert strategies.__all__


def test_federated_evaluation_samples_clients_and_weights_metrics():
    from flwr.app import Error, Message

    from strategies import EvaluateOutcome, build_evaluate_reply, read_evaluate_message

    s = FedAdapt(
        num_clients=1000, clients_per_round=8, evaluate_clients_per_round=4, num_workers=2, seed=4
    )
    msgs = list(
        s.configure_evaluate(
            1, ArrayRecord(tiny_model().state_dict()), ConfigRecord(), FakeGrid([1, 2])
        )
    )
    ids = [c for m in msgs for c in read_evaluate_message(m, tiny_model()).client_ids]
    assert len(msgs) == 2 and len(set(ids)) == 4
    replies = [
        build_evaluate_reply(
            m,
            [
                EvaluateOutcome(c, 10, 1.0 + i, {"accuracy": 0.5})
                for c in read_evaluate_message(m).client_ids
            ],
        )
        for i, m in enumerate(msgs)
    ]
    replies.append(Message(Error(code=2, reason="boom"), reply_to=msgs[0]))
    met = s.aggregate_evaluate(1, replies)
    assert (
        met is not None
        and met["eval-loss"] == pytest.approx(1.5)
        and met["accuracy"] == pytest.approx(0.5)
    )
    none = FedAdapt(
        num_clients=10, clients_per_round=2, evaluate_clients_per_round=0, num_workers=1
    )
    assert (
        list(
            none.configure_evaluate(
                1, ArrayRecord(tiny_model().state_dict()), ConfigRecord(), FakeGrid([1])
            )
        )
        == []
    )


def test_bad_client_options_fail_at_construction():
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        FedAdapt(client_optimizer="sgd", client_options={"lr": 0.1, "bogus": 1})
    with pytest.raises(ValueError, match="JSON"):
        FedAdapt(client_options={"lr": object()})
