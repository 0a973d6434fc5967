"""Run directories: the resolved config, ``metrics.jsonl``, ``summary.json`` and PNG plots.

One directory per run::

    config.json      the resolved run config (every key, after validation)
    schedule.json    the drift schedule the run used: its base changepoint rounds
    metrics.jsonl    one JSON object per round (accuracy, loss, step sizes, participants,
                     failures with reasons, drift events, wall time)
    summary.json     final / best accuracy, rounds to target, per-drift recovery metrics
    accuracy.png     accuracy per round with drift markers
    steps.png        step sizes per round: the clients' lr as the cohort's distribution
                     (median, interquartile band, min-max band), the clients' per-coordinate
                     step spread (per-coordinate methods), the server's step (its own axis
                     when the scales differ), detector alarms and the rounds with extra
                     local work (:func:`steps_figure`)
    detector.png     the server's change detector: its CUSUM statistic against the alarm
                     threshold, the round-start loss, alarms and drift markers (when the
                     server method has a detector)

Every plot follows :mod:`simulations.plotstyle` (titled with the scenario and what ran,
integer rounds from 0, drift as a line or a shaded span, legend outside the data). A Flower
strategy's run is labelled with that strategy and Flower's own server step, never with the
unused ``server-optimizer`` key (:func:`simulations.tables.strategy_label`).

``fedadapt report DIR`` reads finished runs (never writing into them) and writes the tables of
:mod:`simulations.tables` and comparison plots to ``DIR/report`` (or ``--out``);
``fedadapt compare`` writes the same tables and plots for the runs it made.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulations import plotstyle, recovery
from simulations.tables import describe, server_method, strategy_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from simulations.tracking import RunTracking

SCHEDULE_FILE = "schedule.json"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, tuples become lists, numpy scalars become Python."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (ValueError, TypeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunWriter:
    """Collects per-round records and writes the run directory as the run goes."""

    def __init__(
        self,
        out_dir: str | Path,
        config: Mapping[str, Any],
        resume_round: int | None = None,
        changepoints: Sequence[int] = (),
    ) -> None:
        """``resume_round``: a run resumed from the checkpoint of that round keeps the rows
        up to it from an existing ``metrics.jsonl`` in ``out_dir`` and appends after them.
        ``changepoints``: the base changepoint rounds of the run's drift schedule (written to
        ``schedule.json``, which :func:`report` reads back)."""
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = dict(config)
        self.changepoints = [int(c) for c in changepoints]
        (self.dir / "config.json").write_text(json.dumps(_clean(self.config), indent=2) + "\n")
        (self.dir / SCHEDULE_FILE).write_text(
            json.dumps({"changepoints": self.changepoints}, indent=2) + "\n"
        )
        self.metrics_path = self.dir / "metrics.jsonl"
        kept: list[dict[str, Any]] = []
        if resume_round is not None and self.metrics_path.exists():
            kept = [r for r in load_rows(self.dir) if int(r["round"]) <= resume_round]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.rows: list[dict[str, Any]] = kept
        self._pending: dict[int, dict[str, Any]] = {}
        # experiment tracking (simulations.tracking): every flushed row goes to it too
        self.tracker: RunTracking | None = None
        self._t0 = time.perf_counter()
        self._last = self._t0

    def resolve(self, values: Mapping[str, Any]) -> None:
        """Replace keys the strategy resolved (``client-optimizer = "auto"`` -> the method it
        runs) in the config and ``config.json``."""
        self.config.update(values)
        (self.dir / "config.json").write_text(json.dumps(_clean(self.config), indent=2) + "\n")

    def add(self, server_round: int, record: Mapping[str, Any]) -> None:
        """Merge ``record`` into the round's pending row (strategy metrics, evaluation, ...)."""
        self._pending.setdefault(server_round, {"round": server_round}).update(record)

    def flush(self, server_round: int) -> dict[str, Any]:
        """Finish the round: stamp wall times and append one line to metrics.jsonl."""
        now = time.perf_counter()
        row = self._pending.pop(server_round, {"round": server_round})
        row.setdefault("wall-time", now - self._last)
        row["elapsed"] = now - self._t0
        self._last = now
        row = _clean(row)
        self.rows.append(row)
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.log_row(row)
        return row

    def finish(self) -> dict[str, Any]:
        for server_round in sorted(self._pending):
            self.flush(server_round)
        summary = summarize(self.rows, self.config, self.changepoints)
        (self.dir / "summary.json").write_text(json.dumps(_clean(summary), indent=2) + "\n")
        plot_run(self.dir, self.rows, self.config)
        return summary


