"""The per-coordinate rules, written once, run eagerly or compiled (``fused=True``).

Each rule is a plain function over one param group's tensor lists that updates the state
tensors and the parameters in place. Its scalar hyperparameters arrive in ``sc``:

* eagerly (``fused=False``, the default) ``sc`` is a list of Python floats, work buffers are
  given (``out=`` ops, no allocation per step) and the ops run one tensor at a time;
* compiled (``fused=True``) the same function runs under
  ``torch.compile(fullgraph=True, dynamic=False)`` with ``sc`` a 1-D tensor (so a new ``lr``
  or bias correction never causes a recompile) and without work buffers, so the compiler
  fuses each tensor's whole update into one loop that reads and writes every state tensor once.

The small helpers below (``_axpy_``, ``_addcmul_``, ...) pick the float or the tensor form of
an op; the arithmetic is the same. The compiled functions are cached here, per
``(rule, device type, dtype)``, never on the optimizer, so ``state_dict()``, pickling (Ray) and
LR schedulers see the same optimizer as with ``fused=False``. Where compiling fails (no C++
compiler for the CPU backend, a compiler error) the rule warns once and runs eagerly.

Two traps of ``torch.compile`` (torch 2.13) shape the code: a Python float argument is baked
into the graph (recompile per value), so scalars travel as tensor elements; and an in-place
write into a 0-dim float64 CPU tensor inside a compiled graph is dropped silently, so 0-dim
state (DSA's per-tensor factor) is passed as a shape-(1,) view.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Scalar = float | Tensor

__all__ = [
    "base_direction",
    "run_rule",
    "eg_rule",
    "cprop_rule",
    "dsa_stats_rule",
    "dsa_update_rule",
]


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
    d = []
    for i, (m, v, gi) in enumerate(zip(ms, vs, g, strict=True)):
        m.lerp_(gi, w1)
        if not v_done:
            _addcmul_(v.mul_(b2), gi, gi, w2)
        if out is None:
            d.append(m / (v.sqrt() + eps_c))
        else:
            o = out[i]
            torch.sqrt(v, out=o)
            o.add_(eps_c)
            d.append(torch.div(m, o, out=o))
    return d


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
    ms, vs = list(ms), list(vs)
    torch._foreach_lerp_(ms, list(g), w1)
    if not v_done:
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, list(g), list(g), w2)
    d = list(out) if out is not None else [torch.empty_like(m) for m in ms]
    for v, o in zip(vs, d, strict=True):
        torch.sqrt(v, out=o)
    torch._foreach_add_(d, eps_c)
    for m, o in zip(ms, d, strict=True):
        torch.div(m, o, out=o)
    return d


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


# ---------------------------------------------------------------------------- EG
def eg_rule(
    kind: str,
    adapt: bool,
    shared: bool,
    params: list[Tensor],
    g: list[Tensor],
    gains: list[Tensor],
    avgs: list[Tensor],
    bufs: list[Tensor],
    ms: list[Tensor],
    vs: list[Tensor],
    out: list[Tensor] | None,
    fresh: list[bool] | None,
    *,
    work: tuple[list[Tensor], list[Tensor]] | None,
    sc,
) -> None:
    """EG step after the host has set ``lr``; see :class:`fedadapt.ExponentiatedGradientStepSize`.

    ``sc`` = ``(sinh eta, cosh eta - 1, min_gain, max_gain, 1 - beta, -lr * factor, *direction)``.
    ``p_i *= exp(eta s_i) = 1 + s_i (sinh + s_i (cosh - 1))`` for ``s_i = sign(g_i gbar_i)`` in
    {-1, 0, 1}; with ``gbar = 0`` (first step) or ``eta = 0`` it is the identity, so the compiled
    form always runs it (one graph for every step) and the eager form skips it (``adapt``).
    """
    sinh, cosh_m1, lo, hi, w, neg_lrf = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5]
    if not _is_compiled(sc):  # eager: the same arithmetic as foreach ops
        if adapt:
            sign = work[0] if work is not None else [torch.empty_like(x) for x in g]
            f = work[1] if work is not None else [torch.empty_like(x) for x in g]
            torch._foreach_copy_(sign, g)
            torch._foreach_mul_(sign, avgs)
            torch._foreach_sign_(sign)
            # f = s (sinh + s (cosh - 1)) written as s sinh + s s (cosh - 1): for s in {-1, 0, 1}
            # both products are exact, so the one rounding left is the same sum (three foreach
            # calls instead of two ops per tensor)
            torch._foreach_copy_(f, sign)
            torch._foreach_mul_(f, operand(sinh, g[0]))
            torch._foreach_addcmul_(f, sign, sign, value=cosh_m1)
            torch._foreach_addcmul_(gains, gains, f)
            torch._foreach_clamp_min_(gains, lo)
            torch._foreach_clamp_max_(gains, hi)
        if not shared:
            torch._foreach_lerp_(avgs, g, w)
        d = base_direction(
            kind, g, bufs, ms, vs, [sc[6 + k] for k in range(n_direction(kind))], out, fresh
        )
        _apply_scaled_all(params, d, gains, neg_lrf)
        return
    if adapt:
        for i, (gi, ai, gain) in enumerate(zip(g, avgs, gains, strict=True)):
            si = _mul(gi, ai, None if work is None else work[0][i]).sign_()
            fi = _mul(si, cosh_m1, None if work is None else work[1][i]).add_(sinh).mul_(si)
            gain.addcmul_(gain, fi).clamp_(lo, hi)
    if not shared:  # shared: gbar is Adam's m, which the direction advances
        for ai, gi in zip(avgs, g, strict=True):
            ai.lerp_(gi, w)
    d = base_direction(
        kind, g, bufs, ms, vs, [sc[6 + k] for k in range(n_direction(kind))], out, fresh
    )
    for p, di, gain in zip(params, d, gains, strict=True):
        _apply_scaled(p, di, gain, neg_lrf)


# ---------------------------------------------------------------------------- CProp
def _conformity_of_var_foreach(
    zs: list[Tensor],
    means: list[Tensor],
    eps_sq_k: float,
    pre: float,
    c: float,
    cdf: str,
    work: list[Tensor],
) -> list[Tensor]:
    """:func:`conformity_of_var` over lists with float scalars, as foreach ops (same arithmetic)."""
    z0 = zs[0]
    torch._foreach_clamp_min_(zs, eps_sq_k)
    torch._foreach_rsqrt_(zs)
    torch._foreach_mul_(zs, list(means))
    torch._foreach_abs_(zs)
    if cdf == "normal":
        torch._foreach_mul_(zs, operand(pre / math.sqrt(2.0), z0, cached=False))
        torch._foreach_clamp_max_(zs, 6.0)
        torch._foreach_erf_(zs)
        if c != 1.0:
            torch._foreach_mul_(zs, operand(c, z0))
    else:
        # u = a + b z^2 with the 0-dim a broadcast: what fill_(a) then addcmul_ computed
        a = operand(1.5976 * pre, z0, cached=False)
        if isinstance(a, Tensor):
            for z, u in zip(zs, work, strict=True):
                torch.addcmul(a, z, z, value=0.07056 * pre**3, out=u)
        else:
            for z, u in zip(zs, work, strict=True):
                u.fill_(a)
                u.addcmul_(z, z, value=0.07056 * pre**3)
        torch._foreach_mul_(zs, work)
        torch._foreach_clamp_max_(zs, 40.0)
        torch._foreach_sigmoid_(zs)
        torch._foreach_mul_(zs, operand(2.0 * c, z0))
        k = operand(c, z0)
        if isinstance(k, Tensor):
            torch._foreach_sub_(zs, [k] * len(zs))  # a list: the lone-tensor overload is slower
        else:
            torch._foreach_sub_(zs, k)
    if c > 1.0:
        torch._foreach_clamp_max_(zs, 1.0)
    return zs


def conformity_of_var(
    z: Tensor, mean: Tensor, eps_sq_k: Scalar, pre: Scalar, c: Scalar, cdf: str, work: Tensor | None
) -> Tensor:
    """In place on ``z`` (a variance): ``min(1, 2c |Phi(pre |mean| / sqrt(max(z, eps_sq_k))) - 1/2|)``.

    Tensor scalars (compiled) or floats (eager, ``work`` a scratch buffer or ``None``).
    """
    compiled = isinstance(pre, Tensor)
    z = z.clamp_min_(eps_sq_k).rsqrt_().mul_(mean).abs_()
    if cdf == "normal":
        # 2 |Phi(z) - 1/2| = erf(|z| / sqrt 2); erf(6) == 1 in float32 and float64, larger
        # arguments only produce denormal intermediates (very slow on CPU)
        z = z.mul_(pre / math.sqrt(2.0)).clamp_max_(6.0).erf_()
        if compiled or c != 1.0:
            z = z.mul_(c)
    else:
        # Bowling et al. logistic fit: 2 |Phi(z) - 1/2| = 2 sigmoid(u) - 1, u = 0.07056 z^3
        # + 1.5976 z; with z = pre * y: u = y (0.07056 pre^3 y^2 + 1.5976 pre)
        if compiled:
            u = z * (1.5976 * pre + 0.07056 * pre**3 * z * z)
        else:
            u = (torch.empty_like(z) if work is None else work).fill_(1.5976 * pre)
            u.addcmul_(z, z, value=0.07056 * float(pre) ** 3)
            u = z.mul_(u)
        # sigmoid(40) == 1 in float32 and float64 (to 4e-18); beyond: denormal exp(-u)
        z = u.clamp_max_(40.0).sigmoid_().mul_(2.0 * c).sub_(c)
    if compiled or c > 1.0:
        z = z.clamp_max_(1.0)
    return z


def cprop_rule(
    kind: str,
    cdf: str,
    server: bool,
    shared_v: bool,
    params: list[Tensor],
    grads: list[Tensor],
    g: list[Tensor],
    mavg: list[Tensor],
    vavg: list[Tensor],
    scale: list[Tensor],
    sq: list[Tensor] | None,
    bufs: list[Tensor],
    ms: list[Tensor],
    vs: list[Tensor],
    out: list[Tensor] | None,
    fresh: list[bool] | None,
    *,
    work: list[Tensor] | None,
    sc,
) -> None:
    """CProp step; see :class:`fedadapt.CProp`.

    ``sc`` = ``(1 - beta, beta, first, var_coef, eps_sq_k, pre, c, -lr * factor, *direction)``:
    ``first`` (1 at the first step without server statistics: the scale is ``min(1, c)``),
    ``var_coef`` (``-1/b`` with the moments, ``-1`` with the server's), ``eps_sq_k`` (the
    variance floor ``eps^2/k``) and ``pre`` (the factor turning ``|mean|/sqrt(var)`` into ``z``).
    """
    w, beta, first, var_coef, eps_sq_k, pre, c, neg_lrf = (sc[k] for k in range(8))
    if not _is_compiled(sc):  # eager: the same arithmetic as foreach ops
        torch._foreach_lerp_(mavg, grads, w)
        torch._foreach_mul_(vavg, operand(beta, vavg[0]))
        torch._foreach_addcmul_(vavg, grads, grads, w)
        if first:
            for x in scale:
                x.fill_(min(1.0, c))
        else:
            mean = grads if server else mavg
            var = sq if server else vavg
            assert var is not None
            for x, q, mi in zip(scale, var, mean, strict=True):
                torch.addcmul(q, mi, mi, value=var_coef, out=x)
            _conformity_of_var_foreach(
                scale,
                mean,
                eps_sq_k,
                pre,
                c,
                cdf,
                work if work is not None else [torch.empty_like(x) for x in scale],
            )
        d = base_direction(
            kind,
            g,
            bufs,
            ms,
            vs,
            [sc[8 + k] for k in range(n_direction(kind))],
            out,
            fresh,
            v_done=shared_v,
        )
        _apply_scaled_all(params, d, scale, neg_lrf)
        return
    # compiled (tensor scalars, no work buffers): one loop per tensor, one graph for every step
    for m, v, gr in zip(mavg, vavg, grads, strict=True):
        m.lerp_(gr, w)
        _addcmul_(v.mul_(beta), gr, gr, w)
    mean = grads if server else mavg
    var = sq if server else vavg
    assert var is not None
    for x, q, mi in zip(scale, var, mean, strict=True):
        # |mean| / sqrt(max(var, eps^2/k)), var = q - m^2 / b (moments) or q - g^2 (server);
        # at the first step without server statistics the scale is min(1, c)
        z = conformity_of_var(_addcmul(q, mi, mi, var_coef, None), mi, eps_sq_k, pre, c, cdf, None)
        x.copy_(torch.where(first > 0, torch.clamp(c, max=1.0), z))
    d = base_direction(
        kind,
        g,
        bufs,
        ms,
        vs,
        [sc[8 + k] for k in range(n_direction(kind))],
        out,
        fresh,
        v_done=shared_v,
    )
    for p, di, x in zip(params, d, scale, strict=True):
        _apply_scaled(p, di, x, neg_lrf)


# ---------------------------------------------------------------------------- DSA
def dsa_stats_rule(
    g: list[Tensor],
    prev: list[Tensor],
    avg: list[Tensor],
    new_avg: list[Tensor],
    *,
    work: list[Tensor] | None,
    sc,
) -> Tensor | list[float]:
    """DSA phase 1: ``new_avg = lerp(avg, dfac * g * prev, 1 - rho)``; returns ``[sum x^2..., sum x...]``.

    ``sc`` = ``(dfac, 1 - rho)``. ``avg`` is not modified (a skipped step leaves state as is).
    A float64 tensor, or (eager on CPU) a list of Python floats with the same values.
    """
    dfac, w = sc[0], sc[1]
    sqs: list = []
    sums: list = []
    if not _is_compiled(sc) and g and g[0].device.type == "cpu":
        # eager on CPU: the same values read one by one (float32 and float64 are exact as
        # Python floats), without the casts and the stack
        hs = work if work is not None else [torch.empty_like(x) for x in g]
        for gi, di, h in zip(g, prev, hs, strict=True):
            torch.mul(gi, di, out=h)
        if dfac != 1.0:
            torch._foreach_mul_(hs, operand(dfac, hs[0], cached=False))
        for a, h, n in zip(avg, hs, new_avg, strict=True):
            torch.lerp(a, h, w, out=n)
            x = n if n.dim() == 1 else n.reshape(-1)
            sqs.append(x.dot(x).item())
            sums.append(n.sum().item())
        return sqs + sums
    for i, (gi, di, a, n) in enumerate(zip(g, prev, avg, new_avg, strict=True)):
        h = _mul(gi, di, None if work is None else work[i])
        if _is_compiled(sc) or dfac != 1.0:
            h = h.mul_(dfac)
        if _is_compiled(sc):
            n.copy_(torch.lerp(a, h, w))
            sqs.append((n * n).sum())
        else:
            torch.lerp(a, h, w, out=n)
            sqs.append(torch.dot(n.reshape(-1), n.reshape(-1)))
        sums.append(n.sum())
    return torch.stack([x.to(torch.float64) for x in sqs + sums])


def _round_f32(x: float) -> float:
    """``x`` rounded to the nearest float32 (ties to even), as a Python float."""
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:  # beyond the float32 range: torch rounds to an infinity
        return math.copysign(math.inf, x)


_F32 = struct.Struct("<f")
_F32_MAX = 3.4028234663852886e38


def _scale_factors(
    tscales: list[Tensor], mults: Sequence[float], lo: float, hi: float
) -> list[float]:
    """``ts.mul_(m).clamp_(lo, hi)`` for each 0-dim factor; returns the new values as floats.

    On CPU in float32/float64 the product and the clamp are done on the host with the same
    rounding (a product of two float32 numbers is exact in a double, so rounding it once to
    float32 is torch's float32 multiply; the bounds are rounded as torch rounds them) and
    written back with one ``fill_``: the factors are read anyway for the update, and two
    tensor ops per tensor on 0-dim tensors cost more than the update itself on a small model.
    Elsewhere, the tensor ops (one read each).
    """
    out = []
    # a finite bound beyond float32's range makes torch's clamp raise: leave that to torch
    host32 = all(math.isinf(b) or abs(b) <= _F32_MAX for b in (lo, hi))
    for ts, m in zip(tscales, mults, strict=True):
        if (
            ts.device.type != "cpu"
            or ts.dtype not in (torch.float32, torch.float64)
            or (ts.dtype == torch.float32 and not host32)
        ):
            if m != 1.0:
                ts.mul_(m)
            out.append(float(ts.clamp_(lo, hi)))
            continue
        x = ts.item()
        if ts.dtype == torch.float32:
            x, lo_, hi_ = _round_f32(x * _round_f32(m)), _round_f32(lo), _round_f32(hi)
        else:
            x, lo_, hi_ = x * m, lo, hi
        if x == x:  # torch's clamp keeps a NaN
            x = min(max(x, lo_), hi_)
        ts.fill_(x)
        out.append(x)
    return out


def dsa_update_rule(
    kind: str,
    adapt_param: bool,
    params: list[Tensor],
    g: list[Tensor],
    hbar: list[Tensor],
    pscales: list[Tensor],
    tscales: list[Tensor],
    bufs: list[Tensor],
    ms: list[Tensor],
    vs: list[Tensor],
    out: list[Tensor] | None,
    fresh: list[bool] | None,
    *,
    work: list[Tensor] | None,
    sc,
) -> None:
    """DSA phase 2: per-coordinate and per-tensor factors, then the step.

    ``sc`` = ``(bp, lo, hi, -lr * factor, coef_0.., tmult_0.., *direction)`` with ``n`` tensors:
    ``coef_i = bp / rms_i`` and ``tmult_i`` the per-tensor factor's multiplier (1 when it does
    not adapt). ``tscales`` are shape-(1,) views of the 0-dim per-tensor factors.
    """
    n = len(params)
    bp, lo, hi, neg_lrf = sc[0], sc[1], sc[2], sc[3]
    if not _is_compiled(sc) and not isinstance(neg_lrf, Tensor) and work is not None:
        # eager, float scalars: the same arithmetic, foreach ops where the scalar is shared
        if adapt_param:
            for i, (x, h) in enumerate(zip(hbar, work, strict=True)):
                torch.mul(x, sc[4 + i], out=h)
            torch._foreach_clamp_min_(work, -bp)
            torch._foreach_clamp_max_(work, bp)
            torch._foreach_addcmul_(pscales, pscales, work)
            torch._foreach_clamp_min_(pscales, lo)
            torch._foreach_clamp_max_(pscales, hi)
        values = _scale_factors(tscales, sc[4 + n : 4 + 2 * n], lo, hi)
        d = base_direction(
            kind, g, bufs, ms, vs, [sc[4 + 2 * n + k] for k in range(n_direction(kind))], out, fresh
        )
        torch._foreach_addcmul_(params, list(d), pscales, [neg_lrf * v for v in values])
        return
    if adapt_param:
        for i, (x, ps) in enumerate(zip(hbar, pscales, strict=True)):
            # a_param *= 1 + bp * clip(hbar / rms, -1, 1)
            h = _mul(x, sc[4 + i], None if work is None else work[i]).clamp_(-bp, bp)
            ps.addcmul_(ps, h).clamp_(lo, hi)
    for i, ts in enumerate(tscales):
        ts.mul_(sc[4 + n + i]).clamp_(lo, hi)
    d = base_direction(
        kind, g, bufs, ms, vs, [sc[4 + 2 * n + k] for k in range(n_direction(kind))], out, fresh
    )
    for p, di, ps, ts in zip(params, d, pscales, tscales, strict=True):
        if _is_compiled(sc) or isinstance(
            neg_lrf, Tensor
        ):  # compiled, or a device lr (no host read)
            p.add_(di * ps * (ts * neg_lrf))
        else:
            p.addcmul_(di, ps, value=neg_lrf * float(ts))


# ---------------------------------------------------------------------------- inner products
def dot_pairs_rule(a: list[Tensor], b: list[Tensor], c: list[Tensor], *, work: None, sc) -> Tensor:
    """Per-tensor ``<a_i, b_i>`` then ``<a_i, c_i>``, stacked in float64 (one pass over ``a``)."""
    if _is_compiled(sc) or not a:
        ab = [(x * y).sum() for x, y in zip(a, b, strict=True)]
        ac = [(x * z).sum() for x, z in zip(a, c, strict=True)]
    else:
        ab = [torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(a, b, strict=True)]
        ac = [torch.dot(x.reshape(-1), z.reshape(-1)) for x, z in zip(a, c, strict=True)]
    return (
        torch.stack([x.to(torch.float64) for x in ab + ac])
        if a
        else torch.zeros(0, dtype=torch.float64)
    )


# ---------------------------------------------------------------------------- dispatch
_COMPILED: dict[tuple[str, str, torch.dtype], Callable] = {}
_FAILED: dict[tuple[str, str, torch.dtype], str] = {}
RULES: dict[str, Callable] = {
    "dot-pairs": dot_pairs_rule,
    "eg": eg_rule,
    "cprop": cprop_rule,
    "dsa-stats": dsa_stats_rule,
    "dsa-update": dsa_update_rule,
}


def _scalar_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def pack(sc: Sequence[Scalar], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Scalars as one 1-D tensor (Python floats and 0-dim device tensors, e.g. a CUDA ``lr``)."""
    dt = _scalar_dtype(dtype)
    t = torch.tensor(
        [0.0 if isinstance(x, Tensor) else float(x) for x in sc], dtype=dt, device=device
    )
    for i, x in enumerate(sc):
        if isinstance(x, Tensor):
            t[i] = x
    return t


