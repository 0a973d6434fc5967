r"""``flash``: Flash, a drift-aware adaptive server step (and its client-side early stopping).

Panchal, Choudhary, Mitra, Mukherjee, Sarkhel, Mitra, Guan, "Flash: Concept Drift Adaptation in
Federated Learning", ICML 2023, PMLR v202 (panchal23a).

The server step, element-wise, on the round's mean client delta
:math:`\Delta_t = \bar x - x_t = -\hat g_t` (:class:`fedadapt.ServerOptimizer` writes the
pseudo-gradient :math:`\hat g_t` into ``p.grad``), without bias correction:

.. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,\Delta_t \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2)\,\Delta_t^2, \qquad
    \hat v_t = v_t / (1 - \beta_2^t) \\
    \beta_{3,t} &= \frac{|\hat v_{t-1}|}{|\Delta_t^2 - \hat v_t| + |\hat v_{t-1}|} \\
    d_t &= \beta_{3,t}\, d_{t-1} + (1-\beta_{3,t})\,(\Delta_t^2 - \hat v_t) \\
    x_{t+1} &= x_t + \eta\, \frac{m_t}{D_t}, \qquad
    D_t = \max\!\big(\sqrt{v_t} - d_t,\; \rho\sqrt{v_t}\big) + \tau

with :math:`m_0 = v_0 = d_0 = 0` and :math:`\hat v_0 = 0`. :math:`d_t` is Flash's "degree of
drift": when :math:`\Delta_t^2` jumps above its running second moment, :math:`\beta_3` falls,
:math:`d` grows and the step grows; after the spike :math:`d` turns negative and damps the step.
The step itself (:math:`m_t`, :math:`\sqrt{v_t}`) has no bias correction, as published.

**The drift test's second moment** (``debias_drift``, default True; the first departure from the
paper). The paper compares :math:`\Delta_t^2` with :math:`v_t`, which starts at 0 and is biased
towards 0 for about :math:`1/(1-\beta_2)` = 100 rounds (:math:`v_t \approx (1-\beta_2^t)
\,E[\Delta^2]`): in every warm-up round :math:`\Delta_t^2 - v_t \approx \beta_2^t \Delta_t^2`
reads as a drift, :math:`\beta_{3,1} = 0` in round 1, and the step is amplified on stationary
data. Here the test reads Adam's unbiased estimate :math:`\hat v_t` (Kingma and Ba, "Adam: A
Method for Stochastic Optimization", ICLR 2015, arXiv:1412.6980, §3): :math:`\hat v_1 =
\Delta_1^2`, so round 1 sees no drift (:math:`d_1 = 0`: FedAdam's first step), and from there
the test compares each :math:`\Delta_t^2` with the mean of the past ones, the comparison the
paper describes. After the warm-up (:math:`\beta_2^t \to 0`) the two tests agree.
``debias_drift=False`` is the published test (:math:`\hat v = v`). On i.i.d. updates of scale
0.1 the published test takes 5.2x / 4.8x FedAdam's step in rounds 1 / 2, the unbiased one 1.0x /
1.6x (docs/DRIFT.md §5); in the adoption probe (RESULTS.md §11) the published test took the
central loss from 1.6 to 8-14 in rounds 2-3.

**The denominator guard** (:math:`\rho` = ``den_floor``, the second departure). The
published denominator :math:`\sqrt{v_t} - d_t + \tau` is zero or negative whenever
:math:`d_t \ge \sqrt{v_t}`, and that happens on the very first round: with :math:`v_0 = 0`,
:math:`\beta_{3,1} = 0`, :math:`d_1 = \beta_2\Delta_1^2` while :math:`\sqrt{v_1} =
\sqrt{1-\beta_2}\,|\Delta_1|`, so the published step is negative (it moves *against* the
clients) for every coordinate with :math:`|\Delta_1| > \sqrt{1-\beta_2}/\beta_2 \approx 0.101`,
and unbounded near that value; the same happens in the following rounds while :math:`v` warms up.
With the unbiased drift test round 1 is safe, but :math:`d_t` (squared units) against
:math:`\sqrt{v_t}` (linear units) still crosses it whenever updates are large (:math:`|\Delta|`
of order 1), drift or not.
Here :math:`d_t` may lower the denominator to at most the fraction :math:`\rho` of
:math:`\sqrt{v_t}`: the step keeps the sign of :math:`m_t`, drift can make it at most
:math:`1/\rho` times FedAdam's (10x with the default :math:`\rho = 0.1`), and it is exactly the
published step whenever :math:`d_t \le (1-\rho)\sqrt{v_t}` (every moderate drift signal, and
every negative :math:`d`). :math:`\tau > 0` (validated) bounds :math:`D_t \ge \tau` where
:math:`v_t = 0`, where :math:`m_t = 0` too, so no 0/0. Since
:math:`|m_t| \le c\sqrt{v_t}` with :math:`c = (1-\beta_1)/\sqrt{(1-\beta_2)(1-\beta_1^2/\beta_2)}`
(Cauchy-Schwarz; :math:`c \approx 2.34` at the defaults), every step is at most
:math:`c\,\eta/\rho` per coordinate. The guard being active is counted per round
(``param_groups[i]["guarded"]``: the fraction of coordinates whose denominator was raised).

**The** :math:`\beta_3` **0/0.** Where :math:`v_{t-1} = 0` and :math:`\Delta_t = 0` (round 1 for
a coordinate the clients did not move, or a parameter never moved), the fraction is 0/0: it is
defined as :math:`\beta_3 = 1` (no evidence of drift: :math:`d` is kept, and it is 0 there).
Where :math:`v_{t-1} = 0` and :math:`\Delta_t \ne 0` the formula gives :math:`\beta_3 = 0`, as
published (with the unbiased test :math:`\Delta_t^2 - \hat v_t` is 0 in round 1, so :math:`d_1 = 0`;
with the published one the guard bounds the step).

``adaptive_b3=False`` forces :math:`\beta_3 = 1`, so :math:`d_t = d_0 = 0` forever and the step
is FedAdam without bias correction (Reddi et al., "Adaptive Federated Optimization", ICLR 2021,
arXiv:2003.00295) with :math:`v_0 = 0`: :math:`x_{t+1} = x_t + \eta\, m_t/(\sqrt{v_t} + \tau)`.

**Client side.** Flash's clients stop local training early on a local validation loss
(:func:`flash_early_stop`); its MethodSpec declares it (``client_hints``) for the strategy
(``"early-stop-gamma"``: the :math:`\gamma` of the rule).

Defaults (as the FL4Health implementation, `VectorInstitute/FL4Health`): :math:`\eta = 0.1`,
:math:`\beta_1 = 0.9`, :math:`\beta_2 = 0.99`, :math:`\tau = 10^{-9}`, :math:`\gamma = 0.04`.
See docs/METHODS.md ("Drift baselines") for the deviations from the two public implementations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from ._mechanism import AdaptiveOptimizer, _check, check_betas, finite_number, squared_norm

__all__ = ["Flash", "flash_early_stop"]


def flash_early_stop(previous_loss: float, loss: float, epoch: int, gamma: float) -> bool:
    r"""Flash's client-side early stopping: True when local training should stop after ``epoch``.

    With :math:`L_e` the local validation loss after local epoch :math:`e = 1, \dots, E`, stop
    when :math:`L_{e-1} - L_e < \gamma / e`: the loss no longer falls by the (shrinking)
    threshold. A client whose model has converged on its data stops after few epochs and sends
    a small update; after a drift the loss falls fast, it trains longer, and the large update is
    what the server's drift degree reacts to (Panchal et al., ICML 2023).

    Args:
        previous_loss: :math:`L_{e-1}`; ``math.inf`` when there is none (never stops then).
            :math:`L_0` may be the validation loss before the first local epoch, or the
            client's last loss of its previous round (as the FedCCFA implementation does).
        loss: :math:`L_e`, the validation loss after epoch ``epoch``. A NaN loss stops
            (the local model diverged: training further cannot help).
        epoch: :math:`e \ge 1`, the 1-based local epoch just finished.
        gamma: :math:`\gamma \ge 0` (``fedadapt.method_spec("flash").client_hints["early-stop-gamma"]``).

    A rise of the loss (:math:`L_{e-1} - L_e < 0`) stops as well. FedCCFA stops only on a
    positive decrease below the threshold (``0 < L_{e-1} - L_e < gamma / e``); this function
    follows the rule as stated in the paper.

    Example (the validation losses after each local epoch):

        >>> prev = math.inf
        >>> for e, val in enumerate([2.0, 1.5, 1.2, 1.195, 1.19], start=1):
        ...     if flash_early_stop(prev, val, e, gamma=0.04):
        ...         break
        ...     prev = val
        >>> e  # epoch 4 gained 0.005 < 0.04 / 4
        4
    """
    _check(
        isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1,
        f"epoch is the 1-based local epoch, an int >= 1, got {epoch!r}",
    )
    _check(
        finite_number(gamma) and gamma >= 0, f"gamma must be a finite number >= 0, got {gamma!r}"
    )
    prev, cur = float(previous_loss), float(loss)
    if math.isnan(cur):
        return True
    if math.isnan(prev) or prev == math.inf:
        return False
    return prev - cur < gamma / epoch


class Flash(AdaptiveOptimizer):
    """Flash's server step with a guarded denominator (see the module docstring).

    Args:
        lr: the server step size :math:`\\eta` (> 0).
        betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
        tau: :math:`\\tau` (> 0), added to the denominator.
        den_floor: :math:`\\rho` in (0, 1]: the drift degree lowers the denominator to at
            least :math:`\\rho\\sqrt{v}`; 1 turns the drift's step increase off (a negative
            :math:`d` still damps).
        adaptive_b3: False forces :math:`\\beta_3 = 1` (so :math:`d = 0`): FedAdam without bias
            correction.
        debias_drift: True (default) compares :math:`\\Delta^2` with the unbiased second
            moment :math:`v_t/(1-\\beta_2^t)` in the drift test; False with :math:`v_t`, as
            published (a drift signal in every warm-up round).

    ``param_groups[i]`` keeps ``step`` (steps since the start or the last :meth:`on_change`),
    ``skipped`` (non-finite rounds), ``changes`` and ``guarded`` (the last step's fraction of
    coordinates whose denominator the guard raised). Per-parameter state: ``exp_avg`` (m),
    ``exp_avg_sq`` (v), ``drift`` (d), tensors only.
    """

    # its default server lr (0.1, FL4Health's) and the clients' early-stop hint are declared in
    # its MethodSpec (fedadapt/__init__.py)

    _takes_direction = False  # its step is its own (no bias correction, the drift degree)
    _adapts_lr = False  # the lr is a constant; the drift degree scales the step per coordinate

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.99),
        tau: float = 1e-9,
        den_floor: float = 0.1,
        adaptive_b3: bool = True,
        debias_drift: bool = True,
    ) -> None:
        _check(finite_number(lr) and lr > 0, f"lr must be a finite number > 0, got {lr!r}")
        b1, b2 = check_betas(betas, 2)
        _check(
            finite_number(tau) and tau > 0,
            f"tau must be a finite number > 0 (it bounds the denominator where v = 0), got {tau!r}",
        )
        _check(
            finite_number(den_floor) and 0 < den_floor <= 1,
            f"den_floor must be a number in (0, 1] (the denominator's floor as a fraction of sqrt(v)), got {den_floor!r}",
        )
        _check(
            isinstance(adaptive_b3, bool), f"adaptive_b3 must be True or False, got {adaptive_b3!r}"
        )
        _check(
            isinstance(debias_drift, bool),
            f"debias_drift must be True or False, got {debias_drift!r}",
        )
        defaults = {
            "lr": float(lr),
            "betas": (b1, b2),
            "tau": float(tau),
            "den_floor": float(den_floor),
            "adaptive_b3": adaptive_b3,
            "debias_drift": debias_drift,
        }
        super().__init__(params, defaults)

    def _init_group(self, group: dict) -> None:
        group.setdefault("changes", 0)
        group.setdefault("guarded", 0.0)

    @staticmethod
    def _denominator(v: Tensor, d: Tensor, rho: float, tau: float) -> tuple[Tensor, Tensor]:
        """``max(sqrt(v) - d, rho sqrt(v)) + tau`` and the mask where the floor was used."""
        root = v.sqrt()
        raw = root - d
        floor = root * rho
        guarded = raw < floor
        return torch.maximum(raw, floor).add_(tau), guarded

    def _measure(self, group, params, grads, g, signals):
        return bool(torch.isfinite(squared_norm(grads))), None

    def _update(self, group, params, grads, g, stats):
        b1, b2 = group["betas"]
        rho, tau, lr = group["den_floor"], group["tau"], group["lr"]
        n_guarded = torch.zeros((), dtype=torch.float64, device=params[0].device)
        n_total = 0
        # the drift test's second moment: v as published, or Adam's unbiased v / (1 - b2^t)
        t = group["step"]
        if group.get("debias_drift", False):
            c_now, c_prev = 1.0 / (1.0 - b2**t), (1.0 / (1.0 - b2 ** (t - 1)) if t > 1 else 0.0)
        else:
            c_now = c_prev = 1.0
        for p, gp in zip(params, grads, strict=True):
            st = self.state[p]
            if "exp_avg" not in st:
                for key in ("exp_avg", "exp_avg_sq", "drift"):
                    st[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            m, v, d = st["exp_avg"], st["exp_avg_sq"], st["drift"]
            delta = gp.neg()
            delta_sq = delta * delta
            v_prev = v.clone()
            m.mul_(b1).add_(delta, alpha=1.0 - b1)
            v.mul_(b2).add_(delta_sq, alpha=1.0 - b2)
            if group["adaptive_b3"]:
                jump = delta_sq - v * c_now
                num = v_prev.abs() * c_prev
                den = jump.abs().add_(num)
                # 0/0 (v_{t-1} = 0 and Delta_t = 0): beta3 = 1, d is kept
                b3 = torch.where(
                    den > 0,
                    num / torch.where(den > 0, den, torch.ones_like(den)),
                    torch.ones_like(den),
                )
                d.mul_(b3).add_((1.0 - b3) * jump)
            denom, guarded = self._denominator(v, d, rho, tau)
            p.addcdiv_(m, denom, value=lr)
            n_guarded += guarded.sum()
            n_total += p.numel()
        group["guarded"] = float(n_guarded) / max(n_total, 1)

    def on_change(self) -> None:
        """A change was detected (or is known): m, v and d restart at 0, and so does ``step``
        (``skipped`` is kept: it counts rounds, not state; ``changes`` counts the resets)."""
        for group in self.param_groups:
            group["step"] = 0
            group["guarded"] = 0.0
            group["changes"] += 1
            for p in group["params"]:
                st = self.state.get(p)
                if not st:
                    continue
                for key in ("exp_avg", "exp_avg_sq", "drift"):
                    if key in st:
                        st[key].zero_()

    def step_size_stats(self) -> dict[str, float]:
        """The effective per-coordinate step ``lr / D`` over every coordinate with state
        (``lr / tau`` where v = 0: such a coordinate has m = 0 and does not move); ``lr``
        for all four before the first step."""
        lr0 = float(self.param_groups[0]["lr"])
        total, lo, hi, count = 0.0, math.inf, 0.0, 0
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if not st or "exp_avg_sq" not in st:
                    continue
                denom, _ = self._denominator(
                    st["exp_avg_sq"], st["drift"], group["den_floor"], group["tau"]
                )
                steps = group["lr"] / denom.to(torch.float64)
                total += float(steps.sum())
                lo = min(lo, float(steps.min()))
                hi = max(hi, float(steps.max()))
                count += steps.numel()
        if count == 0:
            return {"lr": lr0, "step-mean": lr0, "step-min": lr0, "step-max": lr0}
        return {"lr": lr0, "step-mean": total / count, "step-min": lo, "step-max": hi}


# Registration (the lead adds this line to fedadapt/__init__.py, with ``from .flash import Flash,
# flash_early_stop``):
#     register_optimizer("flash", Flash)
