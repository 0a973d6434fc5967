"""The one mechanism every fedadapt method shares (docs/METHODS.md §1, "The shared mechanism").

A step is ``theta <- theta - eta_t * (Gamma_t * d_t)``:

* ``d_t``: the base direction at unit lr, an object (:mod:`fedadapt.directions`:
  ``SGDDirection``, ``AdamDirection``, or ``TorchDirection`` wrapping any torch optimizer for
  the scalar rules); parity with ``torch.optim.SGD`` / ``Adam`` is tested in
  ``tests/fedadapt/test_optim_directions.py``;
* ``eta_t``: the scalar step size, always ``param_groups[i]["lr"]`` (a Python float on CPU,
  a 0-dim device tensor elsewhere), clipped to ``[min_lr, max_lr]``;
* ``Gamma_t``: an optional per-coordinate scale kept in ``self.state[p]``.

Method classes subclass :class:`AdaptiveOptimizer`, whose ``_group_step`` is the one step
skeleton (weight decay, the non-finite skip, the step counter), and fill in its hooks:
``_measure`` (the rule's statistics and whether they are finite), ``_adapt`` (the step size)
and ``_update`` (direction, per-coordinate scale, the parameter update). Every per-parameter
buffer lives in ``self.state[p]`` and every per-group scalar in the param group, so
``state_dict()``, pickling and LR schedulers work without custom code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from .directions import BASES, Direction, _check, adam_moments, make_direction

__all__ = ["AdaptiveOptimizer", "global_dot", "BASES", "adam_moments"]


def global_dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> float | Tensor:
    """Sum over tensors of per-tensor dot products.

    Each dot product is taken in the tensors' own dtype (torch reductions accumulate
    blockwise); the sum across tensors is in float64. Returns a Python float on CPU and a
    0-dim float64 device tensor elsewhere (no host synchronisation).
    """
    parts = [_flat(x).dot(_flat(y)) for x, y in zip(xs, ys, strict=True)]
    if not parts:
        return 0.0
    if parts[0].device.type == "cpu":
        return math.fsum([p.item() for p in parts])
    return torch.stack([p.to(torch.float64) for p in parts]).sum()


def _flat(x: Tensor) -> Tensor:
    """``x.reshape(-1)``, skipped for a 1-D tensor (a view costs about a microsecond)."""
    return x if x.dim() == 1 else x.reshape(-1)


def global_dots(*pairs: tuple[Sequence[Tensor], Sequence[Tensor]]) -> list[float | Tensor]:
    """Several :func:`global_dot` values with one host read on CPU (same values, bit for bit)."""
    first = next((xs[0] for xs, _ in pairs if len(xs)), None)
    if first is None:
        return [0.0 for _ in pairs]
    if first.device.type == "cpu":
        return [math.fsum(vs) for vs in dot_values(*pairs)]
    parts = [
        [torch.dot(_flat(x), _flat(y)) for x, y in zip(xs, ys, strict=True)] for xs, ys in pairs
    ]
    return [torch.stack([p.to(torch.float64) for p in ps]).sum() if ps else 0.0 for ps in parts]


def dot_values(*pairs: tuple[Sequence[Tensor], Sequence[Tensor]]) -> list[list[float]]:
    """The per-tensor dot products of each pair of lists, as Python floats (CPU; one read each).

    For callers that sum them (``math.fsum``, as :func:`global_dot` does) only where and when
    the unfused code did, e.g. after a finiteness test.
    """
    # a list in several pairs (g) is flattened once; x.dot(y) is torch.dot (the method binds
    # a little faster than the function)
    flat: dict[int, list[Tensor]] = {}
    out = []
    for xs, ys in pairs:
        fx = flat.get(id(xs))
        if fx is None:
            fx = flat[id(xs)] = [x if x.dim() == 1 else x.reshape(-1) for x in xs]
        fy = flat.get(id(ys))
        if fy is None:
            fy = flat[id(ys)] = [y if y.dim() == 1 else y.reshape(-1) for y in ys]
        out.append([x.dot(y).item() for x, y in zip(fx, fy, strict=True)])
    return out


def run_closure(closure) -> object:  # noqa: ANN001
    """torch's optimizer convention: re-evaluate the loss with gradients enabled."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def params_with_grads(group: dict, name: str) -> tuple[list[Tensor], list[Tensor]]:
    """The group's parameters that have a gradient, and those gradients (dense only)."""
    params, grads = [], []
    for p in group["params"]:
        g = p.grad  # read once: each read of .grad is a call into torch
        if g is not None:
            if g.is_sparse:
                raise ValueError(f"{name} does not support sparse gradients")
            params.append(p)
            grads.append(g)
    return params, grads


