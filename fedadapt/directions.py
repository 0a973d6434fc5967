r"""Base directions: the unit-lr direction :math:`d_t` a step-size rule scales.

Every fedadapt rule steps :math:`\theta \leftarrow \theta - \eta_t\,(\Gamma_t \odot d_t)`
(docs/METHODS.md §1). :math:`d_t` comes from a *direction* object, the base optimizer with its
step size set to 1, in the spirit of optax's ``mechanize(base)``: the rule wraps a base, it does
not re-implement it.

* :class:`SGDDirection` -- ``torch.optim.SGD``'s direction: the gradient, or with
  ``momentum`` the buffer :math:`b_t = \mu b_{t-1} + (1 - \tau) g_t` (Nesterov:
  :math:`g_t + \mu b_t`); state ``state[p]["momentum_buffer"]``.
* :class:`AdamDirection` -- ``torch.optim.Adam``'s direction
  :math:`\hat m_t / (\sqrt{\hat v_t} + \epsilon)`; state ``state[p]["exp_avg"]`` and
  ``["exp_avg_sq"]``.
* :class:`TorchDirection` -- any ``torch.optim.Optimizer`` class (AdamW, RMSprop, Adagrad, a
  user's Lion) as a black box: its direction is the parameter change of one of its steps at
  ``lr=1``. Only the scalar rules take it (:attr:`Direction.builtin` is False); the
  per-coordinate rules (``eg``, ``dsa``, ``cprop``) fuse the direction into their update and
  refuse it with a ``ValueError``.

The built-in directions compute exactly what fedadapt computed before they were objects (the
arithmetic is :func:`fedadapt._fused.base_direction`, shared with the compiled per-coordinate
rules). Their hyperparameters live in ``param_groups[i]`` (``base``, ``momentum``,
``dampening``, ``nesterov``, ``betas``, ``eps``), as torch keeps them, so LR schedulers,
``state_dict()`` and checkpoints see what they saw before; a direction object only says which
direction a group uses and how to compute it.

The base-argument block (``base``, ``momentum``, ``dampening``, ``nesterov``, ``betas``,
``eps``, ``weight_decay``) of every wrapping method is declared once, in
:data:`DIRECTION_DEFAULTS` / :class:`DirectionArgs`, and added to each constructor's signature by
:func:`direction_arguments` (so ``inspect.signature``, the registry and the docs see the names).
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, TypedDict, TypeVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._fused import base_direction

if TYPE_CHECKING:
    from ._mechanism import AdaptiveOptimizer

__all__ = [
    "BASES",
    "DIRECTION_DEFAULTS",
    "AdamDirection",
    "Direction",
    "DirectionArgs",
    "SGDDirection",
    "TorchDirection",
    "direction_arguments",
    "make_direction",
]

BASES = ("sgd", "adam")

# The base arguments every wrapping method accepts, with their defaults (torch's own):
# declared here once; direction_arguments() puts them into each constructor's signature.
DIRECTION_DEFAULTS: dict[str, object] = {
    "base": "sgd",
    "momentum": 0.0,
    "dampening": 0.0,
    "nesterov": False,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
}


class DirectionArgs(TypedDict, total=False):
    """The base arguments (``**base``) of a wrapping method; see :data:`DIRECTION_DEFAULTS`.

    ``base``: ``"sgd"`` or ``"adam"``; ``momentum``, ``dampening``, ``nesterov``: the SGD
    base, as ``torch.optim.SGD``; ``betas``, ``eps``: the Adam base, as ``torch.optim.Adam``;
    ``weight_decay``: coupled L2 added to the gradient (any base).
    """

    base: str
    momentum: float
    dampening: float
    nesterov: bool
    betas: tuple[float, float]
    eps: float
    weight_decay: float


# (kind, momentum buffers, exp_avgs, exp_avg_sqs, fresh flags, scalars, factor): what
# fedadapt._fused.base_direction and the per-coordinate rules take
DirectionState = tuple[
    str, list[Tensor], list[Tensor], list[Tensor], "list[bool] | None", list[float], float
]
Scratch = Callable[[list[Tensor], object], list[Tensor]]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


class Direction:
    """A base direction: what a step-size rule scales (see the module docstring).

    Subclasses set :attr:`builtin` and implement :meth:`group_defaults` and :meth:`compute`;
    the built-in ones also :meth:`prepare` (the state the fused per-coordinate rules take).
    """

    #: computed by :func:`fedadapt._fused.base_direction`, so the per-coordinate rules can fuse it
    builtin: ClassVar[bool] = True
    #: the keys this direction owns in ``state[p]``
    state_keys: ClassVar[tuple[str, ...]] = ()

    def group_defaults(self) -> dict[str, object]:
        """The base entries of every param group (``base``, ``momentum``, ... ``eps``)."""
        raise NotImplementedError

    def scalars(self, group: dict) -> tuple[str, list[float], float]:
        """``(kind, scalars, factor)`` for :func:`~fedadapt._fused.base_direction`;
        ``group["step"]`` already counts this step."""
        raise NotImplementedError

    def prepare(
        self, state: dict, group: dict, params: list[Tensor], grads: list[Tensor]
    ) -> DirectionState:
        """The direction's state for this step, created on first use (see :data:`DirectionState`).

        ``fresh[i]``: momentum buffer ``i`` was just seeded with ``grads[i]`` (torch's
        convention: the first step's buffer is the gradient); ``None`` when none was.
        """
        kind, s, factor = self.scalars(group)
        return kind, [], [], [], None, s, factor

    def compute(
        self, opt: AdaptiveOptimizer, group: dict, params: list[Tensor], grads: list[Tensor]
    ) -> tuple[list[Tensor], float]:
        """Advance the state; return ``(d_raw, factor)``: the unit-lr direction is ``factor * d_raw``.

        ``grads`` already contain weight decay; ``group["step"]`` counts this step. Two
        alternating work buffers hold a computed ``d_t`` (``opt._scratch``), so ``d_{t-1}``,
        kept by reference by the hypergradient rules, is intact while ``d_t`` is computed.
        """
        kind, bufs, ms, vs, fresh, s, factor = self.prepare(opt.state, group, params, grads)
        out = (
            opt._scratch(params, ("adam-direction", group["step"] % 2)) if kind == "adam" else None
        )
        return base_direction(kind, grads, bufs, ms, vs, s, out, fresh), factor

    def aliases_state(self, group: dict) -> bool:
        """Whether the ``d_raw`` of :meth:`compute` is a state tensor the next step changes in place."""
        return False


class SGDDirection(Direction):
    """``torch.optim.SGD``'s direction: the gradient, with optional (Nesterov) momentum.

    Args:
        momentum: :math:`\\mu` in [0, 1).
        dampening: :math:`\\tau` in [0, 1].
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    """

    state_keys = ("momentum_buffer",)

    def __init__(
        self, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False
    ) -> None:
        _check(0.0 <= momentum < 1.0, f"momentum must be in [0, 1), got {momentum}")
        _check(0.0 <= dampening <= 1.0, f"dampening must be in [0, 1], got {dampening}")
        if nesterov:
            _check(
                momentum > 0 and dampening == 0,
                "nesterov needs base='sgd', momentum > 0 and dampening 0",
            )
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov

    def __repr__(self) -> str:
        return f"SGDDirection(momentum={self.momentum}, dampening={self.dampening}, nesterov={self.nesterov})"

    def group_defaults(self) -> dict[str, object]:
        return {
            "base": "sgd",
            "momentum": self.momentum,
            "dampening": self.dampening,
            "nesterov": self.nesterov,
        }

    def scalars(self, group: dict) -> tuple[str, list[float], float]:
        mu = group.get("momentum", 0.0)
        if mu == 0.0:
            return "sgd", [], 1.0
        return (
            ("nesterov" if group.get("nesterov") else "momentum"),
            [mu, 1.0 - group.get("dampening", 0.0), mu],
            1.0,
        )

    def prepare(
        self, state: dict, group: dict, params: list[Tensor], grads: list[Tensor]
    ) -> DirectionState:
        kind, s, factor = self.scalars(group)
        if kind == "sgd":
            return kind, [], [], [], None, s, factor
        bufs: list[Tensor] = []
        flags = []
        for p, g in zip(params, grads, strict=True):
            st = state[p]
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = torch.clone(g).detach()
                flags.append(True)
            else:
                flags.append(False)
            bufs.append(st["momentum_buffer"])
        return kind, bufs, [], [], (flags if any(flags) else None), s, factor

    def compute(
        self, opt: AdaptiveOptimizer, group: dict, params: list[Tensor], grads: list[Tensor]
    ) -> tuple[list[Tensor], float]:
        if group.get("momentum", 0.0) == 0.0:
            return grads, 1.0  # d_t is the gradient itself (no copy): callers test identity
        kind, bufs, ms, vs, fresh, s, factor = self.prepare(opt.state, group, params, grads)
        return base_direction(kind, grads, bufs, ms, vs, s, None, fresh), factor

    def aliases_state(self, group: dict) -> bool:
        # momentum without Nesterov: d_t *is* the buffer, which the next step advances in place
        return group.get("momentum", 0.0) > 0 and not group.get("nesterov")


class AdamDirection(Direction):
    """``torch.optim.Adam``'s direction :math:`\\hat m_t/(\\sqrt{\\hat v_t}+\\epsilon)` (no amsgrad).

    Computed as :math:`(c/b_1)\\, m_t/(\\sqrt{v_t} + \\epsilon c)` with :math:`b_1 = 1-\\beta_1^t`,
    :math:`c = \\sqrt{1-\\beta_2^t}`: the same quantity, one pass fewer.

    Args:
        betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
        eps: :math:`\\epsilon \\ge 0`.
    """

    state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        _check(
            len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas),
            f"betas must be two numbers in [0, 1), got {betas!r}",
        )
        _check(eps >= 0.0, f"eps must be >= 0, got {eps}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = eps

    def __repr__(self) -> str:
        return f"AdamDirection(betas={self.betas}, eps={self.eps})"

    def group_defaults(self) -> dict[str, object]:
        return {"base": "adam", "betas": self.betas, "eps": self.eps}

    def scalars(self, group: dict) -> tuple[str, list[float], float]:
        beta1, beta2 = group["betas"]
        t = group["step"]
        bc1 = 1.0 - beta1**t
        c = math.sqrt(1.0 - beta2**t)
        # m_hat / (sqrt(v_hat) + eps) = (c / bc1) * m / (sqrt(v) + eps * c): one pass fewer
        return "adam", [1.0 - beta1, beta2, 1.0 - beta2, group["eps"] * c], c / bc1

    def prepare(
        self, state: dict, group: dict, params: list[Tensor], grads: list[Tensor]
    ) -> DirectionState:
        kind, s, factor = self.scalars(group)
        ms, vs = adam_moments(state, params)
        return kind, [], ms, vs, None, s, factor


def adam_moments(state: dict, params: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Adam's first and second moments ``exp_avg``/``exp_avg_sq`` of ``params`` (zeros when new)."""
    ms, vs = [], []
    for p in params:
        st = state[p]
        if "exp_avg" not in st:
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        ms.append(st["exp_avg"])
        vs.append(st["exp_avg_sq"])
    return ms, vs


def shared_adam_moment(st: dict, p: Tensor, share: bool, adam_key: str) -> Tensor:
    """A new running moment of ``p`` for a rule (EG's gradient average, CProp's second moment):
    Adam's own ``adam_key`` tensor when ``share`` (one tensor serves both, created with its twin
    when missing), else zeros."""
    if not share:
        return torch.zeros_like(p)
    if "exp_avg" not in st:
        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return st[adam_key]


class TorchDirection(Direction):
    r"""Any ``torch.optim.Optimizer`` as the base direction of a scalar step-size rule.

    The direction is the parameter change of one step of the wrapped optimizer at ``lr=1``:
    :math:`d_t = \theta - \mathrm{step}_{lr=1}(\theta)`, and the rule then steps
    :math:`\theta \leftarrow \theta - \eta_t d_t` with its own adapted :math:`\eta_t`. For
    optimizers whose update is linear in ``lr`` (SGD, Adam, AdamW, RMSprop, Adagrad, Lion) this
    is exactly that optimizer at lr :math:`\eta_t`, up to rounding (the subtraction).

    The wrapped optimizer is built on the first step over the rule's param groups; its
    per-parameter buffers ride in the rule's own state, as ``state[p]["base_state"]`` (a dict,
    as ``schedule_free``'s wrapper keeps its buffers in the base optimizer's state), so the
    rule's ``state_dict()``, ``load_state_dict()`` and pickling carry them. Its hyperparameters
    are the ``kwargs`` given here (configuration, like the rule's own).

    The rules' defaults that depend on the base (``hd``'s ``hyper_lr``: 1e-2 for SGD, 1e-5 for
    Adam) take the SGD value for a wrapped optimizer: give them explicitly.

    Cost: one step of the wrapped optimizer plus two copies of the parameters and a subtraction
    per step (about 3 extra passes over the parameters, and two parameter-sized work buffers).

    Only scalar rules take it (``hd``, ``hd-mult``, ``autodrop``, ``fedexp``, ``fedhyper-g``,
    ``fedhyper-cl``): they need :math:`d_t` only as a black box. Weight decay belongs to the
    wrapped optimizer (``TorchDirection(torch.optim.AdamW, weight_decay=0.01)``); the rule's
    own ``weight_decay`` must stay 0.

    Args:
        optimizer_class: a ``torch.optim.Optimizer`` subclass taking ``(params, lr=..., **kwargs)``.
        **kwargs: its hyperparameters except ``lr`` (the rule owns the step size).

    Example:

        >>> opt = fedadapt.HypergradientDescent(model.parameters(), lr=1e-3, hyper_lr=1e-4,
        ...                                     direction=TorchDirection(torch.optim.AdamW, weight_decay=0.01))
        >>> for _ in range(3):
        ...     loss().backward(); opt.step(); opt.zero_grad()
        >>> opt.param_groups[0]["lr"] != 1e-3
        True
    """

    builtin = False

    def __init__(self, optimizer_class: type[Optimizer], **kwargs: object) -> None:
        _check(
            isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer),
            f"TorchDirection needs a torch.optim.Optimizer subclass, got {optimizer_class!r}",
        )
        _check(
            "lr" not in kwargs,
            "TorchDirection: leave out lr (the rule owns the step size; the "
            "wrapped optimizer steps at lr=1)",
        )
        _check(
            "params" not in kwargs, "TorchDirection: leave out params (the rule's params are used)"
        )
        self.optimizer_class = optimizer_class
        self.kwargs = dict(kwargs)
        self._inner: Optimizer | None = None

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"TorchDirection({self.optimizer_class.__name__}{args})"

    def group_defaults(self) -> dict[str, object]:
        return {"base": "torch"}

    def scalars(self, group: dict) -> tuple[str, list[float], float]:
        raise ValueError(f"{self!r} is computed by its optimizer, not by fedadapt's base_direction")

    def prepare(
        self, state: dict, group: dict, params: list[Tensor], grads: list[Tensor]
    ) -> DirectionState:
        raise ValueError(f"{self!r} is a black box: only the scalar rules take it")

    def _inner_group(self, opt: AdaptiveOptimizer, index: int) -> dict:
        inner = self._inner
        if inner is None:
            groups = [{"params": list(g["params"])} for g in opt.param_groups]
            try:
                factory: Callable[..., Optimizer] = self.optimizer_class
                inner = factory(groups, lr=1.0, **self.kwargs)
            except TypeError as exc:
                raise ValueError(f"{self!r}: could not build the optimizer: {exc}") from exc
            self._inner = inner
        while len(inner.param_groups) < len(opt.param_groups):  # groups added to the rule later
            inner.add_param_group(
                {"params": list(opt.param_groups[len(inner.param_groups)]["params"])}
            )
        # its buffers ride in the rule's state, under one key per parameter (a torch optimizer
        # creates its state when state[p] is empty, so it needs a dict of its own); rebound every
        # step, since load_state_dict replaces the rule's state
        inner.state = _NestedState(opt.state)
        return inner.param_groups[index]

    def compute(
        self, opt: AdaptiveOptimizer, group: dict, params: list[Tensor], grads: list[Tensor]
    ) -> tuple[list[Tensor], float]:
        inner_group = self._inner_group(
            opt, next(i for i, g in enumerate(opt.param_groups) if g is group)
        )
        inner = self._inner
        assert inner is not None
        before = opt._scratch(params, "torch-direction-start")
        torch._foreach_copy_(before, params)
        inner_group["lr"] = 1.0
        groups = inner.param_groups
        inner.param_groups = [
            inner_group
        ]  # step this group only (the rule skips groups one by one)
        try:
            inner.step()
        finally:
            inner.param_groups = groups
        d = opt._scratch(params, ("torch-direction", group["step"] % 2))
        for di, b, p in zip(d, before, params, strict=True):
            torch.sub(b, p, out=di)
        torch._foreach_copy_(params, before)
        return d, 1.0


