"""Step-size adaptation with exponentiated-gradient updates: a global scale and per-coordinate gains."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Unpack

import torch
from torch import Tensor

from ._fused import run_rule, seeded
from ._mechanism import AdaptiveOptimizer, _check, _check_fused, _is_finite, dot_values, global_dot
from .directions import Direction, DirectionArgs, direction_arguments, shared_adam_moment

__all__ = ["ExponentiatedGradientStepSize"]


@direction_arguments
class ExponentiatedGradientStepSize(AdaptiveOptimizer):
    r"""EG step-size adaptation: a global scale and per-coordinate gains, updated multiplicatively.

    The scale grows while the gradient keeps pointing along its recent average and shrinks when
    it turns back; each coordinate's gain does the same with the sign agreement of that
    coordinate. Both are exponentiated-gradient (multiplicative) updates with clip bounds.

    .. math::

        \alpha_t = \mathrm{clip}\big(\alpha_{t-1}\, e^{\eta_s \cos(g_t, \bar g_{t-1})},
            \alpha_{\min}, \alpha_{\max}\big), \qquad
        p_t = \mathrm{clip}\big(p_{t-1} \odot e^{\eta_p\, \mathrm{sign}(g_t)\odot\mathrm{sign}(\bar g_{t-1})},
            p_{\min}, p_{\max}\big)

        \bar g_t = \beta \bar g_{t-1} + (1-\beta) g_t, \qquad
        \theta_t = \theta_{t-1} - \alpha_t\, p_t \odot d_t

    :math:`\eta_s` = ``scale_lr``, :math:`\eta_p` = ``gain_lr``, :math:`\beta` = ``grad_beta``,
    :math:`p` the gains (``state[p]["gain"]``), :math:`\alpha` the group ``lr`` (the product of
    the initial lr and the global scale), :math:`d_t` the base direction. :math:`\bar g_0 = 0`,
    so nothing adapts at the first step.

    Args:
        params: parameters or param groups.
        lr: initial step size (default 0.01).
        scale_lr: :math:`\eta_s \ge 0` (default 0.05).
        gain_lr: :math:`\eta_p \ge 0` (default 0.02).
        grad_beta: :math:`\beta` in [0, 1) (default 0.9).
        min_gain, max_gain: gain bounds (default 1e-2, 1e2).
        base, momentum, dampening, nesterov, betas, eps, weight_decay: the base direction.
        min_lr, max_lr: bounds of the scaled step size (default ``0.1 * lr`` and ``10 * lr``).
        fused: run the per-coordinate update compiled (``torch.compile``), one loop per tensor
            (default False); BENCHMARKS.md §1 says when it pays off.

    Example:

        >>> opt = fedadapt.build_optimizer("eg", model.parameters(), lr=0.01, base="adam")
        >>> for _ in range(3):
        ...     loss().backward(); opt.step(); opt.zero_grad()
        >>> opt.param_groups[0]["step"]
        3

    References:
        Amid, Anil, Fifty, Warmuth, "Step-size Adaptation Using Exponentiated Gradient
        Updates", arXiv:2202.00145 (reference code: lingvo ``egdd.py``).

    Deviations (docs/METHODS.md §8): this is a wrapper form of the paper's rule. The lingvo EGDD code keeps one
    scale per tensor (here: one global scale), drives it with the momentum buffer (here: the
    gradient average :math:`\bar g`), and multiplies the gains inside the momentum (here:
    outside any base direction, so the same rule works over Adam). Defaults for the two rates
    are larger than EGDD's (1e-3, 1e-2) so an lr 10x off recovers within a few hundred steps.
    """

    per_coordinate = True
    _min_lr_factor = 0.1
    _max_lr_factor = 10.0

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.01,
        scale_lr: float = 0.05,
        gain_lr: float = 0.02,
        grad_beta: float = 0.9,
        min_gain: float = 1e-2,
        max_gain: float = 1e2,
        *,
        direction: Direction | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        fused: bool = False,
        **base: Unpack[DirectionArgs],
    ) -> None:
        _check_fused(fused)
        _check(
            scale_lr >= 0 and math.isfinite(scale_lr),
            f"scale_lr must be a finite number >= 0, got {scale_lr}",
        )
        _check(
            gain_lr >= 0 and math.isfinite(gain_lr),
            f"gain_lr must be a finite number >= 0, got {gain_lr}",
        )
        _check(0.0 <= grad_beta < 1.0, f"grad_beta must be in [0, 1), got {grad_beta}")
        _check(
            0.0 < min_gain <= 1.0 <= max_gain,
            f"need 0 < min_gain <= 1 <= max_gain, got {min_gain}, {max_gain}",
        )
        defaults = dict(
            lr=lr,
            scale_lr=scale_lr,
            gain_lr=gain_lr,
            grad_beta=grad_beta,
            min_gain=min_gain,
            max_gain=max_gain,
            min_lr=min_lr,
            max_lr=max_lr,
            fused=fused,
        )
        super().__init__(params, defaults, direction, **base)

    def _init_group(self, group: dict) -> None:
        group.setdefault("grad_avg_sq", 0.0)

    def _coordinate_scales(self, group: dict) -> list[Tensor]:
        return [self.state[p]["gain"] for p in group["params"] if "gain" in self.state[p]]

    def _measure(self, group, params, grads, g, signals):
        gains, avgs = [], []
        # with an Adam base and grad_beta == beta1, gbar is Adam's m bit for bit (the same lerp
        # of the same g from 0): one tensor serves both, one state tensor and one pass fewer
        share = group["base"] == "adam" and group["grad_beta"] == group["betas"][0]
        shared = share
        for p in params:
            st = self.state[p]
            if "gain" not in st:
                st["gain"] = torch.ones_like(p)
                st["grad_avg"] = shared_adam_moment(st, p, share, "exp_avg")
            gains.append(st["gain"])
            avgs.append(st["grad_avg"])
            # a loaded state_dict holds two equal copies: then both are advanced
            shared = shared and st["grad_avg"] is st.get("exp_avg")
        dot_parts = None
        dot = None
        if group.get("fused", False):
            # both inner products in one compiled pass over g and gbar, one host read
            vals = run_rule(
                "dot-pairs", True, params[0].device, params[0].dtype, g, g, avgs, work=None, sc=[]
            ).tolist()
            n = len(params)
            gg, dot = math.fsum(vals[:n]), math.fsum(vals[n:])
            finite = math.isfinite(gg)
        elif group["step"] > 0 and params[0].device.type == "cpu":
            # both inner products at once; <g, gbar> is summed only once <g, g> is finite
            vals = dot_values((g, g), (g, avgs))
            gg = math.fsum(vals[0])
            finite = math.isfinite(gg)
            dot_parts = vals[1]
        else:
            gg = global_dot(g, g)
            finite = _is_finite(gg)
        return finite, (gains, avgs, shared, gg, dot, dot_parts)

    def _update(self, group, params, grads, g, stats):
        gains, avgs, shared, gg, dot, dot_parts = stats
        beta = group["grad_beta"]
        if group["step"] > 1:
            if dot_parts is not None:
                dot = math.fsum(dot_parts)  # summed where global_dot would be taken
            elif dot is None:
                dot = global_dot(g, avgs)
            aa = group["grad_avg_sq"]
            if group["scale_lr"] > 0:
                den = (gg * aa) ** 0.5
                if isinstance(den, Tensor):
                    cos = torch.where(den > 0, dot / den.clamp_min(1e-300), torch.zeros_like(den))
                    self._set_lr(group, group["lr"] * torch.exp(group["scale_lr"] * cos))
                elif den > 0:
                    self._set_lr(group, group["lr"] * math.exp(group["scale_lr"] * dot / den))
            # ||gbar_t||^2 from quantities already at hand (no third pass over the parameters)
            group["grad_avg_sq"] = (
                beta * beta * aa + 2.0 * beta * (1.0 - beta) * dot + (1.0 - beta) ** 2 * gg
            )
        else:
            group["grad_avg_sq"] = (1.0 - beta) ** 2 * gg
        kind, bufs, ms, vs, fresh, ds, factor = self.direction.prepare(self.state, group, params, g)
        fused = group.get("fused", False) and not (fresh is not None and not all(fresh))
        if fused and fresh is not None:
            ds, fresh = seeded(ds), None
        eta = group["gain_lr"]
        up, down = math.expm1(eta), math.expm1(-eta)
        # exp(eta s) - 1 = s (sinh + s (cosh - 1)) for s in {-1, 0, 1}
        sinh, cosh_m1 = (up - down) / 2.0, (up + down) / 2.0
        lr = group["lr"]
        sc = [sinh, cosh_m1, group["min_gain"], group["max_gain"], 1.0 - beta, lr * -factor, *ds]
        adapt = fused or (group["step"] > 1 and eta > 0)
        out = (
            None
            if fused
            else (
                self._scratch(params, ("adam-direction", group["step"] % 2))
                if kind == "adam"
                else None
            )
        )
        work = (
            (self._scratch(params, "eg-sign"), self._scratch(params, "eg-factor"))
            if adapt and not fused
            else None
        )
        run_rule(
            "eg",
            fused,
            params[0].device,
            params[0].dtype,
            kind,
            adapt,
            shared,
            params,
            g,
            gains,
            avgs,
            bufs,
            ms,
            vs,
            out,
            fresh,
            work=work,
            sc=sc,
        )
