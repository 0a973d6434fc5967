"""Test doubles for driving strategies without Ray: a fake Grid and an in-process worker."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from flwr.app import Message, MessageType, RecordDict

from strategies.client import ClientOutcome, build_train_reply, read_train_message

IN, OUT = 5, 3


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(IN, OUT)


def client_data(client_id: int, server_round: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    g = torch.Generator().manual_seed(1000 + int(client_id) % 100_000)
    n = 4 + int(client_id) % 7
    x = torch.randn(n, IN, generator=g)
    w = torch.randn(IN, OUT, generator=g)
    y = x @ w + 0.1 * (client_id % 3)
    return x, y, n


def local_train(
    model: torch.nn.Module, opt: torch.optim.Optimizer, client_id: int, steps: int = 3
) -> tuple[int, float]:
    x, y, n = client_data(client_id)
    loss = torch.tensor(math.nan)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return n, float(loss.detach())


def worker(msg: Message, fail: Callable[[int], str | None] | None = None) -> Message:
    """fedadapt's ClientApp in miniature: serve every client id of the message."""
    import fedadapt

    model = tiny_model()
    plan = read_train_message(msg, model)
    outcomes = []
    for cid in plan.client_ids:
        reason = fail(cid) if fail else None
        if reason:
            outcomes.append(ClientOutcome.failed(cid, reason))
            continue
        plan.load_global(model)
        opt = plan.build_optimizer(model.parameters(), cid)
        n, loss = local_train(model, opt, cid)
        outcomes.append(
            ClientOutcome(
                cid,
                {k: v.detach().clone() for k, v in model.state_dict().items()},
                n,
                loss,
                fedadapt.step_size_stats(opt),
            )
        )
    return build_train_reply(msg, plan, outcomes)


def reporting_worker(
    steps: Callable[[int], dict[str, float]] | None = None,
    start_loss: Callable[[int, int], float] | None = None,
) -> Callable[[Message], Message]:
    """fedadapt's client calls whose clients report what a test chooses: step statistics
    ``steps(client_id)`` (default: the optimizer's own) and a round-start loss
    ``start_loss(client_id, server_round)`` (default: none)."""
    import fedadapt

    def respond(msg: Message) -> Message:
        model = tiny_model()
        plan = read_train_message(msg, model)
        outcomes = []
        for cid in plan.client_ids:
            plan.load_global(model)
            opt = plan.build_optimizer(model.parameters(), cid)
            n, loss = local_train(model, opt, cid)
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stats = steps(cid) if steps is not None else fedadapt.step_size_stats(opt)
            start = start_loss(cid, plan.server_round) if start_loss is not None else math.nan
            outcomes.append(ClientOutcome(cid, state, n, loss, stats, start_loss=start))
        return build_train_reply(msg, plan, outcomes)

    return respond


def jumping_start_loss(jump_round: int) -> Callable[[int, int], float]:
    """A round-start loss that triples from ``jump_round`` on (a drift cp-adam's detector sees)."""

    def start(cid: int, server_round: int) -> float:
        level = 3.0 if server_round >= jump_round else 1.0
        return level * (1.0 + 0.05 * math.sin(cid + server_round))

    return start


class FakeGrid:
    """A Grid that answers train messages in-process and evaluate messages not at all."""

    def __init__(
        self, node_ids: Iterable[int], respond: Callable[[Message], Message | None] = worker
    ) -> None:
        self.node_ids = list(node_ids)
        self.respond = respond
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        out = []
        for m in messages:
            self.sent.append(m)
            if m.metadata.message_type != MessageType.TRAIN:
                continue
            r = self.respond(m)
            if r is not None:
                out.append(r)
        return out


def instruction(content: RecordDict | None = None, node_id: int = 1) -> Message:
    return Message(content or RecordDict(), dst_node_id=node_id, message_type=MessageType.TRAIN)
