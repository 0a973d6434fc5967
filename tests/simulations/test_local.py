"""The local backend (``--backend local``, :mod:`simulations.local`): the same results as
the Ray backend, the same in one process or several, resume across backends, refusals before
anything starts, and a failing run named while the others finish."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulations.cli import app

runner = CliRunner()
TINY = [
    "--set",
    "num-clients=8",
    "--set",
    "clients-per-round=4",
    "--set",
    "num-server-rounds=2",
    "--set",
    "eval-every=1",
]


def _rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock fields (the only ones allowed to differ)."""
    out = []
    for line in Path(run_dir, "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.append(
            {
                k: v
                for k, v in row.items()
                if not any(t in k for t in ("seconds", "time", "elapsed"))
            }
        )
    return out


def _compare(root: Path, *extra: str, strategies: str = "fedavg,fedadapt", seeds: int = 1):
    return runner.invoke(
        app,
        [
            "compare",
            "quickstart",
            "--strategies",
            strategies,
            "--seeds",
            str(seeds),
            "--out",
            str(root),
            *TINY,
            *extra,
        ],
    )


def _run_dirs(root: Path) -> dict[str, Path]:
    return {d.parent.name: d.parent for d in sorted(root.rglob("sweep-done.json"))}


def test_a_local_sweep_gives_the_same_runs_in_two_processes_as_in_one(tmp_path):
    one = _compare(tmp_path / "one", "--backend", "local", "--jobs", "1")
    two = _compare(tmp_path / "two", "--backend", "local", "--jobs", "2")
    assert one.exit_code == 0, one.output
    assert two.exit_code == 0, two.output
    runs_one, runs_two = _run_dirs(tmp_path / "one"), _run_dirs(tmp_path / "two")
    assert sorted(runs_one) == sorted(runs_two) == ["fedadapt-seed0", "fedavg-seed0"]
    for name, run_dir in runs_one.items():
        rows = _rows(run_dir)
        assert len(rows) == 3  # round 0 and 2 rounds
        assert rows == _rows(runs_two[name]), name
        done = json.loads((run_dir / "sweep-done.json").read_text())
        assert done["backend"] == "local"
    for root in ("one", "two"):
        assert (tmp_path / root / "comparison.md").is_file()


def test_a_failing_run_is_named_and_the_others_finish(tmp_path, monkeypatch):
    import simulations.server_app as server_app

    original = server_app.serve

    def serve(grid, spec, on_row=None):  # the pool's processes are forks: they see this
        if spec.strategy == "fedavg":
            raise RuntimeError("boom in fedavg")
        return original(grid, spec, on_row)

    monkeypatch.setattr(server_app, "serve", serve)
    result = _compare(tmp_path, "--backend", "local", "--jobs", "2", "--no-run-plots")
    assert result.exit_code == 1, result.output
    assert "fedavg seed 0" in result.output and "boom in fedavg" in result.output
    assert list(_run_dirs(tmp_path)) == ["fedadapt-seed0"]  # the other run finished
    # --no-run-plots: the run drew none of its own plots
    assert not list(_run_dirs(tmp_path)["fedadapt-seed0"].glob("*.png"))


@pytest.mark.parametrize(
    "command, setting, key",
    [
        ("compare", "faults.crash-fraction=0.2", "faults.crash-fraction"),
        ("compare", "faults.hang-fraction=0.2", "faults.hang-fraction"),
        ("simulate", "round-timeout=30", "round-timeout"),
        ("simulate", "client-num-gpus=0.5", "client-num-gpus"),
    ],
)
def test_local_refuses_what_it_cannot_honour_before_anything_starts(
    tmp_path, no_runs, monkeypatch, command, setting, key
):
    import simulations.local as local

    def boom(*args, **kwargs):  # pragma: no cover - reaching it is the failure
        raise AssertionError("a local run started despite a refused setting")

    monkeypatch.setattr(local, "run_local_many", boom)
    monkeypatch.setattr(local, "run_local", boom)
    args = ["--strategies", "fedavg"] if command == "compare" else []
    result = runner.invoke(
        app,
        [
            command,
            "quickstart",
            *args,
            "--out",
            str(tmp_path / "o"),
            *TINY,
            "--set",
            setting,
            "--backend",
            "local",
        ],
    )
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1, result.output
    assert key in lines[0] and "--backend ray" in lines[0]
    assert not (tmp_path / "o").exists()


def test_an_unknown_backend_and_an_address_for_local_are_refused(tmp_path, no_runs):
    bad = _compare(tmp_path, "--backend", "spark")
    assert bad.exit_code == 2 and "--backend 'spark'" in bad.output
    addr = _compare(tmp_path, "--backend", "local", "--address", "10.0.0.5:6379")
    assert addr.exit_code == 2 and "--address" in addr.output


@pytest.mark.slow
def test_local_runs_equal_ray_runs_and_resume_across_backends(tmp_path):
    """One short run on Ray and the same run locally: identical metrics rows, wall-clock
    fields aside; then a local sweep over the Ray sweep's folder skips the run Ray finished
    (same digest) and does the other."""
    ray = _compare(tmp_path / "ray", "--backend", "ray", strategies="fedadapt")
    assert ray.exit_code == 0, ray.output
    # the same run by `simulate --backend local` (in this process: the driver at this
    # process's torch threads, as the Ray driver)
    local_run = tmp_path / "local"
    local = runner.invoke(
        app,
        [
            "simulate",
            "quickstart",
            *TINY,
            "--set",
            "strategy=fedadapt",
            "--seed",
            "0",
            "--out",
            str(local_run),
            "--backend",
            "local",
        ],
    )
    assert local.exit_code == 0, local.output
    ray_run = _run_dirs(tmp_path / "ray")["fedadapt-seed0"]
    rows = _rows(ray_run)
    assert len(rows) == 3
    assert rows == _rows(local_run)

    before = (ray_run / "metrics.jsonl").stat().st_mtime_ns
    more = _compare(tmp_path / "ray", "--backend", "local", strategies="fedadapt", seeds=2)
    assert more.exit_code == 0, more.output
    assert "1 of 2 runs already complete" in more.output
    assert (ray_run / "metrics.jsonl").stat().st_mtime_ns == before
    assert json.loads((ray_run / "sweep-done.json").read_text())["backend"] == "ray"
    seed1 = _run_dirs(tmp_path / "ray")["fedadapt-seed1"]
    assert json.loads((seed1 / "sweep-done.json").read_text())["backend"] == "local"
