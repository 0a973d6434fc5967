"""Per-client state a strategy carries between rounds: step sizes and the last global update.

``client_lr_state="persist"`` keeps each client's final lr (keyed by client id, only for
clients seen); ``"server"`` aggregates the round's final lrs into one (:func:`aggregate_lrs`)
and broadcasts it; ``"reset"`` keeps nothing. A carried lr stays within the client method's
``MethodSpec.carried_lr_bounds`` times the configured lr. After a change the server's detector
reports (an alarm), the carried lrs follow ``on_change`` (:data:`CLIENT_LR_ON_CHANGE`). A client
method whose spec says ``needs_global_update`` (FedHyper-CL) also gets x_t - x_{t-1}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

import fedadapt

from . import records as R
from .validation import CheckedReply

# what an alarm of the server's change detector does to the carried client lrs: ``keep``
# (default): carried on unchanged; ``restart``: dropped, so the next round's clients start
# again from the configured lr (as the run's first round did). Measured (RESULTS.md §8.5,
# cp-adam over hd carried by the server, 100x client-lr grid): keeping is better or equal,
# since a restart brings back a badly configured lr just as the server asks for 3x local work
# (drift-digits, mean accuracy after the change, keep - restart over the grid +0.043 +- 0.036
# over 5 seeds; covariate-gradual +0.006 +- 0.002; mnist1d-local -0.005 +- 0.008, 3 seeds)
CLIENT_LR_ON_CHANGE = ("restart", "keep")
# share of the round's clients trimmed at each end before the server lr is aggregated
TRIM_SHARE = 0.1


def aggregate_lrs(lrs: Sequence[float]) -> float:
    """The one client lr the server broadcasts (``client_lr_state="server"``): a trimmed mean in
    log space (a trimmed geometric mean) over the round's clients, each counted once.

    - **Log space:** a step size is a scale; averaging logs treats halving and doubling alike,
      where an arithmetic mean is pulled up by the largest lr.
    - **Each client counted once**, not weighted by the example count it claims: a client that
      claims many examples takes the same local steps per example, not a better step size, and
      a claimed count must not buy influence over everyone's step size.
    - **Trimmed:** ``max(1, floor(0.1 n))`` lrs are dropped at each end when there are at least
      3, so one client's outlier (a diverged or hostile value) cannot move the result beyond
      the range of the others.
    """
    vals = sorted(math.log(v) for v in lrs if math.isfinite(v) and v > 0)
    if not vals:
        raise ValueError("no finite positive lr to aggregate")
    n = len(vals)
    k = max(1, int(TRIM_SHARE * n)) if n >= 3 else 0
    kept = vals[k : n - k]
    return math.exp(math.fsum(kept) / len(kept))


class ClientState:
    """Carried per-client step sizes and the previous global update.

    Args:
        lr_state: ``"reset"``, ``"persist"`` or ``"server"``.
        needs_global_update: the client method needs x_t - x_{t-1}.
        client_optimizer: the client method's name; its spec bounds a carried lr.
        configured_lr: the lr the run configures for the clients (``None``: unknown, e.g. the
            app's own train-config lr; then carried lrs are not bounded).
        on_change: what an alarm does to the carried lrs (:data:`CLIENT_LR_ON_CHANGE`).
    """

    def __init__(
        self,
        lr_state: str,
        needs_global_update: bool,
        client_optimizer: str = "sgd",
        configured_lr: float | None = None,
        on_change: str = "keep",
    ) -> None:
        if on_change not in CLIENT_LR_ON_CHANGE:
            raise ValueError(
                f"client_lr_on_change must be one of {list(CLIENT_LR_ON_CHANGE)}, got {on_change!r}"
            )
        self.lr_state = lr_state
        self.needs_global_update = needs_global_update
        self.spec = fedadapt.method_spec(client_optimizer)
        self.configured_lr = None if configured_lr is None else float(configured_lr)
        self.on_change_policy = on_change
        self.lrs: dict[int, float] = {}
        self.server_lr: float | None = None
        self.global_update: dict[str, torch.Tensor] | None = None
        self.restarts = 0  # alarms that restarted the carried lrs

    def carried_lr(self, client_id: int) -> float:
        """The lr sent to ``client_id`` (``records.NO_LR``: start from the configured lr)."""
        if self.lr_state == "persist":
            return float(self.lrs.get(client_id, R.NO_LR))
        if self.lr_state == "server" and self.server_lr is not None:
            return float(self.server_lr)
        return R.NO_LR

    def _bounded(self, lr: float) -> float:
        if self.configured_lr is None:
            return float(lr)
        return self.spec.clamp_carried_lr(lr, self.configured_lr)

    def update(self, checked: list[CheckedReply]) -> None:
        """Take the final lrs of the round's successful clients."""
        if self.lr_state == "reset":
            return
        pairs = [
            (cid, lr)
            for c in checked
            for cid, lr in zip(c.client_ids, c.client_stats[R.C_LR], strict=True)
            if math.isfinite(lr) and lr > 0
        ]
        if self.lr_state == "persist":
            for cid, lr in pairs:
                self.lrs[int(cid)] = self._bounded(lr)
        elif self.lr_state == "server" and pairs:
            self.server_lr = self._bounded(aggregate_lrs([lr for _, lr in pairs]))

    def on_change(self) -> None:
        """The server's detector raised an alarm: with ``on_change="restart"`` every carried
        lr is dropped and the next clients start from the configured lr."""
        if self.on_change_policy == "restart" and (self.lrs or self.server_lr is not None):
            self.lrs.clear()
            self.server_lr = None
            self.restarts += 1

    def record_global_update(
        self, new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor]
    ) -> None:
        if self.needs_global_update:
            self.global_update = {k: new[k] - old[k] for k in new}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, object]:
        ids = sorted(self.lrs)
        return {
            "ids": ids,
            "lrs": [float(self.lrs[i]) for i in ids],
            "server-client-lr": -1.0 if self.server_lr is None else float(self.server_lr),
            "global-update": {}
            if self.global_update is None
            else {k: v.clone() for k, v in self.global_update.items()},
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        ids, lrs = list(state.get("ids", [])), list(state.get("lrs", []))  # type: ignore[call-overload]
        if len(ids) != len(lrs):
            raise ValueError(f"{len(ids)} client ids but {len(lrs)} lrs")
        self.lrs = {int(i): float(v) for i, v in zip(ids, lrs, strict=True)}
        bad = [i for i, v in self.lrs.items() if not (math.isfinite(v) and v > 0)]
        if bad:
            raise ValueError(
                f"clients.lrs: client {bad[0]}'s carried lr {self.lrs[bad[0]]} is not a finite number > 0"
            )
        scl = float(state.get("server-client-lr", -1.0))  # type: ignore[arg-type]
        if not (math.isfinite(scl) and (scl > 0 or scl == -1.0)):
            raise ValueError(
                f"clients.server-client-lr: {scl} is not a finite number > 0 (or -1: none)"
            )
        self.server_lr = None if scl < 0 else scl
        gu = state.get("global-update") or {}
        self.global_update = {str(k): v for k, v in gu.items()} if gu else None  # type: ignore[attr-defined]
