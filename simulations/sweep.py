"""Sweeps (``fedadapt compare``): many runs, several at once, resumable.

A sweep is a list of planned runs (:class:`SweepRun`: a resolved config and the run directory
it writes). :func:`run_sweep`

- skips every run whose results are already complete under the sweep's folder, matched by the
  digest of its resolved config (:func:`config_digest`; the output path is not part of it), not
  by the folder's name; ``redo=True`` runs them all again;
- runs the rest in one Flower simulation on Ray, ``parallel`` at once
  (:func:`simulations.experiment.run_many`), or without Ray in a pool of processes
  (``backend="local"``, :func:`simulations.local.run_local_many`), and marks each run complete
  (:data:`DONE_FILE`, written last and atomically) as soon as it ends, so a killed sweep loses
  only the runs that were in flight;
- tells its hooks (:class:`SweepHooks`) when the sweep starts, a run is skipped, starts, reports
  a round, ends or fails, and when the sweep ends: the progress display is one hook, and an
  experiment tracker (one parent run per sweep, its runs nested) is another.

:class:`SweepProgress` counts runs done, running, skipped and left, and estimates the time left
from the finished runs' durations.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulations.config import ConfigError

DONE_FILE = "sweep-done.json"
# keys that say where a run writes or logs, not what it computes: outside the digest (the
# tracking keys too: a sweep's parent run id differs every time the sweep starts)
DIGEST_EXCLUDED = (
    "out-dir",
    "worker-log",
    "tracking",
    "tracking-uri",
    "tracking-experiment",
    "tracking-parent",
    "tensorboard-dir",
)
DIGEST_VERSION = 1
# runs at once when the cluster's size is not known before Ray starts (--address, auto)
MAX_AUTO_PARALLEL = 16


def config_digest(cfg: Mapping[str, Any]) -> str:
    """A digest of a resolved run config without its output paths (:data:`DIGEST_EXCLUDED`):
    two runs with the same digest compute the same results (runs are seeded)."""
    kept = {k: v for k, v in cfg.items() if k not in DIGEST_EXCLUDED}
    text = json.dumps({"v": DIGEST_VERSION, "config": kept}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class SweepRun:
    """One planned run of a sweep."""

    index: int
    name: str  # what the progress shows ("fedavg [client-lr=0.1] seed 0")
    config: dict[str, Any]
    digest: str = ""
    run_dir: Path = field(default_factory=Path)
    labels: dict[str, Any] = field(default_factory=dict)  # strategy, cell, seed ...
    # the prepared RunSpec (simulations.experiment.prepare) of ``config``: a command reads and
    # pre-flights its configs once; None: prepared when the sweep runs
    spec: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = config_digest(self.config)
        if self.run_dir == Path():
            self.run_dir = Path(str(self.config["out-dir"]))


def mark_done(
    run_dir: Path,
    digest: str,
    seconds: float,
    driver_cpu: float | None = None,
    *,
    backend: str = "ray",
    cpu: float | None = None,
) -> None:
    """Say that the run in ``run_dir`` is complete (after its summary.json): atomically, last.
    ``seconds``: the run's wall time; ``driver_cpu``: CPU seconds of the driver thread that
    served it (aggregation, evaluation, messages, its run directory; Ray backend); ``cpu``:
    CPU seconds of the process that ran all of it (local backend: driver and clients)."""
    path = Path(run_dir) / DONE_FILE
    tmp = path.with_suffix(".tmp")
    record: dict[str, Any] = {"digest": digest, "seconds": round(seconds, 3), "backend": backend}
    if driver_cpu is not None:
        record["driver-cpu-seconds"] = round(driver_cpu, 3)
    if cpu is not None:
        record["cpu-seconds"] = round(cpu, 3)
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)


def read_done(run_dir: Path) -> dict[str, Any] | None:
    """The completion record of a run directory, or None when the run is not complete (no
    record, or no readable summary.json beside it)."""
    path = Path(run_dir)
    try:
        done = json.loads((path / DONE_FILE).read_text())
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or not isinstance(summary, dict) or "digest" not in done:
        return None
    return done


def done_index(root: Path) -> dict[str, Path]:
    """Digest -> run directory of every complete run under ``root`` (any folder name)."""
    index: dict[str, Path] = {}
    if not Path(root).is_dir():
        return index
    for marker in sorted(Path(root).rglob(DONE_FILE)):
        done = read_done(marker.parent)
        if done is not None:
            index.setdefault(str(done["digest"]), marker.parent)
    return index


# ----------------------------------------------------------------------------- options


def parse_parallel(text: str) -> int:
    """``--parallel``: ``auto`` (0: from the cluster's worker slots) or a count >= 1."""
    value = str(text).strip().lower()
    if value == "auto":
        return 0
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 1:
        raise ConfigError(
            f"--parallel {text!r}: expected 'auto' or a whole number >= 1 (1 = one run at a time)"
        )
    return n


_HOSTPORT = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d+)$")


