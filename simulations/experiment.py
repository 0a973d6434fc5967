"""The in-process run used by ``fedadapt simulate`` and ``fedadapt compare``.

The ServerApp body (:func:`simulations.server_app.serve`) and the ClientApp handlers
(:func:`simulations.client_app.handle_train`, :func:`~simulations.client_app.handle_warm_up`)
run here in one Flower simulation on Ray (through :mod:`simulations.runtime`), the same code
``flwr run`` starts from ``simulations.server_app:app`` / ``simulations.client_app:app``.
Configs are read once (:func:`simulations.world.read`) and checked before Ray starts
(:func:`simulations.world.check_before_workers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from simulations.config import Value, resolve
from simulations.runtime import quiet_known_flower_noise
from simulations.world import RUN_KEY, RunSpec, check_before_workers, read

# a worker actor imports this module when it unpickles the run's ClientApp: Flower's known
# noise (simulations.runtime.KNOWN_FLOWER_NOISE) is dropped there too
quiet_known_flower_noise()

RowCallback = Callable[[dict[str, Any]], None]


def run_experiment(cfg: Mapping[str, Value], on_round: RowCallback | None = None) -> dict[str, Any]:
    """``fedadapt simulate``: the ServerApp and ClientApp in this process on Ray."""
    return run_many([cfg], on_round=lambda _i, row: on_round(row) if on_round else None)[0]


def prepare(cfgs: list[Mapping[str, Value]]) -> list[RunSpec]:
    """Validate, read and check every config (raises ``ConfigError``); nothing starts."""
    specs = [read(resolve(c)) for c in cfgs]  # resolve is idempotent
    for spec in specs:
        check_before_workers(spec)
    first = specs[0].runtime
    for spec in specs[1:]:
        if (spec.runtime.client_num_cpus, spec.runtime.client_num_gpus) != (
                first.client_num_cpus, first.client_num_gpus):
            from simulations.config import ConfigError

            raise ConfigError("runs in one simulation must agree on 'client-num-cpus' and "
                              "'client-num-gpus'")
    return specs


def run_many(
    cfgs: list[Mapping[str, Value]],
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
    on_run_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Several runs, one after another, in ONE Flower simulation on Ray (``fedadapt compare``).

    Each run gets a fresh strategy, model and run directory; only Ray and the worker actors are
    shared, which saves Ray's start-up (about 15-25 s on 2 cores) per run. Workers find each
    message's run by its run key. Runs must agree on the worker resources.
    """
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from simulations.client_app import handle_train, handle_warm_up
    from simulations.runtime import run_in_process
    from simulations.server_app import serve

    specs = prepare(cfgs)
    by_key = {spec.run_key: spec for spec in specs}
    summaries: list[dict[str, Any]] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Any, context: Any) -> None:
        for i, spec in enumerate(specs):
            tell = (lambda row, i=i: on_round(i, row)) if on_round else None
            summary = serve(grid, spec, tell)
            summaries.append(summary)
            if on_run_end is not None:
                on_run_end(i, summary)

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
        num_workers=max(spec.runtime.num_workers for spec in specs),
        client_num_cpus=specs[0].runtime.client_num_cpus,
        client_num_gpus=specs[0].runtime.client_num_gpus,
    )
    if len(summaries) != len(cfgs):
        raise RuntimeError(
            f"the simulation ended after {len(summaries)} of {len(cfgs)} runs (see the log above)"
        )
    return summaries
