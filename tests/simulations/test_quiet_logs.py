"""Quiet, honest logs (issue 21 §5): round lines within 200 characters, one plain line per round
when the output is not a terminal, and only the Flower messages fedadapt itself causes dropped."""

from __future__ import annotations

import logging
import math

from typer.testing import CliRunner

from simulations.cli import plain_round_line
from simulations.runtime import (
    FRACTION_EVALUATE_NOTICE,
    quiet_flower,
    quiet_known_flower_noise,
)
from strategies.round_metrics import ROUND_LINE_CHARS, RoundMetrics


def busy_round() -> dict:
    info = {
        "round": 3,
        "num-sampled": 1000,
        "num-succeeded": 990,
        "num-failed": 10,
        "train-loss": 0.123456,
        "server-lr": 0.1,
        "server-detector-alarm": 1.0,
        "local-work": 3.0,
        "failed-reasons": ["client exceeded its deadline " * 20] * 10,
    }
    info.update({f"server-detector-channel-{k}-statistic": k * 1.2345678 for k in range(80)})
    return info


def test_a_round_line_fits_in_200_characters_and_keeps_what_matters():
    line = RoundMetrics.round_line(busy_round())
    assert len(line) <= ROUND_LINE_CHARS and ROUND_LINE_CHARS + len("INFO :      ") <= 200
    for part in (
        "1000 sampled",
        "990 received",
        "10 failed",
        "train-loss 0.1235",
        "server lr 0.1",
        "detector alarm",
        "local work x3",
    ):
        assert part in line
    assert "channel" not in line  # the detector's details are in metrics.jsonl
    quiet = RoundMetrics.round_line(
        {"num-sampled": 2, "num-succeeded": 2, "num-failed": 0, "train-loss": math.nan}
    )
    assert quiet == "fedadapt: 2 sampled, 2 received, 0 failed"


def test_failure_lines_are_bounded(caplog):
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    try:
        RoundMetrics.log_round(busy_round())
    finally:
        flwr_logger.removeHandler(caplog.handler)
    assert caplog.records and all(
        len(r.getMessage()) <= ROUND_LINE_CHARS + 4 for r in caplog.records
    )


def test_plain_round_line():
    row = {"round": 4, "accuracy": 0.8123, "server-lr": 0.1, "elapsed": 12.34, "failed-ids": [1, 2]}
    assert (
        plain_round_line("drift-digits", row, 40)
        == "drift-digits round 4/40  acc 0.812  server lr 0.1  failures 2  12.3 s"
    )


def test_only_the_known_flower_messages_are_dropped(caplog):
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    try:
        quiet_known_flower_noise()
        quiet_known_flower_noise()  # idempotent
        flwr_logger.warning("DEPRECATED FEATURE: The `run_simulation` function is deprecated ...")
        flwr_logger.warning("Manually terminating ClientAppActor")
        with quiet_flower(FRACTION_EVALUATE_NOTICE):
            flwr_logger.warning(
                "fraction_evaluate is set to 0.0. Federated evaluation will be skipped."
            )
        flwr_logger.warning("fraction_evaluate is set to 0.0 (a user's own strategy)")
        flwr_logger.warning("a real problem")
    finally:
        flwr_logger.removeHandler(caplog.handler)
    assert {r.getMessage() for r in caplog.records} == {
        "fraction_evaluate is set to 0.0 (a user's own strategy)",
        "a real problem",
    }


def test_make_strategy_does_not_warn_about_its_own_evaluation_switch(caplog, tmp_path):
    from simulations.checks import resolve
    from simulations.reader import read
    from simulations.server_app import make_strategy

    spec = read(resolve({"strategy": "fedavg", "out-dir": str(tmp_path)}))
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    try:
        make_strategy(spec, None, None)
    finally:
        flwr_logger.removeHandler(caplog.handler)
    assert "fraction_evaluate" not in caplog.text


def test_simulate_and_compare_name_their_outputs_in_help():
    from simulations.cli import app

    out = CliRunner().invoke(app, ["report", "--help"]).output
    assert "--baseline" in out and "--out" in out
