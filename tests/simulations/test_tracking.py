"""Experiment tracking (issue 21 §3): runs logged to MLflow and TensorBoard, read back with the
libraries' own readers (MLflow's client on a local store, TensorBoard's event accumulator), a
sweep's parent run with its runs nested, tracking failures that leave the run going, and bad
tracking keys refused before any worker starts."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient  # the `tracking` extra, part of `dev`
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from simulations import tracking
from simulations.checks import resolve
from simulations.cli import app, build_config
from simulations.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["num-server-rounds=3", "num-clients=6", "clients-per-round=3", "local-epochs=1"]


def _inprocess():
    """docs/results/inprocess.py: a run's ServerApp and ClientApp handlers in this process, no
    Ray (a few seconds)."""
    spec = importlib.util.spec_from_file_location(
        "fedadapt_inprocess", ROOT / "docs" / "results" / "inprocess.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(out: Path, *sets: str, seed: int = 0) -> dict:
    cfg = build_config("quickstart", [*SMALL, *sets], seed, str(out))
    return _inprocess().run(cfg)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _numeric_history(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """What a tracker must hold: every numeric key of the rows, (round, value) per round."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "round" and isinstance(value, int | float) and not isinstance(value, bool):
                out.setdefault(key, []).append((int(row["round"]), float(value)))
    return out


