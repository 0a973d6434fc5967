"""The two calls any ClientApp uses to speak fedadapt's train protocol (docs/CONTRACTS.md §2-3).

``plan = read_train_message(msg, model)`` tells the app which client ids to serve, with which
local optimizer (``plan.build_optimizer(params, client_id)`` wraps ``fedadapt.build_optimizer``
with the client's carried step size applied) and which per-client signals the server needs.
``reply = build_train_reply(msg, plan, outcomes)`` turns what each client produced into the one
reply the strategy validates: the example-weighted mean model (accumulated in float64, cast back
to the model's dtypes), the total example count, per-client statistics and failures.

Example (one worker serving several clients, one after another)::

    @app.train()
    def train(msg, context):
        plan = read_train_message(msg, model)
        outcomes = []
        for cid in plan.client_ids:
            try:
                plan.load_global(model)
                opt = plan.build_optimizer(model.parameters(), cid)
                n, loss = local_train(model, opt, load_partition(cid), plan.config)
                outcomes.append(ClientOutcome(cid, model.state_dict(), n, loss,
                                              fedadapt.step_size_stats(opt)))
            except Exception as exc:  # keep the actor alive, report the client
                outcomes.append(ClientOutcome.failed(cid, repr(exc)))
        return build_train_reply(msg, plan, outcomes)

Per-coordinate local optimizer state (momentum, Adam moments) is rebuilt every round: only
the scalar step size can be carried (``client_lr_state``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from . import records as R

_ERROR_CODE_CLIENT = 2  # flwr ErrorCode.CLIENT_APP_RAISED_EXCEPTION


@dataclass
class ClientOutcome:
    """What one client produced in a round.

    ``state_dict`` is the client's final model (``None`` when it failed); ``step_stats`` is
    ``fedadapt.step_size_stats(optimizer)`` (``lr``, ``step-mean``, ``step-min``, ``step-max``);
    ``error`` is the failure reason (the client is then reported, not averaged).
    """

    client_id: int
    state_dict: Mapping[str, torch.Tensor] | None
    num_examples: int = 0
    train_loss: float = math.nan
    step_stats: Mapping[str, float] | None = None
    error: str | None = None
    # the training loss before any local step (the first minibatch's): the server's change
    # detector compares it with earlier rounds (fedadapt.ChangeDetector)
    start_loss: float = math.nan

    @classmethod
    def failed(cls, client_id: int, reason: str) -> ClientOutcome:
        return cls(client_id, None, 0, math.nan, None, reason)

    @property
    def ok(self) -> bool:
        return self.error is None and self.state_dict is not None and self.num_examples > 0


@dataclass
class TrainPlan:
    """Everything a train message asks for (read by :func:`read_train_message`)."""

    server_round: int
    client_ids: list[int]
    client_lrs: list[float | None]
    optimizer_name: str
    optimizer_options: dict[str, object]
    signals: tuple[str, ...]
    reply_mode: str
    config: ConfigRecord
    global_state: dict[str, torch.Tensor]
    buffer_keys: frozenset[str] = field(default_factory=frozenset)
    global_update: dict[str, torch.Tensor] | None = None
    parameter_names: list[str] | None = None

    def lr_for(self, client_id: int) -> float | None:
        """The carried step size for ``client_id`` (``None``: start from the configured lr)."""
        for cid, lr in zip(self.client_ids, self.client_lrs, strict=True):
            if cid == client_id:
                return lr
        raise KeyError(f"client {client_id} is not served by this message {self.client_ids}")

    @property
    def hints(self) -> dict[str, float]:
        """What the server method asks of the clients this round (``fedadapt.ServerOptimizer.
        client_hints``): ``local-work`` (a factor on the local steps or epochs), ``lr-scale``
        (already applied by :meth:`optimizer_kwargs`), ``early-stop-gamma``, ... ."""
        p = R.CFG_HINT_PREFIX
        return {k[len(p) :]: float(v) for k, v in self.config.items() if k.startswith(p)}  # type: ignore[arg-type]

    def optimizer_kwargs(self, client_id: int) -> dict[str, object]:
        """The options for ``fedadapt.build_optimizer`` with the carried lr applied (and the
        server's ``lr-scale`` hint, when the server method schedules the clients' lr)."""
        opts = dict(self.optimizer_options)
        lr = self.lr_for(client_id)
        if lr is not None:
            opts["lr"] = lr
        scale = self.hints.get("lr-scale")
        if scale is not None and "lr" in opts:
            opts["lr"] = float(opts["lr"]) * scale  # type: ignore[arg-type]
        return opts

    def build_optimizer(
        self, params: Iterable[torch.nn.Parameter], client_id: int
    ) -> torch.optim.Optimizer:
        """A fresh local optimizer (``fedadapt.build_optimizer``) for ``client_id``.

        Call it after :meth:`load_global`: when the train config carries ``proximal-mu`` > 0
        (Flower's FedProx sends it), the optimizer also applies FedProx's proximal term around
        the parameters' current values (``fedadapt.proximal.add_proximal_term``).
        """
        import fedadapt
        from fedadapt.proximal import add_proximal_term

        opt = fedadapt.build_optimizer(
            self.optimizer_name,
            params,
            **self.optimizer_kwargs(client_id),  # type: ignore[arg-type]
        )
        add_proximal_term(opt, self.proximal_mu)
        if self.global_update is not None and hasattr(opt, "set_global_update"):
            # x_t - x_{t-1}, in the order of the optimizer's parameters (FedHyper-CL)
            names = self.parameter_names or [
                k for k in self.global_state if k in self.global_update
            ]
            if all(n in self.global_update for n in names):
                opt.set_global_update([self.global_update[n] for n in names])
        return opt

    @property
    def proximal_mu(self) -> float:
        """FedProx's coefficient from the train config (``proximal-mu``; 0 when absent)."""
        return float(self.config.get("proximal-mu", 0.0))  # type: ignore[arg-type]

    def load_global(self, model: torch.nn.Module) -> None:
        """Load the round's global model into ``model`` (call before each client)."""
        model.load_state_dict(self.global_state, strict=True)


def _get_list(cfg: ConfigRecord, key: str, default: list) -> list:
    v = cfg.get(key, default)
    return list(v) if isinstance(v, list) else [v]


def read_train_message(msg: Message, model: torch.nn.Module | None = None) -> TrainPlan:
    """Read a fedadapt train message into a :class:`TrainPlan`.

    ``model`` (optional) is used for the dtype/device of the global state and to check keys.
    Messages without fedadapt keys (a plain Flower strategy) serve one client whose id is the
    node id, with the configured optimizer ``sgd``.
    """
    content = msg.content
    cfg = content.config_records.get(R.CONFIG, ConfigRecord())
    arrays = content.array_records.get(R.ARRAYS)
    if arrays is None:
        raise ValueError(f"train message has no ArrayRecord {R.ARRAYS!r}")
    ids = [int(c) for c in _get_list(cfg, R.CFG_CLIENT_IDS, [msg.metadata.dst_node_id])]
    lrs_raw = _get_list(cfg, R.CFG_CLIENT_LRS, [R.NO_LR] * len(ids))
    if len(lrs_raw) != len(ids):
        raise ValueError(f"{R.CFG_CLIENT_LRS} has {len(lrs_raw)} entries for {len(ids)} client ids")
    lrs = [None if float(v) < 0 else float(v) for v in lrs_raw]
    opts_raw = cfg.get(R.CFG_OPTIMIZER_OPTIONS)
    opts = json.loads(opts_raw) if isinstance(opts_raw, str) else {}
    app_lr = cfg.get(R.CFG_APP_LR)
    if opts_raw is None and isinstance(app_lr, int | float) and not isinstance(app_lr, bool):
        # a plain Flower strategy: the app's own train-config lr (docs/STRATEGIES.md, precedence)
        opts = {"lr": float(app_lr)}
    state = {k: t.clone() for k, t in R.record_to_tensors(arrays).items()}
    upd_rec = content.array_records.get(R.GLOBAL_UPDATE)
    update = (
        {k: t.clone() for k, t in R.record_to_tensors(upd_rec).items()}
        if upd_rec is not None
        else None
    )
    names = None
    if model is not None:
        names = [n for n, _ in model.named_parameters()]
        if update is not None:
            dev = {n: p.device for n, p in model.named_parameters()}
            update = {k: v.to(dev.get(k, v.device)) for k, v in update.items()}
        ref = model.state_dict()
        missing = set(ref) ^ set(state)
        if missing:
            raise ValueError(f"global arrays and model keys differ: {sorted(missing)[:5]}")
        state = {k: state[k].to(device=ref[k].device) for k in ref}
    return TrainPlan(
        server_round=int(cfg.get(R.CFG_ROUND, 0)),  # type: ignore[arg-type]
        client_ids=ids,
        client_lrs=lrs,
        optimizer_name=str(cfg.get(R.CFG_OPTIMIZER, "sgd")),
        optimizer_options=opts,
        signals=tuple(str(s) for s in _get_list(cfg, R.CFG_SIGNALS, [])),
        reply_mode=str(cfg.get(R.CFG_REPLY_MODE, "mean")),
        config=cfg,
        global_state=state,
        buffer_keys=frozenset(str(k) for k in _get_list(cfg, R.CFG_BUFFER_KEYS, [])),
        global_update=update,
        parameter_names=names,
    )


def _param_keys(plan: TrainPlan) -> list[str]:
    return [
        k
        for k, t in plan.global_state.items()
        if t.is_floating_point() and not k.endswith(R.BUFFER_SUFFIXES) and k not in plan.buffer_keys
    ]


class TrainReplyBuilder:
    """Accumulates client outcomes one at a time (memory: two model copies in float64, however
    many clients the worker serves); :func:`build_train_reply` is the one-shot form."""

    def __init__(self, plan: TrainPlan) -> None:
        self.plan = plan
        self._acc: dict[str, torch.Tensor] | None = None
        self._sq: dict[str, torch.Tensor] | None = None
        self._params = _param_keys(plan)
        self._want_sq_norm = R.SIG_SQ_NORMS in plan.signals
        self._want_sq_mean = R.SIG_SQ_MEAN in plan.signals
        self.ids: list[int] = []
        self.num_examples: list[int] = []
        self.losses: list[float] = []
        self.start_losses: list[float] = []
        self.stats: dict[str, list[float]] = {k: [] for k in R.STEP_STAT_KEYS}
        self.sq_norms: list[float] = []
        self.failed_ids: list[int] = []
        self.failed_reasons: list[str] = []

    def add(self, outcome: ClientOutcome) -> None:
        if not outcome.ok:
            reason = outcome.error or (
                "no model returned"
                if outcome.state_dict is None
                else f"num-examples {outcome.num_examples} <= 0"
            )
            self.failed_ids.append(int(outcome.client_id))
            self.failed_reasons.append(str(reason))
            return
        sd = outcome.state_dict
        assert sd is not None
        glob = self.plan.global_state
        if set(sd) != set(glob):
            self.failed_ids.append(int(outcome.client_id))
            self.failed_reasons.append(
                f"state_dict keys differ from the global model: {sorted(set(sd) ^ set(glob))[:5]}"
            )
            return
        wrong = [
            f"{k!r} is {tuple(sd[k].shape)} {sd[k].dtype}, the global model's {tuple(glob[k].shape)} {glob[k].dtype}"
            for k in glob
            if tuple(sd[k].shape) != tuple(glob[k].shape) or sd[k].dtype != glob[k].dtype
        ]
        if wrong:
            self.failed_ids.append(int(outcome.client_id))
            self.failed_reasons.append("wrong array: " + "; ".join(wrong[:3]))
            return
        bad = [k for k in self._params if not torch.isfinite(sd[k]).all()]
        if bad:
            self.failed_ids.append(int(outcome.client_id))
            self.failed_reasons.append(f"non-finite values in {bad[:3]}")
            return
        n = int(outcome.num_examples)
        if self._acc is None:
            self._acc = {
                k: torch.zeros(t.shape, dtype=torch.float64, device=t.device)
                for k, t in glob.items()
            }
        sq_norm = 0.0
        for k, t in sd.items():
            x = t.detach().to(device=glob[k].device, dtype=torch.float64)
            self._acc[k].add_(x, alpha=n)
            if k in self._params and (self._want_sq_norm or self._want_sq_mean):
                d = x - glob[k].to(torch.float64)
                d2 = d * d
                if self._want_sq_norm:
                    sq_norm += float(d2.sum())
                if self._want_sq_mean:
                    if self._sq is None:
                        self._sq = {
                            p: torch.zeros(
                                glob[p].shape, dtype=torch.float64, device=glob[p].device
                            )
                            for p in self._params
                        }
                    self._sq[k].add_(d2, alpha=n)
        self.ids.append(int(outcome.client_id))
        self.num_examples.append(n)
        self.losses.append(float(outcome.train_loss))
        self.start_losses.append(float(outcome.start_loss))
        st = outcome.step_stats or {}
        for key in self.stats:
            self.stats[key].append(float(st.get(key, math.nan)))
        if self._want_sq_norm:
            self.sq_norms.append(sq_norm)

    def content(self) -> RecordDict:
        clients = ConfigRecord(
            {
                R.C_IDS: self.ids,
                R.C_NUM_EXAMPLES: self.num_examples,
                R.C_TRAIN_LOSS: self.losses,
                R.C_START_LOSS: self.start_losses,
                **{k: v for k, v in self.stats.items()},
                R.C_FAILED_IDS: self.failed_ids,
                R.C_FAILED_REASONS: self.failed_reasons,
            }
        )
        if self._want_sq_norm:
            clients[R.C_SQ_NORM] = self.sq_norms
        rd = RecordDict({R.CLIENTS: clients})
        if self._acc is None:  # every client failed
            return rd
        total = sum(self.num_examples)
        mean: dict[str, torch.Tensor] = {}
        for k, ref in self.plan.global_state.items():
            m = self._acc[k].div_(total)
            if not ref.is_floating_point():
                m = m.round_()
            mean[k] = m.to(ref.dtype)
        rd[R.ARRAYS] = R.tensors_to_record(mean)
        finite = [
            (n, v) for n, v in zip(self.num_examples, self.losses, strict=True) if math.isfinite(v)
        ]
        metrics = MetricRecord({R.NUM_EXAMPLES: int(total)})
        if finite:
            metrics[R.TRAIN_LOSS] = float(sum(n * v for n, v in finite) / sum(n for n, _ in finite))
        rd[R.METRICS] = metrics
        if self._sq is not None:
            rd[R.SIGNALS] = R.tensors_to_record(
                {k: v.to(self.plan.global_state[k].dtype) for k, v in self._sq.items()}
            )
        return rd

    def reply(self, msg: Message) -> Message:
        return Message(self.content(), reply_to=msg)


def build_train_reply(msg: Message, plan: TrainPlan, outcomes: Iterable[ClientOutcome]) -> Message:
    """The reply to ``msg`` from the clients' outcomes (CONTRACTS §3)."""
    builder = TrainReplyBuilder(plan)
    for o in outcomes:
        builder.add(o)
    return builder.reply(msg)


def error_reply(msg: Message, reason: str, code: int = _ERROR_CODE_CLIENT) -> Message:
    """An error reply (the whole message failed, e.g. the model could not be built)."""
    return Message(Error(code=code, reason=reason), reply_to=msg)


# ---------------------------------------------------------------- evaluation


@dataclass
class EvaluatePlan:
    """What an evaluate message asks for: client ids to evaluate, the config, the global model."""

    server_round: int
    client_ids: list[int]
    config: ConfigRecord
    global_state: dict[str, torch.Tensor]

    def load_global(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.global_state, strict=True)


@dataclass
class EvaluateOutcome:
    """One client's evaluation: example count, loss, other metrics (example-weighted on merge)."""

    client_id: int
    num_examples: int
    loss: float = math.nan
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None


def read_evaluate_message(msg: Message, model: torch.nn.Module | None = None) -> EvaluatePlan:
    """Read an evaluate message (same keys as a train message; ids default to the node id)."""
    plan = read_train_message(msg, model)
    return EvaluatePlan(plan.server_round, plan.client_ids, plan.config, plan.global_state)


def build_evaluate_reply(msg: Message, outcomes: Iterable[EvaluateOutcome]) -> Message:
    """One ``metrics`` MetricRecord (``num-examples``, ``eval-loss`` and every other metric,
    example-weighted over the successful clients) plus ``fedadapt.clients`` with failures."""
    outcomes = list(outcomes)
    ok = [o for o in outcomes if o.error is None and o.num_examples > 0]
    bad = [o for o in outcomes if not (o.error is None and o.num_examples > 0)]
    clients = ConfigRecord(
        {
            R.C_IDS: [int(o.client_id) for o in ok],
            R.C_NUM_EXAMPLES: [int(o.num_examples) for o in ok],
            R.C_FAILED_IDS: [int(o.client_id) for o in bad],
            R.C_FAILED_REASONS: [o.error or f"num-examples {o.num_examples} <= 0" for o in bad],
        }
    )
    rd = RecordDict({R.CLIENTS: clients})
    if ok:
        total = sum(o.num_examples for o in ok)
        metrics = MetricRecord({R.NUM_EXAMPLES: int(total)})
        names = {R.EVAL_LOSS} | {k for o in ok for k in o.metrics}
        for name in sorted(names):
            vals = [
                (o.num_examples, o.loss if name == R.EVAL_LOSS else o.metrics.get(name, math.nan))
                for o in ok
            ]
            vals = [(n, float(v)) for n, v in vals if math.isfinite(float(v))]
            if vals:
                metrics[name] = sum(n * v for n, v in vals) / sum(n for n, _ in vals)
        rd[R.METRICS] = metrics
    return Message(rd, reply_to=msg)


__all__ = [
    "ClientOutcome",
    "EvaluateOutcome",
    "EvaluatePlan",
    "TrainPlan",
    "TrainReplyBuilder",
    "build_evaluate_reply",
    "build_train_reply",
    "error_reply",
    "read_evaluate_message",
    "read_train_message",
]