def load_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not a JSON line ({exc})") from None
    return rows


def load_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a run directory's config ({exc})") from None


def _accuracy_curve(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
    return [
        (int(r["round"]), float(r["accuracy"]))
        for r in rows
        if r.get("accuracy") is not None and int(r["round"]) >= 1
    ]


def drift_rounds(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Rounds in which some clients reached a changepoint (from the rows' drift events)."""
    return [int(r["round"]) for r in rows if r.get("drift-events")]


def load_changepoints(run_dir: str | Path) -> list[int]:
    """The base changepoint rounds the run wrote (``schedule.json``)."""
    path = Path(run_dir) / SCHEDULE_FILE
    try:
        data = json.loads(path.read_text())
        return [int(c) for c in data["changepoints"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a run directory's drift schedule ({exc})") from None


UNLEARNED_MARGIN = 0.05  # pre-drift accuracy within this of the untrained model's: not learned


def _kebab(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k.replace("_", "-"): v for k, v in d.items()}


def summarize(
    rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any], changepoints: Sequence[int] = ()
) -> dict[str, Any]:
    """The run's summary from its rows, its config (names, target, window) and the base
    changepoint rounds of its drift schedule (recovery metrics per changepoint)."""
    curve = _accuracy_curve(rows)
    accs = [a for _, a in curve]
    rounds = [r for r, _ in curve]
    summary: dict[str, Any] = {
        "scenario": config.get("scenario"),
        "strategy": config.get("strategy"),
        # what ran: the fedadapt server method (None under a Flower strategy, which runs
        # Flower's own server step), and the strategy's label (``fedadapt/cp-adam/hd``)
        "strategy-label": strategy_label(config),
        "server-optimizer": server_method(config),
        "client-optimizer": config.get("client-optimizer"),
        "seed": config.get("seed"),
        "rounds": len([r for r in rows if int(r["round"]) >= 1]),
        "initial-accuracy": next(
            (
                float(r["accuracy"])
                for r in rows
                if int(r["round"]) == 0 and r.get("accuracy") is not None
            ),
            None,
        ),
        "failures": sum(len(r.get("failed-ids") or []) for r in rows),
        "wall-time": sum(float(r.get("wall-time") or 0.0) for r in rows),
    }
    if accs:
        acc = recovery.summarize(
            accs,
            [c for c in changepoints if c <= max(rounds)],
            target=float(config.get("target-accuracy", 0.8)),
            window=int(config.get("recovery-window", 3)),
            rounds=rounds,
        )
        drifts = [_kebab(d) for d in acc.pop("recovery")]  # type: ignore[union-attr]
        base = summary["initial-accuracy"]
        for d in drifts:
            pre = d.get("pre-drift-accuracy")
            if base is not None and pre is not None and pre <= base + UNLEARNED_MARGIN:
                # a run that never learned has nothing to lose or recover: a "drop" of a few
                # thousandths around chance would read as robustness
                for key in (
                    "max-drop",
                    "rounds-to-recover",
                    "recovered-round",
                    "area-under-drop",
                    "rounds-to-within-2pt",
                ):
                    d[key] = None
                d["note"] = (
                    "pre-drift accuracy is at the untrained model's level: no recovery metrics"
                )
        summary.update(_kebab(acc))
        summary["mean-accuracy"] = summary.pop("time-averaged-accuracy")
        summary["drifts"] = drifts
    # the server's change detector: the rounds it raised an alarm (all are false alarms on a
    # run without drift); only a server method with a detector reports them (a method without
    # one has no alarms to count, and an oracle's resets at the known changepoints are not
    # alarms: they are ``server-reset-rounds``)
    if any("server-detector-alarm" in r for r in rows):
        alarms = [int(r["round"]) for r in rows if r.get("server-detector-alarm") == 1.0]
        summary["detector-alarms"] = len(alarms)
        summary["detector-alarm-rounds"] = alarms
    else:
        alarms = []
    resets = [
        int(r["round"])
        for r in rows
        if r.get("server-change") == 1.0 and int(r["round"]) not in alarms
    ]
    if resets:
        summary["server-reset-rounds"] = resets
    # differential privacy (strategies.privacy): the (epsilon, delta) spent by the run's end
    eps = [
        float(r["server-dp-epsilon"])
        for r in rows
        if isinstance(r.get("server-dp-epsilon"), int | float)
        and math.isfinite(float(r["server-dp-epsilon"]))
    ]
    if eps:
        summary["dp-epsilon"] = eps[-1]
        summary["dp-delta"] = config.get("dp-delta")
    extra = local_work_rounds(rows)
    if extra:
        summary["local-work-rounds"] = extra
    ignored = [(int(r["round"]), int(r.get(IGNORED_REPLIES) or 0)) for r in rows]
    ignored = [(rnd, n) for rnd, n in ignored if n > 0]
    if ignored:
        # a client method named in the strategy that the clients never ran (a standard
        # Flower ClientApp trains with its own optimizer; strategies.protocol)
        summary["ignored-client-optimizer"] = {
            "method": config.get("client-optimizer"),
            "replies": sum(n for _, n in ignored),
            "rounds": [rnd for rnd, _ in ignored],
        }
    return summary


IGNORED_REPLIES = "ignored-client-optimizer-replies"


def local_work_rounds(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Rounds in which the server method asked the clients for more local work (the round
    metric ``local-work`` > 1)."""
    return [
        int(r["round"])
        for r in rows
        if isinstance(r.get("local-work"), int | float) and float(r["local-work"]) > 1.0
    ]


def _runs(rounds: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive rounds as (first, last) spans."""
    spans: list[tuple[int, int]] = []
    for r in sorted(rounds):
        if spans and r == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], r)
        else:
            spans.append((r, r))
    return spans


def _positive(rows: Sequence[Mapping[str, Any]], *keys: str) -> list[tuple[float, ...]]:
    """(round, value, ...) for the rows >= round 1 where every key is a finite number > 0 (a
    log axis cannot show the rest)."""
    out: list[tuple[float, ...]] = []
    for r in rows:
        vals = [r.get(k) for k in keys]
        nums = [float(v) for v in vals if isinstance(v, int | float)]
        if (
            int(r["round"]) >= 1
            and len(nums) == len(keys)
            and all(math.isfinite(v) and v > 0 for v in nums)
        ):
            out.append((int(r["round"]), *nums))
    return out


def _band(rows: Sequence[Mapping[str, Any]], lo_key: str, hi_key: str) -> list[tuple[float, ...]]:
    """(round, low, high) for a min-max band on a log axis: a round whose low end is 0 (a step
    size clipped to its floor) keeps its band, drawn from a tenth of the lowest positive value
    of the run, instead of vanishing with the high end it had."""
    pairs = []
    for r in rows:
        lo, hi = r.get(lo_key), r.get(hi_key)
        if int(r["round"]) >= 1 and isinstance(lo, int | float) and isinstance(hi, int | float):
            lo, hi = float(lo), float(hi)
            if math.isfinite(lo) and math.isfinite(hi) and lo >= 0 and hi > 0:
                pairs.append((int(r["round"]), lo, hi))
    positive = [lo for _, lo, _ in pairs if lo > 0] + [hi for _, _, hi in pairs]
    floor = min(positive) / 10 if positive else 1e-12
    return [(x, lo if lo > 0 else floor, hi) for x, lo, hi in pairs]


def _title(config: Mapping[str, Any], what: str = "step sizes") -> str:
    """``<scenario>: <what>, <strategy> (server <method>, client <method>)``, where a Flower
    strategy's server step is Flower's own (never the unused ``server-optimizer`` key)."""
    return f"{config.get('scenario')}: {what}, {describe(config)}"


def steps_figure(rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> Figure:
    """The figure of ``steps.png`` (a matplotlib Figure; the caller saves and closes it).

    Log-scaled step sizes per round: the clients' final lr as the cohort's distribution
    (``client-lr-median`` line, ``-p25``..``-p75`` and ``-min``..``-max`` bands; runs written
    before the median existed show ``client-lr``, the mean); where some round's clients report
    a per-coordinate spread (``client-step-min``/``-max`` reaching past the lr range: ``dsa``,
    ``cprop``, ``eg``, ...) that band and the mean per-coordinate step; the server's step ``server-lr``, on
    a second axis when it is more than 10x from the clients' steps; a vertical line per detector
    alarm (``server-detector-alarm``) and per other server reset (``server-change``, e.g. a known
    changepoint), drift markers, and shading over the rounds with ``local-work`` > 1. Artists
    carry a ``gid`` (``client-lr``, ``client-lr-range``, ``client-lr-iqr``, ``client-step-range``,
    ``client-step-mean``, ``server-lr``, ``alarm``, ``change``, ``drift``, ``local-work``).
    """
    import matplotlib

    matplotlib.use("Agg")
    fig, ax = plotstyle.new_figure(8, 4.2)
    client_vals: list[float] = []
    median_key = (
        "client-lr-median"
        if any(r.get("client-lr-median") is not None for r in rows)
        else "client-lr"
    )
    lo_hi = _band(rows, "client-lr-min", "client-lr-max")
    if lo_hi:
        xs, lo, hi = zip(*lo_hi, strict=True)
        ax.fill_between(
            xs,
            lo,
            hi,
            color="tab:blue",
            alpha=0.15,
            linewidth=0,
            label="clients' lr, min-max",
            gid="client-lr-range",
        )
        client_vals += [*lo, *hi]
    iqr = _positive(rows, "client-lr-p25", "client-lr-p75")
    if iqr:
        xs, lo, hi = zip(*iqr, strict=True)
        ax.fill_between(
            xs,
            lo,
            hi,
            color="tab:blue",
            alpha=0.3,
            linewidth=0,
            label="clients' lr, 25-75%",
            gid="client-lr-iqr",
        )
    med = _positive(rows, median_key)
    if med:
        xs, ys = zip(*med, strict=True)
        label = "clients' lr, median" if median_key == "client-lr-median" else "clients' lr, mean"
        ax.plot(
            xs,
            ys,
            color="tab:blue",
            marker="." if len(xs) < 40 else None,
            label=label,
            gid="client-lr",
        )
        client_vals += list(ys)
    # per-coordinate methods: the spread of the effective per-coordinate step
    steps = _band(rows, "client-step-min", "client-step-max")
    # a scalar method's step range is its lr range: drawn only where it reaches past it
    lr_range = {x: (lo, hi) for x, lo, hi in lo_hi}
    if any(
        x not in lr_range or lo < lr_range[x][0] * (1 - 1e-9) or hi > lr_range[x][1] * (1 + 1e-9)
        for x, lo, hi in steps
    ):
        xs, lo, hi = zip(*steps, strict=True)
        ax.fill_between(
            xs,
            lo,
            hi,
            facecolor="none",
            edgecolor="tab:purple",
            hatch="///",
            alpha=0.5,
            linewidth=0.5,
            label="clients' per-coordinate step, min-max",
            gid="client-step-range",
        )
        client_vals += [*lo, *hi]
        mean = _positive(rows, "client-step-mean")
        if mean:
            mx, my = zip(*mean, strict=True)
            ax.plot(
                mx,
                my,
                color="tab:purple",
                linestyle="--",
                label="clients' per-coordinate step, mean",
                gid="client-step-mean",
            )
    ax.set_yscale("log")
    ax.set_ylabel("client step size")
    server = _positive(rows, "server-lr")
    sax = ax
    if server:
        sx, sy = zip(*server, strict=True)
        if client_vals:
            gap = abs(math.log10(_geomean(sy)) - math.log10(_geomean(client_vals)))
            if gap > 1.0:  # more than 10x apart: the server's step gets its own axis
                sax = ax.twinx()
                sax.set_yscale("log")
                sax.set_ylabel("server step size")
        sax.plot(sx, sy, color="black", linewidth=1.2, label="server step", gid="server-lr")
        if sax is ax:
            ax.set_ylabel("step size")
    # events: detector alarms, other resets, drift, extra local work
    alarm_rounds = [int(r["round"]) for r in rows if r.get("server-detector-alarm") == 1.0]
    change_rounds = [
        int(r["round"])
        for r in rows
        if r.get("server-change") == 1.0 and int(r["round"]) not in alarm_rounds
    ]
    for k, a in enumerate(alarm_rounds):
        ax.axvline(
            a,
            color="darkorange",
            linewidth=2,
            alpha=0.8,
            gid="alarm",
            label="detector alarm" if k == 0 else None,
        )
    for k, c in enumerate(change_rounds):
        ax.axvline(
            c,
            color="gray",
            linestyle=":",
            linewidth=1.5,
            gid="change",
            label="server reset (known change)" if k == 0 else None,
        )
    plotstyle.draw_drift(ax, plotstyle.drift_spans(rows, config))
    factors = sorted(
        {
            float(r["local-work"])
            for r in rows
            if isinstance(r.get("local-work"), int | float) and r["local-work"] > 1.0
        }
    )
    for k, (first, last) in enumerate(_runs(local_work_rounds(rows))):
        span_label = (
            f"extra local work (x{', x'.join(f'{f:g}' for f in factors)})" if k == 0 else None
        )
        ax.axvspan(
            first - 0.5,
            last + 0.5,
            color="tab:green",
            alpha=0.15,
            linewidth=0,
            gid="local-work",
            label=span_label,
        )
    plotstyle.round_axis(ax, _last_round(rows))
    ax.set_title(_title(config), fontsize=plotstyle.TITLE_SIZE)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if sax is not ax:
        h2, l2 = sax.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    # outside the data: to the right of the axes (and of the server's axis)
    plotstyle.legend_outside(ax, handles, labels, x=1.16 if sax is not ax else 1.02)
    fig.tight_layout()
    return fig


def _last_round(rows: Sequence[Mapping[str, Any]]) -> int | None:
    return max((int(r["round"]) for r in rows), default=None)


def _geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def accuracy_figure(rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> Figure:
    """The figure of ``accuracy.png``: centralized and clients' own accuracy per round, drift
    as lines or spans (:mod:`simulations.plotstyle`)."""
    fig, ax = plotstyle.new_figure(7, 3.5)
    curve = [(int(r["round"]), r.get("accuracy")) for r in rows if r.get("accuracy") is not None]
    client_curve = [
        (int(r["round"]), r.get("client-accuracy"))
        for r in rows
        if r.get("client-accuracy") is not None
    ]
    if curve:
        ax.plot(
            *zip(*curve, strict=True),
            label="centralized (current concept)",
            gid="accuracy",
            **plotstyle.series_style(0, len(curve)),
        )
    if client_curve:
        ax.plot(
            *zip(*client_curve, strict=True),
            label="clients (own current concept)",
            gid="client-accuracy",
            **plotstyle.series_style(1, len(client_curve)),
        )
    plotstyle.draw_drift(ax, plotstyle.drift_spans(rows, config))
    plotstyle.round_axis(ax, _last_round(rows))
    ax.set_ylabel("accuracy")
    ax.set_title(_title(config, "accuracy"), fontsize=plotstyle.TITLE_SIZE)
    ax.grid(alpha=0.3)
    plotstyle.legend_outside(ax)
    fig.tight_layout()
    return fig


def detector_figure(rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> Figure | None:
    """The figure of ``detector.png`` (None when the server method has no detector): the
    CUSUM statistic against the alarm threshold, the round-start loss on a second axis,
    alarms and drift; the legend outside, never over the threshold line."""
    cusum = [
        (int(r["round"]), r.get("server-detector-start-loss-cusum"))
        for r in rows
        if r.get("server-detector-start-loss-cusum") is not None
    ]
    if not cusum:
        return None
    import fedadapt

    loss = [
        (int(r["round"]), r.get("server-detector-start-loss"))
        for r in rows
        if r.get("server-detector-start-loss") is not None
    ]
    fig, ax = plotstyle.new_figure(7, 3.5)
    ax.plot(
        *zip(*cusum, strict=True),
        label="CUSUM of the round-start loss",
        gid="cusum",
        **plotstyle.series_style(0, len(cusum)),
    )
    threshold = fedadapt.ChangeDetector().threshold  # the default detector's
    ax.axhline(
        threshold,
        color="gray",
        linestyle=":",
        label=f"alarm threshold ({threshold:g})",
        gid="threshold",
    )
    alarms = [int(r["round"]) for r in rows if r.get("server-detector-alarm") == 1.0]
    for k, a in enumerate(alarms):
        ax.axvline(
            a,
            color="darkorange",
            linewidth=2,
            alpha=0.7,
            gid="alarm",
            label="detector alarm" if k == 0 else None,
        )
    plotstyle.draw_drift(ax, plotstyle.drift_spans(rows, config))
    plotstyle.round_axis(ax, _last_round(rows))
    ax.set_ylabel("CUSUM (reference std units)")
    handles, labels = ax.get_legend_handles_labels()
    x = 1.02
    if loss:
        ax2 = ax.twinx()
        ax2.plot(
            *zip(*loss, strict=True),
            color="green",
            alpha=0.5,
            label="round-start loss",
            gid="start-loss",
        )
        ax2.set_ylabel("round-start loss (geometric mean)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels, x = handles + h2, labels + l2, 1.16
    ax.set_title(_title(config, "change detector"), fontsize=plotstyle.TITLE_SIZE)
    ax.grid(alpha=0.3)
    plotstyle.legend_outside(ax, handles, labels, x=x)
    fig.tight_layout()
    return fig


def plot_run(run_dir: Path, rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> None:
    """Write ``accuracy.png``, ``steps.png`` and (with a detector) ``detector.png``."""
    import matplotlib.pyplot as plt

    figures = {
        "accuracy.png": accuracy_figure(rows, config),
        "steps.png": steps_figure(rows, config),
        "detector.png": detector_figure(rows, config),
    }
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(run_dir / name, bbox_inches="tight")
            plt.close(fig)


def find_runs(root: str | Path) -> list[Path]:
    root = Path(root)
    if (root / "metrics.jsonl").exists():
        return [root]
    return sorted(p.parent for p in root.rglob("metrics.jsonl"))


def report(
    root: str | Path, out: str | Path | None = None, baseline: str | None = None, plots: bool = True
) -> tuple[str, Path]:
    """Tables (and comparison plots) of every finished run under ``root``, written to ``out``
    (default ``<root>/report``); the runs' own files are only read. Returns the Markdown and
    the folder written (:mod:`simulations.tables`)."""
    from simulations.compare import plot_comparison
    from simulations.tables import infer_grid_keys, load_run, write_tables

    runs = [load_run(run) for run in find_runs(root)]
    if not runs:
        raise ValueError(f"no finished runs (metrics.jsonl) under {root}")
    target = Path(out) if out is not None else Path(root) / "report"
    grid_keys = infer_grid_keys(runs)
    md = write_tables(target, "report", runs, grid_keys, baseline)
    if plots:
        plot_comparison(target, runs, grid_keys)
    return md, target
