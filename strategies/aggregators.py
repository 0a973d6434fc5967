"""Aggregating the bounded updates: the weighted mean, or Flower's own robust rules, reused.

Flower 1.41 ships coordinate median, trimmed mean, Krum, MultiKrum and Bulyan only as
strategies of their own (sibling subclasses of FedAvg), so none can be followed by FedAdam.
Here they are one stage of :class:`strategies.pipeline.ServerPipeline`, before any fedadapt
server method: the computation is Flower's own functions from
``flwr.server.strategy.aggregate`` (``aggregate_median``, ``aggregate_trimmed_avg``,
``aggregate_krum``, ``aggregate_bulyan``), applied to the clients' updates
``Delta_i = x_i - x_t`` of the model's parameters (buffers keep the weighted mean).

References: Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates" (median, trimmed mean), arXiv:1803.01498; Blanchard et al., "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent" (Krum, MultiKrum), NeurIPS 2017; El Mhamdi
et al., "The Hidden Vulnerability of Distributed Learning in Byzantium" (Bulyan),
arXiv:1802.07927.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

AGGREGATORS = ("mean", "median", "trimmed-mean", "krum", "multikrum", "bulyan")


@dataclass(frozen=True)
class Aggregator:
    """Which rule combines the round's updates.

    Args:
        name: ``"mean"`` (example-weighted, the default: FedAvg's), ``"median"`` (coordinate-
            wise), ``"trimmed-mean"`` (``trim_fraction`` cut at each end, per coordinate),
            ``"krum"``, ``"multikrum"`` (the mean of the ``keep`` best-scored), ``"bulyan"``.
        byzantine: the number ``f`` of Byzantine clients Krum, MultiKrum and Bulyan assume
            (Bulyan needs at least ``4 f + 3`` replies; with fewer the round's plain median is
            used and said so).
        trim_fraction: fraction cut at each end by the trimmed mean, in [0, 0.5).
        keep: MultiKrum's number of selected updates (``None``: ``n - f``).
    """

    name: str = "mean"
    byzantine: int = 1
    trim_fraction: float = 0.2
    keep: int | None = None

    def __post_init__(self) -> None:
        if self.name not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {list(AGGREGATORS)}, got {self.name!r}")
        if (
            isinstance(self.byzantine, bool)
            or not isinstance(self.byzantine, int)
            or self.byzantine < 0
        ):
            raise ValueError(f"byzantine_clients must be an int >= 0, got {self.byzantine!r}")
        if not (isinstance(self.trim_fraction, int | float) and 0.0 <= self.trim_fraction < 0.5):
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {self.trim_fraction!r}")
        if self.keep is not None and (not isinstance(self.keep, int) or self.keep < 1):
            raise ValueError(f"multikrum_keep must be an int >= 1 or None, got {self.keep!r}")

    @property
    def needs_per_client_values(self) -> bool:
        """Anything but the mean needs each client's update (no secure aggregation)."""
        return self.name != "mean"

    @property
    def is_mean(self) -> bool:
        return self.name == "mean"

    def aggregate(
        self, updates: Sequence[list[np.ndarray]], weights: Sequence[float]
    ) -> tuple[list[np.ndarray], str]:
        """The aggregate of ``updates`` (one list of arrays per client) and a note (empty, or
        why another rule stood in)."""
        from flwr.server.strategy import aggregate as flwr_agg

        results = [(list(u), float(w)) for u, w in zip(updates, weights, strict=True)]
        n, f = len(results), self.byzantine
        if self.name == "mean":
            return flwr_agg.aggregate(results), ""  # type: ignore[arg-type]
        if self.name == "median" or n < 3:
            note = "" if self.name == "median" else f"{self.name} needs 3 replies, {n} came: median"
            return flwr_agg.aggregate_median(results), note  # type: ignore[arg-type]
        if self.name == "trimmed-mean":
            return flwr_agg.aggregate_trimmed_avg(results, self.trim_fraction), ""  # type: ignore[arg-type]
        if self.name in ("krum", "multikrum"):
            keep = 0 if self.name == "krum" else (self.keep or max(1, n - f))
            return flwr_agg.aggregate_krum(results, f, min(keep, n)), ""  # type: ignore[arg-type]
        if n < 4 * f + 3:
            return flwr_agg.aggregate_median(results), (  # type: ignore[arg-type]
                f"bulyan needs 4 f + 3 = {4 * f + 3} replies, {n} came: median"
            )
        return flwr_agg.aggregate_bulyan(results, f, flwr_agg.aggregate_krum, to_keep=0), ""  # type: ignore[arg-type]


__all__ = ["AGGREGATORS", "Aggregator"]
