"""AutoDrop: drop the step size when the angular velocity of the parameters saturates."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Unpack

import torch

from ._mechanism import AdaptiveOptimizer, _check, global_dot
from .directions import Direction, DirectionArgs, direction_arguments

__all__ = ["AutoDrop"]


@direction_arguments
class AutoDrop(AdaptiveOptimizer):
    r"""AutoDrop: event-triggered step-size drops from angular-velocity saturation.

    At a fixed step size the angle between consecutive parameter displacements first changes
    quickly and then saturates; saturation means progress at this step size has stalled, so the
    step size is dropped. Every ``window`` steps (a client) or rounds (the server, where one
    step is one round) the parameters are snapshotted:

    .. math::

        s_e = x_{e} - x_{e-1}, \qquad
        \omega_e = \tfrac{180}{\pi}\arccos\frac{\langle s_e, s_{e-1}\rangle}{\|s_e\|\|s_{e-1}\| + \epsilon}

        |\omega_e - \omega_{e-1}| < \vartheta \;\Rightarrow\; \text{after } P \text{ more windows:}\;
        \alpha \leftarrow \max(\rho\alpha, \alpha_{\min}),\; \vartheta \leftarrow \min(\vartheta/\rho, \vartheta_{\max})

    with :math:`\rho` = ``drop_factor``, :math:`\vartheta` = ``threshold`` (degrees),
    :math:`\vartheta_{\max}` = ``max_threshold``, :math:`P` = ``patience``. Between drops the
    base optimizer runs unchanged with step size ``param_groups[i]["lr"]``.

    Args:
        params: parameters or param groups.
        lr: initial step size (default 0.01).
        window: steps (rounds on the server) between snapshots (default 50).
        drop_factor: :math:`\rho` in (0, 1] (default 0.2; 1 never drops).
        threshold: saturation threshold in degrees (default 0.5).
        max_threshold: cap of the threshold, which grows by ``1/drop_factor`` per drop (default
            ``max(2.0, threshold)``).
        patience: windows to wait between detecting saturation and dropping (default 1).
        base, momentum, dampening, nesterov, betas, eps, weight_decay: the base direction.
        min_lr, max_lr: bounds (default ``1e-3 * lr`` and ``lr``).

    Group scalars: ``"omega"`` (last angle, degrees; NaN before two displacements),
    ``"threshold"``, ``"saturated"``, ``"wait"``, ``"drops"``, ``"window_step"``.

    Example:

        >>> opt = fedadapt.build_optimizer("autodrop", model.parameters(), lr=0.1, window=100)
        >>> loss().backward(); opt.step(); opt.zero_grad()
        >>> opt.param_groups[0]["drops"], opt.param_groups[0]["window_step"]
        (0, 1)

    References:
        Teng, Wang, Choromanska, "AutoDrop: Training Deep Learning Models with Automatic
        Learning Rate Drop", arXiv:2111.15317.

    After a drop the angle history restarts (two fresh windows are measured before the next
    saturation test), since the angular velocity "resets" after a drop.

    Deviations: the reference code snapshots after the first minibatch of each epoch, waits
    20 epochs after saturation, and can replace the parameters by a weighted tail average
    (``--var_rd``); here a window is a fixed number of steps, the wait is ``patience`` windows
    (small default, for short runs and few FL rounds), and no parameter averaging is done.
    On CUDA the angle test reads one number from the device once per window.
    """

    _min_lr_factor = 1e-3
    _max_lr_factor = 1.0

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.01,
        window: int = 50,
        drop_factor: float = 0.2,
        threshold: float = 0.5,
        max_threshold: float | None = None,
        patience: int = 1,
        *,
        direction: Direction | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        **base: Unpack[DirectionArgs],
    ) -> None:
        _check(
            isinstance(window, int) and window >= 1, f"window must be an int >= 1, got {window!r}"
        )
        _check(0.0 < drop_factor <= 1.0, f"drop_factor must be in (0, 1], got {drop_factor}")
        _check(threshold >= 0.0, f"threshold must be >= 0, got {threshold}")
        if max_threshold is None:
            max_threshold = max(2.0, threshold)
        _check(
            max_threshold >= threshold,
            f"max_threshold must be >= threshold, got {max_threshold} < {threshold}",
        )
        _check(
            isinstance(patience, int) and patience >= 0,
            f"patience must be an int >= 0, got {patience!r}",
        )
        defaults = dict(
            lr=lr,
            window=window,
            drop_factor=drop_factor,
            threshold=threshold,
            max_threshold=max_threshold,
            patience=patience,
            min_lr=min_lr,
            max_lr=max_lr,
        )
        super().__init__(params, defaults, direction, **base)

    def _init_group(self, group: dict) -> None:
        group.setdefault("omega", math.nan)
        group.setdefault("saturated", False)
        group.setdefault("wait", 0)
        group.setdefault("drops", 0)
        group.setdefault("window_step", 0)

    def _update(self, group, params, grads, g, stats):
        for p in params:
            st = self.state[p]
            if "snapshot" not in st:
                st["snapshot"] = p.detach().clone()
        d, factor = self.direction.compute(self, group, params, g)
        self._apply(params, d, group["lr"], factor)
        group["window_step"] += 1
        if group["window_step"] >= group["window"]:
            group["window_step"] = 0
            self._window_end(group, params)

    def _window_end(self, group: dict, params: list) -> None:
        snaps = [self.state[p]["snapshot"] for p in params]
        disp = torch._foreach_sub(params, snaps)
        prev = [self.state[p].get("prev_displacement") for p in params]
        dropped = False
        if all(x is not None for x in prev):
            num = float(global_dot(disp, prev))
            den = math.sqrt(float(global_dot(disp, disp)) * float(global_dot(prev, prev)))
            cos = max(-1.0, min(1.0, num / (den + 1e-12)))
            omega = math.degrees(math.acos(cos))
            last = group["omega"]
            if math.isfinite(omega):
                if (
                    not group["saturated"]
                    and math.isfinite(last)
                    and abs(omega - last) < group["threshold"]
                ):
                    group["saturated"] = True
                    group["wait"] = 0
                elif group["saturated"]:
                    group["wait"] += 1
                if group["saturated"] and group["wait"] >= group["patience"]:
                    rho = group["drop_factor"]
                    if rho < 1.0:
                        self._set_lr(group, group["lr"] * rho)
                        group["threshold"] = min(group["threshold"] / rho, group["max_threshold"])
                        group["drops"] += 1
                    group["saturated"] = False
                    group["wait"] = 0
                    dropped = True
                group["omega"] = omega
        if dropped:
            # the angular velocity restarts after a drop: measure two fresh windows first
            group["omega"] = math.nan
        for p, s in zip(params, disp, strict=True):
            if dropped:
                self.state[p].pop("prev_displacement", None)
            else:
                self.state[p]["prev_displacement"] = s
            self.state[p]["snapshot"].copy_(p)
