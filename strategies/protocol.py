"""The message protocol between a strategy and its ClientApps (docs/CONTRACTS.md §2-3).

:class:`MessageProtocol` writes the round's train and evaluate messages from a cohort plan and
reads the train replies: each reply is validated (``strategies.validation``), its failures are
recorded with their reasons, and a round whose every reply was rejected for a *protocol*
reason (a missing record, ids that were never sent, a worker protocol in a deployment) raises
:class:`ProtocolError`, naming the cause and the fix, instead of completing a run with an
untrained model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

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


class ProtocolError(RuntimeError):
    """Every reply of a round was unreadable for a protocol reason: the run stops here."""


@dataclass
class SentRound:
    """What configure_train sent in the current round."""

    server_round: int = 0
    client_ids: list[int] = field(default_factory=list)
    offline_ids: list[int] = field(default_factory=list)
    per_node: dict[int, list[int]] = field(default_factory=dict)


class MessageProtocol:
    """Builds train/evaluate messages and checks train replies for one strategy."""

    def __init__(self, population: bool) -> None:
        self.population = population
        self.sent = SentRound()

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
            server_round, [c for _, cs in plan for c in cs], [int(c) for c in offline_ids]
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
        # Replies arrive in any order; aggregate in a fixed one (by client ids, which the seeded
        # sampling fixes) so a run and its resumed twin sum the same floats in the same order.
        checked.sort(key=lambda c: min(c.client_ids))
        return checked, failures
