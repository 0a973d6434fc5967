"""Keep rounds alive when a simulation worker's process dies.

In Flower's Ray simulation a hard crash (``os._exit``, a segfault, the OOM killer) kills the
worker actor that was running the message; Flower answers that message with an error reply and
keeps the dead actor in its pool, so later messages routed to it fail too (FLOWER.md §6.2).
fedadapt's in-process runtime asks Ray to restart crashed actors (``max_restarts``, see
:mod:`simulations.runtime`), and :class:`RetryingGrid` re-sends, within the same round and the
round timeout, the messages whose replies say the actor was unavailable or died. Clients of a
message that still fails are reported by the strategy with the reason, as always.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

RETRYABLE = ("ActorUnavailableError", "ActorDiedError", "RayActorError", "WorkerCrashedError")


def is_retryable(reply: Any) -> bool:
    """An error reply caused by the worker process, not by the client's own code."""
    if not reply.has_error():
        return False
    reason = str(reply.error.reason)
    return any(name in reason for name in RETRYABLE)


class RetryingGrid:
    """A Flower ``Grid`` whose ``send_and_receive`` re-sends messages lost to dead workers.

    Everything else is delegated to the wrapped grid.
    """

    def __init__(self, grid: Any, *, retries: int = 2, backoff: float = 3.0) -> None:
        self._grid = grid
        self.retries = retries
        self.backoff = backoff
        self.resent = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        from flwr.app import Message

        start = time.time()
        pending = list(messages)
        originals = {id(m): (m.content, m.metadata.dst_node_id, m.metadata.message_type)
                     for m in pending}
        replies = list(self._grid.send_and_receive(pending, timeout=timeout))
        for attempt in range(1, self.retries + 1):
            # which messages came back as worker-process failures
            lost_ids = {r.metadata.reply_to_message_id for r in replies if is_retryable(r)}
            if not lost_ids:
                break
            again = [m for m in pending if m.metadata.message_id in lost_ids]
            left = None if timeout is None else timeout - (time.time() - start)
            wait = self.backoff * attempt
            if not again or (left is not None and left <= wait + 1.0):
                break
            time.sleep(wait)  # give Ray time to restart the actor
            resend = []
            for m in again:
                content, dst, mtype = originals[id(m)]
                resend.append(Message(content=content, dst_node_id=dst, message_type=mtype))
            log.warning("re-sending %d message(s) whose worker died (attempt %d)", len(resend), attempt)
            self.resent += len(resend)
            left = None if timeout is None else timeout - (time.time() - start)
            new = list(self._grid.send_and_receive(resend, timeout=left))
            replies = [r for r in replies if r.metadata.reply_to_message_id not in lost_ids] + new
            originals.update({id(m): originals[id(o)] for m, o in zip(resend, again, strict=True)})
            pending = resend
        return replies
