"""The per-coordinate rules (EG, CProp, DSA's two phases, paired inner products) over one
param group's tensor lists; ``sc`` holds floats (eager) or a 1-D tensor (compiled)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .direction import base_direction, n_direction
from .ops import (
    _F32_MAX,
    EACH,
    ONE,
    Scalar,
    _addcmul,
    _addcmul_,
    _apply_scaled,
    _apply_scaled_all,
    _is_compiled,
    _mul,
    _round_f32,
    operand,
)


# ---------------------------------------------------------------------------- EG
def _eg_gains(o, g, avg, gain, sign, f, sinh, cosh_m1, lo, hi):
    """``gain = clamp(gain (1 + f), lo, hi)``, ``f = s sinh + s s (cosh - 1)``, ``s = sign(g avg)``.

    Over lists (``o`` = :data:`EACH`, ``sign`` and ``f`` work buffers) or one tensor (``ONE``,
    ``None`` buffers). ``f`` is ``exp(eta s) - 1`` for ``s`` in {-1, 0, 1}: both products are
    exact, so the one rounding is the sum's.
    """
    s = o.mul_into(sign, g, avg)
    o.sign_(s)
    f = o.mul_into(f, s, sinh)
    o.addcmul_(f, s, s, cosh_m1)
    o.addcmul_(gain, gain, f)
    o.clamp_min_(gain, lo)
    o.clamp_max_(gain, hi)


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
            _eg_gains(EACH, g, avgs, gains, sign, f, operand(sinh, g[0]), cosh_m1, lo, hi)
        if not shared:
            EACH.lerp_(avgs, g, w)
        d = base_direction(
            kind, g, bufs, ms, vs, [sc[6 + k] for k in range(n_direction(kind))], out, fresh
        )
        _apply_scaled_all(params, d, gains, neg_lrf)
        return
    if adapt:
        for gi, ai, gain in zip(g, avgs, gains, strict=True):
            _eg_gains(ONE, gi, ai, gain, None, None, sinh, cosh_m1, lo, hi)
    if not shared:  # shared: gbar is Adam's m, which the direction advances
        for ai, gi in zip(avgs, g, strict=True):
            ONE.lerp_(ai, gi, w)
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
