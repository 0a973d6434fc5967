"""The two client calls and reply validation (CONTRACTS §2-3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_fakes import FakeGrid, instruction, tiny_model, worker

from strategies import ClientOutcome, FedAdapt, build_train_reply, read_train_message
from strategies.client import EvaluateOutcome, build_evaluate_reply


def _train_msg(state, ids, lrs=None, signals=(), node=1, optimizer="sgd", options='{"lr": 0.1}'):
    cfg = ConfigRecord(
        {
            "server-round": 3,
            "fedadapt.client-ids": list(ids),
            "fedadapt.client-lrs": list(lrs or [-1.0] * len(ids)),
            "fedadapt.optimizer": optimizer,
            "fedadapt.optimizer-options": options,
            "fedadapt.signals": list(signals),
            "fedadapt.reply-mode": "mean",
            "local-steps": 2,
        }
    )
    return instruction(RecordDict({"arrays": ArrayRecord(state), "config": cfg}), node)


def test_read_train_message_builds_the_plan():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    msg = _train_msg(model.state_dict(), [5, 9], [-1.0, 0.25])
    plan = read_train_message(msg, model)
    assert plan.client_ids == [5, 9] and plan.client_lrs == [None, 0.25]
    assert plan.server_round == 3 and plan.config["local-steps"] == 2
    assert plan.optimizer_kwargs(5) == {"lr": 0.1} and plan.optimizer_kwargs(9) == {"lr": 0.25}
    opt = plan.build_optimizer(model.parameters(), 9)
    assert opt.param_groups[0]["lr"] == 0.25
    assert plan.global_state["1.num_batches_tracked"].dtype == torch.int64
    plan.load_global(model)


def test_reply_is_the_example_weighted_mean_with_per_client_lists_and_signals():
    base = {"w": torch.zeros(2, 2), "n": torch.tensor(4, dtype=torch.int64)}
    msg = _train_msg(base, [1, 2, 3], signals=["client_sq_norms_mean", "client_sq_mean"])
    plan = read_train_message(msg)
    x1 = {"w": torch.ones(2, 2), "n": torch.tensor(4)}
    x2 = {"w": torch.full((2, 2), 4.0), "n": torch.tensor(6)}
    stats = {"lr": 0.1, "step-mean": 0.1, "step-min": 0.1, "step-max": 0.1}
    reply = build_train_reply(
        msg,
        plan,
        [
            ClientOutcome(1, x1, 10, 2.0, stats),
            ClientOutcome(2, x2, 30, 1.0, stats),
            ClientOutcome.failed(3, "out of memory"),
        ],
    )
    c = reply.content
    mean = c["arrays"]["w"].numpy()
    np.testing.assert_allclose(mean, np.full((2, 2), (10 * 1 + 30 * 4) / 40))
    assert c["arrays"]["w"].dtype == "float32" and c["arrays"]["n"].dtype == "int64"
    assert (
        int(c["arrays"]["n"].numpy()) == 6
    )  # round((10*4 + 30*6) / 40) = round(5.5) -> 6 (half to even)
    assert c["metrics"]["num-examples"] == 40
    assert math.isclose(c["metrics"]["train-loss"], (10 * 2 + 30 * 1) / 40)
    cl = c["fedadapt.clients"]
    assert cl["ids"] == [1, 2] and cl["num-examples"] == [10, 30]
    assert cl["failed-ids"] == [3] and cl["failed-reasons"] == ["out of memory"]
    assert cl["sq-norm"] == [4.0, 64.0]
    np.testing.assert_allclose(
        c["fedadapt.signals"]["w"].numpy(), np.full((2, 2), 10 * 1 + 30 * 16)
    )
    assert "n" not in c["fedadapt.signals"]  # buffers carry no signal


def test_all_failed_reply_only_reports_failures():
    msg = _train_msg({"w": torch.zeros(2)}, [4])
    reply = build_train_reply(msg, read_train_message(msg), [ClientOutcome.failed(4, "no data")])
    assert set(reply.content.keys()) == {"fedadapt.clients"}
    assert reply.content["fedadapt.clients"]["failed-reasons"] == ["no data"]


def test_evaluate_reply_weights_metrics():
    msg = _train_msg({"w": torch.zeros(2)}, [1, 2])
    r = build_evaluate_reply(
        msg,
        [
            EvaluateOutcome(1, 10, 1.0, {"accuracy": 0.5}),
            EvaluateOutcome(2, 30, 2.0, {"accuracy": 0.9}),
            EvaluateOutcome(3, 0, error="crashed"),
        ],
    )
    m = r.content["metrics"]
    assert m["num-examples"] == 40
    assert math.isclose(m["eval-loss"], 1.75) and math.isclose(m["accuracy"], 0.8)
    assert r.content["fedadapt.clients"]["failed-ids"] == [3]


# ------------------------------------------------------------------------ validation


def _strategy_and_messages(**kw):
    s = FedAdapt(
        num_clients=100,
        clients_per_round=6,
        num_workers=6,
        seed=2,
        client_options={"lr": 0.1},
        **kw,
    )
    arrays = ArrayRecord(tiny_model().state_dict())
    msgs = list(s.configure_train(1, arrays, ConfigRecord(), FakeGrid([1, 2, 3, 4, 5, 6])))
    return s, arrays, msgs


def _replace(reply: Message, content: RecordDict) -> Message:
    return Message(content=content, metadata=reply.metadata)


def _corrupt(kind: str, good: Message, instr: Message) -> Message:
    c = good.content
    arrays = c["arrays"]
    if kind == "missing key":
        return _replace(
            good,
            RecordDict(
                {
                    "arrays": ArrayRecord({"weight": arrays["weight"]}),
                    "metrics": c["metrics"],
                    "fedadapt.clients": c["fedadapt.clients"],
                }
            ),
        )
    if kind == "wrong shape":
        return _replace(
            good,
            RecordDict(
                {
                    "arrays": ArrayRecord(
                        {"weight": Array(np.zeros((2, 2), np.float32)), "bias": arrays["bias"]}
                    ),
                    "metrics": c["metrics"],
                    "fedadapt.clients": c["fedadapt.clients"],
                }
            ),
        )
    if kind == "nan":
        w = arrays["weight"].numpy().copy()
        w[0, 0] = np.nan
        return _replace(
            good,
            RecordDict(
                {
                    "arrays": ArrayRecord({"weight": Array(w), "bias": arrays["bias"]}),
                    "metrics": c["metrics"],
                    "fedadapt.clients": c["fedadapt.clients"],
                }
            ),
        )
    if kind == "wrong dtype":
        return _replace(
            good,
            RecordDict(
                {
                    "arrays": ArrayRecord(
                        {
                            "weight": Array(arrays["weight"].numpy().astype(np.float64)),
                            "bias": arrays["bias"],
                        }
                    ),
                    "metrics": c["metrics"],
                    "fedadapt.clients": c["fedadapt.clients"],
                }
            ),
        )
    if kind == "empty content":
        return _replace(good, RecordDict())
    if kind == "error reply":
        return Message(Error(code=2, reason="ClientApp raised"), reply_to=instr)
    if kind == "zero examples":
        return _replace(
            good,
            RecordDict(
                {
                    "arrays": arrays,
                    "metrics": MetricRecord({"num-examples": 0}),
                    "fedadapt.clients": c["fedadapt.clients"],
                }
            ),
        )
    if kind == "unexpected record":
        return _replace(good, RecordDict({**dict(c.items()), "extra": ConfigRecord({"x": 1})}))
    if kind == "truncated bytes":
        a = arrays["weight"]
        bad = Array(dtype=a.dtype, shape=tuple(a.shape), stype=a.stype, data=a.data[:-4])
        return _replace(
            good,
            RecordDict(
                {
                    "arrays": ArrayRecord({"weight": bad, "bias": arrays["bias"]}),
                    "metrics": c["metrics"],
                    "fedadapt.clients": c["fedadapt.clients"],
                }
            ),
        )
    raise AssertionError(kind)


KINDS = {
    "missing key": "wrong keys",
    "wrong shape": "shape",
    "nan": "non-finite",
    "wrong dtype": "dtype",
    "empty content": "empty",
    "error reply": "error reply",
    "zero examples": "num-examples",
    "unexpected record": "unexpected records",
    "truncated bytes": "data bytes",
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_malformed_reply_is_dropped_with_reason(kind):
    rounds = []
    s, arrays, msgs = _strategy_and_messages(on_round_end=rounds.append)
    replies = [worker(m) for m in msgs]
    bad_node = msgs[0].metadata.dst_node_id
    bad_ids = list(msgs[0].content["config"]["fedadapt.client-ids"])
    replies[0] = _corrupt(kind, replies[0], msgs[0])
    out, metrics = s.aggregate_train(1, replies)
    assert out is not None
    info = rounds[-1]
    assert info["failed-ids"] == bad_ids and info["failed-nodes"] == [bad_node]
    assert KINDS[kind] in info["failed-reasons"][0], info["failed-reasons"]
    assert info["num-succeeded"] == 5 and metrics["num-failed"] == 1
    # the result equals aggregating the five good replies alone
    s2, _, msgs2 = _strategy_and_messages()
    out2, _ = s2.aggregate_train(1, [worker(m) for m in msgs2[1:]])
    for k in out2:
        assert out[k].data == out2[k].data


def test_round_without_valid_reply_changes_nothing():
    rounds = []
    s, arrays, msgs = _strategy_and_messages(
        server_optimizer="adam",
        server_options={"lr": 0.1},
        client_lr_state="persist",
        on_round_end=rounds.append,
    )
    s.aggregate_train(1, [worker(m) for m in msgs])  # one good round builds state
    state = s.server_state()
    lrs = dict(s.client_lrs)
    msgs = list(s.configure_train(2, arrays, ConfigRecord(), FakeGrid([1, 2, 3, 4, 5, 6])))
    bad = [_corrupt("nan", worker(m), m) for m in msgs]
    out, metrics = s.aggregate_train(2, bad)
    assert out is None and metrics["num-succeeded"] == 0 and metrics["num-failed"] == 6
    after = s.server_state()
    assert after["server_optimizer"]["round"] == state["server_optimizer"]["round"]
    for a, b in zip(
        after["server_optimizer"]["optimizer"]["state"].values(),
        state["server_optimizer"]["optimizer"]["state"].values(),
        strict=True,
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(
            a["exp_avg_sq"], b["exp_avg_sq"]
        )
    assert s.client_lrs == lrs
    assert len(rounds[-1]["failed-reasons"]) == 6


def test_client_failures_inside_replies_are_recorded():
    rounds = []
    s, _, msgs = _strategy_and_messages(on_round_end=rounds.append)
    failing = msgs[0].content["config"]["fedadapt.client-ids"][0]
    replies = [worker(m, fail=lambda cid: "disk full" if cid == failing else None) for m in msgs]
    out, _ = s.aggregate_train(1, replies)
    assert out is not None
    assert rounds[-1]["failed-ids"] == [failing] and rounds[-1]["failed-reasons"] == ["disk full"]
    assert failing not in rounds[-1]["succeeded-ids"]


@pytest.mark.parametrize(
    "arr",
    [
        np.random.rand(3, 4).astype(np.float32),
        np.arange(5),
        np.array(3.0),
        np.zeros((0, 2), np.float32),
        np.ones((2, 3, 4), np.int64),
    ],
)
def test_zero_copy_records_match_flower_serialization(arr):
    from strategies.records import array_to_tensor, tensor_to_array

    mine, theirs = tensor_to_array(torch.from_numpy(arr)), Array(arr)
    assert (
        mine.data == theirs.data
        and mine.dtype == theirs.dtype
        and tuple(mine.shape) == tuple(theirs.shape)
    )
    assert np.array_equal(array_to_tensor(theirs).numpy(), arr)


def test_replies_claiming_clients_not_sent_to_that_node_are_dropped():
    rounds = []
    s, _, msgs = _strategy_and_messages(on_round_end=rounds.append)
    replies = [worker(m) for m in msgs]
    # node 1's reply repeated as if from node 2 (whose clients differ); node 2's own reply dropped
    fake = Message(content=replies[0].content, metadata=replies[1].metadata)
    out, met = s.aggregate_train(1, [replies[0], fake, *replies[2:]])
    assert out is not None and met["num-succeeded"] == 5
    assert any("were not sent to node" in r for r in rounds[-1]["failed-reasons"])
    # the same client reported twice is counted once
    s2, _, msgs2 = _strategy_and_messages()
    r2 = [worker(m) for m in msgs2]
    out2, met2 = s2.aggregate_train(1, [*r2, r2[0]])
    assert met2["num-succeeded"] == 6 and met2["num-failed"] == 1
    assert met2["failed-ids"] == [-1]  # the reply failed, not a client


@settings(max_examples=60, deadline=None)
@given(junk=st.binary(max_size=400), cut=st.integers(0, 200))
def test_garbage_array_bytes_are_rejected_never_crash(junk, cut):
    from strategies.validation import ReplyRejected, check_train_reply

    msg = _train_msg({"w": torch.zeros(3, 4)}, [1])
    good = Array(np.ones((3, 4), np.float32))
    for data in (junk, good.data[:cut] + junk):
        bad = Array(dtype="float32", shape=(3, 4), stype="numpy.ndarray", data=bytes(data))
        reply = Message(
            RecordDict(
                {"arrays": ArrayRecord({"w": bad}), "metrics": MetricRecord({"num-examples": 3})}
            ),
            reply_to=msg,
        )
        try:
            check_train_reply(reply, {"w": ("float32", (3, 4))}, param_keys=["w"])
        except ReplyRejected:
            pass
