"""DSA-R: a documented RECONSTRUCTION of a structured per-parameter self-adaptive step size."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from ._mechanism import _check, _is_finite, apply_scaled
from .hypergradient import _PreviousDirection

__all__ = ["StructuredSelfAdaptive"]


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

    Example::

        opt = fedadapt.build_optimizer("dsa", model.parameters(), lr=0.01)

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
        base: str = "sgd",
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        min_lr: float | None = None,
        max_lr: float | None = None,
    ) -> None:
        _check(0.0 <= hyper_beta < 1.0, f"hyper_beta must be in [0, 1), got {hyper_beta}")
        for name, v in (("param_hyper_lr", param_hyper_lr), ("tensor_hyper_lr", tensor_hyper_lr),
                        ("global_hyper_lr", global_hyper_lr)):
            _check(v >= 0 and math.isfinite(v), f"{name} must be a finite number >= 0, got {v}")
        _check(param_hyper_lr < 1.0, f"param_hyper_lr must be < 1 (keeps the factors positive), got {param_hyper_lr}")
        _check(len(scale_bounds) == 2 and 0 < scale_bounds[0] <= 1.0 <= scale_bounds[1],
               f"scale_bounds must be (lo, hi) with 0 < lo <= 1 <= hi, got {scale_bounds!r}")
        defaults = dict(lr=lr, hyper_beta=hyper_beta, param_hyper_lr=param_hyper_lr,
                        tensor_hyper_lr=tensor_hyper_lr, global_hyper_lr=global_hyper_lr,
                        scale_bounds=(float(scale_bounds[0]), float(scale_bounds[1])), base=base,
                        momentum=momentum, dampening=dampening, nesterov=nesterov, betas=betas,
                        eps=eps, weight_decay=weight_decay, min_lr=min_lr, max_lr=max_lr)
        super().__init__(params, defaults)

    def _init_group(self, group: dict) -> None:
        group.setdefault("direction_factor", 1.0)

    def _coordinate_scales(self, group: dict) -> list[Tensor]:
        out = []
        for p in group["params"]:
            st = self.state[p]
            if "param_scale" in st:
                out.append(st["param_scale"] * st["tensor_scale"])
        return out

    def _group_step(self, group, params, grads, signals):
        g = self._with_weight_decay(group, params, grads)
        prev, reused = self._previous(params, grads)
        lo, hi_bound = group["scale_bounds"]
        pscales, tscales = [], []
        for p in params:
            st = self.state[p]
            if "param_scale" not in st:
                st["param_scale"] = torch.ones_like(p)
                st["tensor_scale"] = torch.ones((), dtype=p.dtype, device=p.device)
                st["hyper_avg"] = torch.zeros_like(p)
            pscales.append(st["param_scale"])
            tscales.append(st["tensor_scale"])
        if prev is not None and not reused:
            h = self._scratch(params, "dsa-h")
            new_avg = self._scratch(params, "dsa-avg")
            w = 1.0 - group["hyper_beta"]
            for p, gi, di, hi, ni in zip(params, g, prev, h, new_avg, strict=True):
                torch.mul(gi, di, out=hi)
                if group["direction_factor"] != 1.0:
                    hi.mul_(group["direction_factor"])
                torch.lerp(self.state[p]["hyper_avg"], hi, w, out=ni)
            # squared norms per tensor double as the finiteness check of g (through h)
            sq = [torch.dot(x.reshape(-1), x.reshape(-1)) for x in new_avg]
            if not _is_finite(torch.stack([s.to(torch.float64) for s in sq]).sum()):
                group["skipped"] += 1
                return
            old = self.__dict__["_scratch_buffers"]["dsa-avg"]
            for p, x in zip(params, new_avg, strict=True):
                old[p] = self.state[p]["hyper_avg"]  # swap: the old average becomes work space
                self.state[p]["hyper_avg"] = x
            hbar = new_avg
            sums = [x.sum() for x in hbar]
            rms = [torch.sqrt(s / x.numel()) for s, x in zip(sq, hbar, strict=True)]
            bp, bt, bg = group["param_hyper_lr"], group["tensor_hyper_lr"], group["global_hyper_lr"]
            if bp > 0:
                # a_param *= 1 + bp * clip(hbar / rms, -1, 1)
                for hi, x, r in zip(h, hbar, rms, strict=True):
                    torch.mul(x, bp / (r + 1e-30), out=hi)
                    hi.clamp_(-bp, bp)
                torch._foreach_addcmul_(pscales, pscales, h)
                for x in pscales:
                    x.clamp_(lo, hi_bound)
            if bt > 0:
                for ts, s, r, x in zip(tscales, sums, rms, hbar, strict=True):
                    ts.mul_(torch.exp(bt * ((s / x.numel()) / (r + 1e-30)).clamp(-1.0, 1.0))).clamp_(lo, hi_bound)
            if bg > 0:
                n = sum(x.numel() for x in hbar)
                total = torch.stack([s.to(torch.float64) for s in sums]).sum()
                total_sq = torch.stack([s.to(torch.float64) for s in sq]).sum()
                signal = (total / (torch.sqrt(n * total_sq) + 1e-300)).clamp(-1.0, 1.0)  # in [-1, 1] up to underflow
                if isinstance(group["lr"], Tensor):
                    self._set_lr(group, group["lr"] * torch.exp(bg * signal))
                else:
                    self._set_lr(group, group["lr"] * math.exp(bg * float(signal)))
        elif not self._grads_finite(g):
            group["skipped"] += 1
            return
        group["step"] += 1
        d, factor = self._direction(group, params, g)
        if isinstance(group["lr"], Tensor):
            gamma = [ps * ts for ps, ts in zip(pscales, tscales, strict=True)]
            apply_scaled(params, d, gamma, group["lr"], factor)
        else:
            for p, di, ps, ts in zip(params, d, pscales, tscales, strict=True):
                p.addcmul_(di, ps, value=-group["lr"] * factor * float(ts))
        self._store_direction(group, params, grads, d, factor)
