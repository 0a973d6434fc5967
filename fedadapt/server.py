"""The server's step: any fedadapt optimizer applied to the aggregated pseudo-gradient."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ._mechanism import global_dot
from .registry import build_optimizer, step_size_stats

__all__ = ["ServerOptimizer"]

_SIGNALS = ("client_sq_norms_mean", "num_clients", "client_sq_mean")


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

    Args:
        params: the global model's tensors (updated in place).
        name: a name from :func:`fedadapt.available_optimizers`.
        **hparams: the optimizer's hyperparameters.

    Example::

        server = ServerOptimizer(model.parameters(), "hd", lr=1.0, hyper_lr=1e-2)
        server.step([client_a_params, client_b_params], weights=[30, 70])
        server.last_info["lr"]
    """

    def __init__(self, params: Iterable[Tensor], name: str, **hparams: object) -> None:
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("ServerOptimizer needs at least one parameter tensor")
        self.name = name
        self.hparams = dict(hparams)
        self.optimizer = build_optimizer(name, self.params, **hparams)
        self.round = 0
        self._prev_pseudo_grad: list[Tensor] | None = None
        self.last_info: dict[str, float] = {}

    @property
    def required_signals(self) -> tuple[str, ...]:
        """Per-client statistics the method needs (computed by :meth:`step` when not given)."""
        return tuple(getattr(self.optimizer, "required_signals", ()))

    @property
    def optional_signals(self) -> tuple[str, ...]:
        """Signals the method uses when given (e.g. ``cprop``: conformity across clients)."""
        return tuple(getattr(self.optimizer, "optional_signals", ()))

    # ------------------------------------------------------------------ rounds
    def step(self, client_params: Sequence[Sequence[Tensor]], weights: Sequence[float], **signals: object) -> None:
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
                raise ValueError(f"a client sent {len(cp)} tensors, the model has {len(self.params)}")
        with torch.no_grad():
            mean = []
            for j, p in enumerate(self.params):
                acc = torch.zeros_like(p, dtype=torch.float64)
                for wi, cp in zip(w, client_params, strict=True):
                    acc.add_(cp[j].to(device=p.device, dtype=torch.float64) * wi)
                mean.append(acc)
            needed = set(self.required_signals) - set(k for k, v in signals.items() if v is not None)
            if needed & {"client_sq_norms_mean", "num_clients"}:
                sq = 0.0
                for wi, cp in zip(w, client_params, strict=True):
                    diffs = [c.to(device=p.device, dtype=p.dtype) - p for c, p in zip(cp, self.params, strict=True)]
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
            self._step([m.to(device=p.device, dtype=torch.float64) for m, p in zip(mean_params, self.params, strict=True)], signals)

    def step_from_pseudo_gradient(self, pseudo_grads: Sequence[Tensor], **signals: object) -> None:
        """One round from the pseudo-gradient :math:`\\hat g_t = x_t - \bar x` itself.

        Exactly what a client optimizer does with ``p.grad = g``: the server form of the
        differential test, and the entry point for callers that aggregate deltas themselves.
        """
        if len(pseudo_grads) != len(self.params):
            raise ValueError(f"got {len(pseudo_grads)} tensors, the model has {len(self.params)}")
        with torch.no_grad():
            self._step(None, signals, [g.to(device=p.device, dtype=p.dtype) for g, p in zip(pseudo_grads, self.params, strict=True)])

    def _step(self, mean64: list[Tensor] | None, signals: dict, pseudo: list[Tensor] | None = None) -> None:
        opt = self.optimizer
        if pseudo is None:
            assert mean64 is not None
            pseudo = [(p.to(torch.float64) - m).to(p.dtype) for p, m in zip(self.params, mean64, strict=True)]
        finite = all(bool(torch.isfinite(g).all()) for g in pseudo)
        for v in signals.values():
            if isinstance(v, int | float) and not math.isfinite(v):
                finite = False
            elif isinstance(v, list | tuple) and v and isinstance(v[0], Tensor):
                finite = finite and all(bool(torch.isfinite(t).all()) for t in v)
        self.round += 1
        if not finite:
            self.last_info = {**step_size_stats(opt), "cosine": math.nan, "skipped": 1.0}
            return
        cosine = math.nan
        if self._prev_pseudo_grad is not None:
            num = float(global_dot(pseudo, self._prev_pseudo_grad))
            den = math.sqrt(float(global_dot(pseudo, pseudo)) * float(global_dot(self._prev_pseudo_grad, self._prev_pseudo_grad)))
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
        self.last_info = {**step_size_stats(opt), "cosine": cosine, "skipped": float(skipped)}

    def _exact_mean(self) -> bool:
        opt = self.optimizer
        if type(opt) is not torch.optim.SGD:
            return False
        return all(float(g["lr"]) == 1.0 and g["momentum"] == 0 and g["weight_decay"] == 0 for g in opt.param_groups)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Tensors and Python scalars only (safe for ``torch.load(weights_only=True)``)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "round": self.round,
            "prev_pseudo_grad": None if self._prev_pseudo_grad is None else [t.clone() for t in self._prev_pseudo_grad],
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.round = int(state["round"])
        prev = state.get("prev_pseudo_grad")
        self._prev_pseudo_grad = None if prev is None else [
            t.to(device=p.device, dtype=p.dtype).clone() for t, p in zip(prev, self.params, strict=True)
        ]
