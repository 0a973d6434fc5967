"""The message protocol between a strategy and its ClientApps (docs/CONTRACTS.md §2-3).

:class:`MessageProtocol` writes the round's train and evaluate messages from a cohort plan and
reads the train replies: each reply is validated (``strategies.validation``), its failures are
recorded with their reasons, and a round whose every reply was rejected for a *protocol*
reason (a missing record, ids that were never sent, a worker protocol in a deployment) raises
:class:`ProtocolError`, naming the cause and the fix, instead of completing a run with an
untrained model.

A standard Flower ClientApp (a reply without ``fedadapt.clients``) trains with its own
optimizer: when the strategy names another client method than :data:`PLAIN_CLIENT_OPTIMIZER`,
the first round with such replies logs a warning that names the method and the fix, and every
round counts them (:func:`ignored_client_optimizer_replies`, the round metric
``ignored-client-optimizer-replies``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common.logger import log as flwr_log

from . import records as R
from .cohorts import Plan
from .validation import (
    NO_SUCCESS,
    CheckedReply,
    Failure,
    Layout,
    ProtocolMismatch,
    ReplyRejected,
    check_train_reply,
    client_failures,
)

log = logging.getLogger(__name__)

NO_REPLY = "no reply within the round timeout"
DUPLICATE = "duplicate reply"
# what a standard Flower ClientApp runs anyway (the quickstart's torch SGD with the train
# config's lr; ``strategies.client`` reads a message without fedadapt keys as this method)
PLAIN_CLIENT_OPTIMIZER = "sgd"
FIX_CLIENT_OPTIMIZER = (
    "use fedadapt's ClientApp (simulations.client_app) or, in your own ClientApp, the two client "
    "calls `plan = strategies.read_train_message(msg, model)` (then "
    "`plan.build_optimizer(model.parameters(), client_id)`) and "
    "`strategies.build_train_reply(msg, plan, outcomes)`; or leave client_optimizer at "
    f"{PLAIN_CLIENT_OPTIMIZER!r}"
)


class ProtocolError(RuntimeError):
    """Every reply of a round was unreadable for a protocol reason: the run stops here."""


@dataclass
class SentRound:
    """What configure_train sent in the current round."""

    server_round: int = 0
    client_ids: list[int] = field(default_factory=list)
    offline_ids: list[int] = field(default_factory=list)
    per_node: dict[int, list[int]] = field(default_factory=dict)
    client_optimizer: str = PLAIN_CLIENT_OPTIMIZER  # the fedadapt method the clients were told
    # the server method's hints in the train config (``fedadapt.hint.<name>`` -> value)
    hints: dict[str, float] = field(default_factory=dict)


def ignored_client_optimizer_replies(sent: SentRound, checked: Sequence[CheckedReply]) -> int:
    """Accepted replies of a standard Flower ClientApp in a round whose client method is not
    :data:`PLAIN_CLIENT_OPTIMIZER`: clients that never built the method they were told to run."""
    if sent.client_optimizer == PLAIN_CLIENT_OPTIMIZER:
        return 0
    return sum(1 for c in checked if c.standard)


def _hints(config: ConfigRecord) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in config.items():
        if (
            k.startswith(R.CFG_HINT_PREFIX)
            and isinstance(v, int | float)
            and not isinstance(v, bool)
        ):
            out[k[len(R.CFG_HINT_PREFIX) :]] = float(v)
    return out


class MessageProtocol:
    """Builds train/evaluate messages and checks train replies for one strategy."""

    def __init__(self, population: bool) -> None:
        self.population = population
        self.sent = SentRound()
        self._warned_ignored_optimizer = False
        # False: the client method is the strategy's default, not one the caller named; a
        # standard ClientApp not running it is then said at INFO level, not as a warning
        self.client_optimizer_named = True

    # ------------------------------------------------------------------ messages
    def train_messages(
        self,
        server_round: int,
        arrays: ArrayRecord,
        base: ConfigRecord,
        plan: Plan,
        offline_ids: Iterable[int],
        carried_lr: Callable[[int], float],
        global_update: dict[str, torch.Tensor] | None,
    ) -> list[Message]:
        update_record = R.tensors_to_record(global_update) if global_update is not None else None
        self.sent = SentRound(
            server_round,
            [c for _, cs in plan for c in cs],
            [int(c) for c in offline_ids],
            client_optimizer=str(base.get(R.CFG_OPTIMIZER, PLAIN_CLIENT_OPTIMIZER)),
            hints=_hints(base),
        )
        msgs: list[Message] = []
        for node_id, cids in plan:
            cfg = ConfigRecord(dict(base.items()))
            cfg[R.CFG_CLIENT_IDS] = cids
            cfg[R.CFG_CLIENT_LRS] = [carried_lr(c) for c in cids]
            self.sent.per_node.setdefault(node_id, []).extend(cids)
            rd = RecordDict({R.ARRAYS: arrays, R.CONFIG: cfg})
            if update_record is not None:
                rd[R.GLOBAL_UPDATE] = update_record
            msgs.append(
                Message(content=rd, dst_node_id=int(node_id), message_type=MessageType.TRAIN)
            )
        return msgs

    @staticmethod
    def evaluate_messages(
        server_round: int, arrays: ArrayRecord, config: ConfigRecord, plan: Plan
    ) -> list[Message]:
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
    def check_replies(
        self,
        server_round: int,
        replies: Iterable[Message],
        layout: Layout,
        param_keys: list[str],
        signals: tuple[str, ...],
        global_tensors: dict[str, torch.Tensor] | None,
    ) -> tuple[list[CheckedReply], list[Failure]]:
        per_node = self.sent.per_node if self.sent.server_round == server_round else {}
        checked: list[CheckedReply] = []
        failures: list[Failure] = []
        mismatches: list[tuple[int, ProtocolMismatch]] = []
        seen: set[int] = set()
        replied: set[int] = set()
        n_replies = 0
        for msg in replies:
            n_replies += 1
            node = int(msg.metadata.src_node_id)
            replied.add(node)
            # a node this round sent nothing to may claim no client
            expected = per_node.get(node, []) if per_node else None
            try:
                c = check_train_reply(
                    msg,
                    layout,
                    param_keys=param_keys,
                    want_sq_norms=R.SIG_SQ_NORMS in signals,
                    want_sq_mean=R.SIG_SQ_MEAN in signals,
                    expected_ids=expected,
                    population=self.population,
                    # one reply per client (a deployment, or per-client replies): the server
                    # can compute each client's statistics from its model
                    global_tensors=None if self.population else global_tensors,
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
                fix = exc.fix if isinstance(exc, ProtocolMismatch) else None
                if isinstance(exc, ProtocolMismatch):
                    mismatches.append((node, exc))
                reported = client_failures(msg) if not msg.has_error() else []
                failures.extend(reported)
                if str(exc) == NO_SUCCESS:
                    continue  # every client failed and said why: nothing else to record
                reported_ids = {f.client_id for f in reported}
                lost: list[int | None] = [c for c in (expected or []) if c not in reported_ids]
                if not expected or str(exc).startswith(DUPLICATE):
                    lost = [None]  # the reply, not its clients, is what failed
                for cid in lost:
                    failures.append(Failure(cid, node, str(exc), fix))
                log.warning("round %d: dropped reply from node %d: %s", server_round, node, exc)
        if not checked and mismatches and len(mismatches) == n_replies:
            node, first = mismatches[0]
            raise ProtocolError(
                f"round {server_round}: all {n_replies} replies were rejected for a protocol "
                f"reason, e.g. from node {node}: {first}. Fix: {first.fix}. (Stopping: the run "
                f"would otherwise complete with the untrained model.)"
            )
        # Messages without any reply (a worker that hung or died past the round timeout): their
        # clients are failures too, with that reason, never silently missing.
        for node, cids in per_node.items():
            if node not in replied:
                for cid in cids:
                    failures.append(Failure(cid, node, NO_REPLY))
        self._warn_ignored_optimizer(server_round, checked, n_replies)
        # Replies arrive in any order; aggregate in a fixed one (by client ids, which the seeded
        # sampling fixes) so a run and its resumed twin sum the same floats in the same order.
        checked.sort(key=lambda c: min(c.client_ids))
        return checked, failures

    def _warn_ignored_optimizer(
        self, server_round: int, checked: Sequence[CheckedReply], n_replies: int
    ) -> None:
        """Once per run, at the first round it happens: the client method is not being run."""
        sent = self.sent if self.sent.server_round == server_round else SentRound()
        count = ignored_client_optimizer_replies(sent, checked)
        if not count or self._warned_ignored_optimizer:
            return
        self._warned_ignored_optimizer = True
        if not self.client_optimizer_named:
            flwr_log(
                INFO,
                "round %d: %d of %d replies come from a standard Flower ClientApp, which trains "
                "with its own optimizer; the server method works unchanged. fedadapt's default "
                "client method %r (its step size carried by the server) runs only where the "
                "clients speak fedadapt's train protocol: %s.",
                server_round,
                count,
                n_replies,
                sent.client_optimizer,
                FIX_CLIENT_OPTIMIZER,
            )
            return
        flwr_log(
            WARNING,
            "round %d: client_optimizer %r is ignored by %d of %d replies: they come from a "
            "standard Flower ClientApp (`arrays` + a MetricRecord with `num-examples`, no %r), "
            "which trains with its own optimizer and never builds %r. To run it on the "
            "clients, %s. Counted per round as `ignored-client-optimizer-replies` (summary.json: "
            "`ignored-client-optimizer`).",
            server_round,
            sent.client_optimizer,
            count,
            n_replies,
            R.CLIENTS,
            sent.client_optimizer,
            FIX_CLIENT_OPTIMIZER,
        )
