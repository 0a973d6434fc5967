"""One federation from a resolved run config: the ServerApp body, the ClientApp body, and the
in-process run used by ``fedadapt simulate``.

Both Flower entry points (``simulations.server_app:app`` / ``simulations.client_app:app`` under
``flwr run``) and the CLI (through :mod:`simulations.runtime`) call the functions here, so the
two paths run the same code:

* :func:`serve` (ServerApp): builds the model and the strategy, evaluates on the centralized
  current-concept test set and on a fixed panel of clients' own current-concept data, writes
  the run directory (:class:`simulations.report.RunWriter`).
* :func:`handle_train` (ClientApp): reads the train message with fedadapt's two client calls,
  trains each client id it lists one after another on that client's current-concept data
  (lazily loaded, bounded cache), and replies once; it never lets an exception kill its Ray
  actor (failures are reported per client with their reason).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulations.config import Value, resolve, worker_count
from simulations.data import ClientDataSource, build_source
from simulations.drift import (
    Concept,
    DriftSchedule,
    apply_schedule,
    current_test_set,
    make_concepts,
)
from simulations.faults import FaultPlan
from simulations.heterogeneity import Heterogeneity
from simulations.models import build_model

log = logging.getLogger(__name__)
Config = Mapping[str, Value]
RowCallback = Callable[[dict[str, Any]], None]

PANEL_SIZE = 20  # clients whose own current-concept data is evaluated every round


# ----------------------------------------------------------------------------- the federation


@dataclass
class World:
    """Everything derived from the config that both sides need; cached per process."""

    cfg: dict[str, Value]
    source: ClientDataSource
    concepts: list[Concept]
    schedule: DriftSchedule
    het: Heterogeneity
    faults: FaultPlan
    model_name: str

    def model(self) -> torch.nn.Module:
        return build_model(
            self.model_name, self.source.input_shape, self.source.num_classes,
            seed=int(self.cfg["seed"]),
        )

    def client_data(self, client_id: int, server_round: int) -> tuple[np.ndarray, np.ndarray]:
        """The client's training data under its current concept in ``server_round``."""
        X, y = self.source.get(int(client_id))
        return apply_schedule(
            X, y, schedule=self.schedule, concepts=self.concepts, client_id=int(client_id),
            server_round=int(server_round), seed=int(self.cfg["seed"]),
        )


_DATA_KEYS = (
    "dataset", "num-clients", "partitioner", "partition-alpha", "partition-classes",
    "partition-shards", "synthetic-alpha", "synthetic-beta", "hub-dataset", "hub-data-files",
    "hub-feature-key", "hub-label-key", "test-fraction", "cache-size", "seed",
)
_WORLDS: dict[str, World] = {}


def _partitioner_params(cfg: Config) -> dict[str, Any]:
    name = str(cfg["partitioner"])
    table: dict[str, dict[str, Any]] = {
        "dirichlet": {"alpha": float(cfg["partition-alpha"])},
        "pathological": {"classes_per_client": int(cfg["partition-classes"])},
        "shard": {"shards_per_client": int(cfg["partition-shards"])},
    }
    return table.get(name, {})


def _source_options(cfg: Config) -> dict[str, Any]:
    if cfg["dataset"] == "synthetic":
        return {"alpha": float(cfg["synthetic-alpha"]), "beta": float(cfg["synthetic-beta"])}
    if cfg["dataset"] == "hub":
        opts: dict[str, Any] = {
            "dataset": str(cfg["hub-dataset"]),
            "feature_columns": [str(cfg["hub-feature-key"])],
            "label_column": str(cfg["hub-label-key"]),
        }
        if cfg["hub-data-files"]:
            opts["data_files"] = str(cfg["hub-data-files"])
        return opts
    return {}


