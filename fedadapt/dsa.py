"""DSA-R: a documented RECONSTRUCTION of a structured per-parameter self-adaptive step size."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Unpack

import torch
from torch import Tensor

from ._fused import direction_result, run_rule, seeded
from ._mechanism import _check, _check_fused, grads_finite
from .directions import Direction, DirectionArgs, direction_arguments
from .hypergradient import _PreviousDirection

__all__ = ["StructuredSelfAdaptive"]


@direction_arguments
class StructuredSelfAdaptive(_PreviousDirection):
    r"""DSA-R (RECONSTRUCTION): global x tensor x parameter step sizes driven by hypergradients.

    **This is not the DSA authors' algorithm.** The paper "Differentiable Self-Adaptive
    Learning Rate" (arXiv:2210.10290) has no available full text or code; this class is the
    reconstruction "DSA-R" described in docs/METHODS.md §5, built from the per-parameter hypergradient
    and the hierarchical scheme of Jie et al. (arXiv:2008.07277). Label results "DSA-R".

    The step size of each coordinate is a product of three factors, one global, one per
    tensor and one per coordinate, each updated multiplicatively from a smoothed
    per-coordinate hypergradient signal normalised at its own level (so it is unit-free):

    .. math::

        H_t = g_t \odot d_{t-1}, \qquad \bar H_t = \rho \bar H_{t-1} + (1-\rho) H_t,
        \qquad r_l = \mathrm{RMS}(\bar H_{t,l})

        a^{param}_{l} \leftarrow \mathrm{clip}\big(a^{param}_l\, (1 + \beta_p\, \mathrm{clip}(\bar H_{t,l}/r_l, -1, 1)), a_{\min}, a_{\max}\big),
        \quad a^{tensor}_l \leftarrow \mathrm{clip}\big(a^{tensor}_l\, e^{\beta_t\, \mathrm{mean}(\bar H_{t,l})/r_l}, a_{\min}, a_{\max}\big)

        \alpha_t = \mathrm{clip}\big(\alpha_{t-1}\, e^{\beta_g \sum \bar H_t / \sqrt{N \sum \bar H_t^2}}, \alpha_{\min}, \alpha_{\max}\big),
        \qquad \theta_t = \theta_{t-1} - \alpha_t\, a^{tensor} a^{param} \odot d_t

    :math:`\rho` = ``hyper_beta``, :math:`\beta_p, \beta_t, \beta_g` = ``param_hyper_lr``,
    ``tensor_hyper_lr``, ``global_hyper_lr``; :math:`[a_{\min}, a_{\max}]` = ``scale_bounds``;
    :math:`\alpha` is the group ``lr``, :math:`d_t` the base direction, :math:`N` the number of
    coordinates. Nothing adapts at the first step (no :math:`d_0`).

    Args:
        params: parameters or param groups.
        lr: initial step size (default 0.01).
        hyper_beta: EMA factor of the hypergradient signal (default 0.9).
        param_hyper_lr, tensor_hyper_lr, global_hyper_lr: rates (defaults 1e-3, 1e-2, 1e-2).
        scale_bounds: bounds of the tensor and parameter factors (default (0.1, 10)).
        base, momentum, dampening, nesterov, betas, eps, weight_decay: the base direction.
        min_lr, max_lr: bounds of the global step size (default ``0.1 * lr`` and ``10 * lr``).
        fused: run the update compiled (``torch.compile``), one loop per tensor (default
            False); BENCHMARKS.md §1 says when it pays off.

    Example:

        >>> opt = fedadapt.build_optimizer("dsa", model.parameters(), lr=0.01)
        >>> for _ in range(3):
        ...     loss().backward(); opt.step(); opt.zero_grad()
        >>> stats = fedadapt.step_size_stats(opt)  # the effective per-coordinate steps
        >>> stats["step-min"] <= stats["step-mean"] <= stats["step-max"]
        True

    References:
        Chen, Wang, Ba, "Differentiable Self-Adaptive Learning Rate", arXiv:2210.10290 (abstract
        only: the method here is a reconstruction). Jie, Shen, Lin, Huang, "Adaptive
        Hierarchical Hyper-gradient Descent", arXiv:2008.07277 (closest published method).

    The per-coordinate factor uses the first-order multiplicative step :math:`1 + \beta_p s`
    (:math:`\beta_p < 1` keeps it positive) instead of :math:`e^{\beta_p s}`: an ``exp`` over every
    coordinate costs about as much as the whole base step on CPU, and for the small
    :math:`\beta_p` used the two agree to :math:`O(\beta_p^2)`.

    Deviations: everything beyond the abstract's words ("parameter specific and internal
    structured", "differentiable") is a project choice (docs/METHODS.md §5), and the
    defaults are not from any paper.
    """

    per_coordinate = True
    _min_lr_factor = 0.1
    _max_lr_factor = 10.0

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.01,
        hyper_beta: float = 0.9,
        param_hyper_lr: float = 1e-3,
        tensor_hyper_lr: float = 1e-2,
        global_hyper_lr: float = 1e-2,
        scale_bounds: tuple[float, float] = (0.1, 10.0),
        *,
        direction: Direction | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        fused: bool = False,
        **base: Unpack[DirectionArgs],
    ) -> None:
        _check_fused(fused)
        _check(0.0 <= hyper_beta < 1.0, f"hyper_beta must be in [0, 1), got {hyper_beta}")
        for name, v in (
            ("param_hyper_lr", param_hyper_lr),
            ("tensor_hyper_lr", tensor_hyper_lr),
            ("global_hyper_lr", global_hyper_lr),
        ):
            _check(v >= 0 and math.isfinite(v), f"{name} must be a finite number >= 0, got {v}")
        _check(
            param_hyper_lr < 1.0,
            f"param_hyper_lr must be < 1 (keeps the factors positive), got {param_hyper_lr}",
        )
        _check(
            len(scale_bounds) == 2 and 0 < scale_bounds[0] <= 1.0 <= scale_bounds[1],
            f"scale_bounds must be (lo, hi) with 0 < lo <= 1 <= hi, got {scale_bounds!r}",
        )
        defaults = dict(
            lr=lr,
            hyper_beta=hyper_beta,
            param_hyper_lr=param_hyper_lr,
            tensor_hyper_lr=tensor_hyper_lr,
            global_hyper_lr=global_hyper_lr,
            scale_bounds=(float(scale_bounds[0]), float(scale_bounds[1])),
            min_lr=min_lr,
            max_lr=max_lr,
            fused=fused,
        )
        super().__init__(params, defaults, direction, **base)

    def _init_group(self, group: dict) -> None:
        group.setdefault("direction_factor", 1.0)

    def _coordinate_scales(self, group: dict) -> list[Tensor]:
        out = []
        for p in group["params"]:
            st = self.state[p]
            if "param_scale" in st:
                out.append(st["param_scale"] * st["tensor_scale"])
        return out

    def _measure(self, group, params, grads, g, signals):
        prev, reused = self._previous(params, grads)
        pscales, tscales, avgs = [], [], []
        for p in params:
            st = self.state[p]
            if "param_scale" not in st:
                st["param_scale"] = torch.ones_like(p)
                st["tensor_scale"] = torch.ones((), dtype=p.dtype, device=p.device)
                st["hyper_avg"] = torch.zeros_like(p)
            pscales.append(st["param_scale"])
            tscales.append(st["tensor_scale"])
            avgs.append(st["hyper_avg"])
        work = None if group.get("fused", False) else self._scratch(params, "dsa-h")
        stats = (pscales, tscales, avgs, work, None, None)
        if prev is None or reused:
            return grads_finite(g), stats
        new_avg = self._scratch(params, "dsa-avg")
        vals = run_rule(
            "dsa-stats",
            group.get("fused", False),
            params[0].device,
            params[0].dtype,
            g,
            prev,
            avgs,
            new_avg,
            work=work,
            sc=[group["direction_factor"], 1.0 - group["hyper_beta"]],
        )
        vals = (
            vals if isinstance(vals, list) else vals.tolist()
        )  # squared norms and sums per tensor
        # the squared norms double as the finiteness check of g (through h)
        total_sq = math.fsum(vals[: len(params)])
        return math.isfinite(total_sq), (pscales, tscales, avgs, work, new_avg, vals)

    def _update(self, group, params, grads, g, stats):
        pscales, tscales, avgs, work, new_avg, vals = stats
        lo, hi_bound = group["scale_bounds"]
        fused = group.get("fused", False)
        device, dtype = params[0].device, params[0].dtype
        n = len(params)
        bp, bt, bg = group["param_hyper_lr"], group["tensor_hyper_lr"], group["global_hyper_lr"]
        coefs, tmults = [0.0] * n, [1.0] * n
        adapt = False
        if new_avg is not None:
            sq, sums = vals[:n], vals[n:]
            total_sq = math.fsum(sq)
            old = self.__dict__["_scratch_buffers"]["dsa-avg"]
            for p, a, x in zip(params, avgs, new_avg, strict=True):
                old[p] = a  # swap: the old average becomes work space
                self.state[p]["hyper_avg"] = x
            avgs = new_avg
            sizes = [p.numel() for p in params]
            rms = [math.sqrt(q / k) for q, k in zip(sq, sizes, strict=True)]
            adapt = bp > 0
            if bp > 0:
                coefs = [bp / (r + 1e-30) for r in rms]
            if bt > 0:
                tmults = [
                    math.exp(bt * min(max((s / k) / (r + 1e-30), -1.0), 1.0))
                    for s, k, r in zip(sums, sizes, rms, strict=True)
                ]
            if bg > 0:
                total = math.fsum(sums)
                signal = min(max(total / (math.sqrt(sum(sizes) * total_sq) + 1e-300), -1.0), 1.0)
                self._set_lr(group, group["lr"] * math.exp(bg * signal))
        kind, bufs, ms, vs, fresh, ds, factor = self.direction.prepare(self.state, group, params, g)
        if fused and fresh is not None:
            if all(fresh):
                ds, fresh = seeded(ds), None
            else:
                fused = False
        # the direction is kept as d_{t-1}: Adam's and Nesterov's go to alternating scratch buffers
        out = (
            self._scratch(params, ("adam-direction", group["step"] % 2))
            if kind in ("adam", "nesterov")
            else None
        )
        sc = [bp, lo, hi_bound, group["lr"] * -factor, *coefs, *tmults, *ds]
        run_rule(
            "dsa-update",
            fused,
            device,
            dtype,
            kind,
            adapt or fused,
            params,
            g,
            avgs,
            pscales,
            [t.view(1) for t in tscales]
            if fused
            else tscales,  # compiled: see _fused's note on 0-dim state
            bufs,
            ms,
            vs,
            out,
            fresh,
            work=work,
            sc=sc,
        )
        d = direction_result(kind, g, bufs, out)
        self._store_direction(group, params, grads, d, factor)