def check_address(text: str) -> str:
    """``--address``: a running Ray cluster's GCS address, ``host:port`` (what ``ray start
    --head`` prints), or ``auto`` (the cluster Ray finds on this machine)."""
    value = str(text).strip()
    if value == "auto":
        return value
    m = _HOSTPORT.match(value)
    if not m or not 0 < int(m.group(1)) < 65536:
        raise ConfigError(
            f"--address {text!r}: expected host:port of a running Ray cluster "
            "(as `ray start --head` prints it, e.g. 10.0.0.5:6379) or 'auto'"
        )
    return value


def auto_parallel(slots: int | None, width: int, client_num_cpus: float, runs: int) -> int:
    """Runs at once for ``--parallel auto``: as many as the cluster's worker ``slots`` hold
    runs of ``width`` workers (one run at a time when one run fills the cluster: a second
    run at once gained nothing on 2 cores, where a quickstart run already keeps both busy,
    BENCHMARKS.md §6). ``slots`` None: this machine's CPUs, or :data:`MAX_AUTO_PARALLEL` when
    attached to a cluster whose size Ray tells only once it is up."""
    if slots is None:
        from simulations.runtime import ray_address

        if ray_address():
            return max(1, min(runs, MAX_AUTO_PARALLEL))
        slots = int((os.cpu_count() or 1) / max(client_num_cpus, 1e-9))
    return max(1, min(runs, slots // max(width, 1)))


# ----------------------------------------------------------------------------- hooks


class SweepHooks:
    """What a sweep tells the outside: override what you need (calls may come from several
    threads at once, one per concurrent run). An experiment tracker hooks in here: one
    parent run at :meth:`sweep_start`, a nested run per :meth:`run_start` / :meth:`run_end`
    (and :meth:`run_skipped` for results read from disk)."""

    def sweep_start(self, runs: Sequence[SweepRun], skipped: Sequence[SweepRun]) -> None:
        """The sweep begins: all planned ``runs``, of which ``skipped`` are already complete."""

    def parallel_chosen(self, parallel: int) -> None:
        """Ray is up; ``parallel`` runs will run at once."""

    def run_skipped(self, run: SweepRun, summary: dict[str, Any]) -> None:
        """``run`` is complete on disk (``summary["run-dir"]``) and is not run again."""

    def run_start(self, run: SweepRun) -> None:
        """``run`` starts."""

    def run_round(self, run: SweepRun, row: dict[str, Any]) -> None:
        """``run`` finished a round (``row`` as written to its metrics.jsonl)."""

    def run_end(self, run: SweepRun, summary: dict[str, Any], seconds: float) -> None:
        """``run`` ended and is marked complete."""

    def run_failed(self, run: SweepRun, error: BaseException) -> None:
        """``run`` raised; the sweep goes on with the others."""

    def sweep_end(self, summaries: Sequence[dict[str, Any] | None]) -> None:
        """The sweep ends (``None`` for a run that failed)."""


class SweepProgress:
    """Counts of a sweep's runs and an estimate of the time left (thread-safe)."""

    def __init__(self, total: int, skipped: int = 0) -> None:
        self.total, self.skipped = total, skipped
        self.parallel = 1
        self.running: dict[int, float] = {}  # run index -> start time
        self.durations: list[float] = []
        self.failed = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    @property
    def done(self) -> int:
        return len(self.durations)

    def start(self, index: int) -> None:
        with self._lock:
            self.running[index] = time.monotonic()

    def end(self, index: int, failed: bool = False) -> float:
        with self._lock:
            t0 = self.running.pop(index, time.monotonic())
            seconds = time.monotonic() - t0
            if failed:
                self.failed += 1
            else:
                self.durations.append(seconds)
            return seconds

    def eta(self) -> float | None:
        """Seconds left: the runs not started and the rest of those running, at the median
        duration of the finished runs, shared by ``parallel`` concurrent runs; None before a
        run finished."""
        with self._lock:
            if not self.durations:
                return None
            typical = statistics.median(self.durations)
            now = time.monotonic()
            waiting = self.total - self.skipped - self.done - self.failed - len(self.running)
            work = waiting * typical + sum(
                max(0.0, typical - (now - t0)) for t0 in self.running.values()
            )
            lanes = max(1, min(self.parallel, waiting + len(self.running)))
            return work / lanes

    def status(self) -> str:
        """``3/12 done, 2 running, 4 skipped, ETA 1m05s``."""
        eta = self.eta()
        parts = [f"{self.done + self.skipped}/{self.total} done", f"{len(self.running)} running"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        if self.failed:
            parts.append(f"{self.failed} failed")
        parts.append("ETA " + (format_seconds(eta) if eta is not None else "-"))
        return ", ".join(parts)


def format_seconds(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# ----------------------------------------------------------------------------- the driver


def completed_summary(run_dir: Path) -> dict[str, Any]:
    """A complete run's summary as its tables see it (read only, :func:`tables.load_run`)."""
    from simulations.tables import load_run

    return dict(load_run(run_dir).summary)


def run_sweep(
    runs: Sequence[SweepRun],
    *,
    root: Path,
    parallel: int = 1,
    redo: bool = False,
    hooks: Sequence[SweepHooks] = (),
    backend: str = "ray",
    jobs: int = 0,
    run_plots: bool = True,
) -> list[dict[str, Any]]:
    """Run the sweep (module docstring) and return each planned run's summary in plan order,
    those of skipped runs read from disk. Raises :class:`simulations.experiment.RunFailed`
    after the sweep when some runs failed, naming them (the others are complete and marked).

    ``backend``: ``ray`` (one Flower simulation on Ray, ``parallel`` runs at once) or ``local``
    (:func:`simulations.local.run_local_many`: ``jobs`` processes, no Ray; the runs' specs
    must have passed :func:`simulations.local.check_local`). Either backend writes the same
    run directories and completion records, so a sweep resumes across backends.
    ``run_plots`` False: runs skip their own plots (the sweep's tables and comparison plot
    are the caller's)."""
    import dataclasses

    from simulations import experiment
    from simulations.local import run_plots as plots_context

    if backend not in ("ray", "local"):
        raise ValueError(f"backend must be 'ray' or 'local', got {backend!r}")
    index = {} if redo else done_index(root)
    skipped = [r for r in runs if r.digest in index]
    pending = [r for r in runs if r.digest not in index]
    summaries: dict[int, dict[str, Any] | None] = {}
    failures: dict[int, BaseException] = {}
    for h in hooks:
        h.sweep_start(runs, skipped)
    for r in skipped:
        summary = completed_summary(index[r.digest])
        summaries[r.index] = summary
        for h in hooks:
            h.run_skipped(r, summary)
    started: dict[int, tuple[float, float]] = {}  # wall clock, driver thread's CPU clock
    lock = threading.Lock()

    def spec_of(run: SweepRun) -> Any:
        if run.spec is None:
            return run.config
        if run.spec.config != run.config:  # keys outside the spec filled in (tracking)
            return dataclasses.replace(run.spec, config=dict(run.config))
        return run.spec

    def on_start(p: int) -> None:
        for h in hooks:
            h.parallel_chosen(p)

    def on_run_start(i: int) -> None:
        with lock:  # called in the thread that serves the run, as on_run_end
            started[i] = (time.monotonic(), time.thread_time())
        for h in hooks:
            h.run_start(pending[i])

    def on_round(i: int, row: dict[str, Any]) -> None:
        for h in hooks:
            h.run_round(pending[i], row)

    def finish(i: int, summary: dict[str, Any], seconds: float, **cpu: Any) -> None:
        run = pending[i]
        mark_done(
            Path(summary.get("run-dir") or run.run_dir), run.digest, seconds, backend=backend, **cpu
        )
        summaries[run.index] = summary
        for h in hooks:
            h.run_end(run, summary, seconds)

    def on_run_end(i: int, summary: dict[str, Any]) -> None:
        with lock:
            t0, c0 = started.get(i, (time.monotonic(), time.thread_time()))
        finish(i, summary, time.monotonic() - t0, driver_cpu=time.thread_time() - c0)

    def on_run_error(i: int, error: BaseException) -> None:
        failures[i] = error
        for h in hooks:
            h.run_failed(pending[i], error)

    try:
        if pending and backend == "local":
            from simulations.local import run_local_many

            run_local_many(
                [spec_of(r) for r in pending],
                jobs=jobs,
                plots=run_plots,
                on_start=on_start,
                on_run_start=on_run_start,
                on_round=on_round,
                on_run_end=lambda i, summ, sec, cpu: finish(i, summ, sec, cpu=cpu),
                on_run_error=on_run_error,
            )
        elif pending:
            with plots_context(run_plots):
                try:
                    experiment.run_many(
                        [spec_of(r) for r in pending],
                        on_round=on_round,
                        on_run_end=on_run_end,
                        parallel=parallel,
                        on_run_start=on_run_start,
                        on_start=on_start,
                        on_run_error=on_run_error,
                    )
                except experiment.RunFailed as exc:
                    failures.update(exc.failures)
    finally:
        ordered = [summaries.get(r.index) for r in runs]
        for h in hooks:
            h.sweep_end(ordered)
    if failures:
        raise experiment.RunFailed(failures, {i: pending[i].name for i in failures})
    return [s for s in ordered if s is not None]
