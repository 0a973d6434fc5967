"""Byzantine clients in simulated runs (``attack.*``, simulations/attacks.py; issue 20 §6).

The attacker rewrites the Byzantine clients' train replies after the honest ones are known.
Each kind is checked by its defining property on the update ``x_i - x_t`` that the strategy
receives (sign flip: minus the client's own; scaling: its own times the factor; ALIE: the
honest mean minus z honest standard deviations; IPM: minus eps times the honest mean; free
rider: zero, its claimed examples kept), each Byzantine client is a reply of its own, and a
bad ``attack.*`` key is refused before any worker starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from typer.testing import CliRunner

from simulations.attacks import AttackGrid, AttackPlan, attack_grid
from simulations.checks import resolve
from simulations.config import ConfigError, load_scenario
from strategies import ClientOutcome, TrainReplyBuilder, read_train_message
from strategies import records as R

pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py

X0 = {"w": torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]), "b": torch.tensor([0.25, -0.5])}
N_EXAMPLES = 40


def own_update(cid: int) -> dict[str, torch.Tensor]:
    """Client ``cid``'s honest update: distinct per client, so mean and sd are not trivial."""
    g = torch.Generator().manual_seed(100 + cid)
    return {k: torch.randn(v.shape, generator=g) * (1 + 0.1 * cid) for k, v in X0.items()}


def train_message(node: int, ids: list[int]) -> Message:
    cfg = ConfigRecord(
        {R.CFG_CLIENT_IDS: ids, R.CFG_CLIENT_LRS: [R.NO_LR] * len(ids), R.CFG_ROUND: 1}
    )
    rd = RecordDict({R.ARRAYS: ArrayRecord(dict(X0)), R.CONFIG: cfg})
    return Message(content=rd, dst_node_id=node, message_type=MessageType.TRAIN)


