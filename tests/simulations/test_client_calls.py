"""FedProx's proximal term is part of what the client calls build (fedadapt.proximal): a
ClientApp that uses ``plan.build_optimizer`` gets it from the train config's ``proximal-mu``."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

import fedadapt
from fedadapt.proximal import add_proximal_term, proximal_value
from strategies import read_train_message

pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def test_the_hook_gives_the_gradient_of_loss_plus_the_proximal_term():
    x, target = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    mu = 0.3
    a, b = _model(), _model()
    anchor = [p.detach().clone() for p in a.parameters()]
    with torch.no_grad():  # move away from the anchor so the term is not zero
        for p in list(a.parameters()) + list(b.parameters()):
            p.add_(0.5)
    # reference: the term in the loss, autograd, plain SGD
    ref = torch.optim.SGD(b.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(b(x), target)
    loss = loss + 0.5 * mu * sum(
        ((p - q) ** 2).sum() for p, q in zip(b.parameters(), anchor, strict=True)
    )
    loss.backward()
    ref.step()
    opt = add_proximal_term(torch.optim.SGD(a.parameters(), lr=0.1), mu, anchor)
    torch.nn.functional.cross_entropy(a(x), target).backward()
    before = proximal_value(opt)
    opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert before == pytest.approx(0.5 * mu * 0.25 * 8)  # 8 coordinates, each 0.5 away


def _message(model: torch.nn.Module, **config: object) -> Message:
    base = {
        "fedadapt.client-ids": [0],
        "fedadapt.optimizer": "hd",
        "fedadapt.optimizer-options": json.dumps({"lr": 1.0}),
        "server-round": 1,
    }
    return Message(
        RecordDict(
            {"arrays": ArrayRecord(model.state_dict()), "config": ConfigRecord({**base, **config})}
        ),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )


@pytest.mark.parametrize("mu", [0.0, 0.25])
def test_build_optimizer_applies_the_term_the_train_config_asks_for(mu):
    model = _model()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    plan = read_train_message(_message(model, **{"proximal-mu": mu}), model)
    assert plan.proximal_mu == mu
    plan.load_global(model)
    opt = plan.build_optimizer(model.parameters(), 0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # one step of local drift
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # a flat loss: only the proximal term pulls
    opt.step()
    for name, p in model.named_parameters():
        # sgd-like first step with lr 1: w - mu (w - w_global)
        expected = global_state[name] + 1.0 - mu * 1.0
        torch.testing.assert_close(p.detach(), expected)


def test_a_plain_flower_message_without_mu_builds_the_plain_optimizer():
    model = _model()
    plan = read_train_message(_message(model), model)
    opt = plan.build_optimizer(model.parameters(), 0)
    assert plan.proximal_mu == 0.0 and not hasattr(opt, "proximal_anchor")
    assert isinstance(opt, type(fedadapt.build_optimizer("hd", _model().parameters(), lr=1.0)))
