"""CProp: per-coordinate step scaling by the conformity of past gradients."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Unpack

import torch
from torch import Tensor

from ._fused import conformity_of_var, run_rule, seeded
from ._mechanism import AdaptiveOptimizer, _check, _check_fused, grads_finite
from .directions import Direction, DirectionArgs, direction_arguments, shared_adam_moment

__all__ = ["CProp", "conformity_scale"]

_CDFS = ("normal", "bft")


def conformity_scale(
    mean: Sequence[Tensor],
    var: Sequence[Tensor],
    count: float,
    *,
    overconfidence: float = 1.0,
    cdf: str = "bft",
    eps: float = 1e-8,
) -> list[Tensor]:
    r"""The conformity scale :math:`\min(1, 2c|\Phi(-\mu/se) - \tfrac12|)` per coordinate.

    ``se = max(sqrt(var / (count - 1 + eps)), eps)``. Always in [0, 1]; an even function of
    ``mean``; depends on clients only through ``mean`` and ``var``. Used by :class:`CProp` for
    conformity across clients, exposed for tests. Does not modify its inputs.
    """
    _check(cdf in _CDFS, f"cdf must be one of {list(_CDFS)}, got {cdf!r}")
    k = 1.0 / (count - 1.0 + eps)
    # |mean| / max(sqrt(k var), eps) = |mean| / sqrt(max(var, eps^2 / k)) / sqrt(k)
    return [
        conformity_of_var(
            v.clone(), m, eps * eps / k, 1.0 / math.sqrt(k), overconfidence, cdf, None
        )
        for m, v in zip(mean, var, strict=True)
    ]


@direction_arguments
class CProp(AdaptiveOptimizer):
    r"""CProp: scale each coordinate's step by how consistently its gradient keeps its sign.

    Coordinates whose recent gradients agree in sign keep the full step; coordinates whose
    gradients flip (the mean is small relative to its standard error) get a smaller step.

    .. math::

        m_t = \beta m_{t-1} + (1-\beta) g_t, \quad v_t = \beta v_{t-1} + (1-\beta) g_t^2,
        \quad b_t = 1-\beta^t, \quad n_t = b_t/(1-\beta)

        se_t = \max\Big(\sqrt{(v_t/b_t - (m_t/b_t)^2)/(n_t - 1 + \epsilon)},\ \epsilon\Big), \qquad
        s_t = \min\big(1,\ 2c\,|\Phi(-\tfrac{m_t/b_t}{se_t}) - \tfrac12|\big)

        \theta_t = \theta_{t-1} - \alpha\, s_t \odot d_t

    :math:`\beta` is ``conformity_beta``, :math:`c` is ``overconfidence``, :math:`\Phi` the
    Bowling et al. logistic fit :math:`\sigma(0.07056 z^3 + 1.5976 z)` (``cdf="bft"``, default,
    as in the reference classes) or the exact normal cdf (``cdf="normal"``, through ``erf``,
    about 1.3x slower on CPU), :math:`d_t` the base direction (SGD or Adam), :math:`\alpha` the group ``lr``.
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
        cdf: ``"bft"`` (default) or ``"normal"``.
        base, momentum, dampening, nesterov, betas, eps, weight_decay: the base direction; ``eps``
            is also CProp's :math:`\epsilon`.
        fused: run the update compiled (``torch.compile``), one loop per tensor (default
            False); BENCHMARKS.md §1 says when it pays off.

    Example:

        >>> opt = fedadapt.build_optimizer("cprop", model.parameters(), lr=0.1, overconfidence=3.0)
        >>> for _ in range(3):
        ...     loss().backward(); opt.step(); opt.zero_grad()
        >>> scale = opt.state[model.weight]["conformity"]  # the per-coordinate scale
        >>> bool(((scale >= 0) & (scale <= 1)).all())
        True

    References:
        Preechakul, Kijsirikul, "CProp: Adaptive Learning Rate Scaling from Past Gradient
        Conformity", arXiv:1912.11493.

    Deviations: at the first step :math:`v_1/b_1 - (m_1/b_1)^2 = 0` exactly, and the scale is
    set to its exact value :math:`\min(1, c)` (rounding in that difference would otherwise be
    amplified by :math:`1/\epsilon`). The standard error is floored at :math:`\epsilon`
    (the code adds :math:`\epsilon` to it and clamps the variance at 0): one ``clamp`` and one
    ``rsqrt`` pass instead of ``clamp``, ``sqrt``, ``add`` and ``div``; the two differ only
    where the standard error is of the order of :math:`\epsilon`.
    The conformity statistics use the raw gradient, before weight decay; the authors'
    ``CPropAdam`` adds the weight-decay term to the gradient first, so with ``weight_decay > 0``
    the scales differ (by about 1.5e-3 after 50 steps at weight decay 1e-2 in a differential
    check); with ``weight_decay = 0`` they agree to float rounding (docs/METHODS.md §7).
    With an Adam base, ``conformity_beta`` equal to Adam's :math:`\beta_2` (the defaults) and no
    weight decay, :math:`v_t` *is* Adam's second moment, and one state tensor holds both.
    """

    per_coordinate = True
    optional_signals = ("client_sq_mean", "num_clients")

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.01,
        conformity_beta: float = 0.999,
        overconfidence: float = 1.0,
        cdf: str = "bft",
        *,
        direction: Direction | None = None,
        fused: bool = False,
        **base: Unpack[DirectionArgs],
    ) -> None:
        _check_fused(fused)
        _check(
            0.0 < conformity_beta < 1.0, f"conformity_beta must be in (0, 1), got {conformity_beta}"
        )
        _check(overconfidence > 0.0, f"overconfidence must be > 0, got {overconfidence}")
        _check(cdf in _CDFS, f"cdf must be one of {list(_CDFS)}, got {cdf!r}")
        defaults = dict(
            lr=lr,
            conformity_beta=conformity_beta,
            overconfidence=overconfidence,
            cdf=cdf,
            min_lr=None,
            max_lr=None,
            fused=fused,
        )
        super().__init__(params, defaults, direction, **base)

    def _coordinate_scales(self, group: dict) -> list[Tensor]:
        return [
            self.state[p]["conformity"] for p in group["params"] if "conformity" in self.state[p]
        ]

    def _measure(self, group, params, grads, g, signals):
        # the statistics use the raw gradient (before weight decay): its finiteness decides
        return grads_finite(grads), (signals.get("client_sq_mean"), signals.get("num_clients"))

    def _update(self, group, params, grads, g, stats):
        sq, num_clients = stats
        beta, c, eps = group["conformity_beta"], group["overconfidence"], group["eps"]
        ms, vs = [], []
        # with an Adam base, conformity_beta == beta2 and no weight decay, the conformity
        # second moment is Adam's v bit for bit: one tensor serves both (one state tensor and
        # one pass fewer)
        share = (
            group["base"] == "adam"
            and beta == group["betas"][1]
            and not group.get("weight_decay", 0.0)
        )
        shared_v = share
        for p in params:
            st = self.state[p]
            if "conformity_avg" not in st:
                st["conformity_avg"] = torch.zeros_like(p)
                st["conformity_sq_avg"] = shared_adam_moment(st, p, share, "exp_avg_sq")
            ms.append(st["conformity_avg"])
            vs.append(st["conformity_sq_avg"])
            # a loaded state_dict holds two equal copies: then both are advanced
            shared_v = shared_v and st["conformity_sq_avg"] is st.get("exp_avg_sq")
        t = group["step"]
        scale = []
        for p in params:
            st = self.state[p]
            x = st.get("conformity")
            if x is None:  # not setdefault: its default would allocate on every step
                x = st["conformity"] = torch.empty_like(p)
            scale.append(x)
        first = 0.0
        if sq is not None:
            count = float(num_clients or 2)
            k = 1.0 / (count - 1.0 + eps)
            var_coef, pre = -1.0, 1.0 / math.sqrt(k)  # variance across clients: q - g^2
        else:
            b = 1.0 - beta**t
            n = b / (1.0 - beta)
            k = (
                1.0 / (b * (n - 1.0 + eps)) if t > 1 else 1.0
            )  # se = max(sqrt(k * var_b), eps), var_b = v - m^2 / b
            # m_hat / se = |m| / sqrt(max(var_b, eps^2 / k)) / (b sqrt(k))
            var_coef, pre = -1.0 / b, 1.0 / (b * math.sqrt(k))
            first = 1.0 if t == 1 else 0.0
        kind, bufs, dms, dvs, fresh, ds, factor = self.direction.prepare(
            self.state, group, params, g
        )
        fused = group.get("fused", False) and not (fresh is not None and not all(fresh))
        if fused and fresh is not None:
            ds, fresh = seeded(ds), None
        sc = [1.0 - beta, beta, first, var_coef, eps * eps / k, pre, c, group["lr"] * -factor, *ds]
        out = (
            None
            if fused
            else (self._scratch(params, ("adam-direction", t % 2)) if kind == "adam" else None)
        )
        work = None if fused or group["cdf"] != "bft" else self._scratch(params, "cprop")
        run_rule(
            "cprop",
            fused,
            params[0].device,
            params[0].dtype,
            kind,
            group["cdf"],
            sq is not None,
            shared_v,
            params,
            grads,
            g,
            ms,
            vs,
            scale,
            None if sq is None else list(sq),
            bufs,
            dms,
            dvs,
            out,
            fresh,
            work=work,
            sc=sc,
        )
