"""Fault injection: with 20% of the clients faulty (raise, NaN weights, wrong shapes, hard
crash of the worker process, hang past the deadline) every round completes, every failure is in
metrics.jsonl with its reason, and the final accuracy stays within 2 points of the fault-free
run with the same seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.checks import resolve
from simulations.config import load_scenario
from simulations.reader import read
from tests.e2e.helpers import ROOT, env

pytestmark = pytest.mark.slow
BASE = ["--set", "num-clients=25", "--set", "round-timeout=30"]
FAULTS = [
    "--set",
    "faults.raise-fraction=0.04",
    "--set",
    "faults.nan-fraction=0.04",
    "--set",
    "faults.bad-shape-fraction=0.04",
    "--set",
    "faults.crash-fraction=0.04",
    "--set",
    "faults.hang-fraction=0.04",
]


def _run(out: Path, *extra: str) -> list[dict]:
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "simulate",
        "quickstart",
        *BASE,
        *extra,
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_twenty_percent_faulty_clients(tmp_path):
    cfg = resolve(
        {
            "num-clients": 25,
            **{
                f"faults.{k}-fraction": 0.04 for k in ("raise", "nan", "bad-shape", "crash", "hang")
            },
        },
        base=load_scenario("quickstart"),
    )
    plan = read(cfg).world.faults
    faulty = {c: plan.kind(c) for c in range(25) if plan.kind(c)}
    assert len(faulty) == 5  # exactly 20% of the population, one client per kind

    clean = _run(tmp_path / "clean")
    faults = _run(tmp_path / "faults", *FAULTS)
    rounds = int(cfg["num-server-rounds"])
    assert [r["round"] for r in faults] == list(range(rounds + 1))
    reasons: dict[str, set[int]] = {}
    for row in faults[1:]:
        assert row["num-succeeded"] > 0, row  # every round completes with a model update
        assert len(row["failed-ids"]) == len(row["failed-reasons"])
        assert all(reason for reason in row["failed-reasons"])
        for cid, reason in zip(row["failed-ids"], row["failed-reasons"], strict=True):
            assert cid in faulty, (cid, reason)  # only faulty clients fail
            reasons.setdefault(faulty[cid], set()).add(reason.split(":")[0])
        sampled_faulty = [
            c for c in row["sampled-ids"] if faulty.get(c) in ("raise", "nan", "bad-shape", "hang")
        ]
        assert set(sampled_faulty) <= set(row["failed-ids"])  # each one is reported
    assert {"raise", "nan", "bad-shape", "hang"} <= set(reasons), reasons
    assert reasons["raise"] == {"InjectedFault"}
    assert any("non-finite" in r for r in reasons["nan"])
    assert any("wrong array" in r for r in reasons["bad-shape"])
    assert any("deadline" in r for r in reasons["hang"])
    crash = next(c for c, k in faulty.items() if k == "crash")
    # the crash client killed its worker once; Ray restarted it, the message was re-sent
    assert any(crash in r["succeeded-ids"] for r in faults[1:])
    # nothing else was lost: the clean clients' rounds all succeeded too
    assert all(not r["failed-ids"] for r in clean[1:])
    assert abs(faults[-1]["accuracy"] - clean[-1]["accuracy"]) <= 0.02, (
        faults[-1]["accuracy"],
        clean[-1]["accuracy"],
    )