def world(cfg: Config) -> World:
    """The (cached) federation for ``cfg``: a worker builds it once and reuses it for every
    message; only the data part of the config keys the cache."""
    key = json.dumps({k: cfg[k] for k in _DATA_KEYS}, sort_keys=True) + json.dumps(
        {k: v for k, v in cfg.items() if k.startswith(("drift.", "faults.")) or k in (
            "local-steps", "local-epochs", "local-steps-dist", "local-steps-spread",
            "straggler-fraction", "straggler-work", "dropout-prob", "model")},
        sort_keys=True,
    )
    if key in _WORLDS:
        return _WORLDS[key]
    seed = int(cfg["seed"])
    source = build_source(
        str(cfg["dataset"]),
        num_clients=int(cfg["num-clients"]),
        partitioner=str(cfg["partitioner"]),
        partitioner_params=_partitioner_params(cfg),
        seed=seed,
        cache_size=int(cfg["cache-size"]),
        test_fraction=float(cfg["test-fraction"]),
        options=_source_options(cfg),
    )
    kind = str(cfg["drift.kind"])
    timing = str(cfg["drift.timing"])
    concepts = make_concepts(
        kind, num_classes=source.num_classes, severity=float(cfg["drift.severity"]),
        num_concepts=2, seed=seed,
    )
    schedule = (
        DriftSchedule.none()
        if kind == "none"
        else DriftSchedule.from_settings(
            timing, int(cfg["drift.round"]), num_rounds=int(cfg["num-server-rounds"]),
            width=int(cfg["drift.width"]), period=int(cfg["drift.period"]),
            stagger=int(cfg["drift.stagger"]), seed=seed,
        )
    )
    steps = int(cfg["local-steps"])
    het = Heterogeneity(
        work_distribution=str(cfg["local-steps-dist"]),
        work_mean=float(steps if steps > 0 else cfg["local-epochs"]) or 1e-3,
        work_spread=float(cfg["local-steps-spread"]),
        integer_work=steps > 0,
        straggler_fraction=float(cfg["straggler-fraction"]),
        straggler_work=float(cfg["straggler-work"]),
        online_probability=1.0,  # the strategy samples only online clients
        dropout_probability=float(cfg["dropout-prob"]),
        seed=seed,
    )
    model_name = str(cfg["model"])
    if model_name == "auto":  # an MLP suits every built-in data set; hub images get the CNN
        model_name = "cnn" if cfg["dataset"] == "hub" else "mlp"
    w = World(dict(cfg), source, concepts, schedule, het, FaultPlan.from_config(cfg), model_name)
    if len(_WORLDS) > 4:
        _WORLDS.clear()
    _WORLDS[key] = w
    return w


# ----------------------------------------------------------------------------- client side


def _device(cfg: Config) -> torch.device:
    """CUDA when the run gives workers a GPU share and one is visible, else CPU."""
    if float(cfg["client-num-gpus"]) > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def train_client(
    w: World,
    plan: Any,
    client_id: int,
    model: torch.nn.Module,
    device: torch.device,
    data_id: int | None = None,
) -> Any:
    """Train one client for its local work this round; return a ``ClientOutcome``.

    ``data_id`` is the partition the client trains on: its client id in simulation mode, the
    node's ``partition-id`` in deployment mode (where the client id is the node id).
    """
    import fedadapt
    from strategies import ClientOutcome

    cfg = w.cfg
    rnd = int(plan.server_round)
    data_id = int(client_id) if data_id is None else int(data_id)
    fault = w.faults.kind(data_id)
    w.faults.before_training(fault, client_id, rnd, timeout=float(cfg["round-timeout"]))
    X, y = w.client_data(data_id, rnd)
    n = len(y)
    if n == 0:
        return ClientOutcome.failed(client_id, "client has no training examples")
    draw = w.het.plan(np.array([data_id]), rnd)
    bs = int(cfg["batch-size"])
    if int(cfg["local-steps"]) > 0:
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
    mu = float(plan.config.get("proximal-mu", 0.0))
    anchor = [p.detach().clone() for p in model.parameters()] if mu > 0 else None
    Xt, yt = _to_device(X, device), _to_device(y, device)
    gen = torch.Generator().manual_seed(hash((int(cfg["seed"]), data_id, rnd)) & 0x7FFFFFFF)
    gamma = plan.hints.get("early-stop-gamma")
    early = _EarlyStopping(gamma, Xt, yt, n, bs, gen, model) if gamma is not None and n >= 2 else None
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
        if anchor is not None:  # FedProx's proximal term (Flower's FedProx only sends mu)
            prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
            loss = loss + 0.5 * mu * prox
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
    return ClientOutcome(client_id, state, n_train, mean_loss, fedadapt.step_size_stats(opt),
                         start_loss=math.nan if start_loss is None else float(start_loss))


