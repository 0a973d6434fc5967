"""The `fedadapt` CLI answers bad input with exit status 2 and a message naming the problem,
before Ray or any worker starts (the run function is never reached)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from simulations.cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("no_runs")  # tests/simulations/conftest.py


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["simulate", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
        (
            ["simulate", "quickstart", "--set", "num-clientz=3"],
            "unknown run-config key 'num-clientz'",
        ),
        (["simulate", "quickstart", "--set", "client-lr=fast"], "'client-lr'"),
        (["simulate", "quickstart", "--set", "clients-per-round=500"], "clients-per-round"),
        (["simulate", "quickstart", "--set", "noequals"], "--set expects key=value"),
        (["simulate", "quickstart", "--seed", "-3"], "'seed'"),
        (["compare", "quickstart", "--strategies", "fedavg,nope"], "'strategy'"),
        (
            ["compare", "quickstart", "--strategies", "fedavg", "--grid", "client-lr"],
            "--grid expects",
        ),
        (
            ["compare", "quickstart", "--strategies", "fedavg", "--grid", "client-lr=0.1,x"],
            "'client-lr'",
        ),
        (
            ["compare", "quickstart", "--strategies", "fedadam/hd"],
            "only 'fedadapt/<server>/<client>'",
        ),
    ],
)
def test_bad_input_exits_2_before_any_run(args, fragment):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert fragment in result.output


def test_report_on_a_folder_without_runs(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "no finished runs" in result.output


def test_scenarios_lists_every_shipped_scenario():
    result = runner.invoke(app, ["scenarios"])
    assert result.exit_code == 0
    for name in ("quickstart", "drift-digits", "scale-1m", "cifar10-dirichlet"):
        assert name in result.output
