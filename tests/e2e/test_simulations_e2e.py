"""End to end: the CLI on Flower's Ray simulation runtime, and the same apps through `flwr run`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT, env, flwr_run_tiny

pytestmark = pytest.mark.slow


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_simulate_quickstart_small(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "simulate",
        "quickstart",
        "--set",
        "num-clients=4",
        "--set",
        "clients-per-round=4",
        "--set",
        "num-server-rounds=2",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _rows(out)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["num-succeeded"] == 4 and rows[2]["failed-ids"] == []
    assert sorted(rows[1]["sampled-ids"]) == [0, 1, 2, 3]
    assert rows[2]["accuracy"] > rows[0]["accuracy"]
    assert rows[2]["server-lr"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final-accuracy"] == pytest.approx(rows[2]["accuracy"])
    for name in ("config.json", "accuracy.png", "steps.png", "final_model.pt"):
        assert (out / name).stat().st_size > 0


def test_flwr_run_scenario_completes(tmp_path):
    """`flwr run` exits 0 even for a failed run: the status comes from `flwr ls`."""
    out = tmp_path / "run"
    with flwr_run_tiny(tmp_path, out) as (run, e):
        status = None
        for _ in range(30):
            ls = subprocess.run(
                ["flwr", "ls", "--format", "json"],
                env=e,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            runs = json.loads(ls.stdout)["runs"]
            status = runs[0]["status"] if runs else None
            if status and status.startswith("finished"):
                break
            time.sleep(1)
        assert status == "finished:completed", (status, run.stdout[-3000:])
        rows = _rows(out)
        assert [r["round"] for r in rows] == [0, 1, 2]
        assert rows[-1]["num-succeeded"] == 4
