"""The one place that calls Flower's in-process simulation runtime.

``flwr.simulation.run_simulation`` warns that it is deprecated in flwr 1.41 ("use `flwr run`").
It is still the only way to run a simulation inside the calling process (no SuperLink, exit
status follows the ServerApp, results reachable through closures), which is what the CLI and the
tests need. Keeping the call here means moving to Flower's successor API touches this module
only; the ``flwr run`` path (``simulations.server_app:app`` / ``simulations.client_app:app``)
does not go through here.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

ACTOR_MAX_RESTARTS = 1000

# Flower messages that fedadapt's own use of Flower causes and that say nothing a user can act
# on; each is dropped by its text, on Flower's logger only, and nothing else is (issue 21 §5):
KNOWN_FLOWER_NOISE = (
    # run_simulation is deprecated in favour of `flwr run`, which needs a SuperLink: the
    # in-process run is what `fedadapt simulate`/`compare` and the tests are (module docstring)
    "`run_simulation` function is deprecated",
    # logged at WARNING by every worker actor on a normal shutdown of the simulation
    "Manually terminating",
)
# fedadapt switches Flower's federated evaluation off on purpose (evaluation runs on the
# server), so Flower's warning about it is dropped while the strategy is built
# (:func:`quiet_flower`, ``simulations.server_app.make_strategy``)
FRACTION_EVALUATE_NOTICE = "fraction_evaluate is set to 0.0"


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to drop
            return True
        return not any(f in text for f in self.fragments)


_NOISE_FILTER = _DropMessages(KNOWN_FLOWER_NOISE)


def quiet_known_flower_noise() -> None:
    """Drop :data:`KNOWN_FLOWER_NOISE` from Flower's logger in this process (idempotent; the
    worker actors call it too, when they import the run's ClientApp)."""
    flwr_logger = logging.getLogger("flwr")
    if _NOISE_FILTER not in flwr_logger.filters:
        flwr_logger.addFilter(_NOISE_FILTER)


@contextlib.contextmanager
def quiet_flower(*fragments: str) -> Iterator[None]:
    """While inside, Flower's logger drops records containing any of ``fragments``."""
    flt = _DropMessages(tuple(fragments))
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addFilter(flt)
    try:
        yield
    finally:
        flwr_logger.removeFilter(flt)


log = logging.getLogger(__name__)

# Flower 1.41's simulation engine hands queued messages to its Ray workers from one thread,
# ``vce_api.add_messages_to_queue``, which polls the LinkState and then sleeps a literal 0.1 s
# (no setting reaches it). A message the ServerApp pushes waits 50 ms on average, up to 100 ms,
# before a worker sees it: most of a steady round's gap to the in-process loop (BENCHMARKS.md §3).
ENGINE_POLL_S = 0.002
# The poll never takes more than this share of a core: with many supernodes one pass over the
# LinkState costs more, and the wait grows with it (at most Flower's 0.1 s).
ENGINE_POLL_DUTY = 0.2
_FLOWER_POLL = "f_stop.wait(0.1)"
_patch_lock = threading.Lock()
_active: list = [0, None]  # runs inside fast_engine_poll, and Flower's function to put back


def _fast_add_messages_to_queue(
    state: Any, queue: Any, nodes_mapping: Any, f_stop: threading.Event
) -> None:
    """Flower's ``add_messages_to_queue`` with a shorter, load-bounded wait between passes.

    The same loop (every node, at most one message per node per pass, into the same queue); the
    wait is ``ENGINE_POLL_S``, or ``(1 / ENGINE_POLL_DUTY - 1)`` times the last pass's duration
    when that is longer, capped at Flower's 0.1 s.
    """
    while not f_stop.is_set():
        t0 = time.perf_counter()
        for node_id in nodes_mapping.keys():
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        spent = time.perf_counter() - t0
        f_stop.wait(min(0.1, max(ENGINE_POLL_S, spent * (1.0 / ENGINE_POLL_DUTY - 1.0))))


@contextlib.contextmanager
def fast_engine_poll() -> Iterator[bool]:
    """While inside, Flower's engine polls for new messages every ~2 ms instead of 100 ms.

    Yields whether the adjustment is in place. It replaces ``add_messages_to_queue`` in
    ``flwr.server.superlink.fleet.vce.vce_api`` (a private function that ``run_api`` looks up
    when it starts the engine) only if its source still is the loop this was written against
    (it contains ``f_stop.wait(0.1)``); otherwise, e.g. after a Flower upgrade, it logs why and
    leaves Flower's loop alone. Nested and concurrent uses share it; Flower's original is put
    back when the last one exits.
    """
    try:
        from flwr.server.superlink.fleet.vce import vce_api
    except ImportError as exc:  # pragma: no cover - flwr is a dependency
        log.warning(
            "fedadapt: Flower's simulation engine not found (%s); its 100 ms poll is kept", exc
        )
        yield False
        return
    with _patch_lock:
        if _active[0] == 0:
            original = vce_api.add_messages_to_queue
            try:
                source = inspect.getsource(original)
            except (OSError, TypeError):
                source = ""
            if _FLOWER_POLL not in source or "get_message_ins" not in source:
                applied = False
            else:
                _active[1] = original
                vce_api.add_messages_to_queue = _fast_add_messages_to_queue
                applied = True
        else:  # already in place (nested, or another thread's run): share it
            applied = True
        if applied:
            _active[0] += 1
    if not applied:
        log.warning(
            "fedadapt: Flower's simulation engine no longer polls with %r (flwr %s); "
            "its message poll is left as Flower ships it",
            _FLOWER_POLL,
            _flwr_version(),
        )
        yield False
        return
    try:
        yield True
    finally:
        with _patch_lock:
            _active[0] -= 1
            if _active[0] == 0:  # the last one out puts Flower's back
                vce_api.add_messages_to_queue = _active[1]
                _active[1] = None


