"""Client form and server form fed one gradient stream: identical parameters and state at every step."""

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
    state_equal,
)

import fedadapt


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_client_and_server_forms_agree(name, kw):
    a = make_params()
    b = [p.clone() for p in a]
    client = fedadapt.build_optimizer(name, a, side=side_of(name), **kw)
    server = fedadapt.ServerOptimizer(b, name, **kw)
    assert type(server.optimizer) is type(client)
    for i, g in enumerate(grad_stream(a, 8)):
        set_grads(a, g)
        client.step(**signals_for(name, i))
        server.step_from_pseudo_gradient(g, **signals_for(name, i))
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), f"step {i}"
        state_equal(client, server.optimizer)
        assert server.last_info["lr"] == float(client.param_groups[0]["lr"])


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_server_from_mean_matches_up_to_rounding(name, kw):
    a = make_params()
    b = [p.clone() for p in a]
    client = fedadapt.build_optimizer(name, a, side=side_of(name), **kw)
    server = fedadapt.ServerOptimizer(b, name, **kw)
    for i, g in enumerate(grad_stream(a, 5)):
        set_grads(a, g)
        client.step(**signals_for(name, i))
        server.step_from_mean([p - d for p, d in zip(b, g, strict=True)], **signals_for(name, i))
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)
