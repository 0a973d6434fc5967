"""The server pipeline (issue 20 §2-3): each stage on its own, then in a run of ten clients
where one misbehaves, driven in-process (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from strategy_fakes import FakeGrid, tiny_model, worker

from strategies import (
    Aggregator,
    Clipping,
    FedAdapt,
    GaussianPrivacy,
    ReplyLimits,
    ServerPipeline,
    WeightCap,
)

NODES = list(range(1, 11))


# ----------------------------------------------------------------------------- stages alone


def test_weight_cap_water_fills_to_the_share_and_leaves_honest_counts_alone():
    cap = WeightCap(0.4)
    honest = [60.0, 80.0, 100.0, 70.0]
    assert cap.cap(honest) == honest
    cap = WeightCap(0.3)
    w = cap.cap([1e12, 150.0, 150.0, 150.0, 150.0, 150.0, 150.0, 150.0, 150.0, 150.0])
    assert max(w) / sum(w) == pytest.approx(0.3)
    assert w[1:] == [150.0] * 9
    two = cap.cap([1e6, 1.0])  # fewer than 1/share clients: equal weights
    assert two[0] == pytest.approx(two[1])
    with pytest.raises(ValueError, match="max_client_share"):
        WeightCap(0.0)


@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.8])
def test_adaptive_clip_bound_converges_to_the_target_quantile(quantile):
    """Andrew et al. (arXiv:1905.03871): C settles at the gamma-quantile of the norms, from a
    start 100x too small or too large."""
    rng = np.random.default_rng(0)
    for start in (0.01, 100.0):
        clip = Clipping(clip_norm=start, quantile=quantile, max_ratio=None)
        for _ in range(400):
            clip.adapt(list(rng.lognormal(0.0, 0.5, size=50)))
        truth = float(np.quantile(rng.lognormal(0.0, 0.5, size=200_000), quantile))
        assert clip.bound == pytest.approx(truth, rel=0.1), (start, clip.bound, truth)
        fit = np.mean(rng.lognormal(0.0, 0.5, size=20_000) <= clip.bound)
        assert fit == pytest.approx(quantile, abs=0.05)


def test_clip_bound_is_the_smallest_rule():
    clip = Clipping(clip_norm=5.0, max_ratio=2.0)
    assert clip.round_bound([1.0, 1.0, 1.0])[0] == 2.0
    assert clip.round_bound([10.0, 10.0, 10.0])[0] == 5.0
    with pytest.raises(ValueError, match="clip_quantile"):
        Clipping(quantile=1.5)
    with pytest.raises(ValueError, match="over_bound"):
        Clipping(action="ignore")


def test_aggregators_are_flowers_own():
    from flwr.server.strategy.aggregate import aggregate_median

    ups = [[np.array([float(i), -float(i)])] for i in range(5)]
    got, note = Aggregator("median").aggregate(ups, [1.0] * 5)
    assert note == "" and np.array_equal(got[0], aggregate_median([(u, 1) for u in ups])[0])
    got, _ = Aggregator("trimmed-mean", trim_fraction=0.2).aggregate(ups, [1.0] * 5)
    assert np.allclose(got[0], [2.0, -2.0])
    ups[4] = [np.array([1e9, 1e9])]
    got, _ = Aggregator("krum", byzantine=1).aggregate(ups, [1.0] * 5)
    assert abs(got[0][0]) < 10
    got, note = Aggregator("bulyan", byzantine=1).aggregate(ups, [1.0] * 5)
    assert "median" in note  # 5 < 4 f + 3
    with pytest.raises(ValueError, match="aggregator must be one of"):
        Aggregator("mode")


def test_reply_limits_options_are_checked():
    with pytest.raises(ValueError, match="max_metrics"):
        ReplyLimits(max_metrics=0)


# ----------------------------------------------------------------------------- in a run


def strategy(**kw):
    kw.setdefault("server_optimizer", "cp-adam")
    return FedAdapt(
        clients_per_round=10,
        min_available_nodes=10,
        min_train_nodes=10,
        seed=1,
        client_options={"lr": 0.05},
        fraction_evaluate=0.0,
        **kw,
    )


def standard_reply(msg, arrays, n, loss=0.5, metrics=None):
    met = {"num-examples": n, "train_loss": loss, **(metrics or {})}
    return Message(
        RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(met)}), reply_to=msg
    )


def attacker(node, make):
    """Node ``node`` replies ``make(msg, honest_state_dict)``; the others train honestly."""

    def respond(msg):
        if msg.metadata.dst_node_id != node:
            return worker(msg)
        model = tiny_model()
        return make(msg, {k: v.clone() for k, v in model.state_dict().items()})

    return respond


def run(s, respond=worker, rounds=3):
    res = s.start(
        FakeGrid(NODES, respond), ArrayRecord(tiny_model().state_dict()), num_rounds=rounds
    )
    return res, s.history


def failures_of(h, node):
    return [r for i, r in zip(h["failed-ids"], h["failed-reasons"], strict=True) if i == node]


def test_defaults_leave_an_honest_run_bitwise_unchanged():
    a, _ = run(strategy())
    b, _ = run(strategy(clipping=Clipping(max_ratio=None), weight_cap=WeightCap(1.0)))
    for k in a.arrays:
        assert a.arrays[k].data == b.arrays[k].data


def test_a_reply_of_1e30_is_clipped_named_and_the_server_steps():
    s = strategy()
    _, hist = run(
        s,
        attacker(
            3,
            lambda m, sd: standard_reply(
                m, {k: torch.full_like(v, 1e30) for k, v in sd.items()}, 8
            ),
        ),
    )
    for h in hist:
        (reason,) = failures_of(h, 3)
        assert reason.startswith("clipped: update norm") and "median norm" in reason
        assert h["server-skipped"] == 0.0  # the step proceeds (it was skipped every round)
        assert h["server-clipped"] == 1.0
    final = [float(a.numpy().max()) for a in s._current.values()] if s._current else []
    assert all(math.isfinite(v) and abs(v) < 10 for v in final)


def test_a_claim_of_1e12_examples_is_dropped_and_1e6_capped_both_named():
    _, hist = run(strategy(), attacker(2, lambda m, sd: standard_reply(m, sd, 10**12)))
    (reason,) = failures_of(hist[0], 2)
    assert reason.startswith("dropped: claims 1000000000000 examples")
    _, hist = run(strategy(), attacker(2, lambda m, sd: standard_reply(m, sd, 10**6)))
    (reason,) = failures_of(hist[0], 2)
    assert reason.startswith("capped: claims 1000000 examples")
    assert hist[0]["num-succeeded"] == 10


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda m, sd: standard_reply(m, sd, 10**308), "max-client-examples"),
        (
            lambda m, sd: standard_reply(m, sd, 8, metrics={"junk": [0.0] * 200_000}),
            "max-metric-values",
        ),
        (
            lambda m, sd: standard_reply(m, sd, 8, metrics={f"k{i}": 1.0 for i in range(100)}),
            "max-reply-metrics",
        ),
    ],
)
def test_oversized_replies_are_dropped_and_named(make, fragment):
    s = strategy()
    _, hist = run(s, attacker(5, make), rounds=2)
    for h in hist:
        (reason,) = failures_of(h, 5)
        assert reason.startswith("dropped:") and fragment in reason
        assert h["num-succeeded"] == 9
    assert all("junk" not in h for h in hist)


@pytest.mark.parametrize("name", ["median", "trimmed-mean", "krum", "multikrum", "bulyan"])
def test_robust_aggregators_compose_with_cp_adam(name):
    s = strategy(aggregator=Aggregator(name, byzantine=1))
    res, hist = run(
        s,
        attacker(4, lambda m, sd: standard_reply(m, {k: -50.0 * v for k, v in sd.items()}, 8)),
        rounds=3,
    )
    assert all(math.isfinite(float(a.numpy().sum())) for a in res.arrays.values())
    assert all(h["server-skipped"] == 0.0 for h in hist)


def test_median_aggregate_is_what_the_server_method_steps_on():
    s = strategy(server_optimizer="sgd", server_options={"lr": 1.0}, aggregator="median")
    init = ArrayRecord(tiny_model().state_dict())
    seen = []

    def respond(msg):
        r = worker(msg)
        seen.append({k: torch.from_numpy(a.numpy()) for k, a in r.content["arrays"].items()})
        return r

    res = s.start(FakeGrid(NODES, respond), init, num_rounds=1)
    x0 = {k: torch.from_numpy(a.numpy()) for k, a in init.items()}
    for k in x0:
        med = np.median(np.stack([(c[k] - x0[k]).double().numpy() for c in seen]), axis=0)
        assert np.allclose(res.arrays[k].numpy(), (x0[k].double().numpy() + med), atol=1e-6)


def test_privacy_noises_the_clipped_sum_before_the_server_step():
    z, clip = 0.5, 0.05
    s = strategy(
        server_optimizer="sgd",
        server_options={"lr": 1.0},
        clipping=Clipping(clip_norm=clip, max_ratio=None),
        privacy=GaussianPrivacy(z, sample_rate=0.1, seed=4),
    )
    init = ArrayRecord(tiny_model().state_dict())
    res, hist = run(s, rounds=1)
    h = hist[0]
    assert h["server-dp-noise-std"] == pytest.approx(z * clip / 10)
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(z, 0.1, 1)]
    assert h["server-dp-epsilon"] == pytest.approx(acc.get_epsilon(1e-5))
    # every client was clipped to the bound, so the step is at most C + the noise
    step = math.sqrt(
        sum(
            float(
                (
                    (torch.from_numpy(res.arrays[k].numpy()) - torch.from_numpy(init[k].numpy()))
                    ** 2
                ).sum()
            )
            for k in init
        )
    )
    assert step < clip + 5 * z * clip / 10 * math.sqrt(18)


def test_privacy_needs_a_clip_and_a_deployment_needs_its_sample_rate():
    with pytest.raises(ValueError, match="clip"):
        strategy(privacy=GaussianPrivacy(1.0, sample_rate=0.1))
    with pytest.raises(ValueError, match="dp_sample_rate"):
        strategy(clipping=Clipping(clip_norm=1.0), privacy=GaussianPrivacy(1.0))


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"aggregator": "median"}, "aggregator 'median'"),
        ({"clipping": Clipping(clip_norm=1.0)}, "clipping"),
        ({"server_optimizer": "fedexp"}, "fedexp"),
    ],
)
def test_sums_only_refuses_what_needs_per_client_values(kw, fragment):
    with pytest.raises(ValueError, match="sums_only") as err:
        strategy(sums_only=True, **kw)
    assert fragment in str(err.value)


def test_sums_only_runs_cp_adam_with_the_scalar_detector():
    s = strategy(sums_only=True)
    assert s.pipeline.clipping.max_ratio is None
    _, hist = run(s)
    assert "server-detector-start-loss-share" not in hist[-1] or math.isnan(
        hist[-1]["server-detector-start-loss-share"]
    )


def test_population_mean_replies_refuse_per_client_stages():
    with pytest.raises(ValueError, match="reply_mode='per-client'"):
        FedAdapt(num_clients=20, clients_per_round=4, num_workers=2, aggregator="krum")
    FedAdapt(
        num_clients=20,
        clients_per_round=4,
        num_workers=2,
        aggregator="krum",
        reply_mode="per-client",
    )


def test_pipeline_state_travels_in_checkpoints(tmp_path):
    kw = dict(
        clipping=Clipping(clip_norm=0.5, quantile=0.5, max_ratio=None),
        checkpoint_dir=tmp_path,
        checkpoint_every=1,
    )
    s = strategy(**kw)
    run(s, rounds=2)
    bound = s.pipeline.clipping.bound
    t = strategy(**kw)
    t.load_checkpoint(tmp_path)
    assert t.pipeline.clipping.bound == bound != 0.5


def test_a_pipeline_of_the_wrong_stage_types_is_refused():
    with pytest.raises(ValueError, match="clipping must be a strategies.Clipping"):
        ServerPipeline(clipping="on")  # type: ignore[arg-type]
