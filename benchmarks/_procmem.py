"""Shared helpers of the simulation benchmarks: run a child process, sample the memory of its
whole process tree, parse the child's JSON result line, clean up leftovers.

``TreeSampler`` sums the resident set size (RSS) over a process and all its descendants (with
an in-process Ray: the driver, ``gcs_server``, ``raylet``, the worker actors and Ray's agents)
every ``interval`` seconds in a thread and keeps the peak. Shared pages (Ray's object store in
``/dev/shm``, shared libraries) count once per process that maps them, so the sum is an upper
bound of the memory really used; the sum of PSS (proportional set size, shared pages split
between the processes that map them, from ``/proc/PID/smaps_rollup``) is sampled alongside. psutil (installed with Ray) is used when importable, else
``/proc``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

try:  # pragma: no cover - psutil comes with ray
    import psutil
except ImportError:  # pragma: no cover
    psutil = None  # type: ignore[assignment]

RESULT_PREFIX = "BENCH-RESULT "
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_proc(pid: int) -> list[int]:
    """Descendants of ``pid`` from /proc (fallback when psutil is missing)."""
    parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parent.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in parent.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _rss_proc(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            return [pid] + [c.pid for c in proc.children(recursive=True)]
        except psutil.Error:
            return []
    return [pid] + _children_proc(pid)


def _pss_proc(pid: int) -> int:
    """Proportional set size (shared pages split between their users) from smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            parts = [p.decode(errors="replace") for p in fh.read().split(b"\0") if p]
    except OSError:
        return "?"
    if not parts:
        return "?"
    first = parts[0].rsplit("/", 1)[-1]
    if first.startswith("python") and len(parts) > 1:
        rest = [p for p in parts[1:] if not p.startswith("-")]
        return (first + " " + (rest[0].rsplit("/", 1)[-1] if rest else parts[1]))[:60]
    return first[:60]


def tree_rss(pid: int, detail: bool = False) -> tuple[int, int, int, list[tuple[str, int]]]:
    """(sum of RSS, sum of PSS, number of processes, [(name, rss)] if ``detail``) over
    ``pid``'s process tree, in bytes."""
    total, pss, count, rows = 0, 0, 0, []
    for p in tree_pids(pid):
        if psutil is not None:
            try:
                rss = psutil.Process(p).memory_info().rss
            except psutil.Error:
                continue
        else:
            rss = _rss_proc(p)
        if not rss:
            continue
        total += rss
        pss += _pss_proc(p)
        count += 1
        if detail:
            rows.append((_name(p), rss))
    return total, pss, count, rows


class TreeSampler:
    """Peak of :func:`tree_rss` over time, sampled by a daemon thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self.peak_procs = 0
        self.peak_detail: list[tuple[str, int]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss, n, rows = tree_rss(self.pid, detail=True)
            self.samples += 1
            if rss > self.peak:
                self.peak, self.peak_procs, self.peak_detail = rss, n, rows
            self.peak_pss = max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def flower_cli_env(flwr_home: str) -> dict[str, str]:
    """Environment of a ``fedadapt``/``flwr`` command a benchmark starts: no telemetry, update
    check or runtime dependency installation, ``FLWR_HOME`` in the benchmark's own folder."""
    env = dict(os.environ)
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        MPLBACKEND="Agg",
        RAY_USAGE_STATS_ENABLED="0",
        FLWR_HOME=flwr_home,
        PYTHONUNBUFFERED="1",
    )
    return env


def child_env(extra_path: Sequence[str] = ()) -> dict[str, str]:
    """Environment of a benchmark child: a local Ray (no RAY_ADDRESS), one torch thread, the
    benchmark directory importable by the driver AND by Ray's workers (they inherit it)."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    env["RAY_DEDUP_LOGS"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    paths = [str(Path(p).resolve()) for p in extra_path]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_child(
    module: str,
    func: str,
    args: dict,
    *,
    timeout: float,
    sample_memory: bool = False,
    log_path: str | None = None,
) -> dict:
    """Run ``module.func(args)`` in a fresh Python (module importable from benchmarks/) and
    return the dict it printed as ``BENCH-RESULT {json}``, plus ``peak-rss-bytes`` of its
    whole process tree when ``sample_memory``. The child's output goes to ``log_path``."""
    here = Path(__file__).resolve().parent
    code = f"import json, sys; import {module} as m; m.{func}(json.loads(sys.argv[1]))"
    cmd = [sys.executable, "-c", code, json.dumps(args)]
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    t0 = time.time()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=log,
        env=child_env([str(here)]),
        cwd=str(here.parent),
        text=True,
    )
    sampler = TreeSampler(proc.pid) if sample_memory else None
    if sampler:
        sampler.__enter__()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, _ = proc.communicate()
        raise RuntimeError(f"{module}.{func}({args}) timed out after {timeout}s") from None
    finally:
        if sampler:
            sampler.__exit__()
        if log_path:
            log.close()  # type: ignore[union-attr]
    result = None
    for line in out.splitlines():
        if log_path:
            with open(log_path, "a") as fh:
                fh.write(line + "\n")
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
    if proc.returncode != 0 or result is None:
        raise RuntimeError(
            f"{module}.{func} exited with {proc.returncode} and "
            f"{'no' if result is None else 'a'} result; see {log_path or 'its output'}"
        )
    result["driver-wall"] = time.time() - t0
    if sampler:
        result["peak-rss-bytes"] = sampler.peak
        result["peak-pss-bytes"] = sampler.peak_pss
        result["peak-procs"] = sampler.peak_procs
        result["peak-detail"] = sorted(sampler.peak_detail, key=lambda r: -r[1])
        result["mem-samples"] = sampler.samples
    return result


def kill_tree(pid: int) -> None:
    """Kill ``pid`` and its descendants (only processes this benchmark started)."""
    for p in reversed(tree_pids(pid)):
        try:
            os.kill(p, 9)
        except OSError:
            pass


def set_grid_pull_interval(seconds: float) -> None:
    """What-if for fedadapt's side: flwr's in-memory Grid polls for replies every ``seconds``
    instead of its default 0.1 (what ``serve`` could do itself with ``grid.pull_interval``)."""
    from flwr.superlink.grid import inmemory_grid

    original = inmemory_grid.InMemoryGrid.__init__

    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        self.pull_interval = seconds

    inmemory_grid.InMemoryGrid.__init__ = init  # type: ignore[method-assign]


def emit(result: dict) -> None:
    """The child's result line for :func:`run_child`."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def process_start_time() -> float:
    """Epoch seconds at which this process started (psutil, else /proc)."""
    if psutil is not None:
        return float(psutil.Process().create_time())
    with open("/proc/self/stat") as fh:  # pragma: no cover
        start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as fh:  # pragma: no cover
        btime = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
    return btime + start_ticks / os.sysconf("SC_CLK_TCK")


def round_times(stamps: Sequence[float], start: float) -> dict:
    """From end-of-round stamps (index 0 = round 0 = before training), the start-up (process
    start to the end of round 1) and the steady seconds per round (median of rounds 2..N)."""
    import statistics

    per_round = [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)]
    steady = per_round[1:]
    return {
        "startup": stamps[1] - start if len(stamps) > 1 else None,
        "round0": stamps[0] - start if stamps else None,
        "per-round": per_round,
        "steady": statistics.median(steady) if steady else None,
    }
