"""Shared cases for the fedadapt tests: every registered method with small, valid settings."""

from __future__ import annotations

import torch

# name -> list of hyperparameter variants exercised by the contract and differential tests
VARIANTS: dict[str, list[dict]] = {
    "sgd": [{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9}],
    "adam": [{"lr": 0.01}],
    "hd": [
        {"lr": 0.05},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"lr": 0.01, "base": "adam", "hyper_lr": 1e-4},
        {"lr": 0.05, "weight_decay": 0.01},
    ],
    "hd-mult": [{"lr": 0.05}, {"lr": 0.01, "base": "adam"}, {"lr": 0.05, "momentum": 0.5}],
    "dsa": [{"lr": 0.05}, {"lr": 0.01, "base": "adam"}, {"lr": 0.05, "momentum": 0.9}],
    "autodrop": [
        {"lr": 0.05, "window": 2, "threshold": 30.0, "patience": 0},
        {"lr": 0.01, "window": 2, "base": "adam", "threshold": 30.0},
    ],
    "cprop": [
        {"lr": 0.05, "conformity_beta": 0.9},
        {"lr": 0.01, "base": "adam", "cdf": "bft"},
        {"lr": 0.05, "conformity_beta": 0.9, "momentum": 0.9, "overconfidence": 3.0},
    ],
    "eg": [{"lr": 0.05}, {"lr": 0.01, "base": "adam"}, {"lr": 0.05, "momentum": 0.9}],
    "fedexp": [{"lr": 1.0}, {"lr": 0.5, "momentum": 0.9}],
    "fedhyper-g": [{"lr": 1.0, "hyper_lr": 0.5}, {"lr": 0.1, "base": "adam"}],
    "fedhyper-gm": [{"lr": 1.0, "hyper_lr": 0.5}],
    "fedhyper-cl": [{"lr": 0.05}, {"lr": 0.05, "momentum": 0.9}, {"lr": 0.01, "base": "adam"}],
    "flash": [{"lr": 0.1}, {"lr": 0.1, "adaptive_b3": False}],
    "adaptive-fedavg": [{}, {"decay": False}],
    "cp-adam": [{"lr": 0.1}, {"lr": 0.05, "scale_rate": 0.3}, {"lr": 0.1, "weight_decay": 0.01}],
}

CASES = [(name, kw) for name, kws in VARIANTS.items() for kw in kws]
CASE_IDS = [f"{name}-{i}" for name, kws in VARIANTS.items() for i in range(len(kws))]


def signals_for(name: str, step: int) -> dict:
    """Per-round statistics for methods that need them (deterministic in ``step``)."""
    if name == "fedexp":
        return {"client_sq_norms_mean": 2.0 + 0.5 * step, "num_clients": 4}
    return {}


def make_params(seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(4, 3, generator=g, dtype=dtype),
        torch.randn(3, generator=g, dtype=dtype),
        torch.randn(2, 2, 2, generator=g, dtype=dtype),
    ]


def grad_stream(params: list[torch.Tensor], steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    """Gradients with a consistent component plus noise, so adaptive rules actually move."""
    g = torch.Generator().manual_seed(seed)
    bias = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    return [
        [
            b + 0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype)
            for b, p in zip(bias, params, strict=False)
        ]
        for _ in range(steps)
    ]


def set_grads(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads, strict=False):
        p.grad = g.clone()


def state_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        assert sa["state"][k].keys() == sb["state"][k].keys()
        for n, v in sa["state"][k].items():
            w = sb["state"][k][n]
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, w), n
            else:
                assert v == w, n


def side_of(name: str) -> str:
    """Where a test that loops over methods builds ``name`` (``fedadapt.build_optimizer``'s
    ``side``): a server-only method on the server, every other one on a client."""
    import fedadapt

    return "server" if fedadapt.method_spec(name).side == "server" else "client"
