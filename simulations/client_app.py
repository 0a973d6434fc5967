"""Flower ClientApp for ``flwr run`` (``[tool.flwr.app.components] clientapp``).

A worker supernode serves the client ids listed in each train message (simulation mode), or is
itself one client (deployment mode: the client id is the node id). Every exception is caught and
reported in the reply, so a failing client never kills its Ray actor.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from simulations.config import resolve
from simulations.experiment import handle_train, handle_warm_up

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    return handle_train(msg, resolve(dict(context.run_config)), dict(context.node_config))


@app.query()
def query(msg: Message, context: Context) -> Message:
    return handle_warm_up(msg, resolve(dict(context.run_config)))
