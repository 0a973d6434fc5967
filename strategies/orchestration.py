"""What every fedadapt strategy shares, whatever aggregates the replies.

:class:`Orchestration` is a mixin for a Flower ``FedAvg`` subclass. It owns

* cohort sampling (``strategies.sampling``): simulation mode (population of client ids split
  over worker nodes) or deployment mode (client id = node id);
* the train message (CONTRACTS §2) including per-client carried step sizes;
* reply validation (``strategies.validation``) and failure bookkeeping;
* per-client state (``client_lr_state``), per-round metrics and the ``on_round_end`` callback;
* checkpoint/resume (``strategies.checkpoint``) and a ``start`` that continues a resumed run.

Subclasses implement ``_aggregate_checked(server_round, checked) -> (ArrayRecord, dict)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from . import records as R
from . import sampling
from .validation import (
    NO_SUCCESS,
    CheckedReply,
    Failure,
    ReplyRejected,
    check_train_reply,
    client_failures,
)

log = logging.getLogger(__name__)

NO_REPLY = "no reply within the round timeout"

CLIENT_LR_STATES = ("reset", "persist", "server")
DUPLICATE = "duplicate reply"
GLOBAL_UPDATE_OPTIMIZERS = frozenset({"fedhyper-cl"})
RoundCallback = Callable[[dict[str, object]], None]
ConfigValue = (
    int
    | float
    | str
    | bool
    | bytes
    | list[int]
    | list[float]
    | list[str]
    | list[bool]
    | list[bytes]
)


def _fedadapt_optimizers() -> list[str]:
    import fedadapt

    return list(fedadapt.available_optimizers())


def check_optimizer_name(name: str, what: str) -> None:
    accepted = _fedadapt_optimizers()
    if name not in accepted:
        raise ValueError(
            f"{what}={name!r} is not a fedadapt optimizer; accepted: {sorted(accepted)}"
        )


@dataclass
class SentRound:
    """What configure_train sent in the current round."""

    server_round: int = 0
    client_ids: list[int] = field(default_factory=list)
    offline_ids: list[int] = field(default_factory=list)
    per_node: dict[int, list[int]] = field(default_factory=dict)


class Orchestration:
    """Mixin: sampling, messages, validation, client state, metrics, checkpoints."""

    # set by _init_orchestration
    num_clients: int | None
    clients_per_round: int | None
    # provided by the Flower FedAvg this is mixed into
    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int
    weighted_by_key: str
    arrayrecord_key: str
    configrecord_key: str
    evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord]

    def _init_orchestration(
        self,
        *,
        client_optimizer: str,
        client_options: Mapping[str, object] | None,
        client_lr_state: str,
        num_clients: int | None,
        clients_per_round: int | None,
        evaluate_clients_per_round: int | None,
        num_workers: int | None,
        seed: int,
        availability: sampling.Availability,
        reply_mode: str,
        checkpoint_dir: str | os.PathLike[str] | None,
        checkpoint_every: int,
        on_round_end: RoundCallback | None,
        extra_train_config: Callable[[int], Mapping[str, ConfigValue]] | None,
        buffer_keys: Iterable[str] = (),
        worker_wait_timeout: float = 120.0,
        required_signals: tuple[str, ...] = (),
    ) -> None:
        check_optimizer_name(client_optimizer, "client_optimizer")
        if client_lr_state not in CLIENT_LR_STATES:
            raise ValueError(
                f"client_lr_state must be one of {list(CLIENT_LR_STATES)}, got {client_lr_state!r}"
            )
        if reply_mode not in R.REPLY_MODES:
            raise ValueError(f"reply_mode must be one of {list(R.REPLY_MODES)}, got {reply_mode!r}")
        if num_clients is not None and num_clients < 1:
            raise ValueError(
                f"num_clients must be >= 1 or None (deployment mode), got {num_clients}"
            )
        if clients_per_round is not None and clients_per_round < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {clients_per_round}")
        if num_clients is not None and clients_per_round is None:
            raise ValueError("simulation mode (num_clients set) needs clients_per_round")
        if (
            num_clients is not None
            and clients_per_round is not None
            and clients_per_round > num_clients
        ):
            raise ValueError(
                f"clients_per_round={clients_per_round} exceeds num_clients={num_clients}"
            )
        if num_workers is not None and num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not callable(availability) and not 0.0 < float(availability) <= 1.0:
            raise ValueError(f"availability must be in (0, 1] or a callable, got {availability}")
        if checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
        if checkpoint_every and checkpoint_dir is None:
            raise ValueError("checkpoint_every > 0 needs checkpoint_dir")
        opts = dict(client_options or {})
        try:
            opts_json = json.dumps(opts, sort_keys=True)
        except TypeError as exc:
            raise ValueError(f"client_options must be JSON-serializable: {exc}") from exc
        import fedadapt

        # bad local hyperparameters fail here, not on every client of every round
        fedadapt.build_optimizer(
            client_optimizer, [torch.nn.Parameter(torch.zeros(1))], **json.loads(opts_json)
        )
        self.client_optimizer = client_optimizer
        self.client_options = opts
        self._client_options_json = opts_json
        self.client_lr_state = client_lr_state
        self.num_clients = num_clients
        self.clients_per_round = clients_per_round
        self.evaluate_clients_per_round = evaluate_clients_per_round
        self.num_workers = num_workers
        self.seed = int(seed)
        self.availability = availability
        self.reply_mode = reply_mode
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = int(checkpoint_every)
        self.on_round_end = on_round_end
        self.extra_train_config = extra_train_config
        self.buffer_keys = frozenset(buffer_keys)
        self.worker_wait_timeout = float(worker_wait_timeout)
        self.required_signals = tuple(required_signals)
        # per-client state, keyed by client id, only for clients seen
        self.client_lrs: dict[int, float] = {}
        self.server_client_lr: float | None = None
        # per-round bookkeeping
        self.history: list[dict[str, object]] = []
        self._layout: dict[str, tuple[str, tuple[int, ...]]] | None = None
        self._current: ArrayRecord | None = None
        self._sent = SentRound()
        self._resume_round = 0
        self._resume_arrays: ArrayRecord | None = None
        self._settled_workers: int | None = None
        # x_t - x_{t-1} for client methods that align with the previous global update
        self.needs_global_update = client_optimizer in GLOBAL_UPDATE_OPTIMIZERS
        self.global_update: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ mode helpers
    @property
    def simulation_mode(self) -> bool:
        return self.num_clients is not None

    def param_keys(self) -> list[str]:
        assert self._layout is not None
        return [
            k for k, (dt, _) in self._layout.items() if not R.is_buffer_key(k, dt, self.buffer_keys)
        ]

    def _workers(self, grid: Grid) -> list[int]:
        if self.num_workers is None:
            if self._settled_workers is None:
                # unknown count: take the registered nodes once their number stopped changing
                nodes = sampling.wait_for_stable_nodes(
                    lambda: list(grid.get_node_ids()), timeout=self.worker_wait_timeout
                )
                self._settled_workers = len(nodes)
                return nodes
            return sampling.wait_for_nodes(
                lambda: list(grid.get_node_ids()), 1, timeout=self.worker_wait_timeout
            )
        nodes = sampling.wait_for_nodes(
            lambda: list(grid.get_node_ids()), self.num_workers, timeout=self.worker_wait_timeout
        )
        if self.num_workers is not None and len(nodes) > self.num_workers:
            nodes = nodes[: self.num_workers]
        return nodes

    def _cohort(
        self,
        server_round: int,
        grid: Grid,
        stream: int,
        k_sim: int | None,
        fraction: float,
        min_nodes: int,
    ) -> tuple[list[tuple[int, list[int]]], sampling.Cohort]:
        if self.simulation_mode:
            assert self.num_clients is not None
            workers = self._workers(grid)
            k = k_sim if k_sim is not None else (self.clients_per_round or 1)
            cohort = sampling.sample_cohort(
                self.num_clients,
                k,
                seed=self.seed,
                server_round=server_round,
                availability=self.availability,
                stream=stream,
            )
            split = (
                sampling.one_per_client
                if self.reply_mode == "per-client"
                else sampling.split_over_workers
            )
            return split(cohort.client_ids, workers), cohort
        need = max(min_nodes, self.min_available_nodes, k_sim or 0, 1)  # type: ignore[attr-defined]
        nodes = sampling.wait_for_nodes(
            lambda: list(grid.get_node_ids()), need, timeout=self.worker_wait_timeout, what="client"
        )
        k = k_sim if k_sim is not None else max(int(len(nodes) * fraction), min_nodes)
        cohort = sampling.sample_nodes(
            nodes,
            k,
            seed=self.seed,
            server_round=server_round,
            availability=self.availability,
            stream=stream,
        )
        return [(nid, [nid]) for nid in cohort.client_ids], cohort

    # ------------------------------------------------------------------ messages
    def _carried_lr(self, cid: int) -> float:
        if self.client_lr_state == "persist":
            return float(self.client_lrs.get(cid, R.NO_LR))
        if self.client_lr_state == "server" and self.server_client_lr is not None:
            return float(self.server_client_lr)
        return R.NO_LR

    def _base_config(self, server_round: int, config: ConfigRecord) -> ConfigRecord:
        cfg = ConfigRecord(dict(config.items()))
        if self.extra_train_config is not None:
            for k, v in dict(self.extra_train_config(server_round)).items():
                cfg[k] = v
        cfg[R.CFG_ROUND] = server_round
        cfg[R.CFG_OPTIMIZER] = self.client_optimizer
        cfg[R.CFG_OPTIMIZER_OPTIONS] = self._client_options_json
        cfg[R.CFG_SIGNALS] = list(self.client_signals())
        cfg[R.CFG_REPLY_MODE] = self.reply_mode
        if self.buffer_keys:
            cfg[R.CFG_BUFFER_KEYS] = sorted(self.buffer_keys)
        return cfg

    def client_signals(self) -> tuple[str, ...]:
        """Signal names the replies must carry (from the server method's required signals)."""
        return tuple(s for s in self.required_signals if s in (R.SIG_SQ_NORMS, R.SIG_SQ_MEAN))

    def _train_messages(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        self._layout = R.layout_of(arrays)
        self._current = arrays
        plan, cohort = self._cohort(
            server_round,
            grid,
            sampling.TRAIN_STREAM,
            self.clients_per_round,
            self.fraction_train,
            self.min_train_nodes,  # type: ignore[attr-defined]
        )
        base = self._base_config(server_round, config)
        update_record = None
        if self.needs_global_update and self.global_update is not None:
            update_record = R.tensors_to_record(self.global_update)
        msgs: list[Message] = []
        self._sent = SentRound(
            server_round, [c for _, cs in plan for c in cs], list(cohort.offline_ids)
        )
        for node_id, cids in plan:
            cfg = ConfigRecord(dict(base.items()))
            cfg[R.CFG_CLIENT_IDS] = cids
            cfg[R.CFG_CLIENT_LRS] = [self._carried_lr(c) for c in cids]
            self._sent.per_node.setdefault(node_id, []).extend(cids)
            rd = RecordDict({R.ARRAYS: arrays, R.CONFIG: cfg})
            if update_record is not None:
                rd[R.GLOBAL_UPDATE] = update_record
            msgs.append(
                Message(content=rd, dst_node_id=int(node_id), message_type=MessageType.TRAIN)
            )
        log.info(
            "round %d: %d clients over %d messages (%d offline skipped)",
            server_round,
            len(self._sent.client_ids),
            len(msgs),
            len(cohort.offline_ids),
        )
        return msgs

    def _evaluate_messages(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        if self.fraction_evaluate == 0.0:  # type: ignore[attr-defined]
            return []
        k = self.evaluate_clients_per_round if self.simulation_mode else None
        if self.simulation_mode and k is None:
            k = self.clients_per_round
        if k == 0:
            return []
        plan, _ = self._cohort(
            server_round,
            grid,
            sampling.EVALUATE_STREAM,
            k,
            self.fraction_evaluate,
            self.min_evaluate_nodes,  # type: ignore[attr-defined]
        )
        msgs = []
        for node_id, cids in plan:
            cfg = ConfigRecord(dict(config.items()))
            cfg[R.CFG_ROUND] = server_round
            cfg[R.CFG_CLIENT_IDS] = cids
            rd = RecordDict({R.ARRAYS: arrays, R.CONFIG: cfg})
            msgs.append(
                Message(content=rd, dst_node_id=int(node_id), message_type=MessageType.EVALUATE)
            )
        return msgs

    # ------------------------------------------------------------------ replies
    def _check_replies(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[list[CheckedReply], list[Failure]]:
        assert self._layout is not None, "configure_train must run before aggregate_train"
        sigs = self.client_signals()
        per_node = self._sent.per_node if self._sent.server_round == server_round else {}
        checked: list[CheckedReply] = []
        failures: list[Failure] = []
        seen: set[int] = set()
        pkeys = self.param_keys()
        replied: set[int] = set()
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            replied.add(node)
            # a node this round sent nothing to may claim no client
            expected = per_node.get(node, []) if per_node else None
            try:
                c = check_train_reply(
                    msg,
                    self._layout,
                    param_keys=pkeys,
                    want_sq_norms=R.SIG_SQ_NORMS in sigs,
                    want_sq_mean=R.SIG_SQ_MEAN in sigs,
                    expected_ids=expected,
                )
                dup = seen.intersection(c.client_ids)
                if dup:
                    raise ReplyRejected(
                        f"{DUPLICATE}: client ids {sorted(dup)} were already reported this round"
                    )
                seen.update(c.client_ids)
                checked.append(c)
                failures.extend(c.failures)
            except ReplyRejected as exc:
                reported = client_failures(msg) if not msg.has_error() else []
                failures.extend(reported)
                if str(exc) == NO_SUCCESS:
                    continue  # every client failed and said why: nothing else to record
                reported_ids = {f.client_id for f in reported}
                lost: list[int | None] = [c for c in (expected or []) if c not in reported_ids]
                if not expected or str(exc).startswith(DUPLICATE):
                    lost = [None]  # the reply, not its clients, is what failed
                for cid in lost:
                    failures.append(Failure(cid, node, str(exc)))
                log.warning("round %d: dropped reply from node %d: %s", server_round, node, exc)
        # Messages without any reply (a worker that hung or died past the round timeout): their
        # clients are failures too, with that reason, never silently missing.
        for node, cids in per_node.items():
            if node not in replied:
                for cid in cids:
                    failures.append(Failure(cid, node, NO_REPLY))
        # Replies arrive in any order; aggregate in a fixed one (by client ids, which the seeded
        # sampling fixes) so a run and its resumed twin sum the same floats in the same order.
        checked.sort(key=lambda c: min(c.client_ids))
        return checked, failures

    def _update_client_state(self, checked: list[CheckedReply]) -> None:
        pairs = [
            (cid, n, lr)
            for c in checked
            for cid, n, lr in zip(
                c.client_ids, c.client_num_examples, c.client_stats["lr"], strict=True
            )
            if math.isfinite(lr) and lr > 0
        ]
        if self.client_lr_state == "persist":
            for cid, _, lr in pairs:
                self.client_lrs[int(cid)] = float(lr)
        elif self.client_lr_state == "server" and pairs:
            tot = sum(n for _, n, _ in pairs)
            self.server_client_lr = float(sum(n * lr for _, n, lr in pairs) / tot)

    def _round_info(
        self,
        server_round: int,
        checked: list[CheckedReply],
        failures: list[Failure],
        server: Mapping[str, float],
        elapsed: float,
    ) -> dict[str, object]:
        ids = [cid for c in checked for cid in c.client_ids]
        ns = [n for c in checked for n in c.client_num_examples]
        total = sum(ns)
        info: dict[str, object] = {"round": server_round}
        losses = [
            (n, v)
            for c in checked
            for n, v in zip(c.client_num_examples, c.client_stats["train-loss"], strict=True)
            if math.isfinite(v)
        ]
        if not losses:
            losses = [
                (c.num_examples, c.train_loss) for c in checked if math.isfinite(c.train_loss)
            ]
        info["train-loss"] = (
            sum(n * v for n, v in losses) / sum(n for n, _ in losses) if losses else math.nan
        )
        info["num-examples"] = int(total)
        for k, v in server.items():
            info[f"server-{k}"] = float(v)
        for key in ("lr", "step-mean", "step-min", "step-max"):
            vals = np.array([v for c in checked for v in c.client_stats[key]], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                agg = {
                    "lr": vals.mean(),
                    "step-mean": vals.mean(),
                    "step-min": vals.min(),
                    "step-max": vals.max(),
                }[key]
                info[f"client-{key}"] = float(agg)
                if key == "lr":
                    info["client-lr-min"], info["client-lr-max"] = (
                        float(vals.min()),
                        float(vals.max()),
                    )
        info["num-sampled"] = len(self._sent.client_ids)
        info["num-succeeded"] = len(ids)
        info["num-failed"] = len(failures)
        info["sampled-ids"] = list(self._sent.client_ids)
        info["offline-ids"] = list(self._sent.offline_ids)
        info["succeeded-ids"] = ids
        info["failed-ids"] = [f.client_id if f.client_id is not None else -1 for f in failures]
        info["failed-reasons"] = [f.reason for f in failures]
        info["failed-nodes"] = [f.node_id for f in failures]
        if self.client_lr_state == "server" and self.server_client_lr is not None:
            info["broadcast-client-lr"] = self.server_client_lr
        info["aggregate-seconds"] = elapsed
        return info

    @staticmethod
    def _metric_record(info: Mapping[str, object]) -> MetricRecord:
        out = MetricRecord()
        for k, v in info.items():
            if k == "round":
                continue
            if isinstance(v, bool):
                out[k] = int(v)
            elif isinstance(v, int | float):
                out[k] = v
            elif isinstance(v, list) and all(
                isinstance(x, int) and not isinstance(x, bool) for x in v
            ):
                if all(0 <= x < 2**63 for x in v) or all(abs(x) < 2**63 for x in v):
                    out[k] = list(v)
        return out

    def _finish_round(
        self, server_round: int, info: dict[str, object], arrays: ArrayRecord | None
    ) -> None:
        if self.needs_global_update and arrays is not None and self._current is not None:
            self.global_update = {
                k: R.array_to_tensor(arrays[k]) - R.array_to_tensor(self._current[k])
                for k in self.param_keys()
            }
        self.history.append(info)
        if self.on_round_end is not None:
            self.on_round_end(dict(info))
        if (
            self.checkpoint_dir is not None
            and self.checkpoint_every
            and server_round % self.checkpoint_every == 0
        ):
            from .checkpoint import save_checkpoint

            model = arrays if arrays is not None else self._current
            assert model is not None
            save_checkpoint(self, server_round, model)

    # ------------------------------------------------------------------ state hooks (checkpoint)
    def server_state(self) -> dict[str, object]:
        """State of the server-side method (subclasses); tensors/scalars/lists/str-keyed dicts."""
        return {}

    def load_server_state(self, state: Mapping[str, object], arrays: ArrayRecord) -> None:
        """Restore :meth:`server_state` (subclasses)."""

    def identity(self) -> dict[str, object]:
        """Settings a checkpoint must agree with to be resumed by this strategy."""
        return {
            "strategy": type(self).__name__,
            "seed": self.seed,
            "num-clients": -1 if self.num_clients is None else int(self.num_clients),
            "client-optimizer": self.client_optimizer,
            "client-lr-state": self.client_lr_state,
        }

    def load_checkpoint(self, path: str | os.PathLike[str]) -> tuple[int, ArrayRecord]:
        """Restore a checkpoint; ``start`` then continues with the round after it."""
        from .checkpoint import load_checkpoint

        rnd, arrays = load_checkpoint(self, path)
        self._resume_round, self._resume_arrays = rnd, arrays
        return rnd, arrays

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
        after :meth:`load_checkpoint` of round ``k``), waits for the workers first, and puts the
        per-round fedadapt metrics into ``Result.train_metrics_clientapp``."""
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        first = self._resume_round + 1
        arrays = self._resume_arrays if self._resume_arrays is not None else initial_arrays
        if self._resume_arrays is not None:
            from .checkpoint import check_layout

            check_layout(R.layout_of(self._resume_arrays), R.layout_of(initial_arrays))
        result.arrays = arrays
        self.summary()  # type: ignore[attr-defined]
        if evaluate_fn and first == 1:
            res = evaluate_fn(0, arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        t0 = time.time()
        for rnd in range(first, num_rounds + 1):
            log.info("[ROUND %d/%d]", rnd, num_rounds)
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
            if evaluate_fn:
                res = evaluate_fn(rnd, arrays)
                if res is not None:
                    result.evaluate_metrics_serverapp[rnd] = res
        log.info("strategy finished rounds %d..%d in %.2fs", first, num_rounds, time.time() - t0)
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
            n = mets[0].get(self.weighted_by_key)  # type: ignore[attr-defined]
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
        return self.evaluate_metrics_aggr_fn(good, self.weighted_by_key)  # type: ignore[attr-defined]
