"""The local backend of ``fedadapt simulate`` and ``fedadapt compare`` (``--backend local``):
runs without Ray.

The ServerApp body (:func:`simulations.server_app.serve`) and the ClientApp handlers
(:func:`simulations.client_app.handle_train`, :func:`~simulations.client_app.handle_warm_up`)
are the ones the Ray backend runs; here a :class:`LocalGrid` answers each message by calling the
handler in the same process, one message after another. Runs are seeded, so a run's
metrics.jsonl equals the Ray backend's row for row, wall-clock fields aside
(tests/simulations/test_local.py). What it saves is Ray's start-up, its worker processes'
imports and warm-up, and Flower's per-message transport (BENCHMARKS.md §6.1, §7.1).

A sweep (:func:`run_local_many`) runs in a pool of ``jobs`` processes (default: this machine's
CPUs), each running its runs one after another. **Torch threads:** the clients train at one
thread (the handlers set it, as in a Ray worker). A single run in the calling process
(:func:`run_local`, ``fedadapt simulate --backend local``) keeps the driver's aggregation and
evaluation at the process's count, as a Ray driver: :class:`LocalGrid` restores it after every
handler call, and the run's metrics are bitwise the Ray run's (tested). The pool's processes
run the driver at **one thread** too: they are forked from the command's process (its imports
inherited: no start-up per process), and an OpenMP pool used before a fork hangs the child
that uses more than one thread (seen here with 2); one thread per process is also what
``jobs`` = cores wants. So a sweep's results do not depend on ``--jobs`` (bitwise, tested);
against a Ray driver at N threads, server-side reductions over the clients' updates (the
update norms, the clip bound) may differ in the last bits (seen: ``server-clip-bound`` at
1e-15 relative, with every other metric equal).

What it cannot honour, refused before anything starts (:func:`check_local`): faults that need a
separate worker process (``faults.crash-fraction``, ``faults.hang-fraction``), a
``round-timeout`` other than the default (a handler call is not interrupted; the per-client
deadline ``client-timeout`` is checked inside the handler and works as on Ray), GPUs
(``client-num-gpus`` > 0) and deployment mode (``deployment = true``).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import pickle
import queue as queue_mod
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from simulations.config import KEYS, ConfigError

RowCallback = Callable[[dict[str, Any]], None]
BACKENDS = ("ray", "local")
# what --backend local refuses (the help and README list these)
REFUSED_TEXT = (
    "faults.crash-fraction / faults.hang-fraction > 0, a round-timeout other than "
    "the default, client-num-gpus > 0, deployment = true"
)


class LocalGrid:
    """A Flower Grid whose worker nodes are handler calls in this process."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self._node_ids = list(range(1, spec.runtime.num_workers + 1))
        self._replies: dict[str, Any] = {}
        self._ids = itertools.count(1)

    def get_node_ids(self) -> list[int]:
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        import torch
        from flwr.app import MessageType

        from simulations.client_app import handle_train, handle_warm_up

        ids = []
        driver_threads = torch.get_num_threads()  # the handlers set 1, as a Ray worker
        for msg in messages:
            mid = f"local-{next(self._ids)}"
            msg.metadata.__dict__["_message_id"] = mid
            kind = msg.metadata.message_type
            if kind == MessageType.TRAIN:
                reply = handle_train(msg, self.spec)
            elif kind == MessageType.QUERY:
                reply = handle_warm_up(msg, self.spec)
            else:  # fedadapt's ClientApp answers train and query only
                reply = None
            torch.set_num_threads(driver_threads)
            if reply is not None:
                self._replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        return [self._replies.pop(m) for m in list(message_ids) if m in self._replies]

    def send_and_receive(
        self, messages: Iterable[Any], *, timeout: float | None = None
    ) -> list[Any]:
        return self.pull_messages(self.push_messages(messages))


# ----------------------------------------------------------------------------- checks


def local_refusal(spec: Any) -> str | None:
    """Why the local backend cannot run ``spec`` as the Ray backend would (one line), or None."""
    cfg = spec.config
    for kind, why in (
        ("crash", "a crash ends a separate worker process"),
        ("hang", "a hang is cut off by the round timeout of a separate worker"),
    ):
        key = f"faults.{kind}-fraction"
        if float(cfg.get(key, 0.0) or 0.0) > 0:
            return f"run-config key {key!r} = {cfg[key]}: {why}"
    default_timeout = float(KEYS["round-timeout"].default)  # type: ignore[arg-type]
    if float(cfg.get("round-timeout", default_timeout)) != default_timeout:
        return (
            f"run-config key 'round-timeout' = {cfg['round-timeout']}: a handler call in "
            f"this process is not interrupted (accepted: the default {default_timeout:g}; "
            "'client-timeout' works)"
        )
    if float(cfg.get("client-num-gpus", 0.0) or 0.0) > 0:
        return (
            f"run-config key 'client-num-gpus' = {cfg['client-num-gpus']}: the local "
            "backend trains on CPU (accepted: 0)"
        )
    if bool(cfg.get("deployment", False)):
        return "run-config key 'deployment' = true: deployment mode needs SuperNodes"
    return None


