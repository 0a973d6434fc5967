"""The in-process run used by ``fedadapt simulate`` and ``fedadapt compare``.

The ServerApp body (:func:`simulations.server_app.serve`) and the ClientApp handlers
(:func:`simulations.client_app.handle_train`, :func:`~simulations.client_app.handle_warm_up`)
run here in one Flower simulation on Ray (through :mod:`simulations.runtime`), the same code
``flwr run`` starts from ``simulations.server_app:app`` / ``simulations.client_app:app``.
Configs are read once (:func:`simulations.reader.read`) and checked before Ray starts
(:func:`simulations.preflight.check_before_workers`).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from simulations.checks import resolve
from simulations.config import Value
from simulations.preflight import check_before_workers
from simulations.reader import read
from simulations.runtime import quiet_known_flower_noise
from simulations.settings import RUN_KEY, RunSpec

# a worker actor imports this module when it unpickles the run's ClientApp: Flower's known
# noise (simulations.runtime.KNOWN_FLOWER_NOISE) is dropped there too
quiet_known_flower_noise()

RowCallback = Callable[[dict[str, Any]], None]


def run_experiment(
    cfg: Mapping[str, Value] | RunSpec, on_round: RowCallback | None = None
) -> dict[str, Any]:
    """``fedadapt simulate``: the ServerApp and ClientApp in this process on Ray. ``cfg``: a
    :class:`RunSpec` from :func:`prepare` (not checked again) or a config (prepared here)."""
    return run_many([cfg], on_round=lambda _i, row: on_round(row) if on_round else None)[0]


def prepare(cfgs: Sequence[Mapping[str, Value]]) -> list[RunSpec]:
    """Validate, read and check every config (raises ``ConfigError``); nothing starts. The
    CLI calls it once per command and hands the specs on (:func:`run_many` takes them)."""
    specs = [read(resolve(c)) for c in cfgs]  # resolve is idempotent
    for spec in specs:
        check_before_workers(spec)
    _check_same_resources(specs)
    return specs


def _as_specs(items: Sequence[Mapping[str, Value] | RunSpec]) -> list[RunSpec]:
    """Prepared specs as they are; configs prepared (read and pre-flighted) here."""
    if all(isinstance(x, RunSpec) for x in items):
        specs = [x for x in items if isinstance(x, RunSpec)]
        _check_same_resources(specs)
        return specs
    return prepare([x.config if isinstance(x, RunSpec) else x for x in items])


def _check_same_resources(specs: Sequence[RunSpec]) -> None:
    if not specs:
        return
    first = specs[0].runtime
    for spec in specs[1:]:
        if (spec.runtime.client_num_cpus, spec.runtime.client_num_gpus) != (
            first.client_num_cpus,
            first.client_num_gpus,
        ):
            from simulations.config import ConfigError

            raise ConfigError(
                "runs in one simulation must agree on 'client-num-cpus' and 'client-num-gpus'"
            )


class SlotGrid:
    """One concurrent run's view of the shared Flower ``Grid``: only its own worker nodes.

    ``run_many(parallel=P)`` starts ``P * width`` worker supernodes and gives slot ``i`` the
    nodes ``sorted(ids)[i*width:(i+1)*width]`` once all of them registered (before that it
    reports none, so a run never starts on another slot's nodes). Everything else (push, pull,
    the run) goes to the shared grid: Flower 1.41's ``InMemoryGrid`` keeps no state of its own
    besides the run, and its ``InMemoryLinkState`` guards every read and write with one lock
    (the engine's worker threads and the ServerApp thread already use it concurrently).
    """

    def __init__(self, grid: Any, slot: int, width: int, total: int) -> None:
        self._grid = grid
        self.slot, self.width, self.total = slot, width, total
        self._nodes: list[int] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def get_node_ids(self) -> list[int]:
        # until every node registered: look again every 10 ms for up to 0.5 s before answering
        # none (the callers' own wait polls every 0.5 s; registration takes milliseconds)
        deadline = time.monotonic() + 0.5
        while self._nodes is None:
            ids = sorted(int(n) for n in self._grid.get_node_ids())
            if len(ids) >= self.total:
                self._nodes = ids[self.slot * self.width : (self.slot + 1) * self.width]
            elif time.monotonic() >= deadline:
                return []
            else:
                time.sleep(0.01)
        return list(self._nodes)


_BUILD_LOCK = threading.RLock()
_PLOT_LOCK = threading.RLock()


@contextlib.contextmanager
def driver_thread_safety() -> Iterator[None]:
    """While inside, what is not thread-safe in a run's driver runs one thread at a time.

    - Model builds: a model's seeded initialisation (``simulations.models.build_model``, a
      custom factory in ``ModelSpec.build``) seeds torch's process-wide generator inside
      ``fork_rng``; two driver threads building at once would draw from each other's seed.
      Everything else a run's driver draws comes from its own seeded generators
      (``fedadapt.seeding``).
    - A run's plots (``simulations.report.plot_run``, when the run ends): matplotlib is not
      thread-safe (two runs ending together failed in its text layout, ``pop from empty list``
      and a mathtext ``ParseException``).
    """
    from simulations import report as report_mod
    from simulations import settings as settings_mod

    original_build = settings_mod.ModelSpec.build
    original_plot = report_mod.plot_run

    def build(self: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
        with _BUILD_LOCK:
            return original_build(self, input_shape, num_classes)

    def plot_run(*args: Any, **kwargs: Any) -> Any:
        with _PLOT_LOCK:
            return original_plot(*args, **kwargs)

    settings_mod.ModelSpec.build = build  # type: ignore[method-assign]
    report_mod.plot_run = plot_run
    try:
        yield
    finally:
        settings_mod.ModelSpec.build = original_build  # type: ignore[method-assign]
        report_mod.plot_run = original_plot


def _warm_worlds(specs: list[RunSpec]) -> None:
    """Build, in this thread, every world the runs evaluate on (data source, partitions of the
    evaluation panel, test set), so concurrent driver threads only read them."""
    from simulations.server_app import panel_ids
    from simulations.world import world

    seen: set[str] = set()
    for spec in specs:
        key = spec.world.key()
        if key in seen:
            continue
        seen.add(key)
        w = world(spec.world)
        w.source.test_set()
        for cid in panel_ids(spec.evaluation):
            w.source.get(cid)


class RunFailed(RuntimeError):
    """Some runs of :func:`run_many` raised; the others finished and wrote their results."""

    def __init__(
        self, failures: dict[int, BaseException], names: Mapping[int, str] | None = None
    ) -> None:
        self.failures = failures
        if names:  # every failed run by name (a sweep's)
            listed = "; ".join(
                f"{names.get(i, f'run {i + 1}')}: {failures[i]!r}" for i in sorted(failures)
            )
            super().__init__(f"{len(failures)} run(s) failed: {listed}")
            return
        first = min(failures)
        super().__init__(f"{len(failures)} run(s) failed; run {first + 1}: {failures[first]!r}")


def run_many(
    cfgs: Sequence[Mapping[str, Value] | RunSpec],
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
    on_run_end: Callable[[int, dict[str, Any]], None] | None = None,
    *,
    parallel: int = 1,
    on_run_start: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_run_error: Callable[[int, BaseException], None] | None = None,
) -> list[dict[str, Any]]:
    """Several runs in ONE Flower simulation on Ray (``fedadapt compare``), ``parallel`` at once.
    ``cfgs``: the :class:`RunSpec` s of :func:`prepare` (used as they are: a command reads and
    pre-flights its configs once) or configs (prepared here).

    Each run gets a fresh strategy, model and run directory; only Ray and the worker actors are
    shared, which saves Ray's start-up (about 15-25 s on 2 cores) per run. Workers find each
    message's run by its run key. Runs must agree on the worker resources.

    ``parallel`` > 1 serves that many runs at once from the ServerApp (one thread each, a
    queue of runs), each on its own ``width`` worker supernodes (:class:`SlotGrid`), while the
    Ray actors are one pool: one run's aggregation, evaluation and start overlap another's
    training. ``parallel = 0``: as many as the Ray cluster's worker slots (CPUs over
    ``client-num-cpus``) hold runs of ``width`` workers (:func:`simulations.sweep.auto_parallel`). A run's results do not depend on which
    nodes or how many runs share the cluster (runs are seeded; tests/simulations/test_sweep.py).

    ``on_start(p)`` is called with the number of concurrent runs once Ray is up,
    ``on_run_start(i)`` when run ``i`` starts, ``on_run_end(i, summary)`` when it ends. With
    ``parallel`` != 1 a run that raises does not stop the others (``on_run_error(i, exc)``);
    :class:`RunFailed` names it at the end. ``parallel = 1`` is the sequential behaviour
    before: a run that raises ends the simulation.
    """
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from simulations.client_app import handle_train, handle_warm_up
    from simulations.runtime import ray_worker_slots, run_in_process
    from simulations.server_app import serve
    from simulations.sweep import auto_parallel

    specs = _as_specs(cfgs)
    by_key = {spec.run_key: spec for spec in specs}
    results: dict[int, dict[str, Any]] = {}
    failures: dict[int, BaseException] = {}
    width = max(spec.runtime.num_workers for spec in specs)
    client_num_cpus = specs[0].runtime.client_num_cpus
    if parallel < 0:
        raise ValueError(f"parallel must be >= 0, got {parallel}")
    # supernodes: enough for the most runs that may run at once (auto decides once Ray is up)
    most = min(
        len(specs),
        parallel if parallel > 0 else auto_parallel(None, width, client_num_cpus, len(specs)),
    )
    server_app = ServerApp()

    def one(grid: Any, i: int) -> None:
        spec = specs[i]
        if on_run_start is not None:
            on_run_start(i)
        tell = (lambda row: on_round(i, row)) if on_round else None
        if parallel == 1:
            summary = serve(grid, spec, tell)
            results[i] = summary
            if on_run_end is not None:
                on_run_end(i, summary)
            return
        try:
            summary = serve(grid, spec, tell)
        except Exception as exc:  # noqa: BLE001 - reported with the run, the others go on
            import logging

            logging.getLogger(__name__).error(
                "run %d (%s) failed: %r", i + 1, spec.output.directory(), exc
            )
            failures[i] = exc
            if on_run_error is not None:
                on_run_error(i, exc)
            return
        results[i] = summary
        if on_run_end is not None:
            on_run_end(i, summary)

    @server_app.main()
    def _main(grid: Any, context: Any) -> None:
        p = most
        if parallel == 0:  # the cluster is up now: its real worker slots
            wait = specs[0].runtime.worker_wait_timeout
            p = min(
                most,
                auto_parallel(
                    ray_worker_slots(client_num_cpus, wait), width, client_num_cpus, len(specs)
                ),
            )
        if on_start is not None:
            on_start(p)
        if p <= 1:
            for i in range(len(specs)):
                one(grid, i)
            return
        _warm_worlds(specs)
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(specs)):
            todo.put(i)

        def slot(k: int) -> None:
            view = SlotGrid(grid, k, width, most * width)
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                one(view, i)

        with driver_thread_safety():
            threads = [
                threading.Thread(target=slot, args=(k,), name=f"fedadapt-run-{k}", daemon=True)
                for k in range(p)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    client_app = ClientApp()

    def spec_of(msg: Any) -> RunSpec | None:
        key = msg.content["config"].get(RUN_KEY) if "config" in msg.content else None
        return by_key.get(str(key))

    @client_app.train()
    def _train(msg: Any, context: Any) -> Any:
        from strategies import error_reply

        spec = spec_of(msg)
        if spec is None:
            return error_reply(msg, "train message names no known run key")
        return handle_train(msg, spec)

    @client_app.query()
    def _query(msg: Any, context: Any) -> Any:
        from strategies import error_reply

        spec = spec_of(msg)
        if spec is None:
            return error_reply(msg, "query message names no known run key")
        return handle_warm_up(msg, spec)

    run_in_process(
        server_app,
        client_app,
        num_workers=most * width if most > 1 else width,
        client_num_cpus=client_num_cpus,
        client_num_gpus=specs[0].runtime.client_num_gpus,
    )
    if failures:
        raise RunFailed(failures)
    if len(results) != len(cfgs):
        raise RuntimeError(
            f"the simulation ended after {len(results)} of {len(cfgs)} runs (see the log above)"
        )
    return [results[i] for i in range(len(cfgs))]