def _shuffled(ids: torch.Tensor | None, n: int, gen: torch.Generator) -> torch.Tensor:
    if ids is None:
        return torch.randperm(n, generator=gen)
    return ids[torch.randperm(len(ids), generator=gen)]


class _EarlyStopping:
    """Flash's client-side early stopping (Panchal et al., ICML 2023): a fifth of the client's
    data is held out; after each local epoch e its loss L_e is compared with the previous one
    and training stops when ``fedadapt.flash_early_stop(L_{e-1}, L_e, e, gamma)`` (a decrease
    below gamma / e). L_0 is the held-out loss before any local step."""

    def __init__(self, gamma: float, X: torch.Tensor, y: torch.Tensor, n: int, bs: int,
                 gen: torch.Generator, model: torch.nn.Module) -> None:
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


def data_id_for(cfg: Config, client_id: int, node_config: Mapping[str, Any] | None) -> int:
    """Which partition a client trains on (see :func:`train_client`)."""
    if not cfg["deployment"]:
        return int(client_id)
    if node_config and "partition-id" in node_config:
        return int(node_config["partition-id"])
    return int(client_id) % int(cfg["num-clients"])


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


def handle_train(msg: Any, cfg: Config, node_config: Mapping[str, Any] | None = None) -> Any:
    """The ClientApp's train handler: serve every client id in the message, reply once.

    Each client trains on its own model copy under a deadline (``client-timeout``); a client
    past it is reported and left behind, so one hung client does not cost its worker's reply.
    """
    from strategies import ClientOutcome, TrainReplyBuilder, error_reply, read_train_message

    torch.set_num_threads(1)
    try:
        w = world(cfg)
        device = _device(cfg)
        template = w.model().to(device)
        plan = read_train_message(msg, template)
    except Exception as exc:  # a broken message or config must not kill the actor
        return error_reply(msg, f"worker could not read the train message: {exc!r}")
    budget = float(cfg["client-timeout"]) or (
        0.8 * float(cfg["round-timeout"]) / max(1, len(plan.client_ids))
    )
    builder = TrainReplyBuilder(plan)
    for cid in plan.client_ids:
        data_id = data_id_for(cfg, int(cid), node_config)
        model = copy.deepcopy(template)
        try:
            def job(cid: int = int(cid), model: torch.nn.Module = model,
                    data_id: int = data_id) -> Any:
                return train_client(w, plan, cid, model, device, data_id)

            done, outcome = _with_deadline(job, budget)
            if not done:
                outcome = ClientOutcome.failed(
                    int(cid), f"client exceeded its deadline of {budget:.1f} s (client-timeout)")
        except Exception as exc:  # one client's failure is reported, the others go on
            outcome = ClientOutcome.failed(int(cid), f"{type(exc).__name__}: {exc}")
        try:
            builder.add(outcome)
        except Exception as exc:  # a result the builder cannot even inspect
            builder.add(ClientOutcome.failed(int(cid), f"invalid client result: {exc}"))
    if cfg["worker-log"]:
        _log_worker(str(cfg["worker-log"]), plan)
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
    line = {"round": int(plan.server_round), "client-ids": [int(c) for c in plan.client_ids],
            "pid": os.getpid(), "ray-node": node, "time": time.time()}
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


# ----------------------------------------------------------------------------- server side


def _accuracy(model: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(X)))
        target = torch.from_numpy(np.ascontiguousarray(y))
        loss = float(torch.nn.functional.cross_entropy(logits, target))
        acc = float((logits.argmax(1) == target).float().mean())
    return acc, loss


def panel_ids(cfg: Config) -> list[int]:
    """A fixed panel of client ids: the strategies' own seeded sampler (evaluation stream,
    round 0, which training never samples), so no population-sized allocation."""
    from strategies.sampling import EVALUATE_STREAM, sample_cohort

    n = int(cfg["num-clients"])
    cohort = sample_cohort(n, min(PANEL_SIZE, n), seed=int(cfg["seed"]), server_round=0,
                           stream=EVALUATE_STREAM)
    return sorted(cohort.client_ids)


