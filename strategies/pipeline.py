"""The server as an explicit pipeline (DESIGN "The server is a pipeline"; docs/PIPELINE.md).

One round, in this order, each stage a small object a user can pass to
``strategies.FedAdapt`` (and a run-config key reaches each):

    validate (schema, finite: strategies.validation; sizes: bounds.ReplyLimits)
      -> bound (bounds.WeightCap, bounds.Clipping)
      -> aggregate (aggregators.Aggregator: mean, or Flower's median, trimmed mean, Krum,
         MultiKrum, Bulyan)
      -> privatize (privacy.GaussianPrivacy: noise on the clipped sum, RDP accountant)
      -> the server method (any fedadapt method, cp-adam included) with its change detector

:meth:`ServerPipeline.apply` runs the middle stages on a round's validated replies and returns
the replies to aggregate (clipped ones replaced), the failures it adds (every dropped, clipped
or capped client named with the reason) and a :class:`Plan` for the strategy's aggregation:
capped weights and, when the aggregate is not the plain weighted mean (a robust rule or
privacy), the pseudo-gradient itself. With the defaults and honest clients nothing is hit and
the plan is empty: the strategy runs exactly the code it ran before the pipeline existed.

**Sums only** (``sums_only=True``: what secure aggregation leaves the server): a stage or
method that needs one client's values (clipping or a robust rule on the server, a method whose
``MethodSpec.per_client_values`` is set) is refused at construction, the default relative
norm bound is off, and the change detector takes the cohort's mean loss (a scalar).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .aggregators import Aggregator
from .bounds import Clipping, ReplyLimits, WeightCap, client_ids
from .privacy import GaussianPrivacy
from .validation import CheckedReply, Failure


@dataclass
class Plan:
    """What the strategy's aggregation does differently this round (``None``: as before)."""

    weights: list[float] | None = None
    pseudo_gradient: list[torch.Tensor] | None = None
    info: dict[str, float] = field(default_factory=dict)


