"""Kill and resume: a run with checkpoints is SIGKILLed mid-run, resumed from its last
checkpoint, and ends with exactly the model of the uninterrupted run (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.e2e.helpers import ROOT, env

pytestmark = pytest.mark.slow
# enough rounds after the kill point (round 3) that the run cannot finish between the poll
# that sees round 3's checkpoint and the kill: a steady round takes ~0.1 s here
ROUNDS = 20


def _cmd(out: Path, *extra: str) -> list[str]:
    return [
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
        f"num-server-rounds={ROUNDS}",
        "--set",
        "checkpoint-every=1",
        "--out",
        str(out),
        *extra,
    ]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    e = env()
    straight = tmp_path / "straight"
    done = subprocess.run(
        _cmd(straight), env=e, cwd=ROOT, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(killed),
        env=e,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    family: set[int] = set()
    try:
        deadline = time.time() + 300
        while not (killed / "checkpoints" / "round-000003.pt").exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint of round 3 in time"
            try:
                family.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.05)
        family.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its session
        proc.wait(timeout=30)
    finally:
        for pid in family:  # Ray daemons may have left the session: stop them by PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not (killed / "final_model.pt").exists()
    last = max(int(p.stem.split("-")[1]) for p in (killed / "checkpoints").glob("round-*.pt"))
    assert 3 <= last < ROUNDS

    resumed = subprocess.run(
        _cmd(killed, "--set", f"resume-from={killed / 'checkpoints' / 'latest.pt'}"),
        env=e,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(straight / "final_model.pt", weights_only=True)
    b = torch.load(killed / "final_model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(ROUNDS + 1))
    ref = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["accuracy"] for r in rows] == [r["accuracy"] for r in ref]
    assert [r["sampled-ids"] for r in rows[1:]] == [r["sampled-ids"] for r in ref[1:]]
