"""Federated step-size rules: FedExP, FedHyper-G, FedHyper-GM (server) and FedHyper-CL (client)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Unpack

import torch
from torch import Tensor

from ._mechanism import (
    AdaptiveOptimizer,
    _check,
    _is_finite,
    dot_values,
    global_dot,
    global_dots,
    grads_finite,
)
from .directions import Direction, DirectionArgs, direction_arguments
from .hypergradient import HypergradientDescent, _PreviousDirection

__all__ = ["FedExP", "FedHyperG", "FedHyperGM", "FedHyperCL"]

# FedHyper-G's hypergradient: the published raw inner product, or its cosine (scale-free)
_HYPERGRADIENTS = ("raw", "cosine")


@direction_arguments
class FedExP(AdaptiveOptimizer):
    r"""FedExP: server step size by extrapolation, from the diversity of the client updates.

    When client updates disagree, their average is much shorter than they are, and the server
    extrapolates along it (the POCS analogy).

    .. math::

        \eta_g^t = \max\Big(1,\ \frac{\tfrac12 \sum_i w_i \|\Delta_i\|^2}{\|\hat g_t\|^2 + |S|\,\epsilon_t}\Big),
        \qquad \epsilon_t = \epsilon_0\, \gamma^{2(t+1)}, \qquad
        x_{t+1} = x_t - \eta\, \eta_g^t\, d_t

    :math:`\sum_i w_i\|\Delta_i\|^2` is the signal ``client_sq_norms_mean``, :math:`|S|` is
    ``num_clients``, :math:`\hat g_t` the pseudo-gradient (``p.grad``), :math:`\epsilon_0` =
    ``extrapolation_eps``, :math:`\gamma` = ``eps_decay``, :math:`t` the round index (from 0),
    :math:`\eta` = ``lr`` (1 for the paper's FedAvg base), :math:`d_t` the base direction.
    ``param_groups[i]["lr"]`` holds :math:`\eta\,\eta_g^t` after each round (recomputed from
    ``lr0`` every round: FedExP keeps no step-size state).

    Args:
        params: the global model's parameters.
        lr: :math:`\eta` (default 1.0).
        extrapolation_eps: :math:`\epsilon_0` (default 1e-3, the code's CIFAR value).
        eps_decay: :math:`\gamma` (default 0.998, as the code).
        base, momentum, dampening, nesterov, betas, eps, weight_decay: the base direction.
        max_lr: cap of :math:`\eta\,\eta_g` (default inf).

    ``step()`` needs ``client_sq_norms_mean`` and ``num_clients`` (``ServerOptimizer`` computes
    them); without them it raises ``ValueError``.

    Example:

        >>> server = fedadapt.ServerOptimizer(model.parameters(), "fedexp")
        >>> server.step(client_params, weights)
        >>> server.last_info["lr"] >= 1.0  # FedExP never steps less than FedAvg
        True

    References:
        Jhunjhunwala, Wang, Joshi, "FedExP: Speeding Up Federated Averaging via Extrapolation",
        ICLR 2023, arXiv:2301.09604.

    Deviations: follows the reference code's form (weighted mean of the squared norms, |S|·ε_t
    in the denominator, decaying ε) rather than the paper's. The paper evaluates the average of
    the last two iterates; that is left to the caller.
    """

    required_signals = ("client_sq_norms_mean", "num_clients")
    _min_lr_factor = 1.0

    def __init__(
        self,
        params: Iterable,
        lr: float = 1.0,
        extrapolation_eps: float = 1e-3,
        eps_decay: float = 0.998,
        *,
        direction: Direction | None = None,
        max_lr: float | None = None,
        **base: Unpack[DirectionArgs],
    ) -> None:
        _check(extrapolation_eps >= 0, f"extrapolation_eps must be >= 0, got {extrapolation_eps}")
        _check(0 < eps_decay <= 1, f"eps_decay must be in (0, 1], got {eps_decay}")
        defaults = dict(
            lr=lr,
            extrapolation_eps=extrapolation_eps,
            eps_decay=eps_decay,
            min_lr=None,
            max_lr=max_lr,
        )
        super().__init__(params, defaults, direction, **base)

    def _measure(self, group, params, grads, g, signals):
        sq_mean = float(signals["client_sq_norms_mean"])
        count = int(signals["num_clients"])
        _check(count >= 1, f"num_clients must be >= 1, got {count}")
        gg = global_dot(grads, grads)
        return _is_finite(gg) and math.isfinite(sq_mean), (gg, sq_mean, count)

    def _adapt(self, group, params, g, stats):
        gg, sq_mean, count = stats
        # t = group["step"] - 1, the round index from 0: eps_t = eps_0 gamma^(2 (t + 1))
        eps_t = group["extrapolation_eps"] * group["eps_decay"] ** (2 * group["step"])
        ratio = (
            0.5 * sq_mean / (gg + count * eps_t)
            if isinstance(gg, Tensor) or gg + count * eps_t > 0
            else 1.0
        )
        if isinstance(ratio, Tensor):
            eta = torch.clamp_min(ratio, 1.0)
        else:
            eta = max(1.0, ratio)
        self._set_lr(group, group["lr0"] * eta)


@direction_arguments
class FedHyperG(HypergradientDescent):
    r"""FedHyper-G: hypergradient descent on the server step size, clipped.

    .. math::

        \eta_t = \mathrm{clip}\big(\eta_{t-1} + \eta_0\beta\,h_t,
            \eta_{\min}, \eta_{\max}\big), \qquad x_{t+1} = x_t - \eta_t \hat g_t

    with the hypergradient :math:`h_t = \cos(\hat g_t, \hat g_{t-1})` (default,
    ``hypergradient="cosine"``; 0 when a norm is 0) or, as published, the raw inner product
    :math:`h_t = \langle \hat g_t, \hat g_{t-1}\rangle` (``hypergradient="raw"``). The raw form is
    server SGD-HD with the hypergradient scaled by :math:`\eta_0` = ``lr``, so that
    :math:`\eta_t = \eta_0(1 + \mathrm{agg}_t)` exactly as in the reference code
    (:math:`\mathrm{agg}_t = \mathrm{clip}(\mathrm{agg}_{t-1} + \langle\Delta_{t-1},\Delta_t\rangle, -0.8, 4)`).
    :math:`\langle\hat g_t, \hat g_{t-1}\rangle = \langle\Delta_t, \Delta_{t-1}\rangle`.

    **Why the cosine by default.** The raw inner product has the units of the update squared:
    :math:`\beta = 1` (the code's, fixed) suits updates whose consecutive inner products are
    small next to 1; with larger updates each round moves :math:`\mathrm{agg}` from one clip to
    the other. In a standard Flower app (RESULTS.md §11: an MLP, client SGD at lr 0.05 with
    momentum, 2 local epochs) the server lr went from 1 to 5 in round 2 and swung between 0.2
    and 5 after; accuracy fell from about 0.9 to 0.3-0.5 and ended 40 points below FedAvg. The
    cosine keeps the signal (agreement of consecutive updates) without the scale: a round moves
    :math:`\mathrm{agg}` by at most :math:`\beta`, whatever the model, the data or the clients'
    lr. It is the normalised hypergradient of the multiplicative rule (Baydin et al., "Online
    Learning Rate Adaptation with Hypergradient Descent", ICLR 2018, arXiv:1703.04782;
    ``hd-mult`` here). The authors' code carries a commented-out "normalized hypergradient", a
    sigmoid of :math:`0.1\langle\Delta_{t-1},\Delta_t\rangle`, which is always positive (so agg
    could only grow); it is not used here. The ``FedHyper(variant="G")`` preset (the published
    method in comparisons) keeps the raw rule.

    Args:
        params: the global model's parameters.
        lr: :math:`\eta_0` (default 1.0).
        hyper_lr: :math:`\beta` (default 1.0, the code's).
        min_lr, max_lr: default ``0.2 * lr`` and ``5 * lr`` (the code's [0.2, 5]).
        hypergradient: ``"cosine"`` (default) or ``"raw"`` (the published rule), above.
        base, ...: the base direction. With ``base="adam"`` fedadapt adapts the scalar step
            of torch's Adam direction from the hypergradient of that direction
            (:math:`\langle \hat g_t, d_{t-1}\rangle`). This is not the FedHyper authors'
            FedAdam variant, whose rule scales Adam's input by :math:`0.1(1 + \mathrm{agg})`
            with its own normalisations and takes the hypergradient from the raw updates
            (docs/METHODS.md §9).

    Example:

        >>> server = fedadapt.ServerOptimizer(model.parameters(), "fedhyper-g")
        >>> server.step(client_params, weights)
        >>> server.last_info["lr"]
        1.0

    References:
        Wang, Wang, Li, "FedHyper: A Universal and Robust Learning Rate Scheduler for Federated
        Learning with Hypergradient Descent", ICLR 2024, arXiv:2310.03156.

    Deviations: the cosine hypergradient by default (above); the paper's bound
    :math:`\gamma_\alpha = 3` would give [1/3, 3]; the defaults follow the code ([0.2, 5]).
    """

    _min_lr_factor = 0.2
    _max_lr_factor = 5.0

    def __init__(
        self,
        params: Iterable,
        lr: float = 1.0,
        hyper_lr: float | None = 1.0,
        *,
        direction: Direction | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        hypergradient: str = "cosine",
        **base: Unpack[DirectionArgs],
    ) -> None:
        _check(
            hypergradient in _HYPERGRADIENTS,
            f"hypergradient must be one of {list(_HYPERGRADIENTS)}, got {hypergradient!r}",
        )
        self._hypergradient = hypergradient
        super().__init__(
            params,
            lr=lr,
            hyper_lr=1.0 if hyper_lr is None else hyper_lr,
            direction=direction,
            min_lr=min_lr,
            max_lr=max_lr,
            **base,
        )

    def _init_group(self, group: dict) -> None:
        super()._init_group(group)
        # a checkpoint from before this option has no entry: it resumes with the raw rule it ran
        group.setdefault("hypergradient", self._hypergradient)

    def _hyper_scale(self, group: dict) -> float:
        return group["hyper_lr"] * group["lr0"]

    def _measure(self, group, params, grads, g, signals):
        if group.get("hypergradient", "raw") == "raw":
            return super()._measure(group, params, grads, g, signals)
        prev, reused = self._previous(params, grads)
        if prev is None:
            return grads_finite(g), None
        dot, gg, pp = global_dots((g, prev), (g, g), (prev, prev))
        if reused:
            return _is_finite(dot), None
        # the cosine of <g_t, d_{t-1}>: 0 where a norm is 0 (a zero update carries no signal)
        denom = (gg * pp) ** 0.5
        if isinstance(denom, Tensor):
            cos = torch.where(denom > 0, dot / denom.clamp_min(1e-300), torch.zeros_like(denom))
        else:
            cos = dot / denom if denom > 0 else 0.0
        return _is_finite(dot + gg + pp), cos

    def _adapt(self, group, params, g, stats):
        if group.get("hypergradient", "raw") == "raw":
            return super()._adapt(group, params, g, stats)
        if (
            stats is not None
        ):  # the stored direction is d_{t-1} / factor: only its sign turns the cosine
            sign = math.copysign(1.0, group["direction_factor"])
            self._set_lr(group, group["lr"] + self._hyper_scale(group) * sign * stats)
        return None


class FedHyperGM(AdaptiveOptimizer):
    r"""FedHyper-GM: FedHyper's global rule with server momentum (the README's recommendation).

    .. math::

        \mathrm{agg}_t = \mathrm{clip}\big(\mathrm{agg}_{t-1} + \beta\langle M_{t-1}, \hat g_t\rangle, a_{\min}, a_{\max}\big)

        x_{t+1} = x_t - \eta_0\big[(1 + \mathrm{agg}_t)\,\hat g_t + \mu\,\mathrm{agg}_t M_{t-1}\big],
        \qquad M_t = \hat g_t + \mu M_{t-1}, \quad M_1 = \hat g_1

    :math:`\beta` = ``hyper_lr``, :math:`\mu` = ``momentum``, :math:`\eta_0` = ``lr``. The
    group ``lr`` holds :math:`\eta_0(1+\mathrm{agg}_t)`, bounded by ``min_lr``/``max_lr``
    (default ``0.8 * lr`` and ``5 * lr``: the code's agg in [-0.2, 4]). Note the momentum term
    is scaled by agg, not 1 + agg, as in the code.

    Args:
        params: the global model's parameters.
        lr: :math:`\eta_0` (default 1.0).
        hyper_lr: :math:`\beta` (default 1.0).
        momentum: :math:`\mu` in [0, 1) (default 0.9).
        min_lr, max_lr: bounds of :math:`\eta_0(1+\mathrm{agg})`.

    Unlike the wrapping methods it takes no ``base=``: the momentum is part of the rule.

    Example:

        >>> server = fedadapt.ServerOptimizer(model.parameters(), "fedhyper-gm")
        >>> server.step(client_params, weights)
        >>> server.last_info["skipped"]
        0.0

    References:
        Wang, Wang, Li, "FedHyper", ICLR 2024, arXiv:2310.03156 (code ``ATP-1010/FedHyper``).

    Deviations: none beyond writing the rule on the pseudo-gradient :math:`\hat g = -\Delta`
    (all inner products are unchanged).
    """

    _min_lr_factor = 0.8
    _max_lr_factor = 5.0
    _takes_direction = False  # the momentum is part of the rule

    def __init__(
        self,
        params: Iterable,
        lr: float = 1.0,
        hyper_lr: float = 1.0,
        momentum: float = 0.9,
        *,
        min_lr: float | None = None,
        max_lr: float | None = None,
    ) -> None:
        _check(
            hyper_lr >= 0 and math.isfinite(hyper_lr),
            f"hyper_lr must be a finite number >= 0, got {hyper_lr}",
        )
        _check(0.0 <= momentum < 1.0, f"momentum must be in [0, 1), got {momentum}")
        # base and betas: the group entries FedHyper-GM always had (its checkpoints hold them)
        defaults = dict(
            lr=lr,
            hyper_lr=hyper_lr,
            momentum=momentum,
            base="sgd",
            min_lr=min_lr,
            max_lr=max_lr,
            betas=(0.9, 0.999),
        )
        super().__init__(params, defaults)

    def _measure(self, group, params, grads, g, signals):
        bufs = [self.state[p].get("hyper_momentum") for p in params]
        if not all(b is not None for b in bufs):
            return grads_finite(g), None
        dot = global_dot(bufs, grads)
        return _is_finite(dot), (bufs, dot)

    def _adapt(self, group, params, g, stats):
        if stats is not None:
            self._set_lr(group, group["lr"] + group["lr0"] * group["hyper_lr"] * stats[1])

    def _update(self, group, params, grads, g, stats):
        lr0, mu = group["lr0"], group["momentum"]
        lr = group["lr"]
        agg = lr / lr0 - 1.0
        self._apply(params, grads, lr, 1.0)
        if stats is not None:
            bufs = stats[0]
            self._apply(params, bufs, agg, mu * lr0)
            torch._foreach_mul_(bufs, mu)
            torch._foreach_add_(bufs, grads)
        else:
            for p, g in zip(params, grads, strict=True):
                self.state[p]["hyper_momentum"] = g.detach().clone()


@direction_arguments
class FedHyperCL(_PreviousDirection):
    r"""FedHyper-CL: FedHyper's client-local, per-step multiplicative step-size rule.

    After each local step :math:`u_k = \theta_k - \theta_{k-1}` the step size is multiplied by
    a factor capped at ``max_growth``, driven by the alignment of consecutive local updates and
    of the local update with the previous global update :math:`\Delta_{t-1}`:

    .. math::

        \gamma_k = \min\big(\gamma_{\max},\ 1 + c\,\langle u_k, \Delta_{t-1}\rangle + \langle u_k, u_{k-1}\rangle\big),
        \qquad \alpha_{k+1} = \mathrm{clip}(\gamma_k \alpha_k, \alpha_{\min}, \alpha_{\max})

    with :math:`u_0 = \Delta_{t-1}`, :math:`c` = ``global_coef`` and :math:`\gamma_{\max}` =
    ``max_growth``. :math:`\Delta_{t-1} = x_t - x_{t-1}` (new minus old global model) is given by
    :meth:`set_global_update` or the ``global_update`` constructor argument; without it the
    global-alignment term is zero and :math:`u_0` is absent (no adaptation at the first step).

    Args:
        params: parameters or param groups.
        lr: initial local step size (default 0.01).
        global_coef: :math:`c` (default 0.01 = the code's 0.1 / 10 clients per round).
        max_growth: :math:`\gamma_{\max} \ge 1` (default 1.1).
        global_update: optional :math:`\Delta_{t-1}`, one tensor per parameter.
        base, momentum, dampening, nesterov, betas, eps, weight_decay: the base direction.
        min_lr, max_lr: default ``0.1 * lr`` and ``10 * lr`` (the code's [0.1, 10]).

    Example:

        >>> opt = fedadapt.build_optimizer("fedhyper-cl", model.parameters(), lr=0.01)
        >>> opt.set_global_update([torch.full_like(p, -1e-3) for p in model.parameters()])
        >>> loss().backward(); opt.step(); opt.zero_grad()
        >>> 0.001 <= opt.param_groups[0]["lr"] <= 0.011  # grown by at most max_growth
        True

    References:
        Wang, Wang, Li, "FedHyper", ICLR 2024, arXiv:2310.03156 (code ``ATP-1010/FedHyper``,
        ``src/update.py``).

    Deviations: the code skips the first step of every local epoch and divides the global term
    by the number of clients per round; here every step adapts and the division is folded into
    ``global_coef``. The paper's additive form (Eq. 20) is not used; the code's multiplicative
    form is.
    """

    _min_lr_factor = 0.1
    _max_lr_factor = 10.0

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.01,
        global_coef: float = 0.01,
        max_growth: float = 1.1,
        global_update: Sequence[Tensor] | None = None,
        *,
        direction: Direction | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        **base: Unpack[DirectionArgs],
    ) -> None:
        _check(
            global_coef >= 0 and math.isfinite(global_coef),
            f"global_coef must be a finite number >= 0, got {global_coef}",
        )
        _check(max_growth >= 1.0, f"max_growth must be >= 1, got {max_growth}")
        defaults = dict(
            lr=lr, global_coef=global_coef, max_growth=max_growth, min_lr=min_lr, max_lr=max_lr
        )
        super().__init__(params, defaults, direction, **base)
        if global_update is not None:
            self.set_global_update(global_update)

    def _init_group(self, group: dict) -> None:
        group.setdefault("prev_update_scale", 0.0)  # u_{k-1} = -prev_update_scale * prev_direction

    def set_global_update(self, update: Sequence[Tensor] | None) -> None:
        """Set :math:`\\Delta_{t-1}` (one tensor per parameter, in ``param_groups`` order), or clear it.

        Also restarts the local chain: the next step's :math:`u_{k-1}` is :math:`\\Delta_{t-1}`.
        """
        params = [p for g in self.param_groups for p in g["params"]]
        if update is not None:
            update = list(update)
            _check(
                len(update) == len(params),
                f"global_update needs {len(params)} tensors, got {len(update)}",
            )
        for i, p in enumerate(params):
            st = self.state[p]
            st.pop("prev_direction", None)
            if update is None:
                st.pop("global_update", None)
            else:
                _check(
                    update[i].shape == p.shape,
                    f"global_update[{i}] has shape {tuple(update[i].shape)}, expected {tuple(p.shape)}",
                )
                st["global_update"] = update[i].detach().to(device=p.device, dtype=p.dtype).clone()
        for g in self.param_groups:
            g["prev_update_scale"] = 0.0

    def _measure(self, group, params, grads, g, signals):
        if not (
            group["base"] == "sgd"
            and not group["momentum"]
            and params[0].device.type == "cpu"
            and not isinstance(group["lr"], Tensor)
        ):
            return grads_finite(g), None
        # plain SGD on CPU (d_k = g_k): the inner products only need g, so they are taken
        # before the update with one read each. A non-finite gradient makes every inner product
        # with it non-finite, so when all are finite they stand for the non-finite guard (which
        # runs otherwise); they are summed where the general path takes them.
        state = self.state
        glob, found = [], []
        for p in params:  # as _previous does, with the global update in the same pass
            st = state[p]
            glob.append(st.get("global_update"))
            found.append(st.get("prev_direction"))
        has_glob = all(x is not None for x in glob)
        prev: list[Tensor] | None = found if all(x is not None for x in found) else None
        reused = prev is not None and any(gi is di for gi, di in zip(grads, prev, strict=True))
        use_prev = prev is not None and not reused
        pairs: list[tuple[Sequence[Tensor], Sequence[Tensor]]] = []
        if has_glob:
            pairs.append((g, glob))
        if use_prev:
            assert prev is not None
            pairs.append((g, prev))
        vals = dot_values(*pairs)
        # a plain sum: inf - inf or an overflow only sends this step to the explicit guard
        finite = bool(vals) and math.isfinite(sum(map(sum, vals))) or grads_finite(g)
        return finite, (has_glob, prev, use_prev, vals)

    def _update(self, group, params, grads, g, stats):
        if stats is not None:
            # plain SGD on CPU, from the inner products taken in _measure (same arithmetic)
            has_glob, prev, use_prev, vals = stats
            lr = group["lr"]
            self._apply(params, g, lr, 1.0)
            step_scale = lr * 1.0  # u_k = -step_scale * d_k
            growth = 1.0
            if has_glob:
                growth = growth - group["global_coef"] * step_scale * math.fsum(vals[0])
            if use_prev:
                growth = growth + step_scale * group["prev_update_scale"] * math.fsum(vals[-1])
            elif prev is None and has_glob:
                growth = growth - step_scale * math.fsum(vals[0])  # u_0 = Delta_{t-1}
            growth = min(group["max_growth"], growth)
            if math.isfinite(growth):
                self._set_lr(group, lr * growth)
            self._store_direction(group, params, grads, g, 1.0)
            group["prev_update_scale"] = step_scale
            return
        glob = [self.state[p].get("global_update") for p in params]
        has_glob = all(x is not None for x in glob)
        prev, reused = self._previous(params, grads)
        momentum_alias = group["base"] == "sgd" and group["momentum"] > 0 and not group["nesterov"]
        if prev is not None and momentum_alias:
            prev = [
                x.clone() for x in prev
            ]  # the momentum buffer is d_{k-1}; it changes in place below
        lr = group["lr"]
        d, factor = self.direction.compute(self, group, params, g)
        self._apply(params, d, lr, factor)
        step_scale = lr * factor  # u_k = -step_scale * d_k
        growth = 1.0
        if has_glob:
            growth = growth - group["global_coef"] * step_scale * global_dot(d, glob)
        if prev is not None and not reused:
            growth = growth + step_scale * group["prev_update_scale"] * global_dot(d, prev)
        elif prev is None and has_glob:
            growth = growth - step_scale * global_dot(d, glob)  # u_0 = Delta_{t-1}
        if isinstance(growth, Tensor):
            growth = growth.clamp_max(group["max_growth"])
            # no host read: a non-finite growth (overflowing dot products) keeps the lr
            self._set_lr(group, torch.where(torch.isfinite(growth), lr * growth, lr))
        else:
            growth = min(group["max_growth"], growth)
            if math.isfinite(growth):
                self._set_lr(group, lr * growth)
        self._store_direction(group, params, grads, d, factor)
        group["prev_update_scale"] = step_scale
