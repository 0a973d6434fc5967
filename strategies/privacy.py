"""Differential privacy in the right order, with a maintained accountant (issue 20 §3).

Order (TensorFlow Federated's ``DPAggregator``, DP-FedAdam; McMahan et al., "Learning
Differentially Private Recurrent Language Models", arXiv:1710.06963): each client's update is
clipped to norm ``C`` (:class:`strategies.bounds.Clipping`), the clipped updates are summed,
Gaussian noise :math:`\\mathcal N(0, (zC)^2 I)` is added to the *sum*, the noised mean
:math:`(\\sum_i \\mathrm{clip}(\\Delta_i) + \\xi)/m` is handed to the server method (FedAdam,
cp-adam, ...), whose moments therefore only ever see the privatized aggregate. Flower 1.41's
DP wrappers instead add the noise to the model the inner strategy returns, after FedAdam has
stepped on the un-noised mean (FIELD.md §9): no guarantee.

Clients count equally (``m`` = the round's number of clipped updates): example weights would
let one client's sensitivity exceed ``C``. The privacy spent is computed by Opacus's RDP
accountant (``opacus.accountants.RDPAccountant``; Mironov, "Renyi Differential Privacy",
arXiv:1702.07476; the subsampled Gaussian of Mironov, Talwar, Zhang, arXiv:1908.10530) with the
round's client sampling rate ``q`` and reported per round as ``dp-epsilon`` at ``delta``.

With adaptive clipping (Andrew et al., arXiv:1905.03871) the count of unclipped updates is
noised too (``sigma_b = m / 20``, the paper's choice) and the update noise multiplier is
``z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2``, so the pair spends what ``z`` alone would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class GaussianPrivacy:
    """Gaussian noise on the clipped sum, and its accountant.

    Args:
        noise_multiplier: ``z``, the noise std in units of the clip norm (> 0).
        delta: the ``delta`` at which epsilon is reported.
        sample_rate: the probability that a client takes part in a round (``None``: the
            strategy's ``clients_per_round / num_clients``; a deployment must give it).
        seed: seed of the noise generator (the round is mixed in: reproducible runs).
    """

    noise_multiplier: float
    delta: float = 1e-5
    sample_rate: float | None = None
    seed: int = 0
    epsilon: float = field(default=0.0, init=False)
    rounds: int = field(default=0, init=False)

    needs_per_client_values = False  # noise on the sum

    def __post_init__(self) -> None:
        z = self.noise_multiplier
        if (
            isinstance(z, bool)
            or not isinstance(z, int | float)
            or not (math.isfinite(z) and z > 0)
        ):
            raise ValueError(f"dp_noise_multiplier must be a finite number > 0, got {z!r}")
        if not (isinstance(self.delta, float | int) and 0 < self.delta < 1):
            raise ValueError(f"dp_delta must be in (0, 1), got {self.delta!r}")
        if self.sample_rate is not None and not (0 < float(self.sample_rate) <= 1):
            raise ValueError(f"dp_sample_rate must be in (0, 1], got {self.sample_rate!r}")
        self._history: list[tuple[float, float, int]] = []

    # ------------------------------------------------------------------ noise
    def update_noise_multiplier(self, bit_noise: float) -> float:
        """``z_Delta`` given the adaptive clip's count noise ``sigma_b`` (0: none)."""
        z = float(self.noise_multiplier)
        if bit_noise <= 0:
            return z
        rest = z**-2 - (2.0 * bit_noise) ** -2
        if rest <= 0:
            raise ValueError(
                f"dp_noise_multiplier {z:g} is too small for the adaptive clip's count noise "
                f"sigma_b = {bit_noise:g} (need z < 2 sigma_b)"
            )
        return rest**-0.5

    def generator(self, server_round: int) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), int(server_round), 7])

    # ------------------------------------------------------------------ accounting
    def spend(self, sample_rate: float) -> float:
        """One round at ``sample_rate``; the epsilon spent so far (Opacus's RDP accountant)."""
        from opacus.accountants import RDPAccountant

        q = float(self.sample_rate if self.sample_rate is not None else sample_rate)
        self.rounds += 1
        if self._history and self._history[-1][:2] == (float(self.noise_multiplier), q):
            z, qq, n = self._history[-1]
            self._history[-1] = (z, qq, n + 1)
        else:
            self._history.append((float(self.noise_multiplier), q, 1))
        acc = RDPAccountant()
        acc.history = list(self._history)
        self.epsilon = float(acc.get_epsilon(self.delta))
        return self.epsilon

    def state_dict(self) -> dict[str, object]:
        return {"history": [[z, q, n] for z, q, n in self._history], "rounds": self.rounds}

    def load_state_dict(self, state: dict[str, object]) -> None:
        hist = state.get("history", [])
        rounds = state.get("rounds", 0)
        ok = isinstance(hist, list) and all(
            isinstance(h, list | tuple)
            and len(h) == 3
            and float(h[0]) > 0
            and 0 < float(h[1]) <= 1
            and int(h[2]) >= 1
            for h in hist
        )
        if not ok or not isinstance(rounds, int) or rounds < 0:
            raise ValueError("privacy state: 'history' must list (z > 0, 0 < q <= 1, rounds >= 1)")
        self._history = [(float(z), float(q), int(n)) for z, q, n in hist]  # type: ignore[misc, attr-defined]
        self.rounds = int(rounds)
        if self._history:
            from opacus.accountants import RDPAccountant

            acc = RDPAccountant()
            acc.history = list(self._history)
            self.epsilon = float(acc.get_epsilon(self.delta))


__all__ = ["GaussianPrivacy"]
