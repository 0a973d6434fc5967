r"""``adaptive-fedavg``: Adaptive-FedAvg, FedAvg whose parameter variance schedules the clients' lr.

Canonaco, Bergamasco, Mongardi, Roveri, "Adaptive Federated Learning in Presence of Concept
Drift", IJCNN 2021 (doi:10.1109/IJCNN52387.2021.9533710).

The server step is FedAvg: SGD at lr 1 on the pseudo-gradient, :math:`w_t = x_{t-1} - \hat g_t
= \bar x` (bit for bit what ``torch.optim.SGD(lr=1)`` does with the same gradient). After each
step :math:`t = 1, 2, \dots` the server updates, with :math:`w_0` the model before the first
step:

.. math::

    \mu_t &= \beta_1 \mu_{t-1} + (1-\beta_1)\, w_t, \quad \mu_{-1} = 0, \quad
        \hat\mu_t = \mu_t / (1-\beta_1^{t+1}) \qquad \text{(EMA of the models } w_0..w_t) \\
    \sigma^2_t &= \beta_2 \sigma^2_{t-1} + (1-\beta_2)\,\mathrm{mean}\big((w_t - \hat\mu_{t-1})^2\big),
        \quad \hat\sigma^2_t = \sigma^2_t / (1-\beta_2^{t}) \\
    r_t &= \hat\sigma^2_t / \hat\sigma^2_{t-1} \ (r_1 = 1), \qquad
    R_t = \beta_3 R_{t-1} + (1-\beta_3)\, r_t, \quad \hat R_t = R_t / (1-\beta_3^{t}) \\
    s_t &= \min\!\big(1,\ \hat R_t / t\big) \qquad (\texttt{decay=False}: \min(1, \hat R_t))

(the mean runs over every coordinate of the model: :math:`\sigma^2` is a scalar) and the
clients of the next round train at ``lr_0 * s_t`` (:attr:`AdaptiveFedAvg.client_lr_scale`,
:meth:`AdaptiveFedAvg.client_hints`): :math:`\mathrm{lr}_t = \min(\mathrm{lr}_0,
\mathrm{lr}_0 \hat R_t / t)`. A jump of the parameter variance (the federation moves after a
drift) raises :math:`r`, so :math:`\hat R` and the clients' lr; on stationary data
:math:`r \approx 1` and the lr decays as :math:`1/t`.

The :math:`1/t` decay is how the FedCCFA implementation (``wenwenwenwenti/FedCCFA``) reads
the paper, and it is disputed: it drives the clients' lr to :math:`\mathrm{lr}_0/t` on stable
data, so after a late drift the ratio must be about :math:`t` to restore :math:`\mathrm{lr}_0`.
``decay=False`` drops it (:math:`s_t = \min(1, \hat R_t)`).

Departures from FedCCFA, each to avoid an artefact or a 0/0:

- the EMA of the models is seeded with :math:`w_0`, the model before the first step (FedCCFA
  seeds it with 0, so its first "variance" is the mean square of the parameters themselves and
  :math:`r_2` is tiny whatever the data);
- :math:`r_t` guarded: :math:`\hat\sigma^2_{t-1} = 0` (a round in which nothing moved) gives
  :math:`r_t = 1` when :math:`\hat\sigma^2_t = 0` too and ``max_ratio`` otherwise, and every
  :math:`r_t` is clipped to ``max_ratio`` (so one huge ratio cannot hold :math:`\hat R` above
  :math:`t` for hundreds of rounds).

Defaults :math:`(\beta_1, \beta_2, \beta_3) = (0.7, 0.3, 0.7)` as FedCCFA's configuration.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch.optim import Optimizer

from ._mechanism import (
    _check,
    check_betas,
    finite_number,
    params_with_grads,
    run_closure,
    squared_norm,
)

__all__ = ["AdaptiveFedAvg"]


class AdaptiveFedAvg(Optimizer):
    """FedAvg plus the client-lr schedule of Adaptive-FedAvg (see the module docstring).

    Args:
        betas: :math:`(\\beta_1, \\beta_2, \\beta_3)`, each in [0, 1): the EMAs of the
            models, of their variance and of the variance ratio.
        decay: keep the :math:`1/t` factor of the schedule (FedCCFA's reading of the paper).
        max_ratio: upper clip of the variance ratio :math:`r_t` (> 1).

    The server lr is 1 (FedAvg) and not a hyperparameter. The statistics are global over every
    parameter with a gradient, kept in ``param_groups[0]`` (``step``, ``avg_var``,
    ``prev_var_hat``, ``avg_ratio``, ``lr-scale``) and, per parameter, ``state[p]["param_avg"]``
    (:math:`\\hat\\mu`, bias-corrected): ``state_dict``, ``load_state_dict`` and pickling carry them.
    """

    # FedAvg: a server that has the float64 weighted mean may write it instead of x - g
    exact_mean: ClassVar[bool] = True

    def __init__(
        self,
        params: Iterable,
        betas: tuple[float, float, float] = (0.7, 0.3, 0.7),
        decay: bool = True,
        max_ratio: float = 1e4,
    ) -> None:
        checked = check_betas(betas, 3, " (models, variance, ratio)")
        _check(isinstance(decay, bool), f"decay must be True or False, got {decay!r}")
        _check(
            finite_number(max_ratio) and max_ratio > 1,
            f"max_ratio must be a finite number > 1, got {max_ratio!r}",
        )
        defaults = {"lr": 1.0, "betas": checked, "decay": decay, "max_ratio": float(max_ratio)}
        super().__init__(params, defaults)
        for g in self.param_groups:
            g.setdefault("step", 0)
            g.setdefault("skipped", 0)
            g.setdefault("changes", 0)
        self._reset_stats()

    def _reset_stats(self) -> None:
        g0 = self.param_groups[0]
        g0["step"] = 0
        g0["avg_var"] = 0.0
        g0["prev_var_hat"] = 0.0
        g0["avg_ratio"] = 0.0
        g0["lr-scale"] = 1.0

    @property
    def client_lr_scale(self) -> float:
        """:math:`s_t`: the clients of the next round train at ``lr_0 * client_lr_scale``."""
        return float(self.param_groups[0]["lr-scale"])

    def client_hints(self) -> dict[str, float]:
        """What the clients of the next round should use: ``{"lr-scale": s_t}``."""
        return {"lr-scale": self.client_lr_scale}

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = run_closure(closure)
        params, grads = [], []
        for group in self.param_groups:
            ps, gs = params_with_grads(group, "adaptive-fedavg")
            params += ps
            grads += gs
        if not params:
            return loss
        sq = squared_norm(grads)
        g0 = self.param_groups[0]
        if not bool(torch.isfinite(sq)):
            for group in self.param_groups:
                if any(p.grad is not None for p in group["params"]):
                    group["skipped"] += 1
            return loss
        b1, b2, b3 = g0["betas"]
        t = g0["step"] + 1
        for p in params:  # seed the model EMA with w_0, the model before the first step
            st = self.state[p]
            if "param_avg" not in st:
                st["param_avg"] = p.detach().clone()
        torch._foreach_add_(params, grads, alpha=-1.0)  # FedAvg: exactly SGD at lr 1
        sq_dev = torch.zeros((), dtype=torch.float64, device=params[0].device)
        count = 0
        # the bias-corrected EMA in its incremental form, mu_hat_t = mu_hat_{t-1} + k (w_t -
        # mu_hat_{t-1}) with k = (1 - b1) / (1 - b1^(t+1)): a model that did not move leaves a
        # deviation of exactly 0 (dividing a biased EMA by 1 - b1^t would leave rounding noise)
        k = (1.0 - b1) / (1.0 - b1 ** (t + 1))
        for p in params:
            avg = self.state[p]["param_avg"]
            dev = p - avg
            sq_dev += dev.to(torch.float64).square().sum()
            count += p.numel()
            avg.add_(dev, alpha=k)
        var_sample = float(sq_dev) / max(count, 1)
        avg_var = b2 * g0["avg_var"] + (1.0 - b2) * var_sample
        var_hat = avg_var / (1.0 - b2**t)
        prev = g0["prev_var_hat"]
        cap = g0["max_ratio"]
        if t == 1:
            ratio = 1.0
        elif prev > 0:
            ratio = min(var_hat / prev, cap)
        else:
            ratio = 1.0 if var_hat == 0 else cap
        avg_ratio = b3 * g0["avg_ratio"] + (1.0 - b3) * ratio
        ratio_hat = avg_ratio / (1.0 - b3**t)
        scale = ratio_hat / t if g0["decay"] else ratio_hat
        for group in self.param_groups:
            group["step"] = t
        g0["avg_var"] = avg_var
        g0["prev_var_hat"] = var_hat
        g0["avg_ratio"] = avg_ratio
        g0["lr-scale"] = min(1.0, scale)
        return loss

    def on_change(self) -> None:
        """A change was detected (or is known): the statistics restart (the model EMA is
        re-seeded with the model before the next step; the clients' lr scale returns to 1)."""
        for group in self.param_groups:
            group["changes"] += 1
            group["step"] = 0
            for p in group["params"]:
                self.state.pop(p, None)
        self._reset_stats()

    def step_size_stats(self) -> dict[str, float]:
        """The server's step size, 1 (FedAvg); the clients' scale is :attr:`client_lr_scale`."""
        return {"lr": 1.0, "step-mean": 1.0, "step-min": 1.0, "step-max": 1.0}


# Registration (the lead adds this line to fedadapt/__init__.py, with
# ``from .adaptive_fedavg import AdaptiveFedAvg``):
#     register_optimizer("adaptive-fedavg", AdaptiveFedAvg)
