"""CProp: per-coordinate step scaling by the conformity of past gradients."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ._mechanism import AdaptiveOptimizer, _check, apply_scaled

__all__ = ["CProp", "conformity_scale"]

_CDFS = ("normal", "bft")


def _scale_from_z(z: list[Tensor], overconfidence: float, cdf: str, pre_scale: float = 1.0) -> list[Tensor]:
    """In place: ``z`` (any sign, times ``1/pre_scale``) -> ``min(1, 2c |Phi(z) - 1/2|)``."""
    if cdf == "normal":
        # 2 |Phi(z) - 1/2| = |erf(z / sqrt 2)|
        torch._foreach_mul_(z, pre_scale / math.sqrt(2.0))
        torch._foreach_erf_(z)
        torch._foreach_abs_(z)
    else:
        torch._foreach_abs_(z)
        if pre_scale != 1.0:
            torch._foreach_mul_(z, pre_scale)
        # Bowling et al. logistic fit: Phi(z) ~ 1 / (1 + exp(-(0.07056 z^3 + 1.5976 z)))
        # 2 |Phi(z) - 1/2| = tanh((0.07056 |z|^3 + 1.5976 |z|) / 2)
        z3 = torch._foreach_mul(z, z)
        torch._foreach_mul_(z3, 0.07056 / 2.0)
        torch._foreach_add_(z3, 1.5976 / 2.0)
        torch._foreach_mul_(z, z3)
        torch._foreach_tanh_(z)
    if overconfidence != 1.0:
        torch._foreach_mul_(z, overconfidence)
    torch._foreach_clamp_max_(z, 1.0)
    return z


def conformity_scale(
    mean: Sequence[Tensor], var: Sequence[Tensor], count: float, *, overconfidence: float = 1.0,
    cdf: str = "normal", eps: float = 1e-8,
) -> list[Tensor]:
    r"""The conformity scale :math:`\min(1, 2c|\Phi(-\mu/se) - \tfrac12|)` per coordinate.

    ``se = sqrt(max(var, 0) / (count - 1 + eps)) + eps``. Always in [0, 1]; an even function of
    ``mean``. Used by :class:`CProp` and exposed for tests and for the server.
    """
    _check(cdf in _CDFS, f"cdf must be one of {list(_CDFS)}, got {cdf!r}")
    se = [v.clamp_min(0.0) for v in var]
    torch._foreach_div_(se, count - 1.0 + eps)
    torch._foreach_sqrt_(se)
    torch._foreach_add_(se, eps)
    z = torch._foreach_div(list(mean), se)
    return _scale_from_z(z, overconfidence, cdf)


class CProp(AdaptiveOptimizer):
    r"""CProp: scale each coordinate's step by how consistently its gradient keeps its sign.

    Coordinates whose recent gradients agree in sign keep the full step; coordinates whose
    gradients flip (the mean is small relative to its standard error) get a smaller step.

    .. math::

        m_t = \beta m_{t-1} + (1-\beta) g_t, \quad v_t = \beta v_{t-1} + (1-\beta) g_t^2,
        \quad b_t = 1-\beta^t, \quad n_t = b_t/(1-\beta)

        se_t = \sqrt{\max(v_t/b_t - (m_t/b_t)^2, 0)/(n_t - 1 + \epsilon)} + \epsilon, \qquad
        s_t = \min\big(1,\ 2c\,|\Phi(-\tfrac{m_t/b_t}{se_t}) - \tfrac12|\big)

        \theta_t = \theta_{t-1} - \alpha\, s_t \odot d_t

    :math:`\beta` is ``conformity_beta``, :math:`c` is ``overconfidence``, :math:`\Phi` the
    normal cdf (``cdf="normal"``, computed as ``erf``) or the Bowling et al. logistic fit
    (``cdf="bft"``), :math:`d_t` the base direction (SGD or Adam), :math:`\alpha` the group ``lr``.
    The statistics use the raw gradient (before weight decay), as CPropSGD does.

    **Server, conformity across clients.** When ``step(client_sq_mean=..., num_clients=...)``
    is given (``client_sq_mean`` = :math:`\sum_i w_i (x_i - x_t)^2` per coordinate), the round's
    cross-client statistics replace the moving averages: mean :math:`\hat g_t` (the
    pseudo-gradient), variance ``client_sq_mean`` - :math:`\hat g_t^2`, count ``num_clients``
    (2 when not given, so ``se`` is the spread of the client updates). This depends on the
    clients only through weighted sums, so it is invariant to their order.

    Args:
        params: parameters or param groups.
        lr: step size (default 0.01). CProp does not adapt the scalar ``lr``.
        conformity_beta: :math:`\beta` (default 0.999; use 0.9-0.99 on a server).
        overconfidence: :math:`c > 0` (default 1.0; the README suggests 3-5 for generalisation).
        cdf: ``"normal"`` (default) or ``"bft"``.
        base, momentum, dampening, nesterov, betas, eps, weight_decay: the base direction; ``eps``
            is also CProp's :math:`\epsilon`.

    Example::

        opt = fedadapt.build_optimizer("cprop", model.parameters(), lr=0.1, overconfidence=3.0)

    References:
        Preechakul, Kijsirikul, "CProp: Adaptive Learning Rate Scaling from Past Gradient
        Conformity", arXiv:1912.11493.

    Deviations: at the first step :math:`v_1/b_1 - (m_1/b_1)^2 = 0` exactly, and the scale is
    set to its exact value :math:`\min(1, c)` (rounding in that difference would otherwise be
    amplified by :math:`1/\epsilon`). The default cdf is ``normal`` (the README's "most
    correct"; through ``erf`` it costs no more than the logistic fit). The moments are kept
    separately from Adam's (no buffer sharing).
    """

    per_coordinate = True
    optional_signals = ("client_sq_mean", "num_clients")

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.01,
        conformity_beta: float = 0.999,
        overconfidence: float = 1.0,
        cdf: str = "normal",
        *,
        base: str = "sgd",
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        _check(0.0 < conformity_beta < 1.0, f"conformity_beta must be in (0, 1), got {conformity_beta}")
        _check(overconfidence > 0.0, f"overconfidence must be > 0, got {overconfidence}")
        _check(cdf in _CDFS, f"cdf must be one of {list(_CDFS)}, got {cdf!r}")
        defaults = dict(lr=lr, conformity_beta=conformity_beta, overconfidence=overconfidence, cdf=cdf,
                        base=base, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        betas=betas, eps=eps, weight_decay=weight_decay, min_lr=None, max_lr=None)
        super().__init__(params, defaults)

    def _coordinate_scales(self, group: dict) -> list[Tensor]:
        return [self.state[p]["conformity"] for p in group["params"] if "conformity" in self.state[p]]

    def _group_step(self, group, params, grads, signals):
        if not self._grads_finite(grads):
            group["skipped"] += 1
            return
        beta, c, eps = group["conformity_beta"], group["overconfidence"], group["eps"]
        ms, vs = [], []
        for p in params:
            st = self.state[p]
            if "conformity_avg" not in st:
                st["conformity_avg"] = torch.zeros_like(p)
                st["conformity_sq_avg"] = torch.zeros_like(p)
            ms.append(st["conformity_avg"])
            vs.append(st["conformity_sq_avg"])
        group["step"] += 1
        t = group["step"]
        torch._foreach_lerp_(ms, grads, 1.0 - beta)
        torch._foreach_mul_(vs, beta)
        torch._foreach_addcmul_(vs, grads, grads, 1.0 - beta)
        sq = signals.get("client_sq_mean")
        if sq is not None:
            count = float(signals.get("num_clients") or 2)
            var = torch._foreach_addcmul(list(sq), grads, grads, value=-1.0)
            scale = conformity_scale(grads, var, count, overconfidence=c, cdf=group["cdf"], eps=eps)
        elif t == 1:
            scale = [torch.full_like(p, min(1.0, c)) for p in params]
        else:
            b = 1.0 - beta**t
            n = b / (1.0 - beta)
            k = 1.0 / (b * (n - 1.0 + eps))  # se = sqrt(k * var_b) + eps, var_b = v - m^2 / b
            sk = math.sqrt(k)
            var_b = torch._foreach_addcmul(vs, ms, ms, value=-1.0 / b)
            torch._foreach_clamp_min_(var_b, 0.0)
            torch._foreach_sqrt_(var_b)
            torch._foreach_add_(var_b, eps / sk)
            z = torch._foreach_div(ms, var_b)  # m_hat / se = z / (b sk)
            scale = _scale_from_z(z, c, group["cdf"], pre_scale=1.0 / (b * sk))
        for p, s in zip(params, scale, strict=True):
            self.state[p]["conformity"] = s
        g = self._with_weight_decay(group, params, grads)
        d, factor = self._direction(group, params, g)
        apply_scaled(params, d, scale, group["lr"], factor)
