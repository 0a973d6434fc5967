"""Per-client state a strategy carries between rounds: step sizes and the last global update.

``client_lr_state="persist"`` keeps each client's final lr (keyed by client id, only for
clients seen); ``"server"`` keeps the example-weighted mean of the round's final lrs and
broadcasts it; ``"reset"`` keeps nothing. A client method whose spec says
``needs_global_update`` (FedHyper-CL) also gets x_t - x_{t-1}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from . import records as R
from .validation import CheckedReply


class ClientState:
    """Carried per-client step sizes and the previous global update."""

    def __init__(self, lr_state: str, needs_global_update: bool) -> None:
        self.lr_state = lr_state
        self.needs_global_update = needs_global_update
        self.lrs: dict[int, float] = {}
        self.server_lr: float | None = None
        self.global_update: dict[str, torch.Tensor] | None = None

    def carried_lr(self, client_id: int) -> float:
        """The lr sent to ``client_id`` (``records.NO_LR``: start from the configured lr)."""
        if self.lr_state == "persist":
            return float(self.lrs.get(client_id, R.NO_LR))
        if self.lr_state == "server" and self.server_lr is not None:
            return float(self.server_lr)
        return R.NO_LR

    def update(self, checked: list[CheckedReply]) -> None:
        """Take the final lrs of the round's successful clients."""
        pairs = [
            (cid, n, lr)
            for c in checked
            for cid, n, lr in zip(
                c.client_ids, c.client_num_examples, c.client_stats[R.C_LR], strict=True
            )
            if math.isfinite(lr) and lr > 0
        ]
        if self.lr_state == "persist":
            for cid, _, lr in pairs:
                self.lrs[int(cid)] = float(lr)
        elif self.lr_state == "server" and pairs:
            tot = sum(n for _, n, _ in pairs)
            self.server_lr = float(sum(n * lr for _, n, lr in pairs) / tot)

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
        scl = float(state.get("server-client-lr", -1.0))  # type: ignore[arg-type]
        self.server_lr = None if scl < 0 else scl
        gu = state.get("global-update") or {}
        self.global_update = {str(k): v for k, v in gu.items()} if gu else None  # type: ignore[attr-defined]