# Flower 1.41's engine serves its actor pool from ``ThreadPoolExecutor()`` threads, one
# blocking loop per actor (``vce_api.run_api``); Python's default pool size is
# min(32, CPUs + 4) of the DRIVER's machine, so on a Ray cluster with more actors than that the
# rest are never sent a message (a 2-CPU head node uses 6 actors of any cluster).
ENGINE_THREADS = 4096  # threads are made per actor only (one task each), never more


@contextlib.contextmanager
def every_actor_served() -> Iterator[bool]:
    """While inside, Flower's engine runs one thread per actor of its pool, whatever the
    driver's CPU count (the pool is sized from the cluster's resources). Yields whether the
    adjustment is in place: only while ``vce_api`` still builds its pool with
    ``ThreadPoolExecutor()`` (otherwise, after a Flower upgrade, Flower's is left alone)."""
    import concurrent.futures
    import functools

    try:
        from flwr.server.superlink.fleet.vce import vce_api
    except ImportError:  # pragma: no cover - flwr is a dependency
        yield False
        return
    original = getattr(vce_api, "ThreadPoolExecutor", None)
    with _patch_lock:
        if original is not concurrent.futures.ThreadPoolExecutor:  # already wide, or changed
            applied = False
        else:
            wide = functools.partial(
                concurrent.futures.ThreadPoolExecutor, max_workers=ENGINE_THREADS
            )
            setattr(vce_api, "ThreadPoolExecutor", wide)  # noqa: B010
            applied = True
    try:
        yield applied
    finally:
        if applied:
            with _patch_lock:
                setattr(vce_api, "ThreadPoolExecutor", original)  # noqa: B010


def _flwr_version() -> str:
    try:
        from importlib.metadata import version

        return version("flwr")
    except Exception:  # noqa: BLE001 - only for a log line
        return "unknown"


def ray_address() -> str | None:
    """An existing Ray cluster to attach to (``RAY_ADDRESS``), or None for a local one."""
    return os.environ.get("RAY_ADDRESS") or None


def run_in_process(
    server_app: Any,
    client_app: Any,
    *,
    num_workers: int,
    client_num_cpus: float,
    client_num_gpus: float,
    init_num_cpus: int | None = None,
    verbose: bool = False,
    restart_crashed_workers: bool = True,
    fast_poll: bool = True,
) -> None:
    """Run ``server_app`` against ``num_workers`` worker supernodes on Ray.

    ``restart_crashed_workers=False`` and ``fast_poll=False`` give Flower's plain behaviour
    (benchmark baselines); ``fast_poll`` shortens the engine's message poll (:func:`fast_engine_poll`).
    With ``RAY_ADDRESS`` set (``ray start --head`` ...), Ray attaches to that cluster and the
    workers are spread over its nodes; otherwise a local Ray instance is started and shut down.
    """
    from flwr.simulation import run_simulation

    quiet_known_flower_noise()
    # Ray warns (FutureWarning) that it will stop overriding CUDA_VISIBLE_DEVICES for actors
    # with num_gpus=0; opting into that behaviour now is Ray's non-deprecated path. Workers
    # choose CUDA from the run config (client-num-gpus > 0), not from what they can see.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    init_args: dict[str, Any] = {"include_dashboard": False}
    address = ray_address()
    if address:
        init_args["address"] = address
    elif init_num_cpus is not None:
        init_args["num_cpus"] = init_num_cpus
    backend_config: Mapping[str, Any] = {
        # Flower passes client_resources to Ray's actor .options(): max_restarts makes Ray
        # restart a worker actor that died from a hard crash (os._exit, segfault, OOM kill);
        # Flower itself would keep the dead actor in its pool and fail every later message
        # routed to it (FLOWER.md 6.2). The message in flight when it died is still lost.
        "client_resources": {
            "num_cpus": client_num_cpus,
            "num_gpus": client_num_gpus,
            **({"max_restarts": ACTOR_MAX_RESTARTS} if restart_crashed_workers else {}),
        },
        "init_args": init_args,
    }
    # Ray and Flower are chatty at INFO; keep the user's terminal for the progress bar.
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    poll = fast_engine_poll() if fast_poll else contextlib.nullcontext(False)
    with warnings.catch_warnings(), poll, every_actor_served():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_workers,
            backend_name="ray",
            backend_config=dict(backend_config),
            verbose_logging=verbose,
        )


def ray_worker_slots(client_num_cpus: float, wait_s: float = 0.0) -> int | None:
    """Worker actors the running Ray cluster holds, counted per node as Flower sizes its actor
    pool (CPUs of each node over ``client_num_cpus``); None when Ray is not initialised here
    within ``wait_s`` seconds (the simulation engine starts Ray after the ServerApp)."""
    try:
        import ray

        deadline = time.monotonic() + wait_s
        while not ray.is_initialized() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not ray.is_initialized():
            return None
        slots = 0
        for node in ray.nodes():
            res = node.get("Resources") or {}
            if node.get("Alive", True) and res:
                slots += int(float(res.get("CPU", 0)) / max(client_num_cpus, 1e-9))
        return slots or None
    except Exception:  # noqa: BLE001 - an estimate; the caller falls back to local CPUs
        return None
