"""Compile management: each rule compiled once per ``(rule, device type, dtype)`` and cached
here, scalars packed into one tensor, and the eager fallback where compiling fails."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .ops import Scalar
from .rules import cprop_rule, dot_pairs_rule, dsa_stats_rule, dsa_update_rule, eg_rule

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
