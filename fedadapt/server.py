"""The server's step: any fedadapt optimizer applied to the aggregated pseudo-gradient."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ._mechanism import global_dot
from .changepoint import ChangeDetector
from .registry import build_optimizer, method_spec, step_size_stats

__all__ = [
    "ServerOptimizer",
    "default_server_lr",
    "reset_on_change",
    "START_LOSSES",
    "START_WEIGHTS",
]

# per-client round-start training losses and their weights (example counts): the change
# detector's signal, accepted by every server optimizer's step()
START_LOSSES = "client_start_losses"
START_WEIGHTS = "client_start_weights"


def default_server_lr(name: str) -> float | None:
    """The server step size a method takes when none is given: its spec's ``server_lr``
    (``cp-adam`` and ``flash``: 0.1; ``None`` for a method with no step size to set, e.g.
    ``adaptive-fedavg``; 1.0 for the rest: FedAvg's unit, server ``sgd`` at 1.0 is FedAvg and
    the scalar rules ``hd``, ``hd-mult``, ``eg``, ... start from FedAvg)."""
    return method_spec(name).server_lr


def reset_on_change(optimizer: torch.optim.Optimizer) -> None:
    """Act on an optimizer's stale state after a change: its own ``on_change()`` where it has
    one; otherwise every per-parameter state is dropped (moments and step counters restart, as
    for a fresh optimizer) and a scalar ``lr`` adapted below its start ``lr0`` is re-opened."""
    hook = getattr(optimizer, "on_change", None)
    if callable(hook):
        hook()
        return
    optimizer.state.clear()
    for g in optimizer.param_groups:
        if "step" in g and isinstance(g["step"], int):
            g["step"] = 0
        lr0 = g.get("lr0")
        if lr0 is not None and float(g["lr"]) < float(lr0):
            if isinstance(g["lr"], Tensor):
                g["lr"].fill_(float(lr0))
            else:
                g["lr"] = float(lr0)


class ServerOptimizer:
    r"""Applies a registered optimizer to the global model, one step per round.

    Round :math:`t` with global parameters :math:`x_t` and client models :math:`x_i` with
    weights :math:`w_i` (normalised to sum 1):

    .. math::

        \bar x = \sum_i w_i x_i, \qquad \hat g_t = x_t - \bar x, \qquad
        x_{t+1} = \mathrm{step}(x_t, \hat g_t)

    The pseudo-gradient :math:`\hat g_t` is written into ``p.grad`` of the global parameters
    and the *same optimizer class a client uses* takes one step (the FedOpt trick). So
    ``ServerOptimizer(params, "sgd", lr=1.0)`` is FedAvg, ``"sgd"`` with momentum is FedAvgM,
    ``"adam"`` is FedAdam (with Adam's bias correction, see docs/METHODS.md), ``"hd"`` is server
    hypergradient descent.

    Plain SGD at ``lr=1`` without momentum or weight decay writes :math:`\bar x` itself after
    the step: :math:`x_t - (x_t - \bar x)` can differ from :math:`\bar x` by one rounding, and
    FedAvg must be exact. The weighted mean is accumulated in float64 and rounded once to the
    parameters' dtype.

    A round whose pseudo-gradient (or a signal) is non-finite leaves the parameters and all
    state untouched and reports ``last_info["skipped"] == 1``.

    **Changes.** A :class:`fedadapt.ChangeDetector` watches the clients' round-start training
    loss (``step(..., client_start_losses=[...], client_start_weights=[...])``) and the update
    norm; when it raises an alarm, the optimizer's stale state is reset
    (:func:`reset_on_change`) *before* the round's step, and ``last_info["change"]`` is 1.
    ``change_rounds`` gives known changepoints instead (an oracle, for studies).

    Args:
        params: the global model's tensors (updated in place).
        name: a name from :func:`fedadapt.available_optimizers`.
        detector: a :class:`ChangeDetector`, ``True`` (one with defaults), ``False`` (none) or
            ``None`` (default: on when the method's spec says ``uses_change_detector`` and no
            ``change_rounds`` are given).
        change_rounds: rounds (1-based, counted by this object) at which to reset as if a
            change had been detected; for oracle studies.
        **hparams: the optimizer's hyperparameters; ``lr`` defaults to the method's server
            step size (its spec's ``server_lr``: 1.0 for ``sgd``, 0.1 for ``adam`` and
            ``cp-adam``), not the client-side default of the optimizer class.

    Example:

        >>> server = ServerOptimizer(model.parameters(), "hd", lr=1.0, hyper_lr=1e-2)
        >>> server.step(client_params[:2], weights=[30, 70])
        >>> server.last_info["lr"]  # the first round has no previous pseudo-gradient
        1.0
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        name: str,
        *,
        detector: ChangeDetector | bool | None = None,
        change_rounds: Iterable[int] = (),
        **hparams: object,
    ) -> None:
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("ServerOptimizer needs at least one parameter tensor")
        self.name = name
        self.spec = method_spec(name)
        if "lr" not in hparams and self.spec.server_lr is not None:
            hparams["lr"] = self.spec.server_lr
        self.hparams = dict(hparams)
        self.optimizer = build_optimizer(name, self.params, side="server", **hparams)
        change_rounds = list(change_rounds)
        if detector is None:  # known changepoints replace the detector
            detector = self.spec.uses_change_detector and not change_rounds
        if detector is True:
            detector = ChangeDetector()
        if detector is not False and not isinstance(detector, ChangeDetector):
            raise ValueError(
                f"detector must be a ChangeDetector, True, False or None, got {detector!r}"
            )
        self.detector: ChangeDetector | None = detector or None
        self.change_rounds = sorted({int(r) for r in change_rounds})
        if any(r < 1 for r in self.change_rounds):
            raise ValueError(f"change_rounds are 1-based rounds, got {self.change_rounds}")
        self.round = 0
        self._plastic_left = 0  # rounds of raised client plasticity left after a change
        self._prev_pseudo_grad: list[Tensor] | None = None
        self.last_info: dict[str, float] = {}

    @property
    def required_signals(self) -> tuple[str, ...]:
        """Per-client statistics the method needs (computed by :meth:`step` when not given):
        its spec's ``signals``."""
        return tuple(self.spec.signals)

    @property
    def optional_signals(self) -> tuple[str, ...]:
        """Signals the method uses when given (e.g. ``cprop``: conformity across clients): its
        spec's ``optional_signals``."""
        return tuple(self.spec.optional_signals)

    # ------------------------------------------------------------------ rounds
    def step(
        self, client_params: Sequence[Sequence[Tensor]], weights: Sequence[float], **signals: object
    ) -> None:
        """One round from the clients' models and weights (e.g. example counts).

        Signals the method requires and that are not given are computed from
        ``client_params`` (see docs/CONTRACTS.md §1 for their definitions). Signals the method
        neither requires nor uses (``optional_signals``) are ignored, so a caller may pass the
        same signals to every method.
        """
        if len(client_params) == 0:
            raise ValueError("step() needs at least one client")
        if len(client_params) != len(weights):
            raise ValueError(f"got {len(client_params)} clients but {len(weights)} weights")
        w = [float(x) for x in weights]
        if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {list(weights)}")
        total = math.fsum(w)
        w = [x / total for x in w]
        for cp in client_params:
            if len(cp) != len(self.params):
                raise ValueError(
                    f"a client sent {len(cp)} tensors, the model has {len(self.params)}"
                )
        with torch.no_grad():
            mean = []
            for j, p in enumerate(self.params):
                acc = torch.zeros_like(p, dtype=torch.float64)
                for wi, cp in zip(w, client_params, strict=True):
                    acc.add_(cp[j].to(device=p.device, dtype=torch.float64) * wi)
                mean.append(acc)
            needed = set(self.required_signals) - set(
                k for k, v in signals.items() if v is not None
            )
            if needed & {"client_sq_norms_mean", "num_clients"}:
                sq = 0.0
                for wi, cp in zip(w, client_params, strict=True):
                    diffs = [
                        c.to(device=p.device, dtype=p.dtype) - p
                        for c, p in zip(cp, self.params, strict=True)
                    ]
                    sq += wi * float(global_dot(diffs, diffs))
                signals.setdefault("client_sq_norms_mean", sq)
                signals.setdefault("num_clients", len(client_params))
            if "client_sq_mean" in needed:
                sqm = []
                for j, p in enumerate(self.params):
                    acc = torch.zeros_like(p, dtype=torch.float64)
                    for wi, cp in zip(w, client_params, strict=True):
                        diff = cp[j].to(device=p.device, dtype=torch.float64) - p.to(torch.float64)
                        acc.addcmul_(diff, diff, value=wi)
                    sqm.append(acc.to(p.dtype))
                signals["client_sq_mean"] = sqm
            self._step(mean, signals)

    def step_from_mean(self, mean_params: Sequence[Tensor], **signals: object) -> None:
        """One round from the already-aggregated model :math:`\\bar x`."""
        if len(mean_params) != len(self.params):
            raise ValueError(f"got {len(mean_params)} tensors, the model has {len(self.params)}")
        with torch.no_grad():
            self._step(
                [
                    m.to(device=p.device, dtype=torch.float64)
                    for m, p in zip(mean_params, self.params, strict=True)
                ],
                signals,
            )

    def step_from_pseudo_gradient(self, pseudo_grads: Sequence[Tensor], **signals: object) -> None:
        """One round from the pseudo-gradient :math:`\\hat g_t = x_t - \bar x` itself.

        Exactly what a client optimizer does with ``p.grad = g``: the server form of the
        differential test, and the entry point for callers that aggregate deltas themselves.
        """
        if len(pseudo_grads) != len(self.params):
            raise ValueError(f"got {len(pseudo_grads)} tensors, the model has {len(self.params)}")
        with torch.no_grad():
            self._step(
                None,
                signals,
                [
                    g.to(device=p.device, dtype=p.dtype)
                    for g, p in zip(pseudo_grads, self.params, strict=True)
                ],
            )

    def _step(
        self, mean64: list[Tensor] | None, signals: dict, pseudo: list[Tensor] | None = None
    ) -> None:
        opt = self.optimizer
        if pseudo is None:
            assert mean64 is not None
            pseudo = [
                (p.to(torch.float64) - m).to(p.dtype)
                for p, m in zip(self.params, mean64, strict=True)
            ]
        finite = all(bool(torch.isfinite(g).all()) for g in pseudo)
        for v in signals.values():
            if isinstance(v, int | float) and not math.isfinite(v):
                finite = False
            elif isinstance(v, list | tuple) and v and isinstance(v[0], Tensor):
                finite = finite and all(bool(torch.isfinite(t).all()) for t in v)
        self.round += 1
        if not finite:
            self.last_info = {
                **step_size_stats(opt),
                "cosine": math.nan,
                "skipped": 1.0,
                "change": 0.0,
            }
            return
        change, change_info = self._observe(pseudo, signals)
        if self._plastic_left > 0:
            self._plastic_left -= 1
        if change:
            reset_on_change(opt)
            self._prev_pseudo_grad = None
            self._plastic_left = int(self._plasticity().get("rounds", 0))
        cosine = math.nan
        if self._prev_pseudo_grad is not None:
            num = float(global_dot(pseudo, self._prev_pseudo_grad))
            den = math.sqrt(
                float(global_dot(pseudo, pseudo))
                * float(global_dot(self._prev_pseudo_grad, self._prev_pseudo_grad))
            )
            cosine = num / den if den > 0 else 0.0
        keep = [g.clone() for g in pseudo]  # torch's SGD (Nesterov) may change .grad in place
        old_grads = [p.grad for p in self.params]
        skipped_before = sum(int(g.get("skipped", 0)) for g in opt.param_groups)
        for p, g in zip(self.params, pseudo, strict=True):
            p.grad = g
        accepted = set(self.required_signals) | set(self.optional_signals)
        passed = {k: v for k, v in signals.items() if k in accepted and v is not None}
        opt.step(**passed) if passed else opt.step()
        if mean64 is not None and self._exact_mean():
            for p, m in zip(self.params, mean64, strict=True):
                p.copy_(m.to(p.dtype))
        for p, old in zip(self.params, old_grads, strict=True):
            p.grad = old
        skipped = sum(int(g.get("skipped", 0)) for g in opt.param_groups) > skipped_before
        if not skipped:
            self._prev_pseudo_grad = keep
        self.last_info = {
            **step_size_stats(opt),
            "cosine": cosine,
            "skipped": float(skipped),
            "change": float(change),
            **change_info,
        }

    def _observe(self, pseudo: list[Tensor], signals: dict) -> tuple[bool, dict[str, float]]:
        """Feed the detector (and the oracle's known rounds); True = reset before this step."""
        change = self.round in self.change_rounds
        if self.detector is None:
            return change, {}
        losses: Iterable[float] | None = signals.get(START_LOSSES)
        weights: Iterable[float] | None = signals.get(START_WEIGHTS)
        values: dict[str, float | Sequence[float] | None] = {
            "update-norm": math.sqrt(max(float(global_dot(pseudo, pseudo)), 0.0))
        }
        if losses is not None:
            values["start-loss"] = [float(x) for x in losses]
        alarm = self.detector.update(
            values,
            {"start-loss": list(weights)} if weights is not None and losses is not None else None,
        )
        info = {f"detector-{k}": float(v) for k, v in self.detector.last_info.items()}
        return change or alarm, info

    def notify_change(self) -> None:
        """Reset the optimizer's stale state now (a change known from outside)."""
        reset_on_change(self.optimizer)
        self._prev_pseudo_grad = None
        self._plastic_left = int(self._plasticity().get("rounds", 0))

    def _plasticity(self) -> dict[str, float]:
        return dict(getattr(self.optimizer, "plasticity", {}) or {})

    def client_hints(self) -> dict[str, float]:
        """What the method asks of the clients for the next round, as multipliers and options.

        - ``"local-work"``: a factor on each client's local steps or epochs; after a change a
          method that declares ``plasticity = {"local-work": f, "rounds": k}`` asks for ``f``
          times the local work for the ``k`` rounds that follow the change;
        - anything the method declares itself: fixed hints in its spec (``MethodSpec.
          client_hints``, e.g. Flash's ``early-stop-gamma``) or a method ``client_hints()`` on
          the optimizer (computed each round, e.g. Adaptive-FedAvg's ``lr-scale``).

        The strategy sends them in the train config; the client calls apply ``lr-scale`` to the
        local optimizer's lr and report the rest to the training loop (docs/DRIFT.md).
        """
        hints: dict[str, float] = {str(k): float(v) for k, v in self.spec.client_hints.items()}
        own = getattr(self.optimizer, "client_hints", None)
        if callable(own):
            hints.update({str(k): float(v) for k, v in dict(own() or {}).items()})
        if self._plastic_left > 0:
            hints["local-work"] = float(self._plasticity().get("local-work", 1.0)) * hints.get(
                "local-work", 1.0
            )
        return hints

    def _exact_mean(self) -> bool:
        opt = self.optimizer
        if getattr(opt, "exact_mean", False):  # a method whose step is FedAvg's (adaptive-fedavg)
            return True
        if type(opt) is not torch.optim.SGD:
            return False
        return all(
            float(g["lr"]) == 1.0 and g["momentum"] == 0 and g["weight_decay"] == 0
            for g in opt.param_groups
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Tensors and Python scalars only (safe for ``torch.load(weights_only=True)``)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "detector": None if self.detector is None else self.detector.state_dict(),
            "plastic_left": self._plastic_left,
            "round": self.round,
            "prev_pseudo_grad": None
            if self._prev_pseudo_grad is None
            else [t.clone() for t in self._prev_pseudo_grad],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` after :meth:`check_state_dict` (a ``ValueError`` naming
        the field, before anything is changed)."""
        self.check_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.detector is not None and state.get("detector") is not None:
            self.detector.load_state_dict(state["detector"])
        self.round = int(state["round"])
        self._plastic_left = int(state.get("plastic_left", 0))
        prev = state.get("prev_pseudo_grad")
        self._prev_pseudo_grad = (
            None
            if prev is None
            else [
                t.to(device=p.device, dtype=p.dtype).clone()
                for t, p in zip(prev, self.params, strict=True)
            ]
        )

    def check_state_dict(self, state: object) -> None:
        """Refuse a saved state that this object, freshly built, could not have produced.

        A resumed state passes the same validation as a newly constructed one (DESIGN "Failure
        behaviour"): the optimizer's hyperparameters equal the configured ones (its own
        argument checks ran on those), the adapted ``lr`` lies within the method's bounds
        (``min_lr``/``max_lr`` of a fresh optimizer, the spec's ``carried_lr_bounds`` or
        :data:`MAX_LR_GROWTH` times the configured lr), every state tensor is finite with the
        shape of its parameter (or a scalar), squared accumulators are >= 0, counters are
        integers in ``[0, round]``, the plasticity countdown within the method's
        ``plastic_rounds`` and the detector's state in range. ``ValueError`` names the field.
        """
        _need(isinstance(state, dict), "server state must be a dict")
        assert isinstance(state, dict)
        for key in ("optimizer", "round"):
            _need(key in state, f"server state lacks {key!r}")
        rnd = state["round"]
        _need(
            isinstance(rnd, int) and not isinstance(rnd, bool) and rnd >= 0,
            f"server state 'round' must be an int >= 0, got {rnd!r}",
        )
        self._check_optimizer_state(state["optimizer"], int(rnd))
        plastic = state.get("plastic_left", 0)
        max_plastic = int(float(self._plasticity().get("rounds", 0)))
        _need(
            isinstance(plastic, int)
            and not isinstance(plastic, bool)
            and 0 <= plastic <= max_plastic,
            f"server state 'plastic_left' (rounds of extra local work left) must be an int in "
            f"[0, {max_plastic}] (the method's plastic_rounds), got {plastic!r}",
        )
        prev = state.get("prev_pseudo_grad")
        if prev is not None:
            _need(
                isinstance(prev, list | tuple) and len(prev) == len(self.params),
                f"server state 'prev_pseudo_grad' must be a list of {len(self.params)} tensors",
            )
            for j, (t, p) in enumerate(zip(prev, self.params, strict=True)):
                _check_tensor(t, f"prev_pseudo_grad[{j}]", tuple(p.shape))
        det = state.get("detector")
        if det is not None and self.detector is not None:
            try:
                ChangeDetector().load_state_dict(det)  # the same checks, on a throw-away copy
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise ValueError(f"server state 'detector': {exc}") from None

    def _check_optimizer_state(self, saved: object, rnd: int) -> None:
        from .registry import _REGISTRY, _accepted

        fresh = self.optimizer.state_dict()
        _need(
            isinstance(saved, dict) and "state" in saved and "param_groups" in saved,
            "server state 'optimizer' must hold 'state' and 'param_groups'",
        )
        assert isinstance(saved, dict)
        groups = saved["param_groups"]
        _need(
            isinstance(groups, list) and len(groups) == len(fresh["param_groups"]),
            f"optimizer.param_groups: {len(groups) if isinstance(groups, list) else groups!r} "
            f"groups, the model's optimizer has {len(fresh['param_groups'])}",
        )
        ctor = set(_accepted(_REGISTRY[self.name])) - {"lr", "min_lr", "max_lr"}
        shapes: dict[int, tuple[int, ...]] = {}
        for i, (g, f) in enumerate(zip(groups, fresh["param_groups"], strict=True)):
            where = f"optimizer.param_groups[{i}]"
            _need(isinstance(g, dict), f"{where} must be a dict")
            _need(
                list(g.get("params", [])) == list(f["params"]),
                f"{where}.params {g.get('params')!r} differ from the model's {f['params']!r}",
            )
            ps = [p for p in self.optimizer.param_groups[i]["params"]]
            shapes.update({idx: tuple(p.shape) for idx, p in zip(f["params"], ps, strict=True)})
            for k, v in f.items():
                if k == "params":
                    continue
                _need(k in g, f"{where} lacks {k!r}")
                got = g[k]
                if k in ctor:
                    _need(
                        got == v
                        or (
                            isinstance(v, float)
                            and math.isnan(v)
                            and isinstance(got, float)
                            and math.isnan(got)
                        ),
                        f"{where}.{k}: saved {got!r}, the strategy is configured with {v!r} "
                        "(a checkpoint of another configuration or a corrupt one)",
                    )
                    continue
                if k == "lr":
                    self._check_lr(got, f, where)
                    continue
                if k in ("min_lr", "max_lr"):
                    continue
                _check_scalar(got, v, f"{where}.{k}", rnd)
        state = saved["state"]
        _need(isinstance(state, dict), "optimizer.state must be a dict")
        for idx, st in state.items():
            _need(
                idx in shapes,
                f"optimizer.state has an entry for parameter {idx!r}; the model has {sorted(shapes)}",
            )
            _need(isinstance(st, dict), f"optimizer.state[{idx}] must be a dict")
            for k, t in st.items():
                what = f"optimizer.state[{idx}].{k}"
                if isinstance(t, Tensor):
                    _check_tensor(t, what, shapes[idx], nonneg=_nonneg_state(k))
                else:
                    _check_scalar(t, t, what, rnd)

    def _check_lr(self, lr: object, fresh_group: dict, where: str) -> None:
        ok = isinstance(lr, int | float | Tensor) and not isinstance(lr, bool)
        _need(ok, f"{where}.lr must be a number, got {lr!r}")
        assert isinstance(lr, int | float | Tensor)
        value = float(lr)
        ref = float(fresh_group["lr"])
        lo = float(fresh_group.get("min_lr", 0.0) or 0.0)
        hi = float(fresh_group.get("max_lr", math.inf))
        bounds = self.spec.carried_lr_bounds
        hi = min(hi, ref * (bounds[1] if bounds is not None else MAX_LR_GROWTH))
        _need(
            math.isfinite(value) and value > 0 and lo <= value <= hi,
            f"{where}.lr must be a finite number > 0 in [{lo:g}, {hi:g}] (the method's bounds "
            f"around the configured lr {ref:g}), got {value!r}",
        )


# A resumed server lr may exceed the configured one by at most this factor when the method
# declares no tighter bound (MethodSpec.carried_lr_bounds, the optimizer's own max_lr).
MAX_LR_GROWTH = 1e3
_COUNTERS = ("step", "m_step", "skipped", "changes", "drops", "window_step", "wait")


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _nonneg_state(key: str) -> bool:
    """Squared accumulators (Adam's second moment, Adagrad's sum, squared norms) and counters."""
    return "sq" in key or key in ("sum", "step")


def _check_tensor(t: object, what: str, shape: tuple[int, ...], *, nonneg: bool = False) -> None:
    _need(isinstance(t, Tensor), f"{what} must be a tensor, got {type(t).__name__}")
    assert isinstance(t, Tensor)
    _need(
        t.dim() == 0 or tuple(t.shape) == shape,
        f"{what} has shape {tuple(t.shape)}, its parameter has {shape}",
    )
    if t.is_floating_point() or t.is_complex():
        _need(bool(torch.isfinite(t).all()), f"{what} holds non-finite values (NaN or inf)")
    if nonneg:
        _need(
            bool((t >= 0).all()),
            f"{what} holds negative values (it is a squared accumulator or a counter)",
        )


def _check_scalar(got: object, fresh: object, what: str, rnd: int) -> None:
    """A group entry that the optimizer adapts or counts: same kind as a fresh one, finite
    (unless the fresh value is not, e.g. AutoDrop's undefined ``omega``), counters in
    ``[0, round]``."""
    if isinstance(fresh, bool) or isinstance(got, bool):
        _need(
            isinstance(got, bool) == isinstance(fresh, bool),
            f"{what} must be a bool like a fresh one, got {got!r}",
        )
        return
    if isinstance(fresh, int):
        _need(isinstance(got, int), f"{what} must be an int, got {got!r}")
        assert isinstance(got, int)
        _need(got >= 0, f"{what} must be >= 0, got {got}")
        if what.rsplit(".", 1)[-1] in _COUNTERS:
            _need(got <= rnd, f"{what} = {got} counts past the server's round {rnd}")
        return
    if isinstance(fresh, float):
        _need(isinstance(got, int | float), f"{what} must be a number, got {got!r}")
        assert isinstance(got, int | float)
        _need(math.isfinite(got) or not math.isfinite(fresh), f"{what} must be finite, got {got!r}")
        return
    if isinstance(fresh, Tensor):
        _need(isinstance(got, Tensor), f"{what} must be a tensor, got {type(got).__name__}")
        assert isinstance(got, Tensor)
        if got.is_floating_point():
            _need(bool(torch.isfinite(got).all()), f"{what} holds non-finite values")
        return
    if isinstance(fresh, str | tuple | list) or fresh is None:
        _need(
            type(got) is type(fresh) or fresh is None,
            f"{what} must be a {type(fresh).__name__}, got {got!r}",
        )