def check_local(specs: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` (one line, naming the key) for the first setting of
    ``specs`` the local backend cannot honour (:data:`REFUSED_TEXT`)."""
    for spec in specs:
        why = local_refusal(spec)
        if why is not None:
            raise ConfigError(f"--backend local cannot honour {why}; use --backend ray")


def default_jobs() -> int:
    """Processes of a local sweep by default: this machine's CPUs (those this process may
    use)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# ----------------------------------------------------------------------------- one run


_PLOTS = {"on": True}


def _setup_process(run_plots: bool = True, driver_threads: int | None = None) -> None:
    """What a process needs before it serves runs locally: the driver's torch threads
    (module docstring; None: leave this process's count), the task identity Flower gives a
    ServerApp (messages need one to be built), Flower's known noise dropped, and whether runs
    draw their own plots."""
    import torch
    from flwr.supercore.task_identity import TaskIdentity

    from simulations.runtime import quiet_known_flower_noise

    if driver_threads is not None:
        torch.set_num_threads(max(1, driver_threads))
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    quiet_known_flower_noise()
    _PLOTS["on"] = run_plots


@contextlib.contextmanager
def run_plots(enabled: bool) -> Iterator[None]:
    """While inside, runs draw their own plots (``simulations.report.plot_run``) only when
    ``enabled`` (``fedadapt compare --no-run-plots`` skips them: 0.9 s a quickstart run)."""
    from simulations import report as report_mod

    if enabled:
        yield
        return
    original = report_mod.plot_run
    report_mod.plot_run = lambda *a, **k: None
    try:
        yield
    finally:
        report_mod.plot_run = original


def run_local(spec: Any, on_round: RowCallback | None = None) -> dict[str, Any]:
    """One run of a prepared :class:`~simulations.world.RunSpec` in this process (no Ray);
    returns its summary. Run :func:`check_local` first (the CLI does)."""
    from simulations.server_app import serve

    _setup_process(_PLOTS["on"], None)
    with run_plots(_PLOTS["on"]):
        return serve(LocalGrid(spec), spec, on_round)


# ----------------------------------------------------------------------------- a sweep


_EVENTS: Any = None  # the worker process's queue to the parent


def _worker_init(events: Any, plots: bool, driver_threads: int) -> None:
    global _EVENTS
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the pool
    _EVENTS = events
    _setup_process(plots, driver_threads)


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception that does not travel becomes its repr
        return RuntimeError(repr(exc))


def _worker_run(i: int, spec: Any) -> None:
    events = _EVENTS
    events.put(("start", i))
    t0, c0 = time.monotonic(), time.process_time()
    try:
        summary = run_local(spec, lambda row: events.put(("round", i, row)))
    except Exception as exc:  # noqa: BLE001 - reported with the run, the others go on
        events.put(("fail", i, _picklable(exc)))
        return
    events.put(("end", i, summary, time.monotonic() - t0, time.process_time() - c0))


def _pool_context() -> Any:
    """``fork`` where there is one (the workers inherit the parent's imports: no start-up per
    process; they set their torch threads before any torch work), else ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def run_local_many(
    specs: Sequence[Any],
    *,
    jobs: int = 0,
    plots: bool = True,
    driver_threads: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_run_start: Callable[[int], None] | None = None,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
    on_run_end: Callable[[int, dict[str, Any], float, float], None] | None = None,
    on_run_error: Callable[[int, BaseException], None] | None = None,
) -> list[dict[str, Any] | None]:
    """Every run of ``specs`` in a pool of ``jobs`` processes (0: :func:`default_jobs`), each
    running its runs one after another in-process. The hooks are called in THIS process, in
    this thread, as the workers report: ``on_start(jobs)``, ``on_run_start(i)``,
    ``on_round(i, row)``, ``on_run_end(i, summary, seconds, cpu_seconds)``,
    ``on_run_error(i, exc)``. A run that raises (or whose process dies) does not stop the
    others: its slot of the result is None (the caller names it). Ctrl-C terminates the pool's
    processes and re-raises. ``driver_threads``: torch threads of each process's driver
    (None: 1; more only with a ``spawn`` start method, module docstring). ``jobs = 1`` still runs in one worker process (a run's results
    are the same; the caller's process keeps its own torch threads)."""
    n = len(specs)
    results: list[dict[str, Any] | None] = [None] * n
    if n == 0:
        return results
    jobs = min(n, jobs or default_jobs())
    if on_start is not None:
        on_start(jobs)
    if driver_threads is None:  # forked processes: one thread (module docstring)
        driver_threads = 1
    ctx = _pool_context()
    events = ctx.Queue()
    finished: set[int] = set()
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(events, plots, driver_threads),
    )

    def handle(event: tuple[Any, ...]) -> None:
        kind, i = event[0], int(event[1])
        if kind == "start" and on_run_start is not None:
            on_run_start(i)
        elif kind == "round" and on_round is not None:
            on_round(i, event[2])
        elif kind == "end":
            finished.add(i)
            results[i] = event[2]
            if on_run_end is not None:
                on_run_end(i, event[2], float(event[3]), float(event[4]))
        elif kind == "fail":
            finished.add(i)
            if on_run_error is not None:
                on_run_error(i, event[2])

    try:
        futures: dict[Future[None], int] = {
            pool.submit(_worker_run, i, spec): i for i, spec in enumerate(specs)
        }
        while len(finished) < n:
            try:
                handle(events.get(timeout=0.2))
                continue
            except queue_mod.Empty:
                pass
            # a process that died (killed, out of memory) reports nothing: its runs failed
            for fut, i in futures.items():
                if i not in finished and fut.done() and fut.exception() is not None:
                    with contextlib.suppress(queue_mod.Empty):  # its last words first
                        while True:
                            handle(events.get(timeout=0.05))
                    if i not in finished:
                        finished.add(i)
                        if on_run_error is not None:
                            on_run_error(
                                i, RuntimeError(f"its worker process died: {fut.exception()!r}")
                            )
    except BaseException:
        _terminate(pool)
        raise
    pool.shutdown(wait=True)
    return results


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop every process of the pool now (Ctrl-C, an error in the parent): none outlives
    the command."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
