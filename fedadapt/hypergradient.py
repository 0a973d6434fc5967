"""Hypergradient descent on the scalar step size: additive (``hd``) and multiplicative (``hd-mult``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Unpack

import torch
from torch import Tensor

from ._mechanism import AdaptiveOptimizer, _check, _is_finite, global_dot, global_dots, grads_finite
from .directions import AdamDirection, Direction, DirectionArgs, direction_arguments

__all__ = ["HypergradientDescent", "MultiplicativeHypergradientDescent"]


class _PreviousDirection(AdaptiveOptimizer):
    """Keeps the previous unit-lr direction ``d_{t-1}`` in ``state[p]["prev_direction"]``.

    For plain SGD without weight decay ``d_t`` is the gradient itself. After
    ``zero_grad(set_to_none=True)`` every backward makes new gradient tensors, so the previous
    gradient is kept by reference (no copy). When the same gradient tensors come back (they are
    zeroed and refilled in place) the optimizer notices it and copies from then on; the one step
    at which it notices uses no hypergradient (``h = 0``).
    """

    def _store_direction(
        self, group: dict, params: list[Tensor], grads: list[Tensor], d: list[Tensor], factor: float
    ) -> None:
        group["direction_factor"] = factor
        state = self.state
        if d is not grads:
            for p, di in zip(params, d, strict=True):
                state[p]["prev_direction"] = di
            return
        # keyed by id (a tensor's hash is a Python call); a reused id only ever meets a
        # gradient it has not seen, which is kept by reference, as a fresh one is
        seen = self.__dict__.get("_seen_grads")
        if seen is None:
            seen = self.__dict__["_seen_grads"] = {}
        owned = self.__dict__.get("_owned_buffers")
        if owned is None:
            owned = self.__dict__["_owned_buffers"] = {}
        for p, g in zip(params, grads, strict=True):
            key = id(p)
            last = seen.get(key)
            seen[key] = g
            if last is not None and g is not last:
                state[p]["prev_direction"] = g  # fresh gradient tensor: keep by reference
                continue
            buf = owned.get(key)
            if buf is None or buf.shape != g.shape or buf is g:
                buf = torch.empty_like(g)
                owned[key] = buf
            buf.copy_(g)
            state[p]["prev_direction"] = buf

    def _previous(
        self, params: list[Tensor], grads: list[Tensor]
    ) -> tuple[list[Tensor] | None, bool]:
        state = self.state
        prev = []
        reused = False
        for p, g in zip(params, grads, strict=True):
            d = state[p].get("prev_direction")
            if d is None:
                return None, False
            prev.append(d)
            reused = reused or g is d
        return prev, reused

    def _update(
        self, group: dict, params: list[Tensor], grads: list[Tensor], g: list[Tensor], stats: object
    ) -> list[Tensor]:
        d, factor = self.direction.compute(self, group, params, g)
        self._apply(params, d, group["lr"], factor)
        self._store_direction(group, params, grads, d, factor)
        return d


@direction_arguments
class HypergradientDescent(_PreviousDirection):
    r"""Additive hypergradient descent on the step size (SGD-HD, SGDN-HD, Adam-HD).

    The step size follows the derivative of the loss with respect to the previous step size:
    while consecutive directions agree the step grows, when they disagree it shrinks.

    .. math::

        \alpha_t = \mathrm{clip}\big(\alpha_{t-1} + \beta\, \langle g_t, d_{t-1}\rangle,
            \alpha_{\min}, \alpha_{\max}\big), \qquad
        \theta_t = \theta_{t-1} - \alpha_t d_t

    where :math:`d_t` is the base optimizer's unit-lr direction (SGD: :math:`g_t`; momentum:
    the buffer, or :math:`g_t + \mu v_t` for Nesterov; Adam: :math:`\hat m_t/(\sqrt{\hat v_t}+\epsilon)`),
    :math:`\beta` is ``hyper_lr`` and :math:`\alpha` is ``param_groups[i]["lr"]``.
    On the first step :math:`\langle g_1, d_0\rangle = 0`. The inner product is one global
    number over all tensors of the group (per-tensor dot products summed in float64).

    Args:
        params: parameters or param groups.
        lr: initial step size :math:`\alpha_0` (default 0.01).
        hyper_lr: :math:`\beta` (default ``1e-2`` for ``base="sgd"``, ``1e-5`` for ``"adam"``:
            :math:`\beta` has units of 1/gradient-norm², so it depends on the base direction's
            scale; Baydin et al. §2 and docs/METHODS.md §3).
        base, momentum, dampening, nesterov, betas, eps, weight_decay: the base direction.
        min_lr, max_lr: bounds of :math:`\alpha` (default ``0`` and ``inf``).

    Example:

        >>> opt = fedadapt.build_optimizer("hd", model.parameters(), lr=0.01, hyper_lr=1e-3)
        >>> for _ in range(3):
        ...     loss().backward(); opt.step(); opt.zero_grad()
        >>> opt.param_groups[0]["lr"] != 0.01  # the adapted step size
        True

    References:
        Baydin, Cornish, Martínez-Rubio, Schmidt, Wood, "Online Learning Rate Adaptation with
        Hypergradient Descent", ICLR 2018, arXiv:1703.04782.

    Deviations: the reference code lets :math:`\alpha` go negative and updates it tensor by
    tensor inside the loop (Adam-HD); here :math:`\alpha` is one global value clipped to
    ``[min_lr, max_lr]`` (default floor 0), and Adam's bias correction is the standard
    :math:`\hat m/(\sqrt{\hat v}+\epsilon)` form. Momentum follows torch's buffer form (the first
    step seeds the buffer with :math:`g_1`), as the reference code does.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.01,
        hyper_lr: float | None = None,
        *,
        direction: Direction | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        **base: Unpack[DirectionArgs],
    ) -> None:
        if hyper_lr is None:
            adam = (
                isinstance(direction, AdamDirection)
                if direction is not None
                else base.get("base") == "adam"
            )
            hyper_lr = 1e-5 if adam else 1e-2
        _check(
            hyper_lr >= 0 and math.isfinite(hyper_lr),
            f"hyper_lr must be a finite number >= 0, got {hyper_lr}",
        )
        defaults = dict(lr=lr, hyper_lr=hyper_lr, min_lr=min_lr, max_lr=max_lr)
        super().__init__(params, defaults, direction, **base)

    def _init_group(self, group: dict) -> None:
        group.setdefault("direction_factor", 1.0)

    def _hyper_scale(self, group: dict) -> float:
        return group["hyper_lr"]

    def _measure(self, group, params, grads, g, signals):
        prev, reused = self._previous(params, grads)
        if prev is None:
            return grads_finite(g), None
        dot = global_dot(g, prev)
        return _is_finite(dot), (None if reused else dot)

    def _adapt(self, group, params, g, dot):
        if dot is not None:  # no previous direction, or the same gradient tensors came back
            self._set_lr(
                group, group["lr"] + self._hyper_scale(group) * group["direction_factor"] * dot
            )


