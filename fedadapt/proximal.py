r"""FedProx's proximal term as a gradient term any local optimizer applies.

FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith: "Federated Optimization in Heterogeneous
Networks", MLSys 2020, arXiv:1812.06127) has each client minimise its loss plus a proximal term
around the round's global model :math:`w^t`:

.. math::

    h_k(w) = F_k(w) + \frac{\mu}{2} \lVert w - w^t \rVert^2, \qquad
    \nabla h_k(w) = \nabla F_k(w) + \mu (w - w^t).

:func:`add_proximal_term` registers a step pre-hook on a ``torch.optim.Optimizer`` that adds
:math:`\mu (w - w^t)` to every parameter's gradient before each step, with :math:`w^t` the
parameters' values when it is called (call it right after loading the global model). Every
fedadapt method then adapts its step size on :math:`\nabla h_k` exactly as it would if the term
were added to the loss, and an app needs no change to its training loop (docs/METHODS.md,
"FedProx"). A parameter without a gradient (unused this step) is left alone.

Example (right after loading the round's global model into ``model``):

    >>> opt = add_proximal_term(fedadapt.build_optimizer("hd", model.parameters(), lr=0.05), mu=0.01)
    >>> opt.proximal_mu
    0.01
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["add_proximal_term", "proximal_value"]


def add_proximal_term(
    optimizer: Optimizer, mu: float, anchor: Iterable[torch.Tensor] | None = None
) -> Optimizer:
    """Make ``optimizer`` step on the gradient of ``loss + mu/2 ||w - anchor||^2``.

    Args:
        optimizer: Any torch optimizer (fedadapt's or torch's own).
        mu: The proximal coefficient (>= 0; 0 returns ``optimizer`` unchanged).
        anchor: The global model's parameters, in the optimizer's parameter order; default:
            the parameters' current values.

    Returns:
        ``optimizer`` itself, with the hook registered; ``optimizer.proximal_anchor`` holds the
        anchor tensors and ``optimizer.proximal_mu`` the coefficient.
    """
    mu = float(mu)
    if not mu >= 0.0:
        raise ValueError(f"proximal mu must be >= 0, got {mu}")
    if mu == 0.0:
        return optimizer
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if anchor is None:
        anchors = [p.detach().clone() for p in params]
    else:
        anchors = [
            a.detach().to(p.device, p.dtype).clone() for a, p in zip(anchor, params, strict=True)
        ]
        for a, p in zip(anchors, params, strict=True):
            if a.shape != p.shape:
                raise ValueError(
                    f"anchor shape {tuple(a.shape)} != parameter shape {tuple(p.shape)}"
                )

    def pre_step(opt: Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for p, a in zip(params, anchors, strict=True):
                if p.grad is not None:
                    p.grad.add_(p.detach() - a, alpha=mu)

    optimizer.register_step_pre_hook(pre_step)
    optimizer.proximal_anchor = anchors  # type: ignore[attr-defined]
    optimizer.proximal_mu = mu  # type: ignore[attr-defined]
    return optimizer


def proximal_value(optimizer: Optimizer) -> float:
    """``mu/2 ||w - anchor||^2`` of an optimizer from :func:`add_proximal_term` (0 without)."""
    anchors = getattr(optimizer, "proximal_anchor", None)
    if anchors is None:
        return 0.0
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with torch.no_grad():
        total = sum(float(((p - a) ** 2).sum()) for p, a in zip(params, anchors, strict=True))
    return 0.5 * float(optimizer.proximal_mu) * total  # type: ignore[attr-defined]