def make_evaluate(w: World, writer: Any | None) -> Callable[[int, Any], Any]:
    from flwr.app import MetricRecord

    X_test, y_test = w.source.test_set()
    panel = panel_ids(w.cfg)
    every = int(w.cfg["eval-every"])
    last = int(w.cfg["num-server-rounds"])
    model = w.model()

    def evaluate(server_round: int, arrays: Any) -> Any:
        row: dict[str, Any] = {}
        if server_round % every == 0 or server_round in (0, last):
            model.load_state_dict(arrays.to_torch_state_dict())
            Xc, yc = current_test_set(
                X_test, y_test, schedule=w.schedule, concepts=w.concepts,
                server_round=max(server_round, 1), seed=int(w.cfg["seed"]),
            )
            acc, loss = _accuracy(model, Xc, yc)
            client_accs = []
            for cid in panel:
                Xp, yp = w.client_data(cid, max(server_round, 1))
                if len(yp):
                    client_accs.append(_accuracy(model, Xp, yp)[0])
            row = {"accuracy": acc, "loss": loss,
                   "client-accuracy": float(np.mean(client_accs)) if client_accs else None}
        row["drift-events"] = [
            f"start cp{e.changepoint} {e.from_concept}->{e.to_concept} offset {e.offset}"
            for e in w.schedule.events(server_round)
        ] if server_round >= 1 else []
        if writer is not None:
            writer.add(server_round, row)
            writer.flush(server_round)
        metrics: dict[str, int | float | list[int] | list[float]] = {
            k: float(v) for k, v in row.items() if isinstance(v, float)
        }
        return MetricRecord(metrics) if metrics else None

    return evaluate


