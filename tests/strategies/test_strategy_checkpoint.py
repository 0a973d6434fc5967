"""Six rounds straight == three rounds + resume + three more, bitwise on CPU."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord
from strategy_fakes import FakeGrid, tiny_model

from strategies import CheckpointError, FedAdapt, build_strategy, read_checkpoint

CASES = {
    "fedadapt-adam-persist": (
        "fedadapt",
        {
            "server_optimizer": "adam",
            "server_options": {"lr": 0.05},
            "client_optimizer": "hd",
            "client_lr_state": "persist",
        },
    ),
    "fedhyper-sl": ("fedhyper-sl", {}),
    "fedhyper-full": ("fedhyper-full", {}),
    "flower-fedadam": ("fedadam", {"eta": 0.05}),
    # the default method: detector state, plasticity countdown and a change at round 3
    "cp-adam-oracle": ("fedadam-oracle", {"change_rounds": [3]}),
    "cp-adam": ("fedadapt", {"server_optimizer": "cp-adam", "server_options": {}}),
}


def _make(name, kw, tmp, every=3):
    return build_strategy(
        name,
        num_clients=40,
        clients_per_round=6,
        num_workers=3,
        seed=11,
        client_options={"lr": 0.05},
        checkpoint_dir=tmp,
        checkpoint_every=every,
        **kw,
    )


@pytest.mark.parametrize("case", list(CASES))
def test_resume_is_bitwise_identical(case, tmp_path):
    name, kw = CASES[case]
    init = ArrayRecord(tiny_model().state_dict())
    straight = _make(name, kw, tmp_path / "a")
    r6 = straight.start(FakeGrid([1, 2, 3]), init, num_rounds=6)

    first = _make(name, kw, tmp_path / "b")
    first.start(FakeGrid([4, 5, 6]), init, num_rounds=3)
    resumed = _make(name, kw, tmp_path / "b")
    rnd, _ = resumed.load_checkpoint(tmp_path / "b")
    assert rnd == 3
    r36 = resumed.start(FakeGrid([7, 8, 9]), init, num_rounds=6)

    assert sorted(r36.train_metrics_clientapp) == [4, 5, 6]
    for k in r6.arrays:
        assert r6.arrays[k].data == r36.arrays[k].data, k
    assert [h["sampled-ids"] for h in straight.history[3:]] == [
        h["sampled-ids"] for h in resumed.history
    ]
    assert [h.get("server-lr") for h in straight.history[3:]] == [
        h.get("server-lr") for h in resumed.history
    ]
    assert straight.client_lrs == resumed.client_lrs
    assert straight.server_client_lr == resumed.server_client_lr


def test_checkpoint_loads_with_weights_only_and_holds_the_state(tmp_path):
    s = _make("fedadapt", CASES["fedadapt-adam-persist"][1], tmp_path, every=2)
    s.start(FakeGrid([1, 2, 3]), ArrayRecord(tiny_model().state_dict()), num_rounds=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latest.pt",
        "round-000002.pt",
        "round-000004.pt",
    ]
    data = torch.load(tmp_path / "round-000004.pt", weights_only=True)
    assert data["round"] == 4 and set(data["arrays"]) == {"weight", "bias"}
    assert data["server"]["server_optimizer"]["round"] == 4
    assert data["clients"]["ids"] and len(data["clients"]["ids"]) == len(data["clients"]["lrs"])
    assert read_checkpoint(tmp_path)["round"] == 4


def test_corrupt_or_mismatched_checkpoints_raise_clear_errors(tmp_path):
    kw = CASES["fedadapt-adam-persist"][1]
    s = _make("fedadapt", kw, tmp_path, every=1)
    s.start(FakeGrid([1, 2, 3]), ArrayRecord(tiny_model().state_dict()), num_rounds=1)
    good = tmp_path / "round-000001.pt"

    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable"):
        _make("fedadapt", kw, tmp_path).load_checkpoint(bad)

    other = tmp_path / "other.pt"
    torch.save({"hello": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a fedadapt strategy checkpoint"):
        _make("fedadapt", kw, tmp_path).load_checkpoint(other)

    wrong_seed = build_strategy(
        "fedadapt",
        num_clients=40,
        clients_per_round=6,
        num_workers=3,
        seed=12,
        client_options={"lr": 0.05},
        **kw,
    )
    with pytest.raises(CheckpointError, match="seed"):
        wrong_seed.load_checkpoint(good)

    with pytest.raises(CheckpointError, match="server-optimizer"):
        _make(
            "fedadapt", {**kw, "server_optimizer": "sgd", "server_options": {"lr": 1.0}}, tmp_path
        ).load_checkpoint(good)

    with pytest.raises(CheckpointError, match="no checkpoint"):
        _make("fedadapt", kw, tmp_path).load_checkpoint(tmp_path / "missing.pt")

    resumed = _make("fedadapt", kw, tmp_path)
    resumed.load_checkpoint(good)
    other_model = ArrayRecord(torch.nn.Linear(4, 3).state_dict())
    with pytest.raises(CheckpointError, match="weight"):
        resumed.start(FakeGrid([1, 2, 3]), other_model, num_rounds=2)


def test_checkpoint_every_needs_a_directory():
    with pytest.raises(ValueError, match="checkpoint_dir"):
        FedAdapt(num_clients=4, clients_per_round=2, checkpoint_every=2)
