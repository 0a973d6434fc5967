"""Deployment runtime with TLS on localhost: a throw-away CA, a SuperLink and two SuperNodes,
two rounds of the FedAdapt app through `flwr run`, completion read from `flwr ls`, every
process stopped by PID (also when the test fails)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT, env, free_port, start, stop, wait_port
from tests.e2e.tls import make_certificates

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def test_two_rounds_over_tls(tmp_path):
    certs = make_certificates(tmp_path)
    home = tmp_path / "flwr-home"
    home.mkdir()
    port = free_port()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "tls"\n[superlink.tls]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{certs["ca"]}"\n'
    )
    e = env(home)
    out = tmp_path / "run"
    scenario = tmp_path / "deploy.toml"
    scenario.write_text(
        'scenario = "deploy-tls"\ndeployment = true\nnum-clients = 2\nclients-per-round = 2\n'
        f'num-server-rounds = 2\nworker-wait-timeout = 90.0\nout-dir = "{out}"\n'
    )
    procs = []
    try:
        procs.append(
            start(
                [
                    str(BIN / "flower-superlink"),
                    "--ssl-ca-certfile",
                    str(certs["ca"]),
                    "--ssl-certfile",
                    str(certs["cert"]),
                    "--ssl-keyfile",
                    str(certs["key"]),
                    "--disable-runtime-dependency-installation",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--database",
                    str(home / "state.db"),
                ],
                tmp_path / "superlink.log",
                e,
            )
        )
        wait_port(port)
        for i in range(2):
            procs.append(
                start(
                    [
                        str(BIN / "flower-supernode"),
                        "--root-certificates",
                        str(certs["ca"]),
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--port",
                        str(free_port()),
                        "--node-config",
                        f"partition-id={i} num-partitions=2",
                    ],
                    tmp_path / f"supernode{i}.log",
                    e,
                )
            )
        run = subprocess.run(
            ["flwr", "run", ".", "tls", "--run-config", str(scenario), "--stream"],
            env=e,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=500,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        status = None
        for _ in range(60):
            ls = subprocess.run(
                ["flwr", "ls", "tls", "--format", "json"],
                env=e,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            runs = json.loads(ls.stdout).get("runs", [])
            status = runs[0]["status"] if runs else None
            if status and status.startswith("finished"):
                break
            time.sleep(1)
        logs = "".join(
            (tmp_path / n).read_text(errors="replace")[-2000:]
            for n in ("superlink.log", "supernode0.log")
        )
        assert status == "finished:completed", (status, run.stdout[-2000:], logs)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rows] == [0, 1, 2]
        assert rows[-1]["num-succeeded"] == 2 and rows[-1]["failed-ids"] == []
    finally:
        for p in reversed(procs):
            stop(p)
    assert all(p.poll() is not None for p in procs)