class HonestWorkers:
    """A Grid whose workers 'train' each client to ``x_t + own_update(cid)`` and reply with the
    ClientApp's own reply builder (one reply per message, the mean of its clients)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return [1, 2]

    def send_and_receive(self, messages, *, timeout=None):
        out = []
        for msg in messages:
            self.sent.append(msg)
            plan = read_train_message(msg)
            builder = TrainReplyBuilder(plan)
            for cid in plan.client_ids:
                state = {k: plan.global_state[k] + own_update(cid)[k] for k in X0}
                builder.add(ClientOutcome(cid, state, N_EXAMPLES, 0.5, {"lr": 0.1}))
            reply = builder.reply(msg)
            reply.metadata.__dict__["_src_node_id"] = msg.metadata.dst_node_id
            out.append(reply)
        return out


def updates(replies) -> dict[tuple[int, ...], dict[str, torch.Tensor]]:
    """Reply ids -> the update it carries."""
    out = {}
    for r in replies:
        ids = tuple(int(c) for c in r.content.config_records[R.CLIENTS][R.C_IDS])
        state = r.content.array_records[R.ARRAYS].to_torch_state_dict()
        out[ids] = {k: state[k].double() - X0[k].double() for k in X0}
    return out


def per_client_round(plan: AttackPlan, cohort=range(10)):
    """One message per client (``reply-mode = per-client``)."""
    grid = AttackGrid(HonestWorkers(), plan)
    replies = grid.send_and_receive([train_message(1 + c % 2, [c]) for c in cohort])
    bad = plan.byzantine(cohort)
    ups = updates(replies)
    honest = [ups[(c,)] for c in cohort if c not in bad]
    return bad, ups, honest, replies


def close(a, b):
    return all(torch.allclose(a[k].double(), b[k].double(), atol=1e-5) for k in X0)


def test_sign_flip_sends_minus_its_own_update():
    bad, ups, _, _ = per_client_round(AttackPlan("sign-flip", clients=2, num_clients=10))
    assert len(bad) == 2
    for c in bad:
        assert close(ups[(c,)], {k: -v for k, v in own_update(c).items()})
    for c in set(range(10)) - bad:  # honest clients untouched
        assert close(ups[(c,)], own_update(c))


def test_scaling_sends_its_own_update_times_the_factor():
    bad, ups, _, _ = per_client_round(AttackPlan("scaling", clients=1, scale=-7.5, num_clients=10))
    (c,) = bad
    assert close(ups[(c,)], {k: -7.5 * v for k, v in own_update(c).items()})


@pytest.mark.parametrize("z", [1.0, 2.5])
def test_alie_sends_the_honest_mean_minus_z_standard_deviations(z):
    bad, ups, honest, _ = per_client_round(AttackPlan("alie", clients=3, alie_z=z, num_clients=10))
    assert len(honest) == 7
    for c in bad:
        for k in X0:
            stack = torch.stack([h[k] for h in honest])
            assert torch.allclose(ups[(c,)][k], stack.mean(0) - z * stack.std(0), atol=1e-5)


def test_alie_z_zero_is_the_papers_z_max():
    plan = AttackPlan("alie", clients=3, alie_z=0.0, num_clients=10)
    # n = 10, f = 3: s = floor(10/2 + 1) - 3 = 3, z = Phi^-1(7/10)
    assert plan.alie_factor(10, 3) == pytest.approx(0.5244, abs=1e-4)
    assert plan.alie_factor(10, 1) == 0.0  # s = 5: (n - s) / n = 0.5 leaves no room


def test_ipm_sends_minus_eps_times_the_honest_mean():
    bad, ups, honest, _ = per_client_round(
        AttackPlan("ipm", clients=2, ipm_epsilon=0.3, num_clients=10)
    )
    mu = {k: torch.stack([h[k] for h in honest]).mean(0) for k in X0}
    for c in bad:
        for k in X0:
            assert torch.allclose(ups[(c,)][k], -0.3 * mu[k], atol=1e-5)
        assert float(sum((ups[(c,)][k] * mu[k]).sum() for k in X0)) < 0  # inner product < 0


def test_free_rider_sends_the_global_model_and_keeps_its_claimed_examples():
    bad, ups, _, replies = per_client_round(AttackPlan("free-rider", clients=1, num_clients=10))
    (c,) = bad
    assert all(float(v.abs().max()) == 0.0 for v in ups[(c,)].values())
    reply = next(r for r in replies if list(r.content.config_records[R.CLIENTS][R.C_IDS]) == [c])
    assert list(reply.content.config_records[R.CLIENTS][R.C_NUM_EXAMPLES]) == [N_EXAMPLES]


def test_a_byzantine_client_in_a_workers_batch_becomes_a_reply_of_its_own():
    """reply-mode = mean: a worker serves several clients and replies with their mean; the
    Byzantine one is sent alone, so the strategy sees it as a separate client."""
    plan = AttackPlan("sign-flip", clients=2, num_clients=10)
    bad = plan.byzantine(range(10))
    inner = HonestWorkers()
    grid = AttackGrid(inner, plan)
    replies = grid.send_and_receive(
        [train_message(1, [0, 2, 4, 6, 8]), train_message(2, [1, 3, 5, 7, 9])]
    )
    ups = updates(replies)
    for c in bad:
        assert close(ups[(c,)], {k: -v for k, v in own_update(c).items()})
    served = sorted(c for ids in ups for c in ids)
    assert served == list(range(10))  # every client once
    for ids, up in ups.items():
        if len(ids) > 1:  # an honest worker mean, without the Byzantine clients
            assert not bad.intersection(ids)
            mean = {k: torch.stack([own_update(c)[k] for c in ids]).mean(0) for k in X0}
            assert close(up, mean)
    assert {m.metadata.dst_node_id for m in inner.sent} == {1, 2}  # same workers as before


def test_byzantine_clients_are_a_fixed_property_of_seed_and_client_id():
    plan = AttackPlan("ipm", clients=3, seed=4, num_clients=20)
    cohorts = [range(0, 10), range(5, 15), range(10, 20)]
    for cohort in cohorts:
        assert len(plan.byzantine(cohort)) == 3  # exactly k of every cohort
    assert plan.byzantine(range(10)) == AttackPlan(
        "ipm", clients=3, seed=4, num_clients=20
    ).byzantine(range(10))
    assert plan.byzantine(range(20)) != AttackPlan(
        "ipm", clients=3, seed=5, num_clients=20
    ).byzantine(range(20))
    share = AttackPlan("ipm", fraction=0.25, seed=4, num_clients=20)
    bad = share.byzantine(range(20))
    assert len(bad) == 5  # round(0.25 x 20) of the population
    assert share.byzantine(range(10)) == bad & set(range(10))


def test_no_attack_leaves_the_grid_alone():
    inner = HonestWorkers()
    cfg = resolve(load_scenario("quickstart"))
    assert attack_grid(inner, cfg) is inner


def test_replies_that_are_not_train_replies_pass_through():
    plan = AttackPlan("sign-flip", clients=1, num_clients=10)
    inner = HonestWorkers()
    msg = train_message(1, [0])
    msg.metadata.__dict__["_message_type"] = MessageType.QUERY
    # a query is not rewritten (the warm-up's and any other message's replies pass)
    replies = AttackGrid(inner, plan).send_and_receive([msg])
    assert len(replies) == 1 and inner.sent == [msg]


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        ({"attack.kind": "poison"}, "'attack.kind'"),
        ({"attack.clients": 2}, "'attack.kind' is 'none'"),
        ({"attack.kind": "alie"}, "needs Byzantine clients"),
        ({"attack.kind": "alie", "attack.clients": 1, "attack.fraction": 0.1}, "both set"),
        ({"attack.kind": "ipm", "attack.clients": 11}, "'clients-per-round'"),
        ({"attack.kind": "ipm", "attack.fraction": 1.5}, "'attack.fraction'"),
        ({"attack.kind": "alie", "attack.clients": 1, "attack.alie-z": -1}, "'attack.alie-z'"),
        ({"attack.kind": "sign-flip", "attack.clients": 1, "deployment": True}, "deployment"),
    ],
)
def test_a_bad_attack_key_is_refused_by_the_config(sets, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        resolve({**load_scenario("quickstart"), **sets})


def test_a_bad_attack_key_stops_the_cli_before_any_run(no_runs):
    from simulations.cli import app

    result = CliRunner().invoke(app, ["simulate", "quickstart", "--set", "attack.kind=ipm"])
    assert result.exit_code == 2, result.output
    assert "needs Byzantine clients" in result.output
    assert "Traceback" not in result.output


def _inprocess():
    path = Path(__file__).resolve().parents[2] / "docs" / "results" / "inprocess.py"
    spec = importlib.util.spec_from_file_location("fedadapt_inprocess", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_run_under_attack_completes_with_the_byzantine_replies_counted(tmp_path):
    """quickstart, 3 rounds, one sign-flipping client of ten, default pipeline: the run ends,
    every client's reply arrived (the Byzantine one as a client of its own) and the model is
    finite."""
    from simulations.cli import build_config

    cfg = build_config(
        "quickstart",
        ["num-server-rounds=3", "attack.kind=sign-flip", "attack.clients=1"],
        0,
        str(tmp_path / "run"),
    )
    summary = _inprocess().run(cfg)
    assert summary["rounds"] == 3
    import json

    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["round"] == 3][0]
    assert last["num-succeeded"] == 10
    final = torch.load(tmp_path / "run" / "final_model.pt")
    assert all(torch.isfinite(v).all() for v in final.values())
