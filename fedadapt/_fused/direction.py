"""The base optimizer's unit-lr direction (SGD, momentum, Nesterov, Adam), eager or compiled."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .ops import EACH, ONE, Scalar, _axpy_


# ---------------------------------------------------------------------------- base direction
def base_direction(
    kind: str,
    g: Sequence[Tensor],
    bufs: Sequence[Tensor],
    ms: Sequence[Tensor],
    vs: Sequence[Tensor],
    s: Sequence[Scalar],
    out: Sequence[Tensor] | None,
    fresh: Sequence[bool] | None = None,
    v_done: bool = False,
) -> list[Tensor]:
    """The base optimizer's unit-lr direction ``d_raw`` (scaled by a factor the caller knows).

    ``kind``: ``"sgd"`` (``d = g``, no copy), ``"momentum"`` (``d`` = the buffer),
    ``"nesterov"`` (``d = g + mu * buf``) or ``"adam"`` (``d = m / (sqrt(v) + eps c)``).
    ``s`` = ``(mu, 1 - dampening, mu)`` for momentum (``buf = s0 buf + s1 g``, Nesterov's
    ``d = g + s2 buf``; ``fresh[i]``: buffer ``i`` was just seeded with ``g_i`` and is left as
    is, which ``s0, s1 = 1, 0`` also does), ``(1 - beta1, beta2, 1 - beta2, eps c)`` for Adam.
    ``out``: buffers for ``d`` (Adam, Nesterov), or ``None`` to let the result be a temporary.
    ``v_done``: the caller already advanced ``vs`` this step (CProp sharing Adam's ``v``).
    """
    if kind == "sgd":
        return g  # type: ignore[return-value]  # the same list: callers test identity
    if not isinstance(s[0], Tensor):  # eager: foreach ops (one C++ call per op for all tensors)
        return _base_direction_foreach(kind, g, bufs, ms, vs, s, out, fresh, v_done)
    if kind in ("momentum", "nesterov"):
        mu, c, nu = s[0], s[1], s[2]
        for i, (b, gi) in enumerate(zip(bufs, g, strict=True)):
            if fresh is not None and fresh[i]:
                continue
            _axpy_(b.mul_(mu), gi, c)
        if kind == "nesterov":
            if out is not None:
                for o, gi, b in zip(out, g, bufs, strict=True):
                    if isinstance(nu, Tensor):
                        o.copy_(gi + b * nu)
                    else:
                        torch.add(gi, b, alpha=nu, out=o)
                return list(out)
            return [
                gi + b * nu if isinstance(nu, Tensor) else torch.add(gi, b, alpha=nu)
                for gi, b in zip(g, bufs, strict=True)
            ]
        return bufs  # type: ignore[return-value]
    w1, b2, w2, eps_c = s[0], s[1], s[2], s[3]
    return [
        _adam_direction(ONE, gi, m, v, None if out is None else out[i], w1, b2, w2, eps_c, v_done)
        for i, (m, v, gi) in enumerate(zip(ms, vs, g, strict=True))
    ]


def _base_direction_foreach(kind, g, bufs, ms, vs, s, out, fresh, v_done) -> list[Tensor]:
    """:func:`base_direction` with float scalars, as foreach ops (same arithmetic)."""
    if kind in ("momentum", "nesterov"):
        mu, c, nu = s[0], s[1], s[2]
        old = (
            list(bufs) if fresh is None else [b for b, f in zip(bufs, fresh, strict=True) if not f]
        )
        og = list(g) if fresh is None else [x for x, f in zip(g, fresh, strict=True) if not f]
        if old:
            torch._foreach_mul_(old, mu)
            torch._foreach_add_(old, og, alpha=c)
        if kind == "nesterov":
            if out is not None:
                for o, gi, b in zip(out, g, bufs, strict=True):
                    torch.add(gi, b, alpha=nu, out=o)
                return list(out)
            return list(torch._foreach_add(list(g), list(bufs), alpha=nu))
        return bufs  # type: ignore[return-value]
    w1, b2, w2, eps_c = s[0], s[1], s[2], s[3]
    d = list(out) if out is not None else [torch.empty_like(m) for m in ms]
    return _adam_direction(EACH, list(g), list(ms), list(vs), d, w1, b2, w2, eps_c, v_done)


def _adam_direction(o, g, m, v, d, w1, b2, w2, eps_c, v_done):
    """Adam's ``d = m / (sqrt(v) + eps c)`` after ``m = lerp(m, g, w1)``, ``v = b2 v + w2 g^2``.

    Over lists (``o`` = :data:`EACH`, ``d`` given) or one tensor (``ONE``, ``d`` may be ``None``).
    """
    o.lerp_(m, g, w1)
    if not v_done:
        o.mul_(v, b2)
        o.addcmul_(v, g, g, w2)
    d = o.sqrt_into(d, v)
    o.add_(d, eps_c)
    return o.div_into(d, m, d)


def direction_result(
    kind: str, g: list[Tensor], bufs: list[Tensor], out: list[Tensor] | None
) -> list[Tensor]:
    """The tensors :func:`base_direction` wrote ``d`` into (given ``out`` for Adam and Nesterov)."""
    if kind == "sgd":
        return g
    if kind == "momentum":
        return bufs
    assert out is not None
    return out


def n_direction(kind: str) -> int:
    """How many scalars :func:`base_direction` takes for ``kind``."""
    return {"sgd": 0, "momentum": 3, "nesterov": 3, "adam": 4}[kind]


def seeded(ds: list[float]) -> list[float]:
    """Momentum scalars for a step at which every buffer was just seeded (left as is)."""
    return [1.0, 0.0, *ds[2:]]
