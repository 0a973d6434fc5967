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


# How to fix each protocol mismatch (a reply the strategy cannot read, as opposed to a client
# that failed): the strategy stops the run when every reply of a round has one of these.
FIX_TWO_CALLS = (
    "in population mode (num_clients set) each worker serves several client ids and must "
    "reply with fedadapt's two client calls, `plan = strategies.read_train_message(msg, model)` "
    "and `strategies.build_train_reply(msg, plan, outcomes)`; a standard Flower ClientApp "
    "(one client per SuperNode) needs deployment mode: num_clients=None (run config "
    "`deployment = true`)"
)
FIX_RECORDS = (
    "reply like Flower's quickstart: RecordDict({'arrays': ArrayRecord(model.state_dict()), "
    "'metrics': MetricRecord({'num-examples': n, ...})}), or use strategies.build_train_reply"
)
FIX_IDS = (
    "the reply names client ids this node was not sent: in a deployment each SuperNode is one "
    "client (its node id); a worker that serves a population needs population mode "
    "(num_clients, clients_per_round, num_workers) on the strategy"
)


class ProtocolMismatch(ReplyRejected):
    """A reply the strategy cannot read because client and strategy disagree on the protocol;
    ``fix`` says what to change."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.fix = fix


@dataclass
class Failure:
    """One client (or a whole reply) that did not contribute, with the reason."""

    client_id: int | None
    node_id: int
    reason: str
    fix: str | None = None  # set for protocol mismatches (see ProtocolMismatch)


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
    # a standard Flower reply (no ``fedadapt.clients``): one client that never read the train
    # message's fedadapt keys, so it trained with its own optimizer, not the strategy's
    standard: bool = False


_STAT_KEYS = R.CLIENT_STAT_KEYS


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
        ids = _as_list(cfg, R.C_FAILED_IDS, int, required=False)
        reasons = _as_list(cfg, R.C_FAILED_REASONS, str, required=False)
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
    population: bool = False,
    global_tensors: dict[str, torch.Tensor] | None = None,
) -> CheckedReply:
    """Validate one train reply against the round's model ``layout``; raise ReplyRejected
    (:class:`ProtocolMismatch` when client and strategy disagree on the protocol).

    ``population``: the node serves client ids of a population (a reply must list them in
    ``fedadapt.clients``). ``global_tensors``: the round's global model; given, a one-client
    reply that lacks the per-client signals (a standard Flower ClientApp in a deployment) has
    them computed here from its model, exactly as the client writer would.
    """
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
        raise ProtocolMismatch(
            f"unexpected records {sorted(unexpected)} (allowed {sorted(ALLOWED_KEYS)})",
            FIX_RECORDS,
        )
    failures = client_failures(msg)
    if R.ARRAYS not in keys and R.METRICS not in keys and R.CLIENTS in keys:
        # every client of this reply failed: nothing to aggregate, failures are recorded
        raise ReplyRejected(NO_SUCCESS if failures else "reply holds no model")
    for k in (R.ARRAYS, R.METRICS):
        if k not in keys:
            raise ProtocolMismatch(f"missing record {k!r}", FIX_RECORDS)
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
    loss = next((met[k] for k in R.TRAIN_LOSS_ALIASES if k in met), math.nan)
    loss = float(loss) if isinstance(loss, int | float) and not isinstance(loss, bool) else math.nan

    # per-client lists
    cfg = content.get(R.CLIENTS) if R.CLIENTS in keys else None
    if cfg is not None and not isinstance(cfg, ConfigRecord):
        raise ReplyRejected(f"{R.CLIENTS!r} is not a ConfigRecord")
    if cfg is not None:
        ids = _as_list(cfg, R.C_IDS, int, required=True)
        ns = _as_list(cfg, R.C_NUM_EXAMPLES, int, required=True)
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
        if (
            want_sq_norms
            and R.C_SQ_NORM not in cfg
            and global_tensors is not None
            and len(ids) == 1
        ):
            sq = None  # one client's reply: derived from its model below
        elif want_sq_norms:
            sq = _as_list(cfg, R.C_SQ_NORM, float, required=True)
            if len(sq) != len(ids) or not all(math.isfinite(v) and v >= 0 for v in sq):
                raise ReplyRejected(
                    f"{R.CLIENTS}['sq-norm'] must hold {len(ids)} finite values >= 0"
                )
    else:
        if population:
            raise ProtocolMismatch(
                f"missing record {R.CLIENTS!r}: the reply does not say which of the client ids "
                f"{sorted(expected_ids or [])[:5]} sent to node {node} it served",
                FIX_TWO_CALLS,
            )
        if want_sq_norms and global_tensors is None:
            raise ProtocolMismatch(
                f"missing record {R.CLIENTS!r} (the server needs per-client sq-norm)",
                FIX_TWO_CALLS,
            )
        # a standard Flower reply: one client, the node itself
        ids, ns, sq = [node], [n], None
        stats = {key: [math.nan] for key in _STAT_KEYS}
        if isinstance(loss, float) and math.isfinite(loss):
            stats[R.C_TRAIN_LOSS] = [loss]
    if expected_ids is not None:
        stray = set(ids) - set(expected_ids)
        if stray:
            raise ProtocolMismatch(
                f"client ids {sorted(stray)[:5]} were not sent to node {node}", FIX_IDS
            )

    tensors = _check_arrays(arr, layout, R.ARRAYS, list(layout))
    sig = None
    derive = global_tensors is not None and len(ids) == 1
    if want_sq_norms and sq is None and derive:
        assert global_tensors is not None
        sq = [per_client_sq_norm(tensors, global_tensors, param_keys)]
    if want_sq_mean:
        if R.SIGNALS not in keys and derive:
            assert global_tensors is not None
            sig = per_client_sq_sum(tensors, global_tensors, param_keys, ns[0])
        elif R.SIGNALS not in keys:
            raise ProtocolMismatch(
                f"missing record {R.SIGNALS!r} (per-coordinate client signal)", FIX_TWO_CALLS
            )
        else:
            srec = content[R.SIGNALS]
            if not isinstance(srec, ArrayRecord):
                raise ReplyRejected(f"{R.SIGNALS!r} is not an ArrayRecord")
            sig = _check_arrays(srec, layout, R.SIGNALS, list(param_keys))
    return CheckedReply(
        node, n, loss, tensors, ids, ns, stats, sq, sig, failures, msg, standard=cfg is None
    )


def per_client_sq_norm(
    model: dict[str, torch.Tensor], global_model: dict[str, torch.Tensor], keys: Collection[str]
) -> float:
    """||x_i - x_t||^2 over the parameters, in float64: what ``build_train_reply`` writes as
    ``sq-norm`` (same operations, so both routes give the same value)."""
    total = 0.0
    for k in keys:
        d = model[k].to(torch.float64) - global_model[k].to(torch.float64)
        total += float((d * d).sum())
    return total


def per_client_sq_sum(
    model: dict[str, torch.Tensor],
    global_model: dict[str, torch.Tensor],
    keys: Collection[str],
    n: int,
) -> dict[str, torch.Tensor]:
    """n_i (x_i - x_t)^2 per coordinate (float64, cast to the model dtype): the
    ``fedadapt.signals`` record of a one-client reply."""
    out = {}
    for k in keys:
        d = model[k].to(torch.float64) - global_model[k].to(torch.float64)
        out[k] = (d * d).mul_(n).to(model[k].dtype)
    return out
