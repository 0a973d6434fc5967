"""Base directions as objects: ``direction=`` equals the base arguments, and a scalar rule wraps
any torch optimizer (``TorchDirection``) where its math allows it."""

from __future__ import annotations

import copy
import inspect
import io
import pickle

import pytest
import torch

import fedadapt
from fedadapt import AdamDirection, SGDDirection, TorchDirection

SCALAR_CLIENT = ["hd", "hd-mult", "autodrop", "fedhyper-cl"]
SCALAR_SERVER = ["hd", "hd-mult", "fedexp", "fedhyper-g", "autodrop"]
PER_COORDINATE = ["eg", "dsa", "cprop"]


def _params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_(),
        torch.randn(3, generator=g, dtype=torch.float64).requires_grad_(),
    ]


def _grads(steps: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    bias = [
        torch.randn(4, 3, generator=g, dtype=torch.float64),
        torch.randn(3, generator=g, dtype=torch.float64),
    ]
    return [
        [b + 0.7 * torch.randn(b.shape, generator=g, dtype=torch.float64) for b in bias]
        for _ in range(steps)
    ]


def _run(
    opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]
) -> list[float]:
    lrs = []
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()
        lrs.append(float(opt.param_groups[0]["lr"]))
    return lrs


@pytest.mark.parametrize("name", ["hd", "hd-mult", "autodrop", "fedhyper-cl", "eg", "dsa", "cprop"])
@pytest.mark.parametrize(
    ("objects", "base"),
    [
        (SGDDirection(), {}),
        (SGDDirection(momentum=0.9, nesterov=True), {"momentum": 0.9, "nesterov": True}),
        (SGDDirection(momentum=0.5, dampening=0.1), {"momentum": 0.5, "dampening": 0.1}),
        (AdamDirection(), {"base": "adam"}),
        (
            AdamDirection(betas=(0.8, 0.99), eps=1e-6),
            {"base": "adam", "betas": (0.8, 0.99), "eps": 1e-6},
        ),
    ],
    ids=["sgd", "nesterov", "dampened", "adam", "adam-betas"],
)
def test_direction_objects_are_the_base_arguments_bit_for_bit(name, objects, base):
    hyper = {"hyper_lr": 1e-3} if name == "hd" else {}
    pa, pb = _params(), _params()
    a = fedadapt.build_optimizer(name, pa, lr=0.05, **hyper, **base)
    b = fedadapt.build_optimizer(name, pb, lr=0.05, **hyper, direction=copy.deepcopy(objects))
    assert _run(a, pa, _grads(8)) == _run(b, pb, _grads(8))
    for x, y in zip(pa, pb, strict=True):
        assert torch.equal(x, y)
    assert (
        a.state_dict()["param_groups"] == b.state_dict()["param_groups"]
    )  # the same group entries


