"""Sweeps (`fedadapt compare`): several runs at once give each run the results it has alone;
the same command again skips the complete runs (matched by config digest) and redoes the rest;
bad sweep options fail before Ray starts."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulations.cli import app, build_config
from simulations.sweep import (
    DONE_FILE,
    SweepProgress,
    auto_parallel,
    check_address,
    config_digest,
    parse_parallel,
)

runner = CliRunner()
TINY = ["--set", "num-clients=8", "--set", "clients-per-round=4", "--set", "num-server-rounds=2"]


# ----------------------------------------------------------------------------- options, digest


@pytest.mark.usefixtures("no_runs")
@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--parallel", "0", "--parallel '0'"),
        ("--parallel", "two", "--parallel 'two'"),
        ("--parallel", "-1", "--parallel '-1'"),
        ("--address", "localhost", "--address 'localhost'"),
        ("--address", "10.0.0.5:99999", "--address '10.0.0.5:99999'"),
        ("--address", "ray://head:10001/x", "--address"),
    ],
)
def test_bad_sweep_option_fails_in_one_line_before_ray(option, value, fragment):
    result = runner.invoke(app, ["compare", "quickstart", "--strategies", "fedavg", option, value])
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_option_parsers_accept_what_they_document():
    assert parse_parallel("auto") == 0 and parse_parallel("1") == 1 and parse_parallel(" 3 ") == 3
    assert check_address("127.0.0.1:6379") == "127.0.0.1:6379"
    assert check_address("head-node.cluster:6379") == "head-node.cluster:6379"
    assert check_address("auto") == "auto"


def test_auto_parallel_fills_the_cluster():
    assert auto_parallel(2, 2, 1.0, 12) == 1  # 2 slots, runs of 2 workers: one at a time
    assert auto_parallel(16, 2, 1.0, 12) == 8
    assert auto_parallel(16, 2, 1.0, 3) == 3  # never more than the runs
    assert auto_parallel(1, 4, 1.0, 5) == 1


def test_digest_is_the_config_without_its_output_paths(tmp_path):
    a = build_config("quickstart", seed=0, out=str(tmp_path / "a"))
    b = build_config(
        "quickstart", [f"worker-log={tmp_path / 'w.jsonl'}"], seed=0, out=str(tmp_path / "b")
    )
    assert config_digest(a) == config_digest(b)
    assert config_digest(a) == config_digest({**a, "tracking-parent": "a-new-parent-run-id"})
    assert config_digest(a) != config_digest(build_config("quickstart", seed=1))
    assert config_digest(a) != config_digest(build_config("quickstart", ["client-lr=0.2"], seed=0))


def test_eta_from_finished_runs_shared_by_concurrent_runs():
    p = SweepProgress(total=6, skipped=1)
    p.parallel = 2
    assert p.eta() is None  # nothing finished yet: no estimate
    p.durations = [10.0, 10.0]
    p.running = {3: time.monotonic()}
    # 2 waiting x 10 s + the running one's 10 s left, over 2 lanes
    assert p.eta() == pytest.approx(15.0, abs=0.5)
    assert p.status().startswith("3/6 done, 1 running, 1 skipped, ETA 15s")


# ----------------------------------------------------------------------------- resume


@pytest.fixture
def fake_runs(monkeypatch):
    """`run_many` replaced by one that writes a real (2-round) run directory per config with
    the run writer and records which runs it was asked to do; plots are skipped."""
    import simulations.compare as compare
    import simulations.experiment as experiment
    import simulations.report as report
    from simulations.report import RunWriter

    done: list[list[str]] = []

    def run_many(
        cfgs,
        on_round=None,
        on_run_end=None,
        *,
        parallel=1,
        on_run_start=None,
        on_start=None,
        on_run_error=None,
    ):
        if on_start:
            on_start(parallel or 1)
        # the CLI hands on prepared RunSpecs (read once); their config is the run's
        cfgs = [c if isinstance(c, dict) else c.config for c in cfgs]
        done.append([str(c["out-dir"]) for c in cfgs])
        out = []
        for i, cfg in enumerate(cfgs):
            if on_run_start:
                on_run_start(i)
            w = RunWriter(cfg["out-dir"], cfg)
            for r in range(3):
                w.add(r, {"accuracy": 0.1 + 0.1 * r + 0.01 * int(cfg["seed"]), "loss": 1.0})
                row = w.flush(r)
                if on_round:
                    on_round(i, row)
            summary = w.finish()
            summary["run-dir"] = str(cfg["out-dir"])
            Path(cfg["out-dir"], "summary.json").write_text(json.dumps(summary))
            if on_run_end:
                on_run_end(i, summary)
            out.append(summary)
        return out

    monkeypatch.setattr(experiment, "run_many", run_many)
    monkeypatch.setattr(report, "plot_run", lambda *a, **k: None)
    monkeypatch.setattr(compare, "plot_comparison", lambda *a, **k: [])
    return done


def _compare(root, *extra):
    result = runner.invoke(
        app,
        [
            "compare",
            "quickstart",
            "--strategies",
            "fedavg",
            "--seeds",
            "2",
            "--out",
            str(root),
            *TINY,
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return result


def test_the_same_sweep_again_skips_complete_runs_and_redoes_the_rest(tmp_path, fake_runs):
    root = tmp_path / "cmp"
    seed0, seed1 = root / "fedavg" / "fedavg-seed0", root / "fedavg" / "fedavg-seed1"
    _compare(root)
    assert fake_runs[-1] == [str(seed0), str(seed1)]
    table = (root / "comparison.md").read_text()

    again = _compare(root)  # everything complete: nothing runs, the tables are the same
    assert len(fake_runs) == 1
    assert "2 of 2 runs already complete" in again.output
    assert (root / "comparison.md").read_text() == table

    (seed1 / "summary.json").unlink()  # a run killed before its end
    _compare(root)
    assert fake_runs[-1] == [str(seed1)]

    done = json.loads((seed0 / DONE_FILE).read_text())  # a run made under another config
    (seed0 / DONE_FILE).write_text(json.dumps({**done, "digest": "0" * 20}))
    _compare(root)
    assert fake_runs[-1] == [str(seed0)]

    _compare(root, "--redo")
    assert fake_runs[-1] == [str(seed0), str(seed1)]


def test_a_changed_config_redoes_runs_in_the_same_folders(tmp_path, fake_runs):
    root = tmp_path / "cmp"
    _compare(root)
    _compare(root, "--set", "client-lr=0.2")  # same folder names, other digest
    assert len(fake_runs) == 2 and len(fake_runs[-1]) == 2


def test_complete_runs_are_found_by_digest_not_by_folder_name(tmp_path, fake_runs):
    root = tmp_path / "cmp"
    _compare(root)
    shutil.move(root / "fedavg" / "fedavg-seed1", root / "renamed-by-hand")
    result = _compare(root)
    assert len(fake_runs) == 1, fake_runs  # seed 1 read from the renamed folder
    assert "2 of 2 runs already complete" in result.output
    rows = (root / "runs.csv").read_text()
    assert "renamed-by-hand" in rows


# ----------------------------------------------------------------------------- bitwise (Ray)


def _rows(run_dir: str) -> list[dict]:
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


@pytest.mark.slow
def test_runs_done_at_once_equal_the_same_runs_done_alone(tmp_path):
    from simulations.experiment import run_many

    def cfgs(tag: str) -> list[dict]:
        sets = [
            "num-clients=8",
            "clients-per-round=4",
            "num-server-rounds=3",
            "num-supernodes=2",
            "eval-every=1",
        ]
        plan = [("fedavg", 0), ("fedadapt", 0), ("fedadapt", 1)]  # two share a world
        return [
            build_config(
                "quickstart", [*sets, f"strategy={s}"], seed, str(tmp_path / tag / f"{s}-{seed}")
            )
            for s, seed in plan
        ]

    together = run_many(cfgs("together"), parallel=3)
    alone = run_many(cfgs("alone"), parallel=1)
    for a, b in zip(together, alone, strict=True):
        rows_a, rows_b = _rows(a["run-dir"]), _rows(b["run-dir"])
        assert len(rows_a) == 4
        assert rows_a == rows_b, a["run-dir"]
        assert a["final-accuracy"] == b["final-accuracy"]


def test_the_engine_serves_every_actor_of_a_large_cluster():
    """Flower's engine runs one thread per actor; Python's default pool (CPUs + 4 of the
    driver's machine) would leave the actors of a larger cluster without messages."""
    from flwr.server.superlink.fleet.vce import vce_api

    from simulations.runtime import ENGINE_THREADS, every_actor_served

    before = vce_api.ThreadPoolExecutor
    with every_actor_served() as applied:
        assert applied
        pool = vce_api.ThreadPoolExecutor()
        assert pool._max_workers == ENGINE_THREADS >= 1024
        pool.shutdown()
    assert vce_api.ThreadPoolExecutor is before


def test_concurrent_runs_draw_their_plots_one_at_a_time(monkeypatch):
    """matplotlib is not thread-safe: two runs ending together failed in its text layout. While
    runs are served concurrently, a second run's plots wait for the first's."""
    import threading

    import simulations.report as report
    from simulations.experiment import driver_thread_safety

    inside, release, entered = threading.Event(), threading.Event(), []

    def slow_plot(run_dir, rows, config):
        entered.append(run_dir)
        inside.set()
        release.wait(5)

    monkeypatch.setattr(report, "plot_run", slow_plot)
    with driver_thread_safety():
        first = threading.Thread(target=report.plot_run, args=("a", [], {}))
        first.start()
        assert inside.wait(5)
        second = threading.Thread(target=report.plot_run, args=("b", [], {}))
        second.start()
        second.join(0.3)
        assert entered == ["a"]  # the second run waits while the first draws
        release.set()
        first.join(5)
        second.join(5)
        assert entered == ["a", "b"]
    assert report.plot_run is slow_plot  # put back afterwards