def compile_failed(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why ``name`` could not be compiled for ``(device, dtype)`` in this process, or ``None``."""
    return _FAILED.get((name, device.type, dtype))


def run_rule(
    name: str,
    fused: bool,
    device: torch.device,
    dtype: torch.dtype,
    *args,
    work,
    sc: Sequence[Scalar],
):
    """Run rule ``name``: compiled with packed scalars when ``fused``, else eagerly with floats.

    ``args`` are the rule's positional arguments; ``work`` (scratch buffers) is only used
    eagerly: compiled, intermediates stay in registers.
    """
    fn = RULES[name]
    if fused:
        key = (name, device.type, dtype)
        if key not in _FAILED:
            compiled = _COMPILED.get(key)
            try:
                if compiled is None:
                    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
                    with warnings.catch_warnings():
                        # torch's own deprecation notices while compiling are not the user's
                        # concern (and under -W error would turn into a compile failure)
                        warnings.simplefilter("ignore", DeprecationWarning)
                        out = compiled(*args, work=None, sc=pack(sc, dtype, device))
                    _COMPILED[key] = compiled
                    return out
                return compiled(*args, work=None, sc=pack(sc, dtype, device))
            except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to the eager rule
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                _FAILED[key] = f"{type(exc).__name__}: {first}"
                warnings.warn(
                    f"fedadapt: fused=True could not compile the {name!r} rule for {device.type}/{dtype} "
                    f"({_FAILED[key]}); using the foreach path",
                    RuntimeWarning,
                    stacklevel=4,
                )
    return fn(*args, work=work, sc=sc)
