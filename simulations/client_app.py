"""Flower ClientApp for ``flwr run`` (``[tool.flwr.app.components] clientapp``) and its handlers.

A worker supernode serves the client ids listed in each train message (simulation mode), or is
itself one client (deployment mode: the client id is the node id). :func:`handle_train` reads
the message with fedadapt's two client calls, trains each client id it lists one after another
on that client's current-concept data (lazily loaded, bounded cache), and replies once. Every
exception is caught and reported in the reply, so a failing client never kills its Ray actor.

The handlers take a :class:`simulations.settings.RunSpec` (``simulations.reader.read``), never the
config dict; :func:`train_client` takes the world and the training settings only.
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedadapt.seeding import torch_generator
from simulations.checks import resolve
from simulations.reader import read
from simulations.settings import RunSpec, TrainingSettings
from simulations.world import World, world

_BATCH_STREAM = 0xB0  # seeding stream of a client's minibatch order


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def train_client(
    w: World,
    training: TrainingSettings,
    plan: Any,
    client_id: int,
    model: torch.nn.Module,
    device: torch.device,
    data_id: int | None = None,
) -> Any:
    """Train one client for its local work this round; return a ``ClientOutcome``.

    ``data_id`` is the partition the client trains on: its client id in simulation mode, the
    node's ``partition-id`` in deployment mode (where the client id is the node id). The local
    optimizer comes from ``plan.build_optimizer`` (with FedProx's proximal term when the train
    config asks for it).
    """
    import fedadapt
    from strategies import ClientOutcome

    rnd = int(plan.server_round)
    data_id = int(client_id) if data_id is None else int(data_id)
    fault = w.faults.kind(data_id)
    w.faults.before_training(
        fault, client_id, rnd, timeout=training.round_timeout, run_key=training.run_key
    )
    X, y = w.client_data(data_id, rnd)
    n = len(y)
    if n == 0:
        return ClientOutcome.failed(client_id, "client has no training examples")
    draw = w.het.plan(np.array([data_id]), rnd)
    bs = training.batch_size
    if training.exact_steps:
        steps = int(draw.work[0])
    else:
        steps = max(1, math.ceil(float(draw.work[0]) * n / bs))
    # the server method may ask for more local work for a few rounds (plasticity after a
    # change): a factor on the local steps
    factor = float(plan.hints.get("local-work", 1.0))
    if factor != 1.0 and steps > 0:
        steps = max(1, round(steps * factor))
    dropped = bool(draw.dropped[0])
    if dropped:
        steps = int(steps * float(draw.dropout_point[0]))
    plan.load_global(model)
    model.train()
    opt = plan.build_optimizer(model.parameters(), client_id)
    Xt, yt = _to_device(X, device), _to_device(y, device)
    gen = torch_generator(training.seed, _BATCH_STREAM, data_id, rnd)
    gamma = plan.hints.get("early-stop-gamma")
    early = (
        _EarlyStopping(gamma, Xt, yt, n, bs, gen, model) if gamma is not None and n >= 2 else None
    )
    train_ids = early.train_ids if early is not None else None
    n_train = n if train_ids is None else len(train_ids)
    order = _shuffled(train_ids, n, gen)
    loss_sum = torch.zeros((), device=device)
    start_loss = None
    pos = 0
    taken = 0
    for _ in range(steps):
        if pos >= n_train:
            order, pos = _shuffled(train_ids, n, gen), 0
            if early is not None and early.stop():  # Flash: the local validation loss stalled
                break
        idx = order[pos : pos + bs].to(device)
        pos += bs
        taken += 1
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
        loss.backward()
        opt.step()
        loss_sum += loss.detach()
        if start_loss is None:  # the first minibatch's loss, before any local step
            start_loss = loss.detach()
    if dropped:
        return ClientOutcome.failed(
            client_id, f"dropped out mid-round after {steps} steps (simulated availability)"
        )
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    state = w.faults.corrupt(fault, state)
    mean_loss = float(loss_sum) / max(taken, 1)
    return ClientOutcome(
        client_id,
        state,
        n_train,
        mean_loss,
        fedadapt.step_size_stats(opt),
        start_loss=math.nan if start_loss is None else float(start_loss),
    )


def _shuffled(ids: torch.Tensor | None, n: int, gen: torch.Generator) -> torch.Tensor:
    if ids is None:
        return torch.randperm(n, generator=gen)
    return ids[torch.randperm(len(ids), generator=gen)]


class _EarlyStopping:
    """Flash's client-side early stopping (Panchal et al., ICML 2023): a fifth of the client's
    data is held out; after each local epoch e its loss L_e is compared with the previous one
    and training stops when ``fedadapt.flash_early_stop(L_{e-1}, L_e, e, gamma)`` (a decrease
    below gamma / e). L_0 is the held-out loss before any local step."""

    def __init__(
        self,
        gamma: float,
        X: torch.Tensor,
        y: torch.Tensor,
        n: int,
        bs: int,
        gen: torch.Generator,
        model: torch.nn.Module,
    ) -> None:
        perm = torch.randperm(n, generator=gen)
        k = max(1, n // 5)
        self.val_ids, self.train_ids = perm[:k], perm[k:]
        self.gamma, self.X, self.y, self.model = float(gamma), X, y, model
        self.epoch = 0
        self.previous = self._loss()

    def _loss(self) -> float:
        with torch.no_grad():
            idx = self.val_ids.to(self.X.device)
            return float(torch.nn.functional.cross_entropy(self.model(self.X[idx]), self.y[idx]))

    def stop(self) -> bool:
        import fedadapt

        self.epoch += 1
        loss = self._loss()
        done = fedadapt.flash_early_stop(self.previous, loss, self.epoch, self.gamma)
        self.previous = loss
        return bool(done)


def data_id_for(
    training: TrainingSettings, client_id: int, node_config: Mapping[str, Any] | None
) -> int:
    """Which partition a client trains on (see :func:`train_client`)."""
    if not training.deployment:
        return int(client_id)
    if node_config and "partition-id" in node_config:
        return int(node_config["partition-id"])
    return int(client_id) % training.num_clients


def _with_deadline(fn: Callable[[], Any], seconds: float) -> tuple[bool, Any]:
    """Run ``fn`` in a daemon thread; ``(False, None)`` if it is not done after ``seconds``
    (the thread is abandoned: it works on its own model copy, so nothing shared is touched)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # reported as the client's failure
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True, name="fedadapt-client")
    t.start()
    t.join(seconds)
    if t.is_alive():
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box["value"]


