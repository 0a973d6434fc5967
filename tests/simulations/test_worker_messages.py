"""A worker serving several clients in one message gives each the result it would get alone:
the working model copy it reuses between clients carries nothing from one client to the next."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from simulations.checks import resolve
from simulations.client_app import handle_train
from simulations.config import load_scenario
from simulations.reader import read
from simulations.world import world

pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


def _reply(spec, arrays, ids, optimizer="hd", options=None):
    cfg = {
        "fedadapt.client-ids": ids,
        "fedadapt.optimizer": optimizer,
        "fedadapt.optimizer-options": json.dumps(options or {"lr": 0.05}),
        "server-round": 3,
    }
    msg = Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord(cfg)}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )
    reply = handle_train(msg, spec)
    assert not reply.has_error(), reply.error.reason
    return reply.content


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_clients_served_together_get_what_each_gets_alone(model):
    spec = read(
        resolve(
            {"num-clients": 6, "clients-per-round": 3, "model": model},
            base=load_scenario("quickstart"),
        )
    )
    arrays = ArrayRecord(world(spec.world).model().state_dict())
    together = _reply(spec, arrays, [4, 0, 2])
    alone = [_reply(spec, arrays, [c]) for c in (4, 0, 2)]
    got = together["fedadapt.clients"]
    assert list(got["ids"]) == [4, 0, 2]
    assert list(got["train-loss"]) == [a["fedadapt.clients"]["train-loss"][0] for a in alone]
    # the reply's model is the example-weighted mean of the clients' models
    n = [a["fedadapt.clients"]["num-examples"][0] for a in alone]
    mean = together["arrays"].to_torch_state_dict()
    for key, value in mean.items():
        parts = [a["arrays"].to_torch_state_dict()[key].double() for a in alone]
        expected = sum(k * p for k, p in zip(n, parts, strict=True)) / sum(n)
        torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-7)


def test_the_workers_template_model_is_never_trained():
    """Each message copies the world's cached template; training leaves the template as built."""
    spec = read(
        resolve({"num-clients": 4, "clients-per-round": 2}, base=load_scenario("quickstart"))
    )
    w = world(spec.world)
    template = w.template("cpu")
    assert w.template("cpu") is template
    fresh = w.model().state_dict()
    arrays = ArrayRecord(
        {k: v + 0.5 for k, v in fresh.items()}
    )  # a global model unlike the template
    for _ in range(2):
        _reply(spec, arrays, [0, 1, 3])
    for key, value in template.state_dict().items():
        torch.testing.assert_close(value, fresh[key], rtol=0, atol=0)
