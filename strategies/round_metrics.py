"""Per-round metrics: the ``info`` dict (``strategy.history``, ``on_round_end``), the
``MetricRecord`` Flower puts in ``Result``, and the round lines on Flower's logger.

* Every round has every key: numbers that could not be computed are NaN, lists are empty, and
  a key seen in any earlier round (the server method's own, e.g. ``server-lr``) is NaN in a
  round where it is missing.
* Ids are lossless: the ``info`` dict holds Python ints (Flower node ids are uint64); the
  ``MetricRecord``, which holds only int64, stores an id >= 2**63 as ``id - 2**64`` (two's
  complement, ``v % 2**64`` recovers it). ``failed-reasons`` (strings, which a MetricRecord
  cannot hold) are in ``info`` and on the log, never in the MetricRecord, in any round.
* The clients' own MetricRecord entries (``train_loss``, ``accuracy``, ...) are aggregated with
  the strategy's ``train_metrics_aggr_fn`` (Flower's example-weighted
  ``aggregate_metricrecords`` by default) and sit beside fedadapt's keys; on a name clash
  fedadapt's value wins (``num-examples``, ``train-loss``).
* The clients' step sizes are the cohort's distribution over the round's successful clients
  (unweighted: each client counts once): ``client-lr`` (mean), ``-min``, ``-p25``,
  ``-median``, ``-p75``, ``-max`` of the final ``lr``; ``client-step-min`` / ``-max`` /
  ``-mean`` summarize the per-coordinate effective step (lowest ``step-min``, highest
  ``step-max``, mean of ``step-mean``).
* What the server method asked of the clients this round (its hints in the train config):
  ``local-work`` (the factor on local steps, 1 without a hint) and ``hint-<name>`` for any other
  hint (``hint-lr-scale``, ``hint-early-stop-gamma``).
* ``ignored-client-optimizer-replies``: accepted replies from a standard Flower ClientApp while
  the strategy names a client method other than ``sgd`` (those clients never ran it; see
  ``strategies.protocol``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from logging import INFO, WARNING

import numpy as np
from flwr.app import MetricRecord, RecordDict
from flwr.common.logger import log as flwr_log

from . import records as R
from .protocol import SentRound, ignored_client_optimizer_replies
from .validation import CheckedReply, Failure

UINT64 = 2**64
ID_KEYS = ("sampled-ids", "offline-ids", "succeeded-ids", "failed-ids", "failed-nodes")
STRING_KEYS = ("failed-reasons",)
FLOAT_KEYS = (
    "train-loss",
    "client-lr",
    "client-lr-min",
    "client-lr-p25",
    "client-lr-median",
    "client-lr-p75",
    "client-lr-max",
    "client-step-mean",
    "client-step-min",
    "client-step-max",
    "local-work",
    "aggregate-seconds",
)
INT_KEYS = (
    "num-examples",
    "num-sampled",
    "num-succeeded",
    "num-failed",
    "ignored-client-optimizer-replies",
)
LOCAL_WORK = "local-work"  # the hint name and the round metric
ROUND_LINE_CHARS = 180  # a round line's message; with Flower's prefix it fits in 200
HINT_PREFIX = "hint-"  # round metric of any other hint: hint-<name>


def int64_id(v: int) -> int:
    """A uint64 id as int64 (two's complement) for a MetricRecord; ``v % 2**64`` inverts it."""
    return v - UINT64 if v >= 2**63 else v


def cohort_lr_stats(lrs: np.ndarray) -> dict[str, float]:
    """``client-lr`` (mean), ``-min``, ``-p25``, ``-median``, ``-p75``, ``-max`` of the finite
    final lrs of the round's clients (each client once); NaN when there are none."""
    keys = (
        "client-lr",
        "client-lr-min",
        "client-lr-p25",
        "client-lr-median",
        "client-lr-p75",
        "client-lr-max",
    )
    if not lrs.size:
        return dict.fromkeys(keys, math.nan)
    q = np.quantile(lrs, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {
        "client-lr": float(lrs.mean()),
        **{k: float(v) for k, v in zip(keys[1:], q, strict=True)},
    }


class RoundMetrics:
    """Computes, records and logs one round's metrics."""

    def __init__(self, aggr_fn: Callable[[list[RecordDict], str], MetricRecord], weight_key: str):
        self.aggr_fn = aggr_fn
        self.weight_key = weight_key
        self.history: list[dict[str, object]] = []
        self._extra_keys: dict[str, object] = {}  # key -> empty value, for keys seen once

    def client_metrics(self, checked: list[CheckedReply]) -> dict[str, object]:
        """The clients' own MetricRecord entries, aggregated like Flower's FedAvg does."""
        records = [
            RecordDict({R.METRICS: c.message.content[R.METRICS]})
            for c in checked
            if c.message is not None and c.message.has_content() and R.METRICS in c.message.content
        ]
        if not records:
            return {}
        try:
            agg = self.aggr_fn(records, self.weight_key)
        except Exception as exc:  # noqa: BLE001 - a user's aggregation function
            flwr_log(WARNING, "train_metrics_aggr_fn failed, client metrics skipped: %s", exc)
            return {}
        return dict(agg.items()) if agg is not None else {}

    def info(
        self,
        server_round: int,
        sent: SentRound,
        checked: list[CheckedReply],
        failures: list[Failure],
        server: Mapping[str, float],
        client_metrics: Mapping[str, object],
        broadcast_lr: float | None,
        elapsed: float,
    ) -> dict[str, object]:
        ids = [cid for c in checked for cid in c.client_ids]
        ns = [n for c in checked for n in c.client_num_examples]
        info: dict[str, object] = {"round": server_round}
        for k, v in client_metrics.items():
            info[k] = v
        losses = [
            (n, v)
            for c in checked
            for n, v in zip(c.client_num_examples, c.client_stats[R.C_TRAIN_LOSS], strict=True)
            if math.isfinite(v)
        ]
        info["train-loss"] = (
            sum(n * v for n, v in losses) / sum(n for n, _ in losses) if losses else math.nan
        )
        info["num-examples"] = int(sum(ns))
        for k, v in server.items():
            info[f"server-{k}"] = float(v)
        for key in R.STEP_STAT_KEYS:
            vals = np.array([v for c in checked for v in c.client_stats[key]], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if key == R.C_LR:
                info.update(cohort_lr_stats(vals))
            else:
                if not vals.size:
                    info[f"client-{key}"] = math.nan
                elif key == R.C_STEP_MIN:
                    info[f"client-{key}"] = float(vals.min())
                elif key == R.C_STEP_MAX:
                    info[f"client-{key}"] = float(vals.max())
                else:
                    info[f"client-{key}"] = float(vals.mean())
        info["num-sampled"] = len(sent.client_ids)
        info["num-succeeded"] = len(ids)
        info["num-failed"] = len(failures)
        info["sampled-ids"] = [int(c) for c in sent.client_ids]
        info["offline-ids"] = [int(c) for c in sent.offline_ids]
        info["succeeded-ids"] = [int(c) for c in ids]
        info["failed-ids"] = [f.client_id if f.client_id is not None else -1 for f in failures]
        info["failed-reasons"] = [f.reason for f in failures]
        info["failed-nodes"] = [int(f.node_id) for f in failures]
        hints = sent.hints if sent.server_round == server_round else {}
        info[LOCAL_WORK] = float(hints.get(LOCAL_WORK, 1.0))
        for k, v in sorted(hints.items()):
            if k != LOCAL_WORK:
                info[HINT_PREFIX + k] = float(v)
        info["ignored-client-optimizer-replies"] = (
            ignored_client_optimizer_replies(sent, checked)
            if sent.server_round == server_round
            else 0
        )
        if broadcast_lr is not None:
            info["broadcast-client-lr"] = float(broadcast_lr)
        info["aggregate-seconds"] = float(elapsed)
        # every key in every round: a key seen before but missing now is NaN / empty
        for k, v in info.items():
            if k not in self._extra_keys and k != "round":
                self._extra_keys[k] = [] if isinstance(v, list) else math.nan
        for k, empty in self._extra_keys.items():
            info.setdefault(k, list(empty) if isinstance(empty, list) else empty)
        self.history.append(info)
        return info

    @staticmethod
    def metric_record(info: Mapping[str, object]) -> MetricRecord:
        """The numeric part of ``info`` (ids as int64, see the module docstring)."""
        out = MetricRecord()
        for k, v in info.items():
            if k == "round" or k in STRING_KEYS:
                continue
            if isinstance(v, bool):
                out[k] = int(v)
            elif isinstance(v, int | float):
                out[k] = v
            elif isinstance(v, list) and all(
                isinstance(x, int) and not isinstance(x, bool) for x in v
            ):
                out[k] = [int64_id(int(x)) for x in v]
            elif isinstance(v, list) and all(isinstance(x, int | float) for x in v):
                out[k] = [float(x) for x in v]
        return out

    @staticmethod
    def round_line(info: Mapping[str, object]) -> str:
        """The round's line: counts, train loss, the server's step size and what happened
        (a detector alarm, extra local work), at most :data:`ROUND_LINE_CHARS` characters;
        every other number is in ``metrics.jsonl`` / ``strategy.history``."""
        parts = [
            f"fedadapt: {info['num-sampled']} sampled, {info['num-succeeded']} received, "
            f"{info['num-failed']} failed",
        ]
        loss = info.get("train-loss")
        if isinstance(loss, float) and math.isfinite(loss):
            parts.append(f"train-loss {loss:.4g}")
        lr = info.get("server-lr")
        if isinstance(lr, float) and math.isfinite(lr):
            parts.append(f"server lr {lr:.4g}")
        if info.get("server-detector-alarm") == 1.0:
            parts.append("detector alarm")
        elif info.get("server-change") == 1.0:
            parts.append("server reset")
        work = info.get(LOCAL_WORK)
        if isinstance(work, float) and work > 1.0:
            parts.append(f"local work x{work:g}")
        line = " | ".join(parts)
        return line if len(line) <= ROUND_LINE_CHARS else line[: ROUND_LINE_CHARS - 3] + "..."

    @staticmethod
    def log_round(info: Mapping[str, object]) -> None:
        """Flower-style round lines (``flwr run --stream`` shows Flower's logger), each within
        :data:`ROUND_LINE_CHARS` characters."""
        flwr_log(INFO, "\t├──> %s", RoundMetrics.round_line(info))
        reasons = Counter(str(r) for r in info.get("failed-reasons", []))  # type: ignore[attr-defined]
        for reason, count in reasons.most_common(5):
            text = f"{count}× failed: {reason}"
            if len(text) > ROUND_LINE_CHARS:
                text = text[: ROUND_LINE_CHARS - 3] + "..."
            flwr_log(WARNING, "\t│\t%s", text)
