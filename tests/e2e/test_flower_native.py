"""A Flower app in the shape of Flower's PyTorch quickstart (tests/e2e/apps/quickstart) adopts
fedadapt by changing its strategy line: `flwr run` in simulation and against a SuperLink with
two SuperNodes, FedAvg vs FedAdapt(hd-mult), FedExP and FedHyper-G with the app's unchanged
standard ClientApp. Each trains like FedAvg, shows its round lines in the stream, and the
population shape with a standard client fails fast, naming the fix. Every process is stopped
by PID."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    BIN,
    ROOT,
    env,
    free_port,
    simulation_superlink,
    start,
    stop,
    wait_port,
)

APP = ROOT / "tests" / "e2e" / "apps" / "quickstart"
STRATEGIES = ["fedavg", "fedadapt-hd-mult", "fedexp", "fedhyper-g"]
ROUNDS = 3


def _flwr(args: list[str], e: dict[str, str], cwd: Path, timeout: float = 400):
    return subprocess.run(
        [str(BIN / "flwr"), *args], env=e, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _statuses(e: dict[str, str], cwd: Path, count: int) -> list[str]:
    statuses: list[str] = []
    for _ in range(60):
        ls = _flwr(["ls", "--format", "json"], e, cwd, timeout=60)
        runs = json.loads(ls.stdout[ls.stdout.find("{") :])["runs"]
        statuses = [str(r.get("status")) for r in runs]
        if len(statuses) >= count and all(s.startswith("finished") for s in statuses):
            break
        time.sleep(1)
    return statuses


def _run_all(tmp_path: Path, e: dict[str, str], target: str, extra: list[str]) -> dict:
    results = {}
    for name in [*STRATEGIES, "fedexp-population"]:
        out = tmp_path / f"{name}.json"
        run = _flwr(
            [
                "run",
                str(APP),
                target,
                "--stream",
                "--run-config",
                f"strategy='{name}' out='{out}' num-server-rounds={ROUNDS}",
                *extra,
            ],
            e,
            tmp_path,
        )
        stream = run.stdout + run.stderr
        results[name] = (json.loads(out.read_text()) if out.exists() else None, stream)
    return results


def _check(results: dict, statuses: list[str]) -> None:
    for name, (data, _) in results.items():  # shown with -s: the numbers behind the checks
        print(name, None if data is None else [round(v, 3) for v in data["accuracy"].values()])
    fedavg = results["fedavg"][0]
    assert fedavg is not None, results["fedavg"][1][-3000:]
    base = fedavg["accuracy"][str(ROUNDS)]
    assert base > 0.6, fedavg  # the task is learnable in three rounds
    for name in STRATEGIES:
        data, stream = results[name]
        assert data is not None, (name, stream[-4000:])
        acc = data["accuracy"][str(ROUNDS)]
        assert acc >= base - 0.05, (name, data["accuracy"], fedavg["accuracy"])
        assert f"[ROUND {ROUNDS}/{ROUNDS}]" in stream, (name, stream[-3000:])
        if name != "fedavg":
            assert "fedadapt: 2 sampled, 2 received, 0 failed" in stream, (name, stream[-3000:])
            last = data["train"][str(ROUNDS)]
            assert last["num-succeeded"] == 2 and "train_loss" in last, last
    data, stream = results["fedexp-population"]
    assert data is None  # the run stopped in round 1
    assert "read_train_message" in stream and "deployment" in stream, stream[-4000:]
    assert sorted(statuses) == sorted(
        ["finished:completed"] * len(STRATEGIES) + ["finished:failed"]
    ), statuses


@pytest.mark.slow
def test_quickstart_app_in_simulation(tmp_path):
    with simulation_superlink(tmp_path, "sim", cwd=tmp_path) as e:
        results = _run_all(
            tmp_path,
            e,
            "sim",
            ["--federation-config", "num-supernodes=2 client-resources-num-cpus=1"],
        )
        statuses = _statuses(e, tmp_path, len(results))
    _check(results, statuses)


@pytest.mark.slow
def test_quickstart_app_against_a_superlink_with_two_supernodes(tmp_path):
    home = tmp_path / "flwr-home"
    home.mkdir()
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "deploy"\n[superlink.deploy]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    e = env(home)
    procs = [
        start(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
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
            cwd=tmp_path,
        )
    ]
    try:
        wait_port(port)
        for i in range(2):
            procs.append(
                start(
                    [
                        str(BIN / "flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--port",
                        str(free_port()),
                        "--node-config",
                        f"partition-id={i} num-partitions=2",
                    ],
                    tmp_path / f"supernode{i}.log",
                    e,
                    cwd=tmp_path,
                )
            )
        results = _run_all(tmp_path, e, "deploy", [])
        statuses = _statuses(e, tmp_path, len(results))
    finally:
        for p in reversed(procs):
            stop(p)
    assert all(p.poll() is not None for p in procs)
    _check(results, statuses)
