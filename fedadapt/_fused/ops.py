"""Op helpers shared by the rules: the float or the tensor form of an op (same arithmetic),
scalar operands for eager CPU ops, float32 rounding on the host, and the step application."""

from __future__ import annotations

import math
import struct

import torch
from torch import Tensor

Scalar = float | Tensor


# ---------------------------------------------------------------------------- op helpers
def _axpy_(x: Tensor, a: Tensor, s: Scalar) -> Tensor:
    """``x += s * a``."""
    if isinstance(s, Tensor):
        return x.add_(a * s)
    return x.add_(a, alpha=s)


def _addcmul_(x: Tensor, a: Tensor, b: Tensor, s: Scalar) -> Tensor:
    """``x += s * a * b``."""
    if isinstance(s, Tensor):
        return x.add_(a * b * s)
    return x.addcmul_(a, b, value=s)


def _mul(a: Tensor, b: Scalar | Tensor, out: Tensor | None) -> Tensor:
    """``a * b``, into ``out`` when given."""
    return a * b if out is None else torch.mul(a, b, out=out)


def _addcmul(x: Tensor, a: Tensor, b: Tensor, s: Scalar, out: Tensor | None) -> Tensor:
    """``x + s * a * b``, into ``out`` when given."""
    if out is None:
        return x + a * b * s
    if isinstance(s, Tensor):
        return torch.add(x, a * b * s, out=out)
    return torch.addcmul(x, a, b, value=s, out=out)


def _lerp(x: Tensor, y: Tensor, w: Scalar, out: Tensor | None) -> Tensor:
    return torch.lerp(x, y, w) if out is None else torch.lerp(x, y, w, out=out)


_OPERANDS: dict[tuple[float, torch.dtype], Tensor] = {}


def operand(value: float, like: Tensor, *, cached: bool = True) -> float | Tensor:
    """``value`` as the scalar operand of an eager multiply on CPU: a 0-dim tensor of ``like``'s
    dtype (float32 or float64), else the Python float itself.

    Same result bit for bit: torch converts a Python number to the op's float type, exactly as
    the tensor holds it. Cheaper: torch wraps every Python number in a new tensor and converts
    it (about a microsecond per tensor per op, the size of the op itself on a small model).
    ``cached`` for group constants (betas, ``c``; the cache is cleared past 64 values); a value
    that changes every step (a bias correction) gets a new tensor.
    """
    if not value or like.device.type != "cpu" or like.dtype not in (torch.float32, torch.float64):
        return value  # zeros stay Python floats: the cache would not tell 0.0 from -0.0
    if like.dtype == torch.float32 and not abs(value) <= _F32_MAX:
        return value  # beyond float32 (torch.full would refuse it) or NaN: as given
    if not cached:
        return torch.full((), value, dtype=like.dtype)
    key = (value, like.dtype)
    t = _OPERANDS.get(key)
    if t is None:
        if len(_OPERANDS) >= 64:
            _OPERANDS.clear()
        t = _OPERANDS[key] = torch.tensor(value, dtype=like.dtype)
    return t


def _is_compiled(sc) -> bool:
    return isinstance(sc, Tensor)


def _round_f32(x: float) -> float:
    """``x`` rounded to the nearest float32 (ties to even), as a Python float."""
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:  # beyond the float32 range: torch rounds to an infinity
        return math.copysign(math.inf, x)


_F32 = struct.Struct("<f")
_F32_MAX = 3.4028234663852886e38


def _apply_scaled_all(
    params: list[Tensor], d: list[Tensor], gamma: list[Tensor], neg_lrf: Scalar
) -> None:
    """``params += neg_lrf * gamma * d`` (eager: one foreach call for a float step size)."""
    if isinstance(neg_lrf, Tensor):
        for p, di, x in zip(params, d, gamma, strict=True):
            _addcmul_(p, di, x, neg_lrf)
    else:
        torch._foreach_addcmul_(params, list(d), gamma, value=neg_lrf)


def _apply_scaled(p: Tensor, d: Tensor, gamma: Tensor, neg_lrf: Scalar) -> None:
    """``p += neg_lrf * gamma * d``."""
    _addcmul_(p, d, gamma, neg_lrf)


# ---------------------------------------------------------------------------- lanes
def _each_mul_into(out: list[Tensor], a: list[Tensor], b) -> list[Tensor]:
    """``a * b`` into ``out`` (``b`` a list or a scalar), as two foreach calls."""
    torch._foreach_copy_(out, a)
    torch._foreach_mul_(out, b)
    return out


def _each_sqrt_into(out: list[Tensor], x: list[Tensor]) -> list[Tensor]:
    for xi, o in zip(x, out, strict=True):
        torch.sqrt(xi, out=o)
    return out


def _each_div_into(out: list[Tensor], a: list[Tensor], b: list[Tensor]) -> list[Tensor]:
    for ai, bi, o in zip(a, b, out, strict=True):
        torch.div(ai, bi, out=o)
    return out


class _Each:
    """A rule's ops over lists of tensors, one foreach call per op (eager, float scalars).

    With :data:`ONE` a rule's per-element math is written once as a function of the lanes
    ``o`` and runs either over a whole list (``EACH``: a few C++ calls for all tensors) or
    per tensor (``ONE``: what ``torch.compile`` fuses into one loop per tensor). The ops are
    torch's own functions where they can be (no Python frame added on the eager path).
    """

    mul_into = staticmethod(_each_mul_into)
    sqrt_into = staticmethod(_each_sqrt_into)  # (out, x): no foreach form with out=
    div_into = staticmethod(_each_div_into)  # (out, a, b): out = a / b
    mul_ = staticmethod(torch._foreach_mul_)
    add_ = staticmethod(torch._foreach_add_)
    sign_ = staticmethod(torch._foreach_sign_)
    addcmul_ = staticmethod(torch._foreach_addcmul_)  # (x, a, b, s): x += s * a * b
    clamp_min_ = staticmethod(torch._foreach_clamp_min_)
    clamp_max_ = staticmethod(torch._foreach_clamp_max_)
    lerp_ = staticmethod(torch._foreach_lerp_)


class _One:
    """The same ops on one tensor (compiled: tensor scalars, no work buffers)."""

    mul_into = staticmethod(lambda out, a, b: _mul(a, b, out))
    sqrt_into = staticmethod(lambda out, x: x.sqrt() if out is None else torch.sqrt(x, out=out))
    div_into = staticmethod(lambda out, a, b: a / b if out is None else torch.div(a, b, out=out))
    mul_ = staticmethod(Tensor.mul_)
    add_ = staticmethod(Tensor.add_)
    sign_ = staticmethod(Tensor.sign_)
    clamp_min_ = staticmethod(Tensor.clamp_min_)
    clamp_max_ = staticmethod(Tensor.clamp_max_)
    lerp_ = staticmethod(Tensor.lerp_)

    @staticmethod
    def addcmul_(x: Tensor, a: Tensor, b: Tensor, s: Scalar = 1.0) -> Tensor:
        if not isinstance(s, Tensor) and s == 1.0:
            return x.addcmul_(a, b)
        return _addcmul_(x, a, b, s)


EACH = _Each()
ONE = _One()
