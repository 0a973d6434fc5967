"""Every option a run will use is built on a dummy before Ray starts (docs/BAD_INPUTS.md,
"Options built before any worker"): a bad one ends the command with exit status 2 and one
line naming the key and what it accepts, never a traceback from round 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulations.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("no_runs")  # tests/simulations/conftest.py


def _sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


CASES = {
    "server option unknown": (
        _sets('server-options={"hyper_lrr": 0.1}'),
        ["'server-options'", "hyper_lrr", "accepted", "hyper_lr"],
    ),
    "server option bad value": (
        _sets('server-options={"hyper_lr": "fast"}'),
        ["'server-options'", "hyper_lr"],
    ),
    "server option of a Flower strategy": (
        _sets("strategy=fedexp", 'server-options={"bogus": 1}'),
        ["'strategy' ('fedexp') and its options", "bogus"],
    ),
    "client option unknown": (
        _sets('client-options={"momentom": 0.9}'),
        ["'client-options'", "momentom", "accepted", "momentum"],
    ),
    "client option bad value": (
        _sets('client-options={"momentum": -3}'),
        ["'client-options'", "momentum"],
    ),
    "client option of a Flower strategy": (
        _sets("strategy=fedadam", 'client-options={"betas": 3}'),
        ["'client-options'", "betas"],
    ),
    "client-lr rejected by the optimizer": (
        _sets("client-optimizer=hd", 'client-options={"hyper_lr": -1}'),
        ["'client-options'", "hyper_lr"],
    ),
    "partitioner that fails on the data": (
        _sets("partitioner=dirichlet", "partition-alpha=0.000001"),
        ["'partitioner'", "alpha"],
    ),
    "hub data file that does not exist": (
        _sets("dataset=hub", "hub-dataset=csv", "hub-data-files=/nonexistent/data.csv"),
        ["'hub-data-files'", "/nonexistent/data.csv"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_option_exits_2_with_one_line_naming_the_key(case, tmp_path):
    args, fragments = CASES[case]
    result = runner.invoke(app, ["simulate", "quickstart", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich may wrap a long line
    for fragment in fragments:
        assert fragment in text, (fragment, result.output)
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # nothing was written


def test_out_naming_an_existing_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, fragment in (
        (afile, "exists and is not a directory"),
        (afile / "run", "is not a directory"),
    ):
        result = runner.invoke(app, ["simulate", "quickstart", "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert "'out-dir'" in result.output and fragment in " ".join(result.output.split())
    result = runner.invoke(
        app, ["compare", "quickstart", "--strategies", "fedavg", "--out", str(afile)]
    )
    assert result.exit_code == 2 and "not a directory" in result.output


def test_worker_log_naming_a_directory(tmp_path):
    result = runner.invoke(
        app,
        ["simulate", "quickstart", *_sets(f"worker-log={tmp_path}"), "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 2 and "'worker-log'" in result.output


def test_every_shipped_scenario_passes_the_checks(tmp_path):
    from simulations.cli import build_config
    from simulations.config import available_scenarios
    from simulations.preflight import check_before_workers
    from simulations.reader import read

    for name in available_scenarios():
        spec = read(build_config(name, out=str(tmp_path / name)))
        if spec.world.data.dataset == "hub":
            continue  # would download; its options are checked without data
        check_before_workers(spec)


def test_the_command_prints_one_line_and_no_traceback(tmp_path):
    """As a user runs it: a subprocess, stderr is one line, nothing from Flower or Ray."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "400"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulations.cli",
            "simulate",
            "quickstart",
            *_sets('server-options={"nope": 1}'),
            "--out",
            str(tmp_path / "r"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: run-config key 'strategy'"), proc.stderr
    assert "nope" in lines[0] and proc.stdout == ""