class _NestedState(defaultdict):
    """``state[p]`` of a wrapped optimizer: the dict ``rule_state[p]["base_state"]``."""

    def __init__(self, outer: dict) -> None:
        super().__init__(dict)
        self.outer = outer

    def __missing__(self, p: Tensor) -> dict:
        st = self.outer[p].get("base_state")
        if st is None:
            st = self.outer[p]["base_state"] = {}
        return st


def make_direction(
    direction: Direction | None, base: dict[str, object]
) -> tuple[Direction, dict[str, object]]:
    """The direction object and the base entries of the param groups (``base`` ... ``weight_decay``).

    ``direction=None`` builds :class:`SGDDirection` or :class:`AdamDirection` from the base
    arguments (``base="sgd"|"adam"`` and the rest); a given direction takes no base argument
    but ``weight_decay``. Raises ``TypeError`` for an unknown argument name and ``ValueError``
    (naming the value) for a bad one.
    """
    unknown = sorted(set(base) - set(DIRECTION_DEFAULTS))
    if unknown:
        raise TypeError(
            f"got unexpected keyword arguments {unknown}; base arguments: {list(DIRECTION_DEFAULTS)}"
        )
    wd = base.get("weight_decay", 0.0)
    _check(isinstance(wd, int | float) and wd >= 0.0, f"weight_decay must be >= 0, got {wd}")
    if direction is not None:
        _check(
            isinstance(direction, Direction),
            f"direction must be a fedadapt Direction, got {direction!r}",
        )
        extra = sorted(set(base) - {"weight_decay"})
        _check(not extra, f"give either direction= or the base arguments {extra}, not both")
        _check(
            direction.builtin or not wd,
            f"weight_decay belongs to the wrapped optimizer of {direction!r} "
            "(pass it to TorchDirection); the rule's weight_decay must be 0",
        )
        groups = {**DIRECTION_DEFAULTS, **direction.group_defaults(), "weight_decay": wd}
        return direction, groups
    args = {**DIRECTION_DEFAULTS, **base}
    name = args["base"]
    _check(name in BASES, f"base must be one of {list(BASES)}, got {name!r}")
    momentum, dampening, nesterov = args["momentum"], args["dampening"], args["nesterov"]
    betas, eps = args["betas"], args["eps"]
    assert (
        isinstance(momentum, float | int)
        and isinstance(dampening, float | int)
        and isinstance(eps, float | int)
    )
    _check(0.0 <= momentum < 1.0, f"momentum must be in [0, 1), got {momentum}")
    _check(0.0 <= dampening <= 1.0, f"dampening must be in [0, 1], got {dampening}")
    if nesterov:
        _check(
            name == "sgd" and momentum > 0 and dampening == 0,
            "nesterov needs base='sgd', momentum > 0 and dampening 0",
        )
    _check(
        isinstance(betas, tuple | list) and len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas),
        f"betas must be two numbers in [0, 1), got {betas!r}",
    )
    assert isinstance(betas, tuple | list)
    args["betas"] = (float(betas[0]), float(betas[1]))
    _check(eps >= 0.0, f"eps must be >= 0, got {eps}")
    made: Direction = (
        SGDDirection(float(momentum), float(dampening), bool(nesterov))
        if name == "sgd"
        else AdamDirection((float(betas[0]), float(betas[1])), float(eps))
    )
    return made, args


_Cls = TypeVar("_Cls", bound=type)
_ANNOTATIONS = {
    "base": "str",
    "momentum": "float",
    "dampening": "float",
    "nesterov": "bool",
    "betas": "tuple[float, float]",
    "eps": "float",
    "weight_decay": "float",
}


def direction_arguments(cls: _Cls) -> _Cls:
    """Class decorator: put ``direction`` and the base arguments into ``cls.__init__``'s signature.

    The constructor declares ``*, direction: Direction | None = None, ..., **base:
    Unpack[DirectionArgs]``; its introspected signature (read by :func:`fedadapt.build_optimizer`
    to check hyperparameter names, by the docs and by users) lists ``direction``, ``base``,
    ``momentum``, ... ``weight_decay`` with their defaults, in place of ``**base``.
    """
    init = vars(cls)["__init__"]
    sig = inspect.signature(init)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    block = [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v, annotation=_ANNOTATIONS[k])
        for k, v in DIRECTION_DEFAULTS.items()
    ]
    names = [p.name for p in params]
    at = names.index("direction") + 1 if "direction" in names else len(params)
    init.__signature__ = sig.replace(parameters=[*params[:at], *block, *params[at:]])
    return cls
