"""Bad input catalogue, part 3 (docs/BAD_INPUTS.md lists all): data files, checkpoints named in
a config, run directories, train messages reaching a worker, and the retrying grid. Each input
is answered with a clear error (or a reply that says why), and nothing already written is lost.
"""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from simulations.checks import resolve
from simulations.client_app import handle_train
from simulations.config import ConfigError, load_scenario
from simulations.data import build_source
from simulations.reader import read
from simulations.report import report
from simulations.world import world

pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _csv_source(path, **kw):
    return build_source(
        "hub",
        num_clients=2,
        options={
            "dataset": "csv",
            "data_files": str(path),
            "cache_dir": str(path.parent / "c"),
            **kw,
        },
    )


def test_data_file_missing_label_column(tmp_path, offline):
    f = tmp_path / "d.csv"
    f.write_text("a,b\n" + "\n".join(f"{i},{i + 1}" for i in range(20)) + "\n")
    src = _csv_source(f, label_column="label")
    with pytest.raises((ValueError, KeyError), match="label"):
        src.get(0)


def test_data_file_that_does_not_exist(tmp_path, offline):
    with pytest.raises(Exception, match="missing.csv|doesn't exist|not found|No such|Unable"):
        _csv_source(tmp_path / "missing.csv").get(0)


def test_data_file_with_text_labels(tmp_path, offline):
    f = tmp_path / "t.csv"
    f.write_text("x,label\n" + "\n".join(f"{i},cat{i % 2}" for i in range(20)) + "\n")
    with pytest.raises(ValueError, match="label"):
        _csv_source(f, feature_columns=["x"]).get(0)


def test_scenario_value_of_the_wrong_type(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('num-clients = "ten"\n')
    with pytest.raises(ConfigError, match="'num-clients'.*an integer"):
        resolve(load_scenario(str(f)))


def test_scenario_rotation_on_vectors_is_refused():
    with pytest.raises(ConfigError, match="rotation needs images"):
        resolve({"dataset": "synthetic", "drift.kind": "rotation", "drift.round": 2})


def test_resume_from_a_corrupt_checkpoint_fails_before_any_worker(tmp_path):
    bad = tmp_path / "latest.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="'resume-from'.*not a readable"):
        resolve({"resume-from": str(bad)})
    with pytest.raises(ConfigError, match="'resume-from'.*no checkpoint"):
        resolve({"resume-from": str(tmp_path / "nope.pt")})


def test_resume_from_a_pickle_is_refused(tmp_path):
    # torch.load(weights_only=True) never unpickles arbitrary objects
    evil = tmp_path / "evil.pt"
    import datetime

    torch.save({"format": "fedadapt-strategy-checkpoint", "obj": datetime.datetime.now()}, evil)
    with pytest.raises(ConfigError, match="'resume-from'"):
        resolve({"resume-from": str(evil)})


def test_report_on_a_corrupt_metrics_file_names_the_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"round": 0}\n{"round": 1, "accur\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        report(run)
    assert (run / "metrics.jsonl").read_text().endswith('"accur\n')


def test_report_on_a_run_without_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"round": 0, "accuracy": 0.1}\n')
    with pytest.raises(ValueError, match="config"):
        report(run)


def _cfg(**kw):
    cfg = resolve(
        {"num-clients": 4, "clients-per-round": 2, **kw}, base=load_scenario("quickstart")
    )
    return read(cfg)


def test_train_message_without_arrays_gets_an_error_reply_not_a_crash():
    msg = Message(
        RecordDict({"config": ConfigRecord({"fedadapt.client-ids": [0]})}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )
    reply = handle_train(msg, _cfg())
    assert reply.has_error() and "ArrayRecord" in reply.error.reason


def _train_msg(cfg, arrays, **config):
    base = {
        "fedadapt.client-ids": [0, 1],
        "fedadapt.optimizer": "sgd",
        "fedadapt.optimizer-options": json.dumps({"lr": 0.1}),
        "server-round": 1,
    }
    return Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord({**base, **config})}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )


def test_train_message_with_the_wrong_model_gets_an_error_reply():
    cfg = _cfg()
    msg = _train_msg(cfg, ArrayRecord(torch.nn.Linear(3, 2).state_dict()))
    reply = handle_train(msg, cfg)
    assert reply.has_error() and "keys differ" in reply.error.reason


def test_train_message_with_client_ids_outside_the_population_reports_each():
    cfg = _cfg()
    arrays = ArrayRecord(world(cfg.world).model().state_dict())
    reply = handle_train(_train_msg(cfg, arrays, **{"fedadapt.client-ids": [1, 99]}), cfg)
    clients = reply.content["fedadapt.clients"]
    assert list(clients["ids"]) == [1]
    assert list(clients["failed-ids"]) == [99] and "99" in clients["failed-reasons"][0]


def test_train_message_with_an_unknown_optimizer_reports_the_clients():
    cfg = _cfg()
    arrays = ArrayRecord(world(cfg.world).model().state_dict())
    reply = handle_train(_train_msg(cfg, arrays, **{"fedadapt.optimizer": "lion"}), cfg)
    clients = reply.content["fedadapt.clients"]
    assert list(clients["failed-ids"]) == [0, 1]
    assert all("lion" in r for r in clients["failed-reasons"])


def _finished_run(tmp_path, changepoints):
    from simulations.report import RunWriter

    cfg = resolve({}, base=load_scenario("drift-digits"))
    writer = RunWriter(tmp_path / "run", cfg, changepoints=changepoints)
    for r in range(0, 41):
        acc = 0.1 if r == 0 else (0.9 if r < 20 else (0.3 if r == 20 else 0.88))
        writer.add(r, {"accuracy": acc, "server-lr": 1.0})
        writer.flush(r)
    writer.finish()
    return tmp_path / "run"


def test_report_reads_the_schedule_the_run_wrote_not_the_config(tmp_path):
    run = _finished_run(tmp_path, [20])
    config = json.loads((run / "config.json").read_text())
    config["drift.round"] = 5  # an edited config must not move the changepoint
    (run / "config.json").write_text(json.dumps(config))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    _, out = report(run, plots=False)
    groups = json.loads((out / "report.json").read_text())["groups"]
    dip = groups[0]["columns"]["dip"]
    assert dip["changepoint-round"] == 20 and dip["values"] == [pytest.approx(0.6)]
    # the run's own files are only read
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_report_on_a_run_without_its_schedule_names_the_file(tmp_path):
    run = _finished_run(tmp_path, [20])
    (run / "schedule.json").unlink()
    with pytest.raises(ValueError, match="schedule.json"):
        report(run)
