"""Checking train replies before anything is aggregated (CONTRACTS §3, DESIGN "Failure behaviour").

:func:`check_train_reply` either returns a :class:`CheckedReply` (zero-copy tensor views of the
model and signal arrays plus the parsed per-client lists) or raises :class:`ReplyRejected` with
the reason the reply is dropped. Finiteness is checked with one reduction per array
(``torch.sum``): NaN and inf propagate, so a finite sum means finite values (an overflowing
float32 sum of finite values, ~1e38, is rejected too: such an update is useless anyway).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from . import records as R

ALLOWED_KEYS = frozenset({R.ARRAYS, R.METRICS, R.CLIENTS, R.SIGNALS})
Layout = dict[str, tuple[str, tuple[int, ...]]]


NO_SUCCESS = "no successful client in reply"


class ReplyRejected(ValueError):
    """A reply that is dropped; ``str(exc)`` is the recorded reason."""


@dataclass
class Failure:
    """One client (or a whole reply) that did not contribute, with the reason."""

    client_id: int | None
    node_id: int
    reason: str


@dataclass
class CheckedReply:
    """A reply that passed every check."""

    node_id: int
    num_examples: int
    train_loss: float
    arrays: dict[str, torch.Tensor]
    client_ids: list[int]
    client_num_examples: list[int]
    client_stats: dict[str, list[float]]
    sq_norms: list[float] | None
    signal_arrays: dict[str, torch.Tensor] | None
    failures: list[Failure] = field(default_factory=list)
    message: Message | None = None


_STAT_KEYS = ("train-loss", "start-loss", "lr", "step-mean", "step-min", "step-max")


def _as_list(cfg: ConfigRecord, key: str, kind: type, *, required: bool) -> list:
    if key not in cfg:
        if required:
            raise ReplyRejected(f"{R.CLIENTS!r} lacks {key!r}")
        return []
    raw = cfg[key]
    v: list = list(raw) if isinstance(raw, list) else [raw]
    if kind is float:
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
            raise ReplyRejected(f"{R.CLIENTS}[{key!r}] must hold numbers")
        return [float(x) for x in v]
    if kind is int:
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise ReplyRejected(f"{R.CLIENTS}[{key!r}] must hold ints")
        return [int(x) for x in v]
    return [str(x) for x in v]


def client_failures(msg: Message) -> list[Failure]:
    """The failures a reply reports in ``fedadapt.clients`` (best effort, never raises)."""
    node = int(msg.metadata.src_node_id)
    try:
        cfg = msg.content.config_records.get(R.CLIENTS)
        if cfg is None:
            return []
        ids = _as_list(cfg, "failed-ids", int, required=False)
        reasons = _as_list(cfg, "failed-reasons", str, required=False)
        reasons += ["(no reason given)"] * (len(ids) - len(reasons))
        return [Failure(c, node, r) for c, r in zip(ids, reasons, strict=False)]
    except Exception:  # noqa: BLE001
        return []


def _check_arrays(
    rec: ArrayRecord, layout: Layout, what: str, keys: Collection[str]
) -> dict[str, torch.Tensor]:
    got = set(rec.keys())
    want = set(keys)
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        raise ReplyRejected(f"{what}: wrong keys (missing {missing[:5]}, unexpected {extra[:5]})")
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        a = rec[k]
        dtype, shape = layout[k]
        if str(a.dtype) != dtype:
            raise ReplyRejected(f"{what}[{k!r}]: dtype {a.dtype}, expected {dtype}")
        if tuple(a.shape) != tuple(shape):
            raise ReplyRejected(f"{what}[{k!r}]: shape {tuple(a.shape)}, expected {tuple(shape)}")
        try:
            t = R.array_to_tensor(a)
        except ValueError as exc:
            raise ReplyRejected(f"{what}[{k!r}]: {exc}") from exc
        if t.is_floating_point() and t.numel() and not math.isfinite(float(torch.sum(t))):
            raise ReplyRejected(f"{what}[{k!r}]: non-finite values")
        out[k] = t
    return out


def check_train_reply(
    msg: Message,
    layout: Layout,
    *,
    param_keys: Collection[str],
    want_sq_norms: bool = False,
    want_sq_mean: bool = False,
    expected_ids: Collection[int] | None = None,
) -> CheckedReply:
    """Validate one train reply against the round's model ``layout``; raise ReplyRejected."""
    node = int(msg.metadata.src_node_id)
    if msg.has_error():
        raise ReplyRejected(f"error reply (code {msg.error.code}): {msg.error.reason}")
    if not msg.has_content():
        raise ReplyRejected("empty reply")
    content = msg.content
    keys = set(content.keys())
    if not keys:
        raise ReplyRejected("empty content")
    unexpected = keys - ALLOWED_KEYS
    if unexpected:
        raise ReplyRejected(
            f"unexpected records {sorted(unexpected)} (allowed {sorted(ALLOWED_KEYS)})"
        )
    failures = client_failures(msg)
    if R.ARRAYS not in keys and R.METRICS not in keys and R.CLIENTS in keys:
        # every client of this reply failed: nothing to aggregate, failures are recorded
        raise ReplyRejected(NO_SUCCESS if failures else "reply holds no model")
    for k in (R.ARRAYS, R.METRICS):
        if k not in keys:
            raise ReplyRejected(f"missing record {k!r}")
    arr = content[R.ARRAYS]
    met = content[R.METRICS]
    if not isinstance(arr, ArrayRecord):
        raise ReplyRejected(f"{R.ARRAYS!r} is not an ArrayRecord")
    if not isinstance(met, MetricRecord):
        raise ReplyRejected(f"{R.METRICS!r} is not a MetricRecord")
    n = met.get(R.NUM_EXAMPLES)
    if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n) or n <= 0:
        raise ReplyRejected(f"{R.NUM_EXAMPLES!r} must be a number > 0, got {n!r}")
    if isinstance(n, float) and not n.is_integer():
        raise ReplyRejected(f"{R.NUM_EXAMPLES!r} must be an integer count, got {n!r}")
    n = int(n)
    loss = met.get(R.TRAIN_LOSS, math.nan)
    loss = float(loss) if isinstance(loss, int | float) and not isinstance(loss, bool) else math.nan

    # per-client lists
    cfg = content.get(R.CLIENTS) if R.CLIENTS in keys else None
    if cfg is not None and not isinstance(cfg, ConfigRecord):
        raise ReplyRejected(f"{R.CLIENTS!r} is not a ConfigRecord")
    if cfg is not None:
        ids = _as_list(cfg, "ids", int, required=True)
        ns = _as_list(cfg, "num-examples", int, required=True)
        if len(ns) != len(ids) or not ids:
            raise ReplyRejected(f"{R.CLIENTS}: {len(ids)} ids but {len(ns)} num-examples")
        if len(set(ids)) != len(ids):
            raise ReplyRejected(f"{R.CLIENTS}: duplicate client ids {ids}")
        if any(v <= 0 for v in ns) or sum(ns) != n:
            raise ReplyRejected(f"{R.CLIENTS}: per-client num-examples {ns} do not sum to {n}")
        stats = {}
        for key in _STAT_KEYS:
            vals = _as_list(cfg, key, float, required=False) or [math.nan] * len(ids)
            if len(vals) != len(ids):
                raise ReplyRejected(
                    f"{R.CLIENTS}[{key!r}]: {len(vals)} values for {len(ids)} clients"
                )
            stats[key] = vals
        sq = None
        if want_sq_norms:
            sq = _as_list(cfg, "sq-norm", float, required=True)
            if len(sq) != len(ids) or not all(math.isfinite(v) and v >= 0 for v in sq):
                raise ReplyRejected(
                    f"{R.CLIENTS}['sq-norm'] must hold {len(ids)} finite values >= 0"
                )
    else:
        if want_sq_norms:
            raise ReplyRejected(
                f"missing record {R.CLIENTS!r} (the server needs per-client sq-norm)"
            )
        ids, ns, sq = [node], [n], None
        stats = {key: [math.nan] for key in _STAT_KEYS}
    if expected_ids is not None:
        stray = set(ids) - set(expected_ids)
        if stray:
            raise ReplyRejected(f"client ids {sorted(stray)[:5]} were not sent to node {node}")

    tensors = _check_arrays(arr, layout, R.ARRAYS, list(layout))
    sig = None
    if want_sq_mean:
        if R.SIGNALS not in keys:
            raise ReplyRejected(f"missing record {R.SIGNALS!r} (per-coordinate client signal)")
        srec = content[R.SIGNALS]
        if not isinstance(srec, ArrayRecord):
            raise ReplyRejected(f"{R.SIGNALS!r} is not an ArrayRecord")
        sig = _check_arrays(srec, layout, R.SIGNALS, list(param_keys))
    return CheckedReply(node, n, loss, tensors, ids, ns, stats, sq, sig, failures, msg)