def squared_norm(grads: Sequence[Tensor]) -> Tensor:
    """Sum of the tensors' squared norms, in float64 (one 0-dim tensor; non-finite if any is)."""
    return (
        torch.stack([n.to(torch.float64) for n in torch._foreach_norm(list(grads))]).square().sum()
    )


def grads_finite(grads: Sequence[Tensor]) -> bool:
    """Whether :func:`squared_norm` of ``grads`` is finite (one host read).

    On CPU the per-tensor norms are read and squared and summed as Python floats: the same
    decision as ``isfinite(squared_norm(grads))`` (a non-finite norm stays non-finite; squares of
    float32 norms cannot overflow a double) at a fifth of the cost on small models, where the
    stack, cast, square, sum and ``isfinite`` calls are ten microseconds per step.
    """
    grads = list(grads)
    if not grads:
        return True
    if grads[0].device.type != "cpu":
        return bool(torch.isfinite(squared_norm(grads)))
    total = 0.0
    for n in torch._foreach_norm(grads):
        x = n.item()
        total += x * x
    return math.isfinite(total)


def _is_finite(x: float | Tensor) -> bool:
    if isinstance(x, Tensor):
        # one host synchronisation: see the note on CUDA in AdaptiveOptimizer's docstring
        return bool(torch.isfinite(x).all())
    return math.isfinite(x)


def _clip(x: float | Tensor, lo: float, hi: float) -> float | Tensor:
    if isinstance(x, Tensor):
        return x.clamp(lo, hi)
    return min(max(x, lo), hi)


