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

Modules, by job: :mod:`.ops` (float/tensor op helpers, scalar operands, the step
application), :mod:`.direction` (the base optimizer's direction), :mod:`.rules` (EG, CProp,
DSA, paired inner products) and :mod:`.dispatch` (compile cache, scalar packing, fallback).
"""

from __future__ import annotations

from .direction import base_direction, direction_result, n_direction, seeded
from .dispatch import RULES, compile_failed, pack, run_rule
from .ops import Scalar, operand
from .rules import (
    _scale_factors,
    conformity_of_var,
    cprop_rule,
    dot_pairs_rule,
    dsa_stats_rule,
    dsa_update_rule,
    eg_rule,
)

__all__ = [
    "RULES",
    "Scalar",
    "_scale_factors",
    "base_direction",
    "compile_failed",
    "conformity_of_var",
    "cprop_rule",
    "direction_result",
    "dot_pairs_rule",
    "dsa_stats_rule",
    "dsa_update_rule",
    "eg_rule",
    "n_direction",
    "operand",
    "pack",
    "run_rule",
    "seeded",
]