@pytest.mark.parametrize("name", SCALAR_CLIENT)
@pytest.mark.parametrize(
    ("torch_cls", "kw", "base"),
    [
        (torch.optim.SGD, {}, {}),
        (torch.optim.SGD, {"momentum": 0.9}, {"momentum": 0.9}),
        (torch.optim.Adam, {}, {"base": "adam"}),
    ],
    ids=["sgd", "momentum", "adam"],
)
def test_a_scalar_rule_over_a_wrapped_torch_optimizer_matches_the_built_in_direction(
    name, torch_cls, kw, base
):
    hyper = {"hyper_lr": 1e-3} if name == "hd" else {}
    pa, pb = _params(), _params()
    builtin = fedadapt.build_optimizer(name, pa, lr=0.05, **hyper, **base)
    wrapped = fedadapt.build_optimizer(
        name, pb, lr=0.05, **hyper, direction=TorchDirection(torch_cls, **kw)
    )
    la, lb = _run(builtin, pa, _grads(8)), _run(wrapped, pb, _grads(8))
    # the wrapped direction is a difference of parameters: equal up to rounding
    torch.testing.assert_close(torch.tensor(la), torch.tensor(lb), rtol=1e-9, atol=1e-12)
    for x, y in zip(pa, pb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", SCALAR_SERVER)
def test_server_rules_over_a_wrapped_adam_match_the_built_in_adam(name):
    pa, pb = _params(), _params()
    sa = fedadapt.ServerOptimizer(pa, name, base="adam", lr=0.1)
    sb = fedadapt.ServerOptimizer(
        pb,
        name,
        direction=TorchDirection(torch.optim.Adam),
        lr=0.1,
        **({"hyper_lr": sa.optimizer.param_groups[0]["hyper_lr"]} if name == "hd" else {}),
    )
    for r, step in enumerate(_grads(5)):
        for server, ps in ((sa, pa), (sb, pb)):
            with torch.no_grad():
                clients = [
                    [
                        p.detach() - (0.3 + 0.2 * k) * g * (1 + 0.1 * r)
                        for p, g in zip(ps, step, strict=True)
                    ]
                    for k in range(3)
                ]
            server.step(clients, [1.0, 2.0, 3.0])
        assert sa.last_info["lr"] == pytest.approx(sb.last_info["lr"], rel=1e-9)
    for x, y in zip(pa, pb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


class Lion(torch.optim.Optimizer):
    """A user's optimizer (Chen et al., "Symbolic Discovery of Optimization Algorithms",
    arXiv:2302.06675), written the way a user would: not one fedadapt knows."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99)) -> None:  # noqa: ANN001
        super().__init__(params, {"lr": lr, "betas": betas})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(p)
                m = st["exp_avg"]
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


@pytest.mark.parametrize("name", ["hd", "hd-mult", "fedhyper-cl"])
@pytest.mark.parametrize(
    ("torch_cls", "kw"),
    [
        (torch.optim.AdamW, {"weight_decay": 0.01}),
        (torch.optim.RMSprop, {"alpha": 0.9}),
        (torch.optim.Adagrad, {}),
        (Lion, {}),
    ],
    ids=["adamw", "rmsprop", "adagrad", "lion"],
)
def test_any_torch_optimizer_runs_adapts_its_lr_and_resumes_exactly(name, torch_cls, kw):
    hyper = {"hyper_lr": 1e-2} if name == "hd" else {}
    params = _params()
    opt = fedadapt.build_optimizer(
        name, params, lr=0.01, **hyper, direction=TorchDirection(torch_cls, **kw)
    )
    grads = _grads(10)
    lrs = _run(opt, params, grads[:5])
    assert all(torch.isfinite(p).all() for p in params)
    assert lrs[-1] != pytest.approx(0.01, rel=1e-6)  # the rule adapted the step size
    assert opt.state[params[0]][
        "base_state"
    ]  # the wrapped optimizer's buffers ride in the rule's state
    # a checkpoint (torch.save, weights only) resumes the identical trajectory
    buf = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buf)
    clone = pickle.loads(pickle.dumps(opt))  # and pickling (Ray) keeps the wrapped optimizer
    assert isinstance(clone.direction, TorchDirection)
    _run(opt, params, grads[5:])
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    resumed = [p.clone().requires_grad_() for p in ck["params"]]
    opt2 = fedadapt.build_optimizer(
        name, resumed, lr=0.01, **hyper, direction=TorchDirection(torch_cls, **kw)
    )
    opt2.load_state_dict(ck["opt"])
    _run(opt2, resumed, grads[5:])
    for a, b in zip(params, resumed, strict=True):
        assert torch.equal(a, b)
    assert float(opt.param_groups[0]["lr"]) == float(opt2.param_groups[0]["lr"])


def test_a_wrapped_optimizer_steps_one_group_at_a_time_and_skips_a_non_finite_one():
    params = _params()
    opt = fedadapt.HypergradientDescent(
        [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.02}],
        lr=0.01,
        direction=TorchDirection(torch.optim.AdamW),
    )
    params[0].grad = torch.ones_like(params[0])
    params[1].grad = torch.full_like(params[1], float("nan"))
    before = params[1].detach().clone()
    opt.step()
    assert opt.param_groups[1]["skipped"] == 1 and torch.equal(params[1], before)
    assert opt.param_groups[0]["step"] == 1 and not torch.equal(params[0], _params()[0])
    assert "base_state" not in opt.state[params[1]] or not opt.state[params[1]]["base_state"]


@pytest.mark.parametrize("name", PER_COORDINATE)
def test_a_rule_that_fuses_its_direction_refuses_a_wrapped_optimizer(name):
    with pytest.raises(
        ValueError, match="needs a built-in direction.*TorchDirection serves the scalar rules"
    ):
        fedadapt.build_optimizer(
            name, _params(), lr=0.01, direction=TorchDirection(torch.optim.AdamW)
        )


def test_direction_arguments_are_checked():
    with pytest.raises(ValueError, match="either direction= or the base arguments"):
        fedadapt.build_optimizer("hd", _params(), direction=AdamDirection(), base="adam")
    with pytest.raises(ValueError, match="weight_decay belongs to the wrapped optimizer"):
        fedadapt.build_optimizer(
            "hd", _params(), direction=TorchDirection(torch.optim.AdamW), weight_decay=0.1
        )
    with pytest.raises(ValueError, match="leave out lr"):
        TorchDirection(torch.optim.AdamW, lr=0.1)
    with pytest.raises(ValueError, match="torch.optim.Optimizer subclass"):
        TorchDirection("adamw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction must be a fedadapt Direction"):
        fedadapt.build_optimizer("hd", _params(), direction="adam")
    with pytest.raises(ValueError, match="momentum must be in"):
        SGDDirection(momentum=1.0)
    with pytest.raises(ValueError, match="nesterov needs"):
        SGDDirection(momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="betas must be"):
        AdamDirection(betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="unexpected keyword"):
        fedadapt.HypergradientDescent(_params(), not_an_argument=1)  # type: ignore[call-arg]


def test_the_base_arguments_are_in_every_wrapping_constructors_signature():
    block = [
        "direction",
        "base",
        "momentum",
        "dampening",
        "nesterov",
        "betas",
        "eps",
        "weight_decay",
    ]
    for name in fedadapt.available_optimizers():
        if name in ("sgd", "adam"):
            continue
        from fedadapt.registry import _REGISTRY

        names = list(inspect.signature(_REGISTRY[name]).parameters)
        if "direction" in names:
            at = names.index("direction")
            assert names[at : at + len(block)] == block, name
            defaults = {
                k: inspect.signature(_REGISTRY[name]).parameters[k].default for k in block[1:]
            }
            assert defaults == fedadapt.directions.DIRECTION_DEFAULTS