def finite_number(x: object) -> bool:
    """A real number (not a bool) that is finite."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def check_betas(betas: object, count: int, what: str = "") -> tuple[float, ...]:
    """``betas`` as ``count`` floats, each a number in [0, 1); ``ValueError`` naming the value."""
    ok = (
        isinstance(betas, tuple | list)
        and len(betas) == count
        and all(finite_number(b) and 0.0 <= float(b) < 1.0 for b in betas)
    )
    words = {2: "two", 3: "three"}.get(count, str(count))
    _check(ok, f"betas must be {words} numbers in [0, 1){what}, got {betas!r}")
    assert isinstance(betas, tuple | list)
    return tuple(float(b) for b in betas)


def _check_fused(fused: object) -> None:
    _check(isinstance(fused, bool), f"fused must be True or False, got {fused!r}")


class AdaptiveOptimizer(Optimizer):
    """Base class: scalar scale ``lr``, per-coordinate scale ``Gamma``, base direction ``d``.

    Args shared by every method (all validated, ``ValueError`` naming the value):
        lr: initial step size (> 0). The adapted value is ``param_groups[i]["lr"]``.
        direction: the base direction, a :class:`fedadapt.Direction`
            (:class:`~fedadapt.SGDDirection`, :class:`~fedadapt.AdamDirection`, or
            :class:`~fedadapt.TorchDirection` wrapping any torch optimizer for the scalar
            rules); ``None`` builds it from the base arguments below.
        base: ``"sgd"`` (default, no momentum) or ``"adam"``.
        momentum, dampening, nesterov: SGD base, same meaning as ``torch.optim.SGD``.
        betas, eps: Adam base, same meaning as ``torch.optim.Adam``.
        weight_decay: coupled L2 added to the gradient (both bases), as in torch.
        min_lr, max_lr: explicit bounds of the adapted ``lr``; ``None`` picks the method's
            default (a multiple of ``lr``, see each class).

    Group scalars kept in ``param_groups[i]``: ``"step"`` (steps taken), ``"skipped"`` (steps
    skipped because the gradient or a statistic was non-finite; such a step leaves parameters,
    ``lr`` and all state untouched), ``"lr0"`` (the initial ``lr``).

    Note on CUDA: ``lr`` is a 0-dim device tensor and the adaptation runs without host
    synchronisation, except the non-finite guard, which reads one boolean per step.
    """

    required_signals: ClassVar[tuple[str, ...]] = ()
    optional_signals: ClassVar[tuple[str, ...]] = ()
    per_coordinate: ClassVar[bool] = False
    # default bounds as multiples of lr0 (None = unbounded on that side)
    _min_lr_factor: ClassVar[float | None] = 0.0
    _max_lr_factor: ClassVar[float | None] = None
    # the rule takes a base direction (False: its own, e.g. FedHyper-GM's momentum, cp-adam)
    _takes_direction: ClassVar[bool] = True
    # the rule adapts a scalar lr: every group keeps lr0, min_lr and max_lr (False: Flash)
    _adapts_lr: ClassVar[bool] = True
    # the lr lives on the parameters' device as a 0-dim tensor (False: a Python float, cp-adam)
    _lr_on_device: ClassVar[bool] = True

    direction: Direction

    def __init__(
        self, params: Iterable, defaults: dict, direction: Direction | None = None, **base: object
    ) -> None:
        if self._takes_direction:
            self.direction, base_defaults = make_direction(direction, base)
            if not self.direction.builtin and self.per_coordinate:
                raise ValueError(
                    f"{type(self).__name__} needs a built-in direction (SGDDirection or AdamDirection): "
                    f"its per-coordinate rule computes the direction inside its own update; got {self.direction!r}. "
                    "TorchDirection serves the scalar rules (hd, hd-mult, autodrop, fedexp, fedhyper-g, fedhyper-cl)"
                )
            defaults.update(base_defaults)
        lr = defaults["lr"]
        _check(
            isinstance(lr, int | float) and lr > 0 and math.isfinite(lr),
            f"lr must be a finite number > 0, got {lr!r}",
        )
        lo, hi = defaults.get("min_lr"), defaults.get("max_lr")
        _check(lo is None or lo >= 0.0, f"min_lr must be >= 0, got {lo}")
        _check(hi is None or hi > 0.0, f"max_lr must be > 0, got {hi}")
        _check(lo is None or hi is None or lo <= hi, f"min_lr must be <= max_lr, got {lo} > {hi}")
        super().__init__(params, defaults)

    def __getstate__(self) -> dict:
        # torch pickles defaults, state and param_groups only; the direction object rides along
        state = super().__getstate__()
        if "direction" in self.__dict__:
            state["direction"] = self.direction
        return state

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        if not self._adapts_lr:
            g.setdefault("step", 0)
            g.setdefault("skipped", 0)
            self._init_group(g)
            return
        lr0 = float(g["lr"])
        g.setdefault("lr0", lr0)
        if g.get("min_lr") is None:
            g["min_lr"] = 0.0 if self._min_lr_factor is None else self._min_lr_factor * lr0
        if g.get("max_lr") is None:
            g["max_lr"] = math.inf if self._max_lr_factor is None else self._max_lr_factor * lr0
        g["min_lr"], g["max_lr"] = float(g["min_lr"]), float(g["max_lr"])
        _check(
            g["min_lr"] <= lr0 <= g["max_lr"],
            f"lr {lr0} must lie in [min_lr, max_lr] = [{g['min_lr']}, {g['max_lr']}]",
        )
        g.setdefault("step", 0)
        g.setdefault("skipped", 0)
        device = g["params"][0].device if g["params"] else torch.device("cpu")
        if self._lr_on_device and device.type != "cpu" and not isinstance(g["lr"], Tensor):
            dtype = torch.float32 if device.type == "mps" else torch.float64
            g["lr"] = torch.tensor(lr0, dtype=dtype, device=device)
        self._init_group(g)

    def _init_group(self, group: dict) -> None:
        """Hook: method-specific group scalars."""

    # ------------------------------------------------------------------ step
    def _check_signals(self, signals: dict) -> None:
        required = self.required_signals
        missing = [s for s in required if s not in signals or signals[s] is None]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs the per-round signals {list(required)} as keyword "
                f"arguments of step(); missing {missing}. Use fedadapt.ServerOptimizer, which "
                "computes them from the client models."
            )
        accepted = set(required) | set(self.optional_signals)
        unknown = sorted(set(signals) - accepted)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.step() got unknown signals {unknown}; accepted: {sorted(accepted)}"
            )

    @torch.no_grad()
    def step(self, closure=None, **signals):  # type: ignore[override]
        if signals or self.required_signals:
            self._check_signals(signals)
        loss = None if closure is None else run_closure(closure)
        for group in self.param_groups:
            params, grads = params_with_grads(group, type(self).__name__)
            if params:
                self._group_step(group, params, grads, signals)
        return loss

    def _group_step(
        self, group: dict, params: list[Tensor], grads: list[Tensor], signals: dict
    ) -> None:
        """One param group's step, the skeleton every method fills in through its hooks.

        1. weight decay: ``g = grad + weight_decay * p`` (coupled L2, as torch's SGD and Adam);
        2. :meth:`_measure`: the rule's statistics of this step (inner products, norms, the
           signals), and whether they are all finite;
        3. a step whose statistics (or, when the rule reads none, whose gradients) are not
           finite is skipped: ``group["skipped"] += 1``, parameters and all state untouched;
        4. ``group["step"] += 1``, then :meth:`_adapt`: the rule's step-size adaptation;
        5. :meth:`_update`: the base direction (:attr:`direction`), the per-coordinate scale
           and the update of the parameters (default: ``p -= lr * d``).
        """
        wd = group.get("weight_decay", 0.0)
        g = list(torch._foreach_add(grads, params, alpha=wd)) if wd else grads
        finite, stats = self._measure(group, params, grads, g, signals)
        if not finite:
            group["skipped"] += 1
            return
        group["step"] += 1
        if self._adapts:
            self._adapt(group, params, g, stats)
        self._update(group, params, grads, g, stats)

    def _measure(
        self, group: dict, params: list[Tensor], grads: list[Tensor], g: list[Tensor], signals: dict
    ) -> tuple[bool | None, object]:
        """Hook: the rule's statistics of this step, before anything changes.

        Returns ``(finite, stats)``: ``finite`` says whether every statistic read is finite
        (a rule that reads none tests the gradients: :func:`grads_finite`, the default);
        ``stats`` is passed to :meth:`_adapt` and :meth:`_update`. Must not change any state but
        state created on first use.
        """
        return grads_finite(g), None

    def _adapt(self, group: dict, params: list[Tensor], g: list[Tensor], stats: object) -> None:
        """Hook: adapt the step size (``self._set_lr``) from ``stats``; ``group["step"]`` counts this step."""

    # whether the class overrides _adapt (set per class: the skeleton skips a no-op call)
    _adapts: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._adapts = cls._adapt is not AdaptiveOptimizer._adapt

    def _update(
        self, group: dict, params: list[Tensor], grads: list[Tensor], g: list[Tensor], stats: object
    ) -> object:
        """Hook: direction, per-coordinate scale, parameter update (default ``p -= lr * d``)."""
        d, factor = self.direction.compute(self, group, params, g)
        self._apply(params, d, group["lr"], factor)
        return None

    # ------------------------------------------------------------------ helpers
    def _set_lr(self, group: dict, value: float | Tensor) -> None:
        value = _clip(value, group["min_lr"], group["max_lr"])
        if isinstance(group["lr"], Tensor):
            if isinstance(value, Tensor):
                group["lr"].copy_(value)
            else:
                group["lr"].fill_(value)
        else:
            group["lr"] = float(value)

    def _scratch(self, params: list[Tensor], slot: object) -> list[Tensor]:
        """Per-parameter work buffers reused across steps (transient: not state, not pickled).

        Fresh multi-megabyte allocations cost page faults on every step on CPU; reusing a
        buffer avoids them.
        """
        cache: dict[object, dict[Tensor, Tensor]] | None = self.__dict__.get("_scratch_buffers")
        if cache is None:
            cache = self.__dict__["_scratch_buffers"] = {}
        bufs = cache.get(slot)
        if bufs is None:
            bufs = cache[slot] = {}
        out = []
        for p in params:
            b = bufs.get(p)
            if b is None or b.dtype != p.dtype or b.shape != p.shape:
                b = torch.empty_like(p, memory_format=torch.contiguous_format)
                bufs[p] = b
            out.append(b)
        return out

    @staticmethod
    def _apply(params: list[Tensor], d: list[Tensor], lr: float | Tensor, factor: float) -> None:
        """``params -= lr * factor * d``."""
        if isinstance(lr, Tensor):
            torch._foreach_add_(params, torch._foreach_mul(d, lr * (-factor)))
        else:
            torch._foreach_add_(params, d, alpha=-lr * factor)

    # ------------------------------------------------------------------ stats
    def _coordinate_scales(self, group: dict) -> list[Tensor]:
        """Per-coordinate multipliers of ``lr`` (empty for scalar methods)."""
        return []

    def step_size_stats(self) -> dict[str, float]:
        """``{"lr", "step-mean", "step-min", "step-max"}``; may synchronise (call once per round)."""
        lr = float(self.param_groups[0]["lr"])
        if not self.per_coordinate:
            return {"lr": lr, "step-mean": lr, "step-min": lr, "step-max": lr}
        total, count, lo, hi = 0.0, 0, math.inf, -math.inf
        for group in self.param_groups:
            glr = float(group["lr"])
            for s in self._coordinate_scales(group):
                total += glr * float(s.sum(dtype=torch.float64))
                count += s.numel()
                lo = min(lo, glr * float(s.min()))
                hi = max(hi, glr * float(s.max()))
        if count == 0:
            return {"lr": lr, "step-mean": lr, "step-min": lr, "step-max": lr}
        return {"lr": lr, "step-mean": total / count, "step-min": lo, "step-max": hi}
