"""End to end in Flower's deployment runtime: one SuperLink, two SuperNodes, `flwr run`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

APP_MODULE = '''
"""Tiny app: FedAdapt on the server, the two documented client calls on the clients."""
import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

import fedadapt
from strategies import (ClientOutcome, EvaluateOutcome, FedAdapt, build_evaluate_reply,
                        build_train_reply, read_evaluate_message, read_train_message)

server = ServerApp()
client = ClientApp()


def make_model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def data(cid):
    g = torch.Generator().manual_seed(int(cid) % 1000)
    x = torch.randn(16, 4, generator=g)
    return x, x @ torch.ones(4, 2)


@server.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAdapt(server_optimizer="hd", server_options={"lr": 1.0, "hyper_lr": 1e-3},
                        client_optimizer="sgd", client_options={"lr": 0.05},
                        clients_per_round=2, min_available_nodes=2, seed=1, worker_wait_timeout=120,
                        fraction_evaluate=0.5, min_evaluate_nodes=1)
    result = strategy.start(grid, ArrayRecord(make_model().state_dict()),
                            num_rounds=int(context.run_config["num-rounds"]))
    last = result.train_metrics_clientapp[2]
    assert last["num-succeeded"] == 2 and last["num-failed"] == 0, last
    assert {a.dtype for a in result.arrays.values()} == {"float32"}
    assert "eval-loss" in result.evaluate_metrics_clientapp[2]


@client.train()
def train(msg: Message, context: Context) -> Message:
    model = make_model()
    plan = read_train_message(msg, model)
    outcomes = []
    for cid in plan.client_ids:
        plan.load_global(model)
        opt = plan.build_optimizer(model.parameters(), cid)
        x, y = data(cid)
        for _ in range(2):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
        outcomes.append(ClientOutcome(cid, model.state_dict(), len(x), float(loss.detach()),
                                      fedadapt.step_size_stats(opt)))
    return build_train_reply(msg, plan, outcomes)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    model = make_model()
    plan = read_evaluate_message(msg, model)
    plan.load_global(model)
    outs = []
    for cid in plan.client_ids:
        x, y = data(cid)
        with torch.no_grad():
            outs.append(EvaluateOutcome(cid, len(x), float(torch.nn.functional.mse_loss(model(x), y))))
    return build_evaluate_reply(msg, outs)
'''

PYPROJECT = """
[project]
name = "fedadapt-deploy-probe"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "fedadapt-tests"

[tool.flwr.app.components]
serverapp = "probe_app:server"
clientapp = "probe_app:client"

[tool.flwr.app.config]
num-rounds = 2
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    """Stop one process we started (and its own process group, which we created)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.slow
def test_two_rounds_of_fedadapt_in_a_real_deployment(tmp_path):
    home = tmp_path / "flwr-home"
    home.mkdir()
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (app / "probe_app.py").write_text(APP_MODULE)
    link = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def spawn(name: str, *cmd: str) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(
            list(cmd),
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(p)
        return p

    try:
        spawn(
            "superlink",
            str(BIN / "flower-superlink"),
            "--insecure",
            "--disable-runtime-dependency-installation",
            "--host",
            "127.0.0.1",
            "--port",
            str(link),
        )
        _wait_port(link, 60)
        for i in range(2):
            spawn(
                f"supernode{i}",
                str(BIN / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{link}",
                "--port",
                str(_free_port()),
                "--node-config",
                f"partition-id={i} num-partitions=2",
            )
        run = subprocess.run(
            [str(BIN / "flwr"), "run", str(app), "deploy", "--stream"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        ls = subprocess.run(
            [str(BIN / "flwr"), "ls", "--format", "json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        text = ls.stdout[ls.stdout.find("{") :]
        runs = json.loads(text)["runs"]
        statuses = [r.get("status") for r in runs]
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert statuses == ["finished:completed"], (
            statuses,
            run.stdout[-4000:],
            run.stderr[-2000:],
        )
    finally:
        for p in reversed(procs):
            _stop(p)
