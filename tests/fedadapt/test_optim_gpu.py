"""CUDA: state stays on the device and the adapted lr is a 0-dim device tensor (skips without CUDA)."""

import pytest
import torch
from fedadapt_cases import (
    CASE_IDS,
    CASES,
    grad_stream,
    make_params,
    set_grads,
    side_of,
    signals_for,
)

import fedadapt

pytestmark = pytest.mark.gpu
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_state_stays_on_device_and_matches_cpu(name, kw):
    cpu = make_params()
    dev = [p.cuda() for p in cpu]
    a = fedadapt.build_optimizer(name, cpu, side=side_of(name), **kw)
    b = fedadapt.build_optimizer(name, dev, side=side_of(name), **kw)
    for i, g in enumerate(grad_stream(cpu, 6)):
        set_grads(cpu, g)
        set_grads(dev, [t.cuda() for t in g])
        a.step(**signals_for(name, i))
        b.step(**signals_for(name, i))
    for x, y in zip(cpu, dev, strict=True):
        torch.testing.assert_close(x, y.cpu(), rtol=1e-6, atol=1e-8)
    for st in b.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                assert v.is_cuda
    if isinstance(b, fedadapt.AdaptiveOptimizer):
        lr = b.param_groups[0]["lr"]
        assert isinstance(lr, torch.Tensor) and lr.is_cuda and lr.dim() == 0


@cuda
def test_server_optimizer_on_cuda():
    params = [p.cuda() for p in make_params()]
    server = fedadapt.ServerOptimizer(params, "hd", lr=1.0)
    clients = [[p + 0.1 for p in params], [p - 0.05 for p in params]]
    server.step(clients, [1, 1])
    server.step(clients, [1, 1])
    assert all(p.is_cuda for p in params)
