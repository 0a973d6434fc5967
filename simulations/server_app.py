"""Flower ServerApp for ``flwr run`` (``[tool.flwr.app.components] serverapp``).

The run config arrives in ``context.run_config`` (pyproject defaults + ``--run-config``); it is
validated first, so a malformed key stops the run before any round with a message naming it.
The federation's ``num-supernodes`` is not visible here: the strategy waits (with a time limit,
``worker-wait-timeout``) for the run config's worker count and otherwise names both settings.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from simulations.config import resolve
from simulations.experiment import serve

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = resolve(dict(context.run_config))
    summary = serve(grid, cfg)
    print(f"fedadapt: run directory {summary['run-dir']}")
