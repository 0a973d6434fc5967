r"""``cp-adam``: a changepoint-aware Adam for the server, fedadapt's default server method.

On stationary data it is FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021,
arXiv:2003.00295) with Flower's bias correction, applied to the pseudo-gradient
:math:`g_t = x_t - \bar x`, with an optional scale-free denominator floor:

.. math::

    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
    x_{t+1} = x_t - \eta_t \frac{m_t / (1-\beta_1^{s})}{\sqrt{v_t / (1-\beta_2^{s})} + \epsilon
              + \epsilon_{rel}\,\mathrm{rms}(\sqrt{v_t})}

where :math:`s` counts the steps since the last change (not since the start) and the RMS is
over each tensor. The defaults (:math:`\epsilon` = 1e-3, :math:`\epsilon_{rel}` = 0) are Flower's
FedAdam exactly. Its floor is a constant :math:`\tau`: a client lr 10x smaller makes every
update 10x smaller next to :math:`\tau`, and with few local steps the server steps shrink with
it. ``eps=1e-8, eps_rel=1.0`` makes the floor scale with the updates, so in that regime the
server step does not depend on the clients' lr. The client-method study (RESULTS.md §8) measured
it: over a 100x client-lr grid it raised the worst cell by 0.16 on lr-robustness and by 0.06
after a label permutation on drift-digits, but lowered the best cell by 0.066 on
synthetic-local (20 local epochs) and by 0.026 after the change on mnist1d-local, so it is an
option, not the default.

What it adds is what a drift needs (docs/METHODS.md, "Drift"):

- :meth:`on_change` — called by :class:`fedadapt.ServerOptimizer` when its change detector
  (:class:`fedadapt.ChangeDetector`, driven by the clients' round-start loss) raises an alarm,
  or at known changepoints (the oracle): by default (``reset="first-moment"``) the first moment
  and its step counter :math:`s_m` restart, the second moment and its counter :math:`s` are
  kept; ``reset="all"`` restarts both moments and both counters, ``reset="none"`` nothing. After
  a change the old first moment points the wrong way for about :math:`1/(1-\beta_1)` rounds;
  restarted with its counter, the bias correction makes the first post-change step follow the
  new pseudo-gradient alone. The second moment, inflated by the post-change updates, damps the
  steps for about :math:`1/(1-\beta_2)` rounds; keeping it (the default) keeps the step scale
  of the stable phase, restarting it (``"all"``) makes the first post-change step
  :math:`\eta\,\mathrm{sign}(g)`-sized, as at the very start.
  Ellis et al., "Adam on Local Time: Addressing Nonstationarity in RL with Relative Adam Time
  Steps", NeurIPS 2024 (arXiv:2412.17113) restart the step counter; Asadi et al., "Resetting
  the Optimizer in Deep RL: An Empirical Study", NeurIPS 2023 (arXiv:2306.17833) restart the
  moments.
- optionally (``scale_rate > 0``) a log-space, exponentiated-gradient adaptation of the scale
  :math:`\eta_t` from the cosine between consecutive pseudo-gradients (normalised, so it does
  not depend on the clients' lr): :math:`\log\eta_{t+1} = \log\eta_t + \beta\cos(g_t, g_{t-1})`,
  clipped to ``[min_lr, max_lr]`` (Amid, Anil, Fifty, Warmuth, "Step-size Adaptation Using
  Exponentiated Gradient Updates", arXiv:2202.00145). Off by default: the study in RESULTS.md
  measured it.
- bounded denominators: :math:`\sqrt{\hat v}+\epsilon` with :math:`\epsilon > 0` (validated).

The class also declares what it wants from the federation (read by the strategy and the
client calls, never by testing its name): the detector on, the clients' round-start loss as its
signal, and more local work for a few rounds after a change (``plasticity``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from ._mechanism import AdaptiveOptimizer, _check, adam_moments, check_betas, squared_norm

__all__ = ["ChangepointAdam"]


class ChangepointAdam(AdaptiveOptimizer):
    """Adam with a restart on a detected change (see the module docstring).

    Args:
        lr: the step size :math:`\\eta` (> 0); 0.1 suits a federated pseudo-gradient.
        betas: Adam's :math:`(\\beta_1, \\beta_2)`; (0.9, 0.99) as FedAdam.
        eps: the denominator's constant floor :math:`\\epsilon` (> 0; Flower's FedAdam: 1e-3).
        eps_rel: a second floor, relative to each tensor's RMS of :math:`\\sqrt{\\hat v}`: the
            denominator is :math:`\\sqrt{\\hat v} + \\epsilon + \\epsilon_{rel}\\,
            \\mathrm{rms}(\\sqrt{\\hat v})`, so a coordinate whose updates are tiny next to the
            rest of its tensor moves in proportion to them instead of by a full :math:`\\pm\\eta`
            (scale-free, unlike a fixed :math:`\\epsilon`). Default 0; ``eps=1e-8, eps_rel=1``
            is the scale-free floor the module docstring discusses.
        bias_correction: ``"fedadam"`` (Flower's FedAdam: exponents :math:`s+1`) or ``"adam"``.
        reset: what :meth:`on_change` restarts: ``"first-moment"`` (default), ``"all"`` or
            ``"none"``.
        local_work, plastic_rounds: after a change, ask the clients for ``local_work`` times
            their local work for ``plastic_rounds`` rounds (:attr:`plasticity`).
        weight_decay: coupled L2 added to the gradient.
        scale_rate: :math:`\\beta` of the log-space scale adaptation (0 = off).
        min_lr, max_lr: bounds of the adapted :math:`\\eta` (default ``lr/100``, ``100 lr``).
    """

    # server-only, default lr 0.1, change detector on: declared in its MethodSpec
    # (fedadapt/__init__.py)

    # its Adam is its own: FedAdam's bias correction, counted from the last change, and the
    # relative floor (the update params += (-lr c / b1) m / den is not the direction path's
    # params += -lr (c / b1) (m / den): torch's addcdiv multiplies before it divides, so reusing
    # AdamDirection would change every run in the last bit)
    _takes_direction = False
    _lr_on_device = False  # the scale adaptation works in log space on the host

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-3,
        eps_rel: float = 0.0,
        bias_correction: str = "fedadam",
        reset: str = "first-moment",
        local_work: float = 3.0,
        plastic_rounds: int = 5,
        weight_decay: float = 0.0,
        scale_rate: float = 0.0,
        min_lr: float | None = None,
        max_lr: float | None = None,
    ) -> None:
        _check(
            isinstance(lr, int | float) and lr > 0 and math.isfinite(lr),
            f"lr must be a finite number > 0, got {lr!r}",
        )
        b1, b2 = check_betas(betas, 2)
        _check(
            eps > 0 and math.isfinite(eps),
            f"eps must be > 0 (it bounds the denominator), got {eps!r}",
        )
        _check(
            bias_correction in ("fedadam", "adam"),
            f"bias_correction must be 'fedadam' or 'adam', got {bias_correction!r}",
        )
        _check(
            reset in ("all", "first-moment", "none"),
            f"reset must be 'all', 'first-moment' or 'none', got {reset!r}",
        )
        _check(
            local_work >= 1.0 and math.isfinite(local_work),
            f"local_work must be >= 1, got {local_work!r}",
        )
        _check(
            isinstance(plastic_rounds, int) and plastic_rounds >= 0,
            f"plastic_rounds must be an int >= 0, got {plastic_rounds!r}",
        )
        _check(eps_rel >= 0 and math.isfinite(eps_rel), f"eps_rel must be >= 0, got {eps_rel!r}")
        _check(weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay!r}")
        _check(
            scale_rate >= 0 and math.isfinite(scale_rate),
            f"scale_rate must be >= 0, got {scale_rate!r}",
        )
        lo = lr / 100.0 if min_lr is None else float(min_lr)
        hi = lr * 100.0 if max_lr is None else float(max_lr)
        _check(0 < lo <= lr <= hi, f"need 0 < min_lr <= lr <= max_lr, got {lo}, {lr}, {hi}")
        defaults = {
            "lr": float(lr),
            "betas": (b1, b2),
            "eps": float(eps),
            "eps_rel": float(eps_rel),
            "bias_correction": bias_correction,
            "reset": reset,
            "local_work": float(local_work),
            "plastic_rounds": int(plastic_rounds),
            "weight_decay": float(weight_decay),
            "scale_rate": float(scale_rate),
            "min_lr": lo,
            "max_lr": hi,
        }
        super().__init__(params, defaults)

    def _init_group(self, group: dict) -> None:
        group.setdefault("m_step", 0)
        group.setdefault("changes", 0)

    def _measure(self, group, params, grads, g, signals):
        # the squared norm of the raw gradient: the finiteness test and the scale's statistic
        sq = squared_norm(grads)
        return bool(torch.isfinite(sq)), sq

    def _adapt(self, group, params, g, sq):
        self._scale(group, params, g, float(sq))

    def _update(self, group, params, grads, g, stats):
        group["m_step"] = group.get("m_step", 0) + 1
        b1, b2 = group["betas"]
        ms, vs = adam_moments(self.state, params)
        torch._foreach_lerp_(ms, g, 1.0 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, g, g, 1.0 - b2)
        s, sm = group["step"], group["m_step"]  # steps of v and of m since their last restart
        if group["bias_correction"] == "fedadam":
            # Flower's FedAdam: eta * sqrt(1 - b2^(s+1)) / (1 - b1^(s+1)) * m / (sqrt(v) + eps)
            bc1 = 1.0 - b1 ** (sm + 1)
            c = math.sqrt(1.0 - b2 ** (s + 1))
            eps_c = group["eps"]
        else:  # Adam's: m_hat / (sqrt(v_hat) + eps), written as (c / bc1) m / (sqrt(v) + eps c)
            bc1 = 1.0 - b1**sm
            c = math.sqrt(1.0 - b2**s)
            eps_c = group["eps"] * c
        den = torch._foreach_sqrt(vs)
        torch._foreach_add_(den, eps_c)
        if group["eps_rel"]:
            # a floor relative to the tensor's own RMS step scale: coordinates whose
            # updates are tiny next to the rest of their tensor are not blown up to +-lr
            floors = [v.mean().sqrt() * group["eps_rel"] for v in vs]
            torch._foreach_add_(den, floors)
        torch._foreach_addcdiv_(params, ms, den, value=-group["lr"] * c / bc1)

    def _scale(self, group: dict, params: list[Tensor], grads: list[Tensor], sq: float) -> None:
        """Log-space update of ``lr`` from cos(g_t, g_{t-1}); keeps g_t when the rule is on."""
        rate = group["scale_rate"]
        if rate == 0.0:
            return
        prev = [self.state[p].get("prev_grad") for p in params]
        if all(t is not None for t in prev):
            dots = [
                torch.dot(g.reshape(-1).to(torch.float64), q.reshape(-1).to(torch.float64))
                for g, q in zip(grads, prev, strict=True)
            ]
            num = float(torch.stack(dots).sum())
            psq = float(sum(float(self.state[p]["prev_sq"]) for p in params[:1]))
            cos = num / math.sqrt(sq * psq) if sq > 0 and psq > 0 else 0.0
            lr = math.exp(math.log(group["lr"]) + rate * cos)
            group["lr"] = min(max(lr, group["min_lr"]), group["max_lr"])
        for p, g in zip(params, grads, strict=True):
            st = self.state[p]
            if "prev_grad" in st:
                st["prev_grad"].copy_(g)
            else:
                st["prev_grad"] = g.detach().clone()
        self.state[params[0]]["prev_sq"] = torch.tensor(sq, dtype=torch.float64)

    @property
    def plasticity(self) -> dict[str, float]:
        """After a change, ask the clients for ``local_work`` times their local work for the
        ``plastic_rounds`` rounds that follow (read by ``ServerOptimizer.client_hints``)."""
        g = self.param_groups[0]
        return {"local-work": float(g["local_work"]), "rounds": float(g["plastic_rounds"])}

    def on_change(self) -> None:
        """A change was detected (or is known): restart the moments ``reset`` names (default
        ``"first-moment"``: the first moment and its counter; ``"all"``: both moments and both
        counters; ``"none"``: nothing) and re-open a scale that the adaptation had shrunk below
        its start."""
        for group in self.param_groups:
            mode = group["reset"]
            group["changes"] += 1
            if mode == "none":
                continue
            group["m_step"] = 0
            if mode == "all":
                group["step"] = 0
            group["lr"] = max(group["lr"], group["lr0"])
            keys = ("exp_avg", "exp_avg_sq") if mode == "all" else ("exp_avg",)
            for p in group["params"]:
                st = self.state.get(p)
                if not st:
                    continue
                for key in keys:
                    if key in st:
                        st[key].zero_()
                st.pop("prev_grad", None)
                st.pop("prev_sq", None)