def _scalars(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One short run with tracking = mlflow,tensorboard and the default locations."""
    out = tmp_path_factory.mktemp("tracked") / "run"
    summary = _run(out, "tracking=mlflow,tensorboard")
    return out, summary


def test_mlflow_holds_the_config_every_round_and_the_run_files(tracked_run):
    out, summary = tracked_run
    client = MlflowClient(f"sqlite:///{out.parent / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")  # default: the scenario name
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == out.name and run.info.status == "FINISHED"
    config = json.loads((out / "config.json").read_text())
    assert run.data.params == {k: str(v) for k, v in config.items()}
    assert run.data.params["client-optimizer"] == "sgd"  # the resolved `auto`
    assert run.data.tags["fedadapt.strategy-label"] == "fedadapt/cp-adam/sgd"
    expected = _numeric_history(_rows(out))
    assert {
        "accuracy",
        "loss",
        "server-lr",
        "client-lr-median",
        "num-failed",
        "server-detector-start-loss-cusum",
    } <= set(expected)
    for key, history in expected.items():
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert got == history, key
    assert run.data.metrics["summary/final-accuracy"] == summary["final-accuracy"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "schedule.json",
        "accuracy.png",
        "steps.png",
        "detector.png",
    } <= names
    assert "final_model.pt" not in names
    local = client.download_artifacts(run.info.run_id, "summary.json", str(out.parent / "dl"))
    assert json.loads(Path(local).read_text()) == json.loads((out / "summary.json").read_text())
    # artifacts beside the database, not in the working folder's ./mlruns
    assert experiment.artifact_location == (out.parent / "mlruns" / "artifacts").as_uri()


def test_tensorboard_holds_every_round_the_config_and_the_plots(tracked_run):
    out, summary = tracked_run
    log_dir = out.parent / "tensorboard" / out.name
    acc = _scalars(log_dir)
    for key, history in _numeric_history(_rows(out)).items():
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in history], key
        # event files keep 32-bit floats
        assert [v for _, v in got] == pytest.approx([v for _, v in history], rel=1e-6), key
    assert acc.Scalars("summary/final-accuracy")[0].value == pytest.approx(
        summary["final-accuracy"], rel=1e-6
    )
    assert {"plots/accuracy", "plots/steps", "plots/detector"} <= set(acc.Tags()["images"])
    text = {
        t: acc.Tensors(t)[0].tensor_proto.string_val[0].decode()
        for t in acc.Tags()["tensors"]
        if t.endswith("text_summary")
    }
    config_text = next(v for t, v in text.items() if t.startswith("config"))
    assert json.loads(config_text.strip("`\n")) == json.loads((out / "config.json").read_text())


def test_a_sweep_nests_its_runs_under_one_parent(tmp_path, monkeypatch):
    """Two runs through :func:`tracking.sweep_tracking` on an MLflow file store: one parent run,
    both runs nested in it, one TensorBoard folder per run under the sweep's."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # set by the tracker itself
    root = tmp_path / "sweep"
    store = f"file:{tmp_path / 'store'}"
    cfgs = [
        build_config(
            "quickstart",
            [*SMALL, "tracking=mlflow,tensorboard", f"tracking-uri={store}"],
            s,
            str(root / f"run-s{s}"),
        )
        for s in (0, 1)
    ]
    inprocess = _inprocess()
    with tracking.sweep_tracking(cfgs, root) as sweep:
        assert sweep.parent_run_id is not None
        for cfg in sweep.configs:
            inprocess.run(cfg)
        (root / "comparison.md").write_text("| strategy |\n")  # the driver's tables
    client = MlflowClient(store)
    parent = client.get_run(sweep.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "sweep"
    assert "seed" not in parent.data.params and parent.data.params["scenario"] == "quickstart"
    assert json.loads(parent.data.tags["fedadapt.varied-keys"]) == ["seed"]
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["comparison.md"]
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(c.info.run_name for c in children) == ["run-s0", "run-s1"]
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:
        run_dir = root / child.info.run_name
        assert child.data.params["tracking-parent"] == parent.info.run_id
        assert len(client.get_metric_history(child.info.run_id, "accuracy")) == 4  # rounds 0..3
        acc = _scalars(root / "tensorboard" / child.info.run_name)
        assert [e.step for e in acc.Scalars("accuracy")] == [0, 1, 2, 3]
        assert json.loads((run_dir / "config.json").read_text())["tensorboard-dir"] == str(
            root / "tensorboard"
        )


def test_a_failed_sweep_ends_its_parent_as_failed(tmp_path):
    cfg = build_config("quickstart", ["tracking=mlflow"], 0, str(tmp_path / "r"))
    with (
        pytest.raises(RuntimeError, match="boom"),
        tracking.sweep_tracking([cfg], tmp_path) as sweep,
    ):
        raise RuntimeError("boom")
    client = MlflowClient(tracking.default_store(tmp_path))
    assert client.get_run(sweep.parent_run_id).info.status == "FAILED"


def test_a_long_parameter_is_cut_to_mlflow_s_limit_and_named(tmp_path):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    options = json.dumps({"weights": list(range(3000))})
    assert len(options) > MAX_PARAM_VAL_LENGTH
    target = tracking.MlflowTarget(tracking.default_store(tmp_path), "long")
    run = tracking.MlflowRun(target, "long", {"data-options": options, "seed": 0}, {})
    run.finish(tmp_path, {}, "FINISHED")
    got = MlflowClient(target.uri).get_run(run.run_id)
    assert len(got.data.params["data-options"]) == MAX_PARAM_VAL_LENGTH
    assert got.data.params["data-options"].startswith(options[:100])
    assert got.data.tags["fedadapt.truncated-params"] == "data-options"


def test_an_unreachable_tracking_server_leaves_the_run_going(tmp_path, monkeypatch, caplog):
    """A server that does not answer: one warning naming MLflow and the cause; the run, its
    files and its TensorBoard events are complete."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        summary = _run(out, "tracking=mlflow,tensorboard", "tracking-uri=http://127.0.0.1:9")
    warnings = [r.getMessage() for r in caplog.records if "tracking stopped" in r.getMessage()]
    assert len(warnings) == 1 and "MLflow" in warnings[0], warnings
    assert "127.0.0.1:9" in warnings[0] or "onnect" in warnings[0]
    assert summary["rounds"] == 3 and (out / "summary.json").is_file()
    assert [e.step for e in _scalars(tmp_path / "tensorboard" / "run").Scalars("accuracy")] == [
        0,
        1,
        2,
        3,
    ]


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        (
            {"tracking": "wandb"},
            "run-config key 'tracking': got 'wandb'; accepted: one of none, "
            "mlflow, tensorboard, mlflow,tensorboard",
        ),
        (
            {"tracking": "mlflow", "tracking-uri": "ftp://host/x"},
            "run-config key 'tracking-uri' ('ftp://host/x'): MLflow has no store for the scheme "
            "'ftp'",
        ),
        ({"tracking-uri": "sqlite:///x.db"}, "run-config key 'tracking-uri'"),
        ({"tracking": "mlflow", "tensorboard-dir": "tb"}, "run-config key 'tensorboard-dir'"),
        (
            {"tracking": "mlflow", "tracking-parent": "not a run id"},
            "run-config key 'tracking-parent'",
        ),
    ],
)
def test_bad_tracking_keys_are_refused_by_name(sets, fragment):
    with pytest.raises(ConfigError) as err:
        resolve(sets)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_an_unwritable_tensorboard_dir_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="'tensorboard-dir'"):
        resolve({"tracking": "tensorboard", "tensorboard-dir": str(blocker / "tb")})


@pytest.mark.parametrize(
    ("module", "backend", "package"),
    [("mlflow", "mlflow", "mlflow-skinny"), ("tensorboard", "tensorboard", "tensorboard")],
)
def test_tracking_without_its_library_names_the_package(monkeypatch, module, backend, package):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ConfigError) as err:
        resolve({"tracking": backend})
    assert package in str(err.value) and "pip install 'fedadapt[tracking]'" in str(err.value)


@pytest.mark.usefixtures("no_runs")  # tests/simulations/conftest.py: no run may start
@pytest.mark.parametrize(
    "command", [["simulate", "quickstart"], ["compare", "quickstart", "--strategies", "fedavg"]]
)
def test_the_cli_refuses_bad_tracking_before_any_run(command):
    result = CliRunner().invoke(
        app, [*command, "--set", "tracking=mlflow", "--set", "tracking-uri=gopher://x"]
    )
    assert result.exit_code == 2, result.output
    assert "'tracking-uri'" in result.output and "gopher" in result.output


@pytest.mark.slow
def test_flwr_run_logs_to_mlflow_and_tensorboard(tmp_path):
    """Under `flwr run` (the ServerApp of simulations/server_app.py in Flower's own process,
    the keys read from the run config) both trackers hold the run's rounds; `fedadapt simulate`
    runs the same serve() as the in-process runs above."""
    import time

    from tests.e2e.helpers import flwr_run_tiny

    out = tmp_path / "runs" / "run"
    with flwr_run_tiny(tmp_path, out, 'tracking = "mlflow,tensorboard"\n') as (run, _):
        for _ in range(60):  # the store exists before summary.json: no second creator
            if (out / "summary.json").is_file():
                break
            time.sleep(1)
        client = MlflowClient(tracking.default_store(out.parent))
        status = None
        for _ in range(60):  # the ServerApp process ends the MLflow run after summary.json
            experiment = client.get_experiment_by_name("tiny")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            status = runs[0].info.status if runs else None
            if status == "FINISHED":
                break
            time.sleep(1)
    assert status == "FINISHED" and len(runs) == 1
    mlrun = runs[0]
    assert "tracking stopped" not in run.stdout + run.stderr
    history = _numeric_history(_rows(out))
    assert (
        sorted((m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, "accuracy"))
        == history["accuracy"]
    )
    acc = _scalars(out.parent / "tensorboard" / "run")
    assert [e.step for e in acc.Scalars("server-lr")] == [s for s, _ in history["server-lr"]]


def test_a_resumed_run_keeps_one_history(tmp_path):
    """Resumed from its round-2 checkpoint, a run's TensorBoard folder holds each round once
    (events after the checkpoint are purged), and its new MLflow run the whole history."""
    out = tmp_path / "run"
    _run(out, "tracking=mlflow,tensorboard", "checkpoint-every=1")
    _run(
        out,
        "tracking=mlflow,tensorboard",
        "checkpoint-every=1",
        f"resume-from={out / 'checkpoints' / 'round-000002.pt'}",
    )
    history = _numeric_history(_rows(out))
    assert [s for s, _ in history["accuracy"]] == [0, 1, 2, 3]
    acc = _scalars(tmp_path / "tensorboard" / "run")
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in acc.Scalars("accuracy")] == [
        (s, v) for s, v in history["accuracy"]
    ]
    client = MlflowClient(tracking.default_store(tmp_path))
    runs = client.search_runs(
        [client.get_experiment_by_name("quickstart").experiment_id],
        order_by=["attributes.start_time ASC"],
    )
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert (
        sorted(
            (m.step, m.value) for m in client.get_metric_history(runs[1].info.run_id, "accuracy")
        )
        == history["accuracy"]
    )