@direction_arguments
class MultiplicativeHypergradientDescent(_PreviousDirection):
    r"""Multiplicative (cosine-normalised) hypergradient descent on the step size.

    The unit-free cousin of :class:`HypergradientDescent`: the step size is multiplied by
    :math:`1 + \beta\cos` of the angle between the new gradient and the previous direction, so
    :math:`\beta` needs no re-tuning when the gradient scale changes (e.g. on a server).

    .. math::

        \alpha_t = \mathrm{clip}\Big(\alpha_{t-1}\big(1 + \beta \cos(g_t, d_{t-1})\big),
            \alpha_{\min}, \alpha_{\max}\Big), \qquad \theta_t = \theta_{t-1} - \alpha_t d_t

    with :math:`\beta` = ``hyper_lr`` in (0, 1) and :math:`\cos = 0` on the first step or when
    a norm is zero.

    Args:
        params: parameters or param groups.
        lr: initial step size (default 0.01).
        hyper_lr: :math:`\beta`, in [0, 1) (default 0.05).
        base, momentum, dampening, nesterov, betas, eps, weight_decay: the base direction.
        min_lr, max_lr: bounds of :math:`\alpha` (default ``1e-3 * lr`` and ``1e3 * lr``).

    Example:

        >>> opt = fedadapt.build_optimizer("hd-mult", model.parameters(), lr=0.01)
        >>> for _ in range(3):
        ...     loss().backward(); opt.step(); opt.zero_grad()
        >>> 1e-5 <= opt.param_groups[0]["lr"] <= 10.0  # within the default bounds
        True

    References:
        Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018,
        arXiv:1703.04782 (the multiplicative rule of Algorithm 4 on the poster).

    Deviations: the poster writes the rule with the raw hypergradient divided by the two norms;
    this is the same quantity written as a cosine. Bounds are explicit.
    """

    _min_lr_factor = 1e-3
    _max_lr_factor = 1e3

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.01,
        hyper_lr: float = 0.05,
        *,
        direction: Direction | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        **base: Unpack[DirectionArgs],
    ) -> None:
        _check(0.0 <= hyper_lr < 1.0, f"hyper_lr must be in [0, 1), got {hyper_lr}")
        defaults = dict(lr=lr, hyper_lr=hyper_lr, min_lr=min_lr, max_lr=max_lr)
        super().__init__(params, defaults, direction, **base)

    def _init_group(self, group: dict) -> None:
        group.setdefault("direction_factor", 1.0)
        group.setdefault("prev_direction_sq", 0.0)

    def _measure(self, group, params, grads, g, signals):
        prev, reused = self._previous(params, grads)
        use_prev = prev is not None and not reused
        if use_prev:
            assert prev is not None
            gg, dot = global_dots((g, g), (g, prev))
            dot = dot * group["direction_factor"]
        else:
            gg, dot = global_dot(g, g), 0.0
        # one check (one device read on CUDA) for both
        return _is_finite(gg + dot), (use_prev, gg, dot)

    def _adapt(self, group, params, g, stats):
        use_prev, gg, dot = stats
        if use_prev:
            denom = (gg * group["prev_direction_sq"]) ** 0.5
            if isinstance(denom, torch.Tensor):
                cos = torch.where(denom > 0, dot / denom.clamp_min(1e-300), torch.zeros_like(denom))
            else:
                cos = dot / denom if denom > 0 else 0.0
            self._set_lr(group, group["lr"] * (1.0 + group["hyper_lr"] * cos))

    def _update(self, group, params, grads, g, stats):
        d = super()._update(group, params, grads, g, stats)
        if d is g:
            group["prev_direction_sq"] = stats[1]
        else:
            group["prev_direction_sq"] = global_dot(d, d) * group["direction_factor"] ** 2
        return d
