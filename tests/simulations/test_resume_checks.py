"""A checkpoint named by ``resume-from`` is loaded into the run's strategy and checked against
the run's model and rounds before any worker starts (issue 20 §5): exit status 2, one line
naming the key and the field."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ArrayRecord
from typer.testing import CliRunner

from simulations.cli import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("no_runs", "task_identity")


def _checkpoint(tmp_path, server_round, poison=False):
    from simulations.cli import build_config
    from simulations.reader import read
    from simulations.server_app import make_strategy
    from simulations.world import world
    from strategies.checkpoint import save_checkpoint

    spec = read(build_config("quickstart", out=str(tmp_path / "src")))
    strategy = make_strategy(spec, None, str(tmp_path / "ckpt"))
    state = world(spec.world).model().state_dict()
    if poison:
        next(iter(state.values())).fill_(math.nan)
    return save_checkpoint(strategy, server_round, ArrayRecord(state))


@pytest.mark.parametrize(
    ("server_round", "poison", "fragment"),
    [
        (99, False, "past the run's last round"),
        (2, True, "non-finite"),
    ],
)
def test_a_checkpoint_that_cannot_continue_the_run_fails_before_any_worker(
    tmp_path, server_round, poison, fragment
):
    path = _checkpoint(tmp_path, server_round, poison)
    result = runner.invoke(
        app,
        ["simulate", "quickstart", "--set", f"resume-from={path}", "--out", str(tmp_path / "r")],
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "'resume-from'" in text and fragment in text, result.output
    assert "Traceback" not in result.output


def test_a_good_checkpoint_passes(tmp_path):
    from simulations.cli import build_config
    from simulations.preflight import check_before_workers
    from simulations.reader import read

    path = _checkpoint(tmp_path, 2)
    spec = read(build_config("quickstart", sets=[f"resume-from={path}"], out=str(tmp_path / "r")))
    check_before_workers(spec)
    assert torch.load(path, weights_only=True)["round"] == 2
