"""What every fedadapt strategy shares, whatever aggregates the replies, by composition.

:class:`Orchestration` is a mixin for a Flower ``FedAvg`` subclass that wires together parts
with one job each:

* :class:`strategies.options.StrategyOptions`: the shared options, one typed object;
* :class:`strategies.cohorts.CohortSampler`: cohort sampling (simulation: a population split
  over workers; deployment: client id = node id);
* :class:`strategies.protocol.MessageProtocol`: train/evaluate messages and reply checking
  (stops the run when every reply of a round is unreadable for a protocol reason);
* :class:`strategies.client_state.ClientState`: carried per-client step sizes, global update;
* :class:`strategies.round_metrics.RoundMetrics`: per-round metrics, history, log lines.

It also runs the loop (``start``, which continues a resumed run) and exposes
``state_dict()`` / ``load_state_dict()``; ``strategies.checkpoint`` only handles the file.
Subclasses implement ``aggregate_train`` with ``_check_replies`` / ``_finish_round``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from logging import INFO, WARNING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

import fedadapt

from . import checkpoint as ckpt
from . import records as R
from . import sampling
from .client_state import ClientState
from .cohorts import CohortSampler
from .divergence import DivergenceWatch
from .options import (
    CLIENT_LR_STATES,
    ConfigValue,
    RoundCallback,
    StrategyOptions,
    check_optimizer_name,
    split_options,
)
from .protocol import DUPLICATE, NO_REPLY, MessageProtocol, ProtocolError, SentRound
from .round_metrics import RoundMetrics
from .validation import CheckedReply, Failure

log = logging.getLogger(__name__)

__all__ = [
    "CLIENT_LR_STATES",
    "DUPLICATE",
    "NO_REPLY",
    "ConfigValue",
    "Orchestration",
    "ProtocolError",
    "RoundCallback",
    "SentRound",
    "StrategyOptions",
    "check_optimizer_name",
    "split_options",
]


class Orchestration:
    """Mixin: the parts above, a Flower-style run loop, state_dict/load_state_dict."""

    options: StrategyOptions
    # provided by the Flower FedAvg this is mixed into
    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int
    weighted_by_key: str
    arrayrecord_key: str
    configrecord_key: str
    train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord]
    evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord]

    # the client method and lr state when the caller names none (StrategyOptions None): plain
    # local SGD restarted every round, as Flower's strategies and the published baselines train
    default_client: tuple[str, str] = ("sgd", "reset")

    def _init_orchestration(
        self, options: StrategyOptions, required_signals: tuple[str, ...] = ()
    ) -> None:
        named = options.client_optimizer is not None
        options = options.with_client_defaults(*self.default_client)
        self.options = options
        self.required_signals = tuple(required_signals)
        self.cohorts = CohortSampler(options)
        self.protocol = MessageProtocol(population=options.simulation_mode)
        self.protocol.client_optimizer_named = named
        lr = options.client_options.get("lr")
        method = str(options.client_optimizer)  # resolved above
        self.client_state = ClientState(
            str(options.client_lr_state),
            fedadapt.method_spec(method).needs_global_update,
            method,
            float(lr) if isinstance(lr, int | float) else None,  # type: ignore[arg-type]
            options.client_lr_on_change,
        )
        self.metrics = RoundMetrics(self.train_metrics_aggr_fn, self.weighted_by_key)
        self._layout: dict[str, tuple[str, tuple[int, ...]]] | None = None
        self._current: ArrayRecord | None = None
        self._resume_round = 0
        self._pending_checkpoint: tuple[int, ArrayRecord] | None = None
        self._resume_arrays: ArrayRecord | None = None
        self._lr_warned = False
        self.divergence = DivergenceWatch(self.step_size_setting())

    # ------------------------------------------------------------------ views of the options
    num_clients = property(lambda self: self.options.num_clients)
    clients_per_round = property(lambda self: self.options.clients_per_round)
    evaluate_clients_per_round = property(lambda self: self.options.evaluate_clients_per_round)
    num_workers = property(lambda self: self.options.num_workers)
    seed = property(lambda self: self.options.seed)
    client_optimizer = property(lambda self: self.options.client_optimizer)
    client_options = property(lambda self: dict(self.options.client_options))
    client_lr_state = property(lambda self: self.options.client_lr_state)
    reply_mode = property(lambda self: self.options.reply_mode)
    checkpoint_dir = property(lambda self: self.options.checkpoint_path)
    buffer_keys = property(lambda self: self.options.buffer_keys)
    history = property(lambda self: self.metrics.history)
    needs_global_update = property(lambda self: self.client_state.needs_global_update)

    @property
    def client_lrs(self) -> dict[int, float]:
        return self.client_state.lrs

    @property
    def server_client_lr(self) -> float | None:
        return self.client_state.server_lr

    @property
    def global_update(self) -> dict[str, torch.Tensor] | None:
        return self.client_state.global_update

    @property
    def simulation_mode(self) -> bool:
        return self.options.simulation_mode

    def param_keys(self) -> list[str]:
        assert self._layout is not None
        return [
            k for k, (dt, _) in self._layout.items() if not R.is_buffer_key(k, dt, self.buffer_keys)
        ]

    # ------------------------------------------------------------------ messages
    def client_signals(self) -> tuple[str, ...]:
        """Signal names the replies must carry (from the server method's spec)."""
        return tuple(s for s in self.required_signals if s in R.REPLY_SIGNALS)

    def _client_options_json(self, config: ConfigRecord) -> str:
        """Precedence of the local lr (docs/STRATEGIES.md): a carried lr (client_lr_state) >
        ``client_options["lr"]`` > the train config's ``"lr"`` > the optimizer's default."""
        opts = dict(self.options.client_options)
        app_lr = config.get(R.CFG_APP_LR) if R.CFG_APP_LR in config else None
        if isinstance(app_lr, int | float) and not isinstance(app_lr, bool):
            if "lr" not in opts:
                opts["lr"] = float(app_lr)
            elif float(opts["lr"]) != float(app_lr) and not self._lr_warned:  # type: ignore[arg-type]
                self._lr_warned = True
                flwr_log(
                    WARNING,
                    "client_options lr=%s overrides the train config's lr=%s (precedence: "
                    "carried lr > client_options['lr'] > train config 'lr'); drop one of them",
                    opts["lr"],
                    app_lr,
                )
        return json.dumps(opts, sort_keys=True)

    def _base_config(self, server_round: int, config: ConfigRecord) -> ConfigRecord:
        cfg = ConfigRecord(dict(config.items()))
        if self.options.extra_train_config is not None:
            for k, v in dict(self.options.extra_train_config(server_round)).items():
                cfg[k] = v
        cfg[R.CFG_ROUND] = server_round
        cfg[R.CFG_OPTIMIZER] = str(self.options.client_optimizer)
        cfg[R.CFG_OPTIMIZER_OPTIONS] = self._client_options_json(cfg)
        cfg[R.CFG_SIGNALS] = list(self.client_signals())
        cfg[R.CFG_REPLY_MODE] = self.options.reply_mode
        if self.buffer_keys:
            cfg[R.CFG_BUFFER_KEYS] = sorted(self.buffer_keys)
        return cfg

    def _plan(
        self,
        server_round: int,
        grid: Grid,
        stream: int,
        k: int | None,
        fraction: float,
        min_nodes: int,
    ):  # noqa: ANN202
        return self.cohorts.plan(
            server_round, grid, stream, k, fraction, min_nodes, self.min_available_nodes
        )

    def _train_messages(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        self._layout = R.layout_of(arrays)
        self._current = arrays
        plan, cohort = self._plan(
            server_round,
            grid,
            sampling.TRAIN_STREAM,
            self.clients_per_round,
            self.fraction_train,
            self.min_train_nodes,
        )
        gu = self.client_state.global_update if self.needs_global_update else None
        msgs = self.protocol.train_messages(
            server_round,
            arrays,
            self._base_config(server_round, config),
            plan,
            cohort.offline_ids,
            self.client_state.carried_lr,
            gu,
        )
        flwr_log(
            INFO,
            "configure_train: %d clients over %d messages (%d offline skipped)",
            len(self.protocol.sent.client_ids),
            len(msgs),
            len(cohort.offline_ids),
        )
        return msgs

    def _evaluate_messages(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        if self.fraction_evaluate == 0.0:
            return []
        k = self.evaluate_clients_per_round if self.simulation_mode else None
        if self.simulation_mode and k is None:
            k = self.clients_per_round
        if k == 0:
            return []
        plan, _ = self._plan(
            server_round,
            grid,
            sampling.EVALUATE_STREAM,
            k,
            self.fraction_evaluate,
            self.min_evaluate_nodes,
        )
        return self.protocol.evaluate_messages(server_round, arrays, config, plan)

    # ------------------------------------------------------------------ replies
    def _check_replies(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[list[CheckedReply], list[Failure]]:
        assert self._layout is not None, "configure_train must run before aggregate_train"
        sigs = self.client_signals()
        glob = R.record_to_tensors(self._current) if sigs and self._current is not None else None
        return self.protocol.check_replies(
            server_round, replies, self._layout, self.param_keys(), sigs, glob
        )

    def _update_client_state(self, checked: list[CheckedReply], change: bool = False) -> None:
        """Take the round's final client lrs; ``change``: the server's detector raised an
        alarm this round (the carried lrs then follow ``client_lr_on_change``)."""
        self.client_state.update(checked)
        if change:
            self.client_state.on_change()

    def _round_info(
        self,
        server_round: int,
        checked: list[CheckedReply],
        failures: list[Failure],
        server: Mapping[str, float],
        elapsed: float,
    ) -> dict[str, object]:
        return self.metrics.info(
            server_round,
            self.protocol.sent,
            checked,
            failures,
            server,
            self.metrics.client_metrics(checked),
            self.client_state.server_lr if self.client_lr_state == "server" else None,
            elapsed,
        )

    _metric_record = staticmethod(RoundMetrics.metric_record)

    def _finish_round(
        self, server_round: int, info: dict[str, object], arrays: ArrayRecord | None
    ) -> None:
        if self.needs_global_update and arrays is not None and self._current is not None:
            keys = self.param_keys()
            self.client_state.record_global_update(
                {k: R.array_to_tensor(arrays[k]) for k in keys},
                {k: R.array_to_tensor(self._current[k]) for k in keys},
            )
        succeeded = int(info.get("num-succeeded", 0) or 0)  # type: ignore[call-overload]
        loss = info.get("train-loss", math.nan)
        if isinstance(loss, int | float) and self.divergence.observe_loss(
            server_round, float(loss), succeeded
        ):
            info["divergence"] = 1.0
        RoundMetrics.log_round(info)
        if self.options.on_round_end is not None:
            self.options.on_round_end(dict(info))
        every = self.options.checkpoint_every
        if self.checkpoint_dir is not None and every and server_round % every == 0:
            model = arrays if arrays is not None else self._current
            assert model is not None
            # written by ``start`` once the round's evaluation (and the app's row for it) is
            # done: a run killed in between resumes from the round before and redoes this one,
            # so no round's metrics are lost
            self._pending_checkpoint = (server_round, model)

    def _write_pending_checkpoint(self) -> None:
        pending = self._pending_checkpoint
        if pending is not None:
            self._pending_checkpoint = None
            ckpt.save_checkpoint(self, pending[0], pending[1])

    # ------------------------------------------------------------------ state
    def server_state(self) -> dict[str, object]:
        """State of the server-side method (subclasses); tensors/scalars/lists/str-keyed dicts."""
        return {}

    def load_server_state(self, state: Mapping[str, object], arrays: ArrayRecord) -> None:
        """Restore :meth:`server_state` (subclasses)."""

    def identity(self) -> dict[str, object]:
        """Settings a saved state must agree with to be resumed by this strategy."""
        return {
            "strategy": type(self).__name__,
            "seed": self.seed,
            "num-clients": -1 if self.num_clients is None else int(self.num_clients),
            "client-optimizer": self.client_optimizer,
            "client-lr-state": self.client_lr_state,
        }

    def state_dict(self) -> dict[str, object]:
        """Everything a resumed run needs besides the round and the model: identity, server
        method state, per-client state (tensors, scalars, lists, str-keyed dicts only)."""
        clients = self.client_state.state_dict()
        gu = clients.pop("global-update")
        return {
            "identity": self.identity(),
            # a snapshot: the live optimizer state is updated in place every round
            "server": copy.deepcopy(self.server_state()),
            "clients": clients,
            "global-update": gu,
        }

    def load_state_dict(self, state: Mapping[str, object], arrays: ArrayRecord) -> None:
        """Restore :meth:`state_dict` for the model ``arrays``; ``ValueError`` names what does
        not fit (a different configuration, other parameter keys...)."""
        mine = self.identity()
        theirs = state["identity"]
        assert isinstance(theirs, Mapping)
        diffs = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diffs:
            detail = ", ".join(f"{k}: saved {a!r} vs strategy {b!r}" for k, (a, b) in diffs.items())
            raise ValueError(f"written by a different configuration ({detail})")
        self.load_server_state(state["server"], arrays)  # type: ignore[arg-type]
        clients = dict(state["clients"])  # type: ignore[call-overload]
        clients["global-update"] = state.get("global-update") or {}
        self.client_state.load_state_dict(clients)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> tuple[int, ArrayRecord]:
        """Restore a checkpoint; ``start`` then continues with the round after it."""
        rnd, arrays = ckpt.load_checkpoint(self, path)
        try:
            self.check_resumed_round(rnd)
        except ValueError as exc:
            raise ckpt.CheckpointError(f"checkpoint {path}: {exc}") from None
        self._resume_round, self._resume_arrays = rnd, arrays
        return rnd, arrays

    def step_size_setting(self) -> str:
        """How a user changes the server step size (named when a run diverges)."""
        return "run config 'server-lr' (FedAdapt: server_options['lr'])"

    def _watch_accuracy(self, server_round: int, res: MetricRecord) -> None:
        acc = res.get("accuracy")
        if not isinstance(acc, int | float):
            return
        replied = (
            server_round == 0
            or any(
                int(h["round"]) == server_round and int(h["num-succeeded"]) > 0  # type: ignore[call-overload]
                for h in self.history[-1:]
            )
        )
        if replied:
            self.divergence.observe_accuracy(server_round, float(acc))
            loss = res.get("loss")
            if isinstance(loss, int | float):
                self.divergence.observe_eval_loss(server_round, float(loss))

    def check_resumed_round(self, saved_round: int) -> None:
        """Counters of the restored state agree with the checkpoint's round (subclasses)."""

    # ------------------------------------------------------------------ run loop
    def start(  # type: ignore[override]
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Flower's ``Strategy.start`` that continues a resumed run (rounds ``k+1 .. num_rounds``
        after :meth:`load_checkpoint` of round ``k``), waits for the workers first, logs like
        Flower's strategies, and puts the per-round metrics into ``Result.train_metrics_clientapp``."""
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        first = self._resume_round + 1
        arrays = self._resume_arrays if self._resume_arrays is not None else initial_arrays
        if self._resume_arrays is not None:
            ckpt.check_layout(R.layout_of(self._resume_arrays), R.layout_of(initial_arrays))
            ckpt.check_resume_round("(loaded)", self._resume_round, num_rounds)
        result.arrays = arrays
        flwr_log(INFO, "Starting %s strategy:", type(self).__name__)
        self.summary()  # type: ignore[attr-defined]
        if evaluate_fn and first == 1:
            res = evaluate_fn(0, arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
                flwr_log(INFO, "Initial global evaluation results: %s", res)
                self._watch_accuracy(0, res)
        t0 = time.time()
        for rnd in range(first, num_rounds + 1):
            flwr_log(INFO, "")
            flwr_log(INFO, "[ROUND %d/%d]", rnd, num_rounds)
            replies = grid.send_and_receive(
                messages=self.configure_train(rnd, arrays, train_config, grid),  # type: ignore[attr-defined]
                timeout=timeout,
            )
            new_arrays, metrics = self.aggregate_train(rnd, replies)  # type: ignore[attr-defined]
            if new_arrays is not None:
                arrays = new_arrays
                result.arrays = arrays
            if metrics is not None:
                result.train_metrics_clientapp[rnd] = metrics
            ereplies = grid.send_and_receive(
                messages=self.configure_evaluate(rnd, arrays, evaluate_config, grid),  # type: ignore[attr-defined]
                timeout=timeout,
            )
            emetrics = self.aggregate_evaluate(rnd, ereplies)  # type: ignore[attr-defined]
            if emetrics is not None:
                result.evaluate_metrics_clientapp[rnd] = emetrics
                flwr_log(INFO, "\t└──> Aggregated evaluate MetricRecord: %s", emetrics)
            if evaluate_fn:
                res = evaluate_fn(rnd, arrays)
                if res is not None:
                    result.evaluate_metrics_serverapp[rnd] = res
                    flwr_log(INFO, "\t└──> Global evaluation: %s", res)
                    self._watch_accuracy(rnd, res)
            self._write_pending_checkpoint()
        flwr_log(INFO, "")
        flwr_log(
            INFO,
            "Strategy execution finished in %.2fs (rounds %d..%d)",
            time.time() - t0,
            first,
            num_rounds,
        )
        done = [h for h in self.history if int(h["round"]) >= first]  # type: ignore[call-overload]
        failed = sum(int(h["num-failed"]) for h in done)  # type: ignore[call-overload]
        flwr_log(
            INFO,
            "fedadapt summary: %d rounds, %d client results, %d failures",
            len(done),
            sum(int(h["num-succeeded"]) for h in done),
            failed,  # type: ignore[call-overload]
        )
        self._resume_round, self._resume_arrays = 0, None
        return result

    # ------------------------------------------------------------------ evaluation
    def _aggregate_evaluate_checked(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        good: list[RecordDict] = []
        for msg in replies:
            if msg.has_error() or not msg.has_content():
                continue
            mets = list(msg.content.metric_records.values())
            if len(mets) != 1:
                continue
            n = mets[0].get(self.weighted_by_key)
            if (
                isinstance(n, bool)
                or not isinstance(n, int | float)
                or not math.isfinite(n)
                or n <= 0
            ):
                continue
            if not all(math.isfinite(v) for v in mets[0].values() if isinstance(v, float)):
                continue
            good.append(RecordDict({R.METRICS: mets[0]}))
        if not good:
            return None
        if any(set(g[R.METRICS].keys()) != set(good[0][R.METRICS].keys()) for g in good):
            common = set.intersection(*(set(g[R.METRICS].keys()) for g in good))
            good = [
                RecordDict(
                    {R.METRICS: MetricRecord({k: g.metric_records[R.METRICS][k] for k in common})}
                )
                for g in good
            ]
        return self.evaluate_metrics_aggr_fn(good, self.weighted_by_key)
