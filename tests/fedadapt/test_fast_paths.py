"""The CPU shortcuts of the eager steps give the values of the plain torch ops, bit for bit.

Each shortcut (issue 19, BENCHMARKS.md §5) replaces a few tensor ops by host arithmetic or by
cheaper torch calls; these tests feed both forms the same inputs, edge cases included.
"""

from __future__ import annotations

import math

import pytest
import torch

from fedadapt._fused import _scale_factors, operand
from fedadapt._mechanism import dot_values, global_dot, global_dots, grads_finite, squared_norm

DTYPES = [torch.float32, torch.float64]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_factors_updated_on_the_host_match_mul_and_clamp(dtype):
    gen = torch.Generator().manual_seed(0)
    lo, hi = 0.1, 10.0
    starts = [1.0, 0.1, 10.0, 0.3333333333, 9.999999, 1.0 + 2**-23, float("nan")]
    mults = [1.0, 1.0000001, 0.9999999, math.exp(0.01), math.exp(-0.01), 1e300, 1e-300, 3.0, 0.0]
    starts += torch.rand(20, generator=gen, dtype=torch.float64).mul(12).tolist()
    mults += torch.rand(20, generator=gen, dtype=torch.float64).mul(2).tolist()
    for x0 in starts:
        for m in mults:
            fast = [torch.tensor(x0, dtype=dtype)]
            ref = torch.tensor(x0, dtype=dtype)
            values = _scale_factors(fast, [m], lo, hi)
            if m != 1.0:
                ref.mul_(m)
            ref.clamp_(lo, hi)
            assert same_bits(fast[0], ref), (x0, m, float(fast[0]), float(ref))
            assert (math.isnan(values[0]) and math.isnan(float(ref))) or values[0] == float(ref)


def test_tensor_factor_bounds_rounded_as_torch_rounds_them():
    # bounds that are not float32 numbers, an infinite one, and a finite one beyond the float32
    # range (torch's clamp refuses it: so must the shortcut)
    for lo, hi in [(1 / 3, 3.3), (0.1, math.inf), (0.1, 1e39)]:
        for x0, m in [(0.3, 1.0), (0.34, 0.98), (3.2, 1.05), (1.0, 1e45)]:
            fast = [torch.tensor(x0, dtype=torch.float32)]
            ref = torch.tensor(x0, dtype=torch.float32)
            try:
                ref.mul_(m).clamp_(lo, hi)
            except RuntimeError:
                with pytest.raises(RuntimeError):
                    _scale_factors(fast, [m], lo, hi)
                continue
            _scale_factors(fast, [m], lo, hi)
            assert same_bits(fast[0], ref), (lo, hi, x0, m)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_guard_decides_as_the_squared_norm_does(dtype):
    big = 1e30 if dtype == torch.float32 else 1e150  # squares overflow the dtype, not the sum's
    cases = [
        [torch.randn(3, 4, dtype=dtype), torch.randn(4, dtype=dtype)],
        [torch.full((2, 2), big, dtype=dtype), torch.ones(3, dtype=dtype)],
        [torch.tensor([1.0, math.inf], dtype=dtype), torch.ones(2, dtype=dtype)],
        [torch.tensor([1.0, -math.inf], dtype=dtype)],
        [torch.tensor([math.nan, 1.0], dtype=dtype), torch.ones(2, dtype=dtype)],
        [torch.zeros(0, dtype=dtype), torch.zeros(5, dtype=dtype)],
    ]
    for grads in cases:
        assert grads_finite(grads) == bool(torch.isfinite(squared_norm(grads)))
    assert grads_finite([])


@pytest.mark.parametrize("dtype", DTYPES)
def test_inner_products_read_as_floats_sum_to_the_global_dot(dtype):
    gen = torch.Generator().manual_seed(1)
    xs = [
        torch.randn(5, 7, generator=gen, dtype=dtype),
        torch.randn(7, generator=gen, dtype=dtype),
        torch.randn((), generator=gen, dtype=dtype),
    ]
    ys = [torch.randn_like(x) for x in xs]
    vals = dot_values((xs, xs), (xs, ys))
    assert math.fsum(vals[0]) == global_dot(xs, xs)
    assert math.fsum(vals[1]) == global_dot(xs, ys)
    assert global_dots((xs, xs), (xs, ys)) == [global_dot(xs, xs), global_dot(xs, ys)]
    assert global_dots(([], [])) == [0.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_cached_operand_multiplies_as_a_python_number_does(dtype):
    x = torch.randn(257, dtype=dtype, generator=torch.Generator().manual_seed(2))
    for v in [
        0.999,
        0.1,
        1.5976 * 3.7,
        -0.3,
        2.0,
        1e-40,
        1e39,
        -1e300,
        math.inf,
        math.nan,
        -0.0,
        0.0,
    ]:
        k = operand(v, x)
        assert same_bits(x * k, x * v), v
        assert same_bits(x * operand(v, x, cached=False), x * v), v
        assert same_bits(x - operand(v, x), x - v), v


def test_gain_factor_written_as_two_exact_products_is_the_same_sum():
    # eg: f = s (sinh + s (cosh - 1)) and s sinh + s s (cosh - 1), s in {-1, 0, 1}
    for eta in [0.02, 0.5, 1e-6, 3.0]:
        up, down = math.expm1(eta), math.expm1(-eta)
        sinh, cosh_m1 = (up - down) / 2.0, (up + down) / 2.0
        for dtype in DTYPES:
            s = torch.tensor([-1.0, 0.0, 1.0, -0.0], dtype=dtype)
            old = (s * cosh_m1 + sinh) * s
            new = torch.addcmul(s * sinh, s, s, value=cosh_m1)
            gains = torch.tensor([0.5, 1.0, 2.0, 97.0], dtype=dtype)
            assert same_bits(gains + gains * old, gains + gains * new)
