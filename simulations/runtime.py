"""The one place that calls Flower's in-process simulation runtime.

``flwr.simulation.run_simulation`` warns that it is deprecated in flwr 1.41 ("use `flwr run`").
It is still the only way to run a simulation inside the calling process (no SuperLink, exit
status follows the ServerApp, results reachable through closures), which is what the CLI and the
tests need. Keeping the call here means moving to Flower's successor API touches this module
only; the ``flwr run`` path (``simulations.server_app:app`` / ``simulations.client_app:app``)
does not go through here.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

ACTOR_MAX_RESTARTS = 1000


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
) -> None:
    """Run ``server_app`` against ``num_workers`` worker supernodes on Ray.

    ``restart_crashed_workers=False`` gives Flower's plain behaviour (benchmark baselines).
    With ``RAY_ADDRESS`` set (``ray start --head`` ...), Ray attaches to that cluster and the
    workers are spread over its nodes; otherwise a local Ray instance is started and shut down.
    """
    from flwr.simulation import run_simulation

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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_workers,
            backend_name="ray",
            backend_config=dict(backend_config),
            verbose_logging=verbose,
        )