def strategy_kwargs(cfg: Config) -> dict[str, Any]:
    """Map the run config onto the registry's constructor arguments for ``cfg["strategy"]``.

    ``server-lr`` means the fedadapt server optimizer's ``lr`` for FedAdapt and the FedHyper
    presets, ``server_learning_rate`` for FedAvgM and ``eta`` for FedAdam/FedYogi/FedAdagrad
    (whose ``eta_l`` is set to ``client-lr``); FedAvg and FedExP have no server lr to set.
    """
    name = str(cfg["strategy"])
    client_options = json.loads(str(cfg["client-options"]))
    client_options.setdefault("lr", float(cfg["client-lr"]))
    server_options = json.loads(str(cfg["server-options"]))
    kwargs: dict[str, Any] = {
        "client_optimizer": str(cfg["client-optimizer"]),
        "client_options": client_options,
        "client_lr_state": str(cfg["client-lr-state"]),
        "num_clients": None if cfg["deployment"] else int(cfg["num-clients"]),
        "clients_per_round": int(cfg["clients-per-round"]),
        "num_workers": None if cfg["deployment"] else worker_count(cfg),
        "seed": int(cfg["seed"]),
        "availability": float(cfg["online-prob"]),
        "worker_wait_timeout": float(cfg["worker-wait-timeout"]),
        "fraction_evaluate": 0.0,  # evaluation runs on the server (centralized + client panel)
    }
    import fedadapt

    given = float(cfg["server-lr"])  # 0: the method's own default
    lr = given if given > 0 else 1.0
    from strategies.registry import _REGISTRY as _STRATEGIES

    factory = _STRATEGIES.get(name)
    if getattr(factory, "needs_change_rounds", False):
        # an oracle: the drift schedule's changepoints (the first round of each new concept)
        kwargs["change_rounds"] = [int(cp.round) for cp in world(cfg).schedule.changepoints]
    preset = getattr(factory, "preset_server_optimizer", None)
    if preset is not None:  # a FedAdapt preset with its own server method
        own = given if given > 0 else None
        kwargs["server_options"] = {**({"lr": own} if own is not None else {}), **server_options}
    if name == "fedadapt":
        kwargs["server_optimizer"] = str(cfg["server-optimizer"])
        own = given if given > 0 else fedadapt.default_server_lr(str(cfg["server-optimizer"]))
        kwargs["server_options"] = {**({"lr": own} if own is not None else {}), **server_options}
        if cfg["server-optimizer"] == "autodrop" and "window" not in server_options:
            # on the server a window counts rounds: one expected pass over the population
            # (ALGORITHMS.md 7.4), not the client default of 50 steps, which a run of a few
            # dozen rounds would never close
            per_pass = math.ceil(int(cfg["num-clients"]) / int(cfg["clients-per-round"]))
            kwargs["server_options"]["window"] = max(2, min(per_pass, int(cfg["num-server-rounds"]) // 4 or 2))
    if name in ("fedavg", "fedexp", "fedprox") and given > 0 and given != 1.0:
        log.warning("server-lr=%g is not used by strategy %r (it has no server step size)", lr, name)
    elif name.startswith("fedhyper"):
        kwargs["server_options"] = {"lr": lr, **server_options}
        if name == "fedhyper-sl":  # the preset's local method; client-lr stays the start
            kwargs.pop("client_optimizer")
            kwargs.pop("client_lr_state")
        if name in ("fedhyper-cl", "fedhyper-full"):
            kwargs.pop("client_optimizer")
    elif name == "fedexp":
        kwargs["server_options"] = server_options
    elif name == "fedavgm":
        kwargs["server_learning_rate"] = lr  # Flower's default is 1.0 too
        kwargs["server_momentum"] = float(cfg["server-momentum"])
    elif name in ("fedadam", "fedyogi", "fedadagrad"):
        if given > 0:  # else Flower's own eta (0.1 FedAdam/FedAdagrad, 0.01 FedYogi)
            kwargs["eta"] = given
        kwargs["eta_l"] = float(cfg["client-lr"])
    elif name == "fedprox":
        kwargs["proximal_mu"] = float(cfg["proximal-mu"])
    return kwargs


RUN_KEY = "fedadapt.run-key"


def run_key(cfg: Config) -> str:
    """A short digest of the config: lets workers shared by several runs pick the right one."""
    import hashlib

    return hashlib.sha1(json.dumps(dict(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_strategy(cfg: Config, on_round_end: Callable[[dict[str, object]], None] | None,
                  checkpoint_dir: str | None) -> Any:
    """The run's strategy from the registry, with fedadapt's sampling over the population."""
    from strategies import build_strategy

    kwargs = strategy_kwargs(cfg)
    key = run_key(cfg)
    kwargs["extra_train_config"] = lambda server_round: {RUN_KEY: key}
    kwargs["on_round_end"] = on_round_end
    kwargs["checkpoint_dir"] = checkpoint_dir
    kwargs["checkpoint_every"] = int(cfg["checkpoint-every"]) if checkpoint_dir else 0
    return build_strategy(str(cfg["strategy"]), **kwargs)


def warm_up(grid: Any, cfg: Config) -> None:
    """Wait for the worker supernodes, then have each build the run's federation (data
    source, model) before round 1, so that Ray's actor start-up and the first data load are
    not charged to round 1's timeout. Bounded by ``worker-wait-timeout``."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from strategies.sampling import wait_for_nodes

    timeout = float(cfg["worker-wait-timeout"])
    start = time.time()
    nodes = wait_for_nodes(grid.get_node_ids, worker_count(cfg), timeout=timeout)
    msgs = [
        Message(RecordDict({"config": ConfigRecord({RUN_KEY: run_key(cfg)})}),
                dst_node_id=int(n), message_type=MessageType.QUERY)
        for n in nodes[: worker_count(cfg)]
    ]
    left = max(1.0, timeout - (time.time() - start))
    replies = list(grid.send_and_receive(msgs, timeout=left))
    bad = [r.error.reason for r in replies if r.has_error()]
    if bad:
        raise RuntimeError(f"workers could not set up the run: {bad[0]}")


def handle_warm_up(msg: Any, cfg: Config) -> Any:
    """The ClientApp's query handler for :func:`warm_up`: build the federation, reply."""
    from flwr.app import ConfigRecord, Message, RecordDict

    from strategies import error_reply

    try:
        w = world(cfg)
        w.model()
    except Exception as exc:
        return error_reply(msg, f"worker could not build the federation: {exc!r}")
    return Message(RecordDict({"config": ConfigRecord({"ready": True})}), reply_to=msg)


def default_out_dir(cfg: Config) -> Path:
    if cfg["out-dir"]:
        return Path(str(cfg["out-dir"]))
    root = Path(os.environ.get("FEDADAPT_RUNS_DIR", "runs"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / f"{cfg['scenario']}-{cfg['strategy']}-s{cfg['seed']}-{stamp}"


def serve(grid: Any, cfg: Config, on_row: RowCallback | None = None) -> dict[str, Any]:
    """The ServerApp body: run every round, write the run directory, return the summary."""
    from flwr.app import ArrayRecord

    from simulations.report import RunWriter
    from strategies import read_checkpoint

    out = default_out_dir(cfg).resolve()
    resume_round = None
    if cfg["resume-from"]:
        resume_round = int(read_checkpoint(str(cfg["resume-from"]))["round"])
    writer = RunWriter(out, cfg, resume_round=resume_round)
    if on_row is not None:
        original = writer.flush

        def flush_and_tell(server_round: int) -> dict[str, Any]:
            row = original(server_round)
            on_row(row)
            return row

        writer.flush = flush_and_tell  # type: ignore[method-assign]
    w = world(cfg)

    def on_round_end(info: dict[str, object]) -> None:
        writer.add(int(info["round"]), info)  # type: ignore[call-overload]

    ckpt_dir = str(out / "checkpoints") if int(cfg["checkpoint-every"]) > 0 else None
    strategy = make_strategy(cfg, on_round_end, ckpt_dir)
    initial = ArrayRecord(w.model().state_dict())
    if cfg["resume-from"]:
        strategy.load_checkpoint(str(cfg["resume-from"]))
    from simulations.resilience import RetryingGrid

    if not cfg["deployment"]:
        warm_up(grid, cfg)
    result = strategy.start(
        RetryingGrid(grid),
        initial,
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout"]),
        evaluate_fn=make_evaluate(w, writer),
    )
    torch.save(result.arrays.to_torch_state_dict(), out / "final_model.pt")
    summary = writer.finish()
    summary["run-dir"] = str(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


# ----------------------------------------------------------------------------- in-process run


def run_experiment(cfg: Config, on_round: RowCallback | None = None) -> dict[str, Any]:
    """``fedadapt simulate``: the ServerApp and ClientApp in this process on Ray."""
    return run_many([cfg], on_round=lambda _i, row: on_round(row) if on_round else None)[0]


def run_many(
    cfgs: list[Config],
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
    on_run_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Several runs, one after another, in ONE Flower simulation on Ray (``fedadapt compare``).

    Each run gets a fresh strategy, model and run directory; only Ray and the worker actors are
    shared, which saves Ray's start-up (about 15-25 s on 2 cores) per run. Workers find each
    message's config by its run key. Runs must agree on the worker resources.
    """
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from simulations.runtime import run_in_process

    cfgs = [resolve(c) for c in cfgs]  # idempotent; guarantees validation before Ray starts
    for key in ("client-num-cpus", "client-num-gpus"):
        if len({c[key] for c in cfgs}) > 1:
            raise ValueError(f"runs in one simulation must agree on '{key}'")
    by_key = {run_key(c): c for c in cfgs}
    summaries: list[dict[str, Any]] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Any, context: Any) -> None:
        for i, cfg in enumerate(cfgs):
            tell = (lambda row, i=i: on_round(i, row)) if on_round else None
            summary = serve(grid, cfg, tell)
            summaries.append(summary)
            if on_run_end is not None:
                on_run_end(i, summary)

    client_app = ClientApp()

    def config_of(msg: Any) -> Config | None:
        key = msg.content["config"].get(RUN_KEY) if "config" in msg.content else None
        return by_key.get(str(key))

    @client_app.train()
    def _train(msg: Any, context: Any) -> Any:
        from strategies import error_reply

        cfg = config_of(msg)
        if cfg is None:
            return error_reply(msg, "train message names no known run key")
        return handle_train(msg, cfg)

    @client_app.query()
    def _query(msg: Any, context: Any) -> Any:
        from strategies import error_reply

        cfg = config_of(msg)
        if cfg is None:
            return error_reply(msg, "query message names no known run key")
        return handle_warm_up(msg, cfg)

    run_in_process(
        server_app,
        client_app,
        num_workers=max(worker_count(c) for c in cfgs),
        client_num_cpus=float(cfgs[0]["client-num-cpus"]),
        client_num_gpus=float(cfgs[0]["client-num-gpus"]),
    )
    if len(summaries) != len(cfgs):
        raise RuntimeError(
            f"the simulation ended after {len(summaries)} of {len(cfgs)} runs (see the log above)"
        )
    return summaries
