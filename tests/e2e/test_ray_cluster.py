"""Scale-out on a Ray cluster: a head and a second node started here, a scenario attached to it
through RAY_ADDRESS and a sweep through `compare --address` (two runs at once), clients
executed on both nodes, every Ray process we started stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.helpers import ROOT, env, free_port

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def _ray_pids(*markers: str) -> list[int]:
    """PIDs of the processes our `ray start` calls made: those whose command line names our
    private temp dir or GCS port, and all their descendants (agents rename themselves to
    `ray::...`, so they are found through their parents)."""
    roots = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if any(m in part for part in cmd for m in markers):
                roots.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    out = set()
    for p in roots:
        out.add(p.pid)
        try:
            out.update(c.pid for c in p.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return sorted(out)


def _stop_pids(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(
            psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
            for p in pids
        ):
            time.sleep(0.2)


def test_scenario_runs_on_two_ray_nodes(tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="fa-ray-", dir="/tmp")  # short: Ray's socket paths
    port = free_port()
    e = env(RAY_USAGE_STATS_ENABLED="0")
    common = [
        "--num-cpus=1",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        "--min-worker-port=23000",
        "--max-worker-port=23999",
    ]
    started: set[int] = set()
    try:
        head = subprocess.run(
            [
                RAY,
                "start",
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--temp-dir={temp_dir}",
                f"--ray-client-server-port={free_port()}",
                *common,
            ],
            env=e,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert head.returncode == 0, head.stdout + head.stderr
        started.update(_ray_pids(temp_dir, f":{port}"))
        second = subprocess.run(
            [RAY, "start", f"--address=127.0.0.1:{port}", *common],
            env=e,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 0, second.stdout + second.stderr
        started.update(_ray_pids(temp_dir, f":{port}"))
        log = tmp_path / "workers.jsonl"
        out = tmp_path / "run"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "simulations.cli",
                "simulate",
                "quickstart",
                "--set",
                "num-clients=8",
                "--set",
                "clients-per-round=4",
                "--set",
                "num-server-rounds=3",
                "--set",
                "num-supernodes=2",
                "--set",
                f"worker-log={log}",
                "--out",
                str(out),
            ],
            env={**e, "RAY_ADDRESS": f"127.0.0.1:{port}"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )
        started.update(_ray_pids(temp_dir, f":{port}"))
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        nodes = {x["ray-node"] for x in lines}
        assert len(nodes) == 2, lines  # clients were trained on both Ray nodes
        served = sorted(c for x in lines for c in x["client-ids"])
        assert len(served) == 3 * 4
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["round"] == 3 and rows[-1]["num-succeeded"] == 4

        # a sweep on the same cluster (--address), two runs at once, each on its own workers
        sweep_log = tmp_path / "sweep-workers.jsonl"
        root = tmp_path / "sweep"
        sweep = subprocess.run(
            [
                sys.executable,
                "-m",
                "simulations.cli",
                "compare",
                "quickstart",
                "--strategies",
                "fedavg,fedadapt",
                "--seeds",
                "1",
                "--parallel",
                "2",
                "--address",
                f"127.0.0.1:{port}",
                "--out",
                str(root),
                "--set",
                "num-clients=8",
                "--set",
                "clients-per-round=4",
                "--set",
                "num-server-rounds=3",
                "--set",
                "num-supernodes=2",
                "--set",
                f"worker-log={sweep_log}",
            ],
            env=e,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )
        started.update(_ray_pids(temp_dir, f":{port}"))
        text = sweep.stdout + sweep.stderr
        assert sweep.returncode == 0, text[-3000:]
        assert "2 run(s) at once" in text
        events = [x.split()[0] for x in text.splitlines() if x.startswith(("[start]", "[done]"))]
        assert events[:2] == ["[start]", "[start]"], text[-3000:]  # both ran at once
        lines = [json.loads(x) for x in sweep_log.read_text().splitlines()]
        assert len({x["ray-node"] for x in lines}) == 2, lines
        for run_dir in (root / "fedavg" / "fedavg-seed0", root / "fedadapt" / "fedadapt-seed0"):
            rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            assert rows[-1]["round"] == 3 and rows[-1]["num-succeeded"] == 4
            assert (run_dir / "sweep-done.json").is_file()
    finally:
        started.update(_ray_pids(temp_dir, f":{port}"))
        _stop_pids(sorted(started))
        left = [
            p
            for p in _ray_pids(temp_dir, f":{port}")
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        assert not left, f"Ray processes left running: {left}"