class ServerPipeline:
    """The stages between validation and the server method, with their state.

    Args:
        limits, weight_cap, clipping, aggregator, privacy: the stages (``None``: the default
            object; pass ``Clipping(max_ratio=None)`` / ``WeightCap(1.0)`` to switch a default
            bound off; ``privacy=None`` is no noise).
        sums_only: refuse what needs per-client values (see the module docstring).
        method_needs_per_client: the server method's ``MethodSpec.per_client_values``.
        population_mean_replies: replies are workers' means over several clients (simulation,
            ``reply_mode="mean"``): per-client clipping, robust rules and privacy then need
            ``reply_mode="per-client"`` and are refused.
    """

    def __init__(
        self,
        *,
        limits: ReplyLimits | None = None,
        weight_cap: WeightCap | None = None,
        clipping: Clipping | None = None,
        aggregator: Aggregator | str | None = None,
        privacy: GaussianPrivacy | None = None,
        sums_only: bool = False,
        method: str = "",
        method_needs_per_client: bool = False,
        population_mean_replies: bool = False,
    ) -> None:
        self.limits = limits if limits is not None else ReplyLimits()
        self.weight_cap = weight_cap if weight_cap is not None else WeightCap()
        if clipping is None:
            clipping = Clipping(max_ratio=None) if sums_only else Clipping()
        self.clipping = clipping
        if isinstance(aggregator, str):
            aggregator = Aggregator(aggregator)
        self.aggregator = aggregator if aggregator is not None else Aggregator()
        self.privacy = privacy
        self.sums_only = bool(sums_only)
        for name, stage in (
            ("limits", self.limits),
            ("weight_cap", self.weight_cap),
            ("clipping", self.clipping),
            ("aggregator", self.aggregator),
            ("privacy", self.privacy),
        ):
            expected = {
                "limits": ReplyLimits,
                "weight_cap": WeightCap,
                "clipping": Clipping,
                "aggregator": Aggregator,
                "privacy": GaussianPrivacy,
            }[name]
            if stage is not None and not isinstance(stage, expected):
                raise ValueError(f"{name} must be a strategies.{expected.__name__}, got {stage!r}")
        if self.privacy is not None and not self.clipping.per_client:
            raise ValueError(
                "privacy (dp-noise-multiplier) needs a clip on each update: set clip_norm "
                "(run config 'clip-norm') or clip_quantile ('clip-quantile')"
            )
        needs = self.per_client_needs(method, method_needs_per_client)
        if self.sums_only and needs:
            raise ValueError(
                "sums_only (run config 'sums-only'): secure aggregation leaves the server only "
                f"sums, but {'; '.join(needs)} need each client's values. Accepted there: "
                "aggregator 'mean', no clip-norm/clip-quantile (clip on the clients), server "
                "methods whose MethodSpec.per_client_values is False"
            )
        if population_mean_replies:
            per_client = [n for n in needs if not n.startswith(("server method", "max_norm_ratio"))]
            if per_client or self.privacy is not None:
                what = per_client or ["privacy"]
                raise ValueError(
                    f"{'; '.join(what)} bound or combine each client's update, but in "
                    "population mode a worker replies with the mean of its clients: set "
                    "reply_mode='per-client' (run config 'reply-mode')"
                )
        if self.privacy is not None and self.clipping.quantile is not None:
            self.clipping.bit_noise = -1.0  # set per round to m / 20 (Andrew et al.)

    # ------------------------------------------------------------------ declarations
    def per_client_needs(self, method: str = "", method_needs: bool = False) -> list[str]:
        """What in this pipeline needs per-client values (empty: sums suffice)."""
        out = []
        if self.clipping.per_client:
            out.append("clipping (clip_norm / clip_quantile) on the server")
        if self.clipping.max_ratio is not None:
            out.append("max_norm_ratio (the cohort's median norm)")
        if self.aggregator.needs_per_client_values:
            out.append(f"aggregator {self.aggregator.name!r}")
        if method_needs:
            out.append(f"server method {method!r} (MethodSpec.per_client_values)")
        return out

    @property
    def trivial(self) -> bool:
        """The mean with no privacy: the strategy's own weighted-mean code path."""
        return self.aggregator.is_mean and self.privacy is None

    # ------------------------------------------------------------------ one round
    def apply(
        self,
        server_round: int,
        checked: list[CheckedReply],
        current: dict[str, torch.Tensor],
        param_keys: list[str],
        sample_rate: float | None = None,
    ) -> tuple[list[CheckedReply], list[Failure], Plan]:
        failures: list[Failure] = []
        plan = Plan()
        # 1. sizes
        kept = []
        for c in checked:
            why = self.limits.violation(c)
            if why is None:
                kept.append(c)
            else:
                failures.extend(Failure(cid, c.node_id, f"dropped: {why}") for cid in client_ids(c))
        # 2. norms, non-finite drops, clipping
        norms = [_update_norm(c, current, param_keys) for c in kept]
        keep2, norms2 = [], []
        for c, v in zip(kept, norms, strict=True):
            if math.isfinite(v):
                keep2.append(c)
                norms2.append(v)
            else:
                failures.extend(
                    Failure(
                        cid,
                        c.node_id,
                        "dropped: update norm is not finite (values too large to square)",
                    )
                    for cid in client_ids(c)
                )
        kept, norms = keep2, norms2
        clipped = 0
        if self.clipping.active and kept:
            bound, rule = self.clipping.round_bound(norms)
            plan.info["clip-bound"] = bound
            out = []
            for c, v in zip(kept, norms, strict=True):
                if v <= bound:
                    out.append(c)
                    continue
                clipped += 1
                if self.clipping.action == "drop":
                    failures.extend(
                        Failure(
                            cid, c.node_id, f"dropped: update norm {v:.4g} > {bound:.4g} ({rule})"
                        )
                        for cid in client_ids(c)
                    )
                    continue
                out.append(_scaled(c, current, param_keys, bound / v))
                failures.extend(
                    Failure(
                        cid,
                        c.node_id,
                        f"clipped: update norm {v:.4g} > {bound:.4g} ({rule}), scaled to it",
                    )
                    for cid in client_ids(c)
                )
            if self.clipping.quantile is not None:
                draw = 0.0
                if self.privacy is not None:
                    self.clipping.bit_noise = len(norms) / 20.0
                    draw = float(self.privacy.generator(server_round).standard_normal())
                self.clipping.adapt(norms, draw)
            kept = out
        plan.info["clipped"] = float(clipped)
        if not kept:
            return kept, failures, plan
        # 3. weights
        if self.privacy is not None:
            plan.weights = [1.0] * len(kept)  # each client's sensitivity is the clip norm
        else:
            counts = [float(n) for c in kept for n in c.client_num_examples]
            capped = self.weight_cap.cap(counts)
            if capped != counts:
                weights, i = [], 0
                for c in kept:
                    k = len(c.client_num_examples)
                    weights.append(math.fsum(capped[i : i + k]))
                    for cid, n, w in zip(
                        c.client_ids, counts[i : i + k], capped[i : i + k], strict=True
                    ):
                        if w < n:
                            failures.append(
                                Failure(
                                    cid,
                                    c.node_id,
                                    (
                                        f"capped: claims {int(n)} examples, weight capped to {w:.6g} "
                                        f"(max-client-share {self.weight_cap.max_share:g} of the cohort)"
                                    ),
                                )
                            )
                    i += k
                plan.weights = weights
        # 4. aggregate and privatize (else the strategy's own mean over ``kept``)
        if not self.trivial:
            plan.pseudo_gradient = self._aggregate(
                server_round, kept, current, param_keys, plan, sample_rate
            )
        return kept, failures, plan

    def _aggregate(
        self,
        server_round: int,
        kept: list[CheckedReply],
        current: dict[str, torch.Tensor],
        keys: list[str],
        plan: Plan,
        sample_rate: float | None,
    ) -> list[torch.Tensor]:
        updates = [
            [(c.arrays[k].to(torch.float64) - current[k].to(torch.float64)).numpy() for k in keys]
            for c in kept
        ]
        weights = plan.weights or [float(c.num_examples) for c in kept]
        if self.privacy is None:
            agg, note = self.aggregator.aggregate(updates, weights)
            if note:
                plan.info["aggregator-fallback"] = 1.0
        else:
            # sum of the clipped updates + N(0, (z C)^2), over m: DP-FedAvg's noised mean
            m = len(kept)
            bound = (
                self.clipping.last_bound
                if self.clipping.quantile is not None
                else float(self.clipping.clip_norm)  # type: ignore[arg-type]
            )
            if not self.aggregator.is_mean:
                agg, _ = self.aggregator.aggregate(updates, [1.0] * m)
                total = [a * m for a in agg]
            else:
                total = [np.sum([u[j] for u in updates], axis=0) for j in range(len(keys))]
            z = self.privacy.update_noise_multiplier(max(self.clipping.bit_noise, 0.0))
            rng = self.privacy.generator(server_round)
            agg = [(t + rng.normal(0.0, z * bound, size=np.shape(t))) / m for t in total]
            q = sample_rate if sample_rate is not None else 1.0
            plan.info["dp-epsilon"] = self.privacy.spend(q)
            plan.info["dp-noise-std"] = z * bound / m
        return [
            torch.from_numpy(np.asarray(-a)).to(current[k].dtype)
            for a, k in zip(agg, keys, strict=True)
        ]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"clipping": self.clipping.state_dict()}
        if self.privacy is not None:
            out["privacy"] = self.privacy.state_dict()
        return out

    def load_state_dict(self, state: dict[str, object]) -> None:
        if "clipping" in state:
            self.clipping.load_state_dict(state["clipping"])  # type: ignore[arg-type]
        if self.privacy is not None and "privacy" in state:
            self.privacy.load_state_dict(state["privacy"])  # type: ignore[arg-type]


def _update_norm(c: CheckedReply, current: dict[str, torch.Tensor], keys: list[str]) -> float:
    total = 0.0
    for k in keys:
        d = c.arrays[k].to(torch.float64) - current[k].to(torch.float64)
        total += float(torch.dot(d.reshape(-1), d.reshape(-1)))
    return math.sqrt(total) if math.isfinite(total) else math.inf


def _scaled(
    c: CheckedReply, current: dict[str, torch.Tensor], keys: list[str], scale: float
) -> CheckedReply:
    arrays = dict(c.arrays)
    for k in keys:
        x0 = current[k].to(torch.float64)
        arrays[k] = (x0 + (c.arrays[k].to(torch.float64) - x0) * scale).to(c.arrays[k].dtype)
    return dataclasses.replace(c, arrays=arrays)


__all__ = ["Plan", "ServerPipeline"]