def handle_train(msg: Any, spec: RunSpec, node_config: Mapping[str, Any] | None = None) -> Any:
    """The ClientApp's train handler: serve every client id in the message, reply once.

    Each client trains on its own model copy under a deadline (``client-timeout``); a client
    past it is reported and left behind, so one hung client does not cost its worker's reply.
    """
    from strategies import ClientOutcome, TrainReplyBuilder, error_reply, read_train_message

    torch.set_num_threads(1)
    training = spec.training
    try:
        w = world(spec.world)
        device = training.device()
        template = w.template(device)
        plan = read_train_message(msg, template)
    except Exception as exc:  # a broken message or config must not kill the actor
        return error_reply(msg, f"worker could not read the train message: {exc!r}")
    budget = training.client_timeout or (
        0.8 * training.round_timeout / max(1, len(plan.client_ids))
    )
    builder = TrainReplyBuilder(plan)
    # one working copy serves the message's clients in turn (train_client loads the global
    # state into it first, strict, parameters and buffers); a fresh copy only after a client
    # was left behind past its deadline, since its thread may still be writing to its copy.
    # (A deep copy per client cost ~1.4 ms each in a worker, 14 ms of an 85 ms message.) The
    # outcome's tensors may be that copy's own (``.to("cpu")`` of a CPU tensor is no copy):
    # ``builder.add`` folds them in before the next client overwrites them.
    model: torch.nn.Module | None = None
    for cid in plan.client_ids:
        data_id = data_id_for(training, int(cid), node_config)
        if model is None:
            model = copy.deepcopy(template)
        try:

            def job(
                cid: int = int(cid), model: torch.nn.Module = model, data_id: int = data_id
            ) -> Any:
                return train_client(w, training, plan, cid, model, device, data_id)

            done, outcome = _with_deadline(job, budget)
            if not done:
                model = None
                outcome = ClientOutcome.failed(
                    int(cid), f"client exceeded its deadline of {budget:.1f} s (client-timeout)"
                )
            else:
                model.zero_grad(set_to_none=True)
        except Exception as exc:  # one client's failure is reported, the others go on
            outcome = ClientOutcome.failed(int(cid), f"{type(exc).__name__}: {exc}")
        try:
            builder.add(outcome)
        except Exception as exc:  # a result the builder cannot even inspect
            builder.add(ClientOutcome.failed(int(cid), f"invalid client result: {exc}"))
    if training.worker_log:
        _log_worker(training.worker_log, plan)
    return builder.reply(msg)


def _log_worker(path: str, plan: Any) -> None:
    """Append where this message ran (diagnostics for placement on a Ray cluster)."""
    node = None
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except Exception:  # not under Ray (deployment runtime)
        node = None
    line = {
        "round": int(plan.server_round),
        "client-ids": [int(c) for c in plan.client_ids],
        "pid": os.getpid(),
        "ray-node": node,
        "time": time.time(),
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def handle_warm_up(msg: Any, spec: RunSpec) -> Any:
    """The ClientApp's query handler for ``server_app.warm_up``: build the federation, then
    take one optimizer step on a dummy batch, reply.

    The first optimizer a process builds imports ``torch._dynamo`` (seconds on a loaded
    machine) and the first backward pass sets up autograd; done here, neither is charged to
    round 1's client deadline.
    """
    from flwr.app import ConfigRecord, RecordDict

    import fedadapt
    from strategies import error_reply

    try:
        torch.set_num_threads(1)
        w = world(spec.world)
        model = w.model()
        opt = fedadapt.build_optimizer("sgd", model.parameters(), lr=0.0)
        x = torch.zeros((2, *w.source.input_shape))
        loss = torch.nn.functional.cross_entropy(model(x), torch.zeros(2, dtype=torch.long))
        loss.backward()
        opt.step()
    except Exception as exc:
        return error_reply(msg, f"worker could not build the federation: {exc!r}")
    return Message(RecordDict({"config": ConfigRecord({"ready": True})}), reply_to=msg)


_SPECS: dict[str, RunSpec] = {}


def spec_of(context: Context) -> RunSpec:
    """The run's :class:`RunSpec` from ``context.run_config`` (validated, cached per run)."""
    cfg = resolve(dict(context.run_config))
    from fedadapt.seeding import run_key

    key = run_key(cfg)
    if key not in _SPECS:
        if len(_SPECS) > 8:
            _SPECS.clear()
        _SPECS[key] = read(cfg)
    return _SPECS[key]


app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    return handle_train(msg, spec_of(context), dict(context.node_config))


@app.query()
def query(msg: Message, context: Context) -> Message:
    return handle_warm_up(msg, spec_of(context))
