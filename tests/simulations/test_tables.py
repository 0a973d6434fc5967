"""One reporting path for ``fedadapt compare`` and ``fedadapt report`` (issue 21 §4): the same
columns, true labels, ``never`` apart from ``n/a``, the statistic named, paired differences with
confidence intervals, four formats, and a report that only reads the runs."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from simulations.cli import app  # noqa: E402
from simulations.compare import curves_figure, write_comparison  # noqa: E402
from simulations.report import RunWriter, report, steps_figure, summarize  # noqa: E402
from simulations.tables import (  # noqa: E402
    NA,
    NEVER,
    STATISTIC,
    format_values,
    infer_grid_keys,
    load_run,
    strategy_label,
)

CHANGE = 6


def make_run(
    path,
    strategy,
    seed,
    *,
    server="cp-adam",
    client="hd",
    lr=0.05,
    shift=0.0,
    detector=True,
    oracle=False,
    stagger=0,
    plateau=None,
):
    cfg = {
        "scenario": "drift-digits",
        "strategy": strategy,
        "server-optimizer": server,
        "client-optimizer": client,
        "seed": seed,
        "client-lr": lr,
        "target-accuracy": 0.8,
        "recovery-window": 3,
        "drift.timing": "sudden",
        "drift.width": 1,
        "out-dir": str(path),
    }
    w = RunWriter(path, cfg, changepoints=[CHANGE])
    for r in range(13):
        acc = min(0.95, 0.2 + 0.12 * r + shift + 0.01 * seed)
        if plateau is not None:
            acc = min(acc, plateau)
        if r >= CHANGE:
            acc = max(0.1, acc - 0.5 + 0.1 * (r - CHANGE))
        row = {
            "accuracy": acc,
            "drift-events": [f"start cp0 0->1 offset {r - CHANGE}"]
            if CHANGE <= r <= CHANGE + stagger
            else [],
        }
        if r >= 1 and detector:
            row["server-detector-alarm"] = 1.0 if r == CHANGE + 1 else 0.0
        if r >= 1 and (detector or oracle):
            row["server-change"] = 1.0 if r == CHANGE + (0 if oracle else 1) else 0.0
        w.add(r, row)
        w.flush(r)
    return w.finish()


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for s in range(3):
        for lr in (0.05, 0.5):
            make_run(root / f"fa-lr{lr}" / f"seed{s}", "fedadapt", s, lr=lr)
            # fedavg never reaches the target (0.8) within its rounds
            make_run(
                root / f"fedavg-lr{lr}" / f"seed{s}",
                "fedavg",
                s,
                client="sgd",
                lr=lr,
                detector=False,
                plateau=0.6,
            )
    return root


def snapshot(root):
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_labels_say_what_ran():
    assert (
        strategy_label(
            {"strategy": "fedavg", "server-optimizer": "cp-adam", "client-optimizer": "sgd"}
        )
        == "fedavg"
    )
    assert (
        strategy_label({"strategy": "fedadapt", "server-optimizer": "eg", "client-optimizer": "hd"})
        == "fedadapt/eg/hd"
    )
    assert (
        strategy_label(
            {"strategy": "fedadam", "server-optimizer": "cp-adam", "client-optimizer": "dsa"}
        )
        == "fedadam (client dsa)"
    )
    flower = {
        "scenario": "s",
        "strategy": "fedavg",
        "server-optimizer": "cp-adam",
        "client-optimizer": "sgd",
    }
    summary = summarize([{"round": 0, "accuracy": 0.1}, {"round": 1, "accuracy": 0.5}], flower)
    assert summary["server-optimizer"] is None and summary["strategy-label"] == "fedavg"
    assert "detector-alarms" not in summary  # no detector: no alarm count, not "0"
    fig = steps_figure([{"round": 1, "server-lr": 1.0}], flower)
    try:
        title = fig.axes[0].get_title()
        assert "cp-adam" not in title and "Flower's own server step" in title
    finally:
        plt.close(fig)


def test_an_oracles_resets_are_not_detector_alarms(tmp_path):
    summary = make_run(
        tmp_path / "o",
        "fedadam-oracle",
        0,
        server="cp-adam",
        client="sgd",
        detector=False,
        oracle=True,
    )
    assert "detector-alarms" not in summary
    assert summary["server-reset-rounds"] == [CHANGE]


def test_report_reads_runs_only_and_writes_every_format(runs_root, tmp_path):
    before = snapshot(runs_root)
    md, out = report(runs_root, out=tmp_path / "rep", baseline="fedavg")
    assert snapshot(runs_root) == before
    for name in (
        "report.md",
        "report.csv",
        "report.json",
        "report.tex",
        "runs.csv",
        "accuracy.png",
    ):
        assert (out / name).stat().st_size > 0, name
    # the columns compare has: scenario, strategy, grid cell, seeds, recovery per changepoint
    header = next(line for line in md.splitlines() if line.startswith("| strategy"))
    for col in (
        "client-lr",
        "seeds",
        "final acc",
        "rounds to target",
        "alarms",
        "pre-drift acc",
        "dip",
        "rounds to 95%",
        "rounds to 2 pt",
        "area under drop",
        "mean acc after",
    ):
        assert f"| {col} |" in header, col
    assert "### drift-digits" in md and STATISTIC in md
    rows = [line for line in md.splitlines() if line.startswith("| fedavg |")]
    assert len(rows) == 2  # one per grid cell
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[header.strip("|").split("|").index(" rounds to target ")] == NEVER
    assert cells[header.strip("|").split("|").index(" alarms ")] == NA
    # runs are named by strategy, cell and seed, not by their folder
    names = [r["name"] for r in csv.DictReader(io.StringIO((out / "runs.csv").read_text()))]
    assert "fedadapt/cp-adam/hd [client-lr=0.5] seed 2" in names
    assert not any(n.startswith("seed") for n in names)
    tex = (out / "report.tex").read_text()
    assert r"\toprule" in tex and r"$\pm$" in tex and "sample standard deviation" in tex
    data = json.loads((out / "report.json").read_text())
    assert data["statistic"] == STATISTIC and len(data["groups"]) == 4 and data["paired"]


def test_paired_differences_have_student_t_intervals(runs_root, tmp_path):
    runs = [load_run(p) for p in sorted(runs_root.rglob("seed*")) if p.is_dir()]
    grid = infer_grid_keys(runs)
    assert grid == ["client-lr"]
    _, out = report(runs_root, out=tmp_path / "rep", baseline="fedavg", plots=False)
    pair = next(
        p
        for p in json.loads((out / "report.json").read_text())["paired"]
        if p["cell"] == {"client-lr": "0.05"}
    )
    mean_acc = pair["columns"]["mean acc"]
    by = {
        (r.strategy, r.seed): r.summary["mean-accuracy"]
        for r in runs
        if r.config["client-lr"] == 0.05
    }
    diffs = [by[("fedadapt/cp-adam/hd", s)] - by[("fedavg", s)] for s in range(3)]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(diffs) / math.sqrt(3)
    assert mean_acc["diffs"] == pytest.approx(diffs)
    assert mean_acc["ci"] == pytest.approx(
        [statistics.fmean(diffs) - half, statistics.fmean(diffs) + half]
    )
    assert pair["columns"]["rounds to target"]["n"] == 0  # fedavg never got there: no pair


def test_compare_and_report_give_the_same_table(runs_root, tmp_path):
    results = [
        {"summary": {"run-dir": str(p)}} for p in sorted(runs_root.rglob("seed*")) if p.is_dir()
    ]
    table = write_comparison(tmp_path / "cmp", results, ["client-lr"])
    md, _ = report(runs_root, out=tmp_path / "rep", plots=False)
    assert sorted(table.splitlines()) == sorted(md.splitlines())
    for name in (
        "comparison.md",
        "comparison.csv",
        "comparison.json",
        "comparison.tex",
        "runs.csv",
        "accuracy.png",
    ):
        assert (tmp_path / "cmp" / name).is_file()


def test_format_keeps_never_apart_from_not_applicable():
    assert format_values([NEVER, NEVER]) == NEVER
    assert format_values([NA, NA]) == NA
    assert format_values([1.0, NEVER, 3.0], 1) == "2.0 ± 1.4 (2/3, 1 never)"
    assert format_values([NEVER, NA]) == "never (1/2)"


def test_report_cli_writes_where_asked(runs_root, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(runs_root),
            "--out",
            str(tmp_path / "x"),
            "--no-plots",
            "--baseline",
            "nope",
        ],
    )
    assert result.exit_code == 2 and "baseline 'nope'" in result.output
    result = CliRunner().invoke(
        app, ["report", str(runs_root), "--out", str(tmp_path / "x"), "--no-plots"]
    )
    assert result.exit_code == 0, result.output
    assert "| fedavg |" in result.output and (tmp_path / "x" / "report.md").is_file()


def test_comparison_plot_is_titled_banded_and_integer_from_round_zero(runs_root):
    runs = [load_run(p) for p in sorted(runs_root.rglob("seed*")) if p.is_dir()]
    fig = curves_figure("drift-digits", runs, ["client-lr"])
    try:
        ax = fig.axes[0]
        assert "drift-digits" in ax.get_title() and "3 seeds" in ax.get_title()
        bands = [a for a in ax.get_children() if a.get_gid() == "band"]
        lines = [a for a in ax.get_children() if a.get_gid() == "mean"]
        assert len(bands) == len(lines) == 4
        styles = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}
        assert len(styles) == 4  # identical curves stay distinguishable
        assert ax.get_xlim()[0] == 0 and all(float(t).is_integer() for t in ax.get_xticks())
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.x0 >= ax.get_window_extent(renderer).x1
    finally:
        plt.close(fig)


def test_a_staggered_drift_is_a_shaded_span(tmp_path):
    summary = make_run(tmp_path / "st", "fedadapt", 0, stagger=3)
    assert summary["drifts"]
    run = load_run(tmp_path / "st")
    fig = steps_figure(run.rows, run.config)
    try:
        spans = [a for a in fig.axes[0].get_children() if a.get_gid() == "drift"]
        assert len(spans) == 1
        span = spans[0]  # a Rectangle over the rounds in which clients switch
        assert span.get_x() == pytest.approx(CHANGE - 0.5)
        assert span.get_x() + span.get_width() == pytest.approx(CHANGE + 3.5)
    finally:
        plt.close(fig)
