"""Synthetic(alpha, beta) of FedProx/LEAF: any population size, each client generated from its id.

Example:

>>> source = SyntheticSource(1_000_000, alpha=0.5, beta=0.5, seed=1)
>>> X, y = source.get(999_999)
>>> X.shape[1], source.num_classes, len(X) == source.client_size(999_999)
(60, 10, True)
"""

from __future__ import annotations

import math

import numpy as np

from simulations.data.source import DEFAULT_CACHE_SIZE, Arrays, ClientDataSource

__all__ = ["SyntheticSource"]


class SyntheticSource(ClientDataSource):
    r"""Synthetic(alpha, beta) of FedProx/LEAF, generated per client from ``(seed, client id)``.

    Client :math:`k` has its own linear-softmax labelling model and its own input mean:

    .. math::
        u_k \sim N(0, \alpha^2),\; W_k, b_k \sim N(u_k, 1),\;
        B_k \sim N(0, \beta^2),\; v_k \sim N(B_k, 1),\;
        x \sim N(v_k, \Sigma),\ \Sigma_{jj} = j^{-1.2},\;
        y = \arg\max (W_k x + b_k)

    ``alpha`` controls how much the labelling models differ across clients, ``beta`` how much
    the inputs do. Client sizes follow a truncated power law (Pareto):
    :math:`n_k = \min(\text{max\_samples}, \lfloor \text{min\_samples}\, U^{-1/a} \rfloor)`,
    :math:`U \sim \mathcal{U}(0, 1]`, :math:`a` = ``size_exponent``. ``iid=True`` gives all
    clients one shared model and input mean (:math:`u = B = 0`), the paper's IID variant.

    Nothing is stored per client: :meth:`get` regenerates a client from its seed (and caches
    the last few). The centralized test set is drawn from ``num_test_clients`` clients spread
    evenly over the population, from a stream separate from their training data.

    Deviation: the LEAF generator draws sizes from a lognormal(4, 2) + 50; this uses a Pareto
    tail (the papers' "power law") capped at ``max_samples`` so one client cannot be huge.
    LEAF's code uses alpha and beta as standard deviations, as here.

    Args:
        num_clients: Population size (any size: nothing per client is allocated).
        alpha: Spread of the labelling models (>= 0).
        beta: Spread of the input means (>= 0).
        iid: Share one model and input mean across clients.
        num_features: Input dimension (60 in the papers).
        num_classes: Number of classes (10 in the papers).
        min_samples: Smallest client size (>= 1).
        max_samples: Largest client size.
        size_exponent: Pareto tail exponent ``a`` (> 0; smaller is more skewed).
        num_test_clients: Clients contributing to the centralized test set.
        test_samples_per_client: Test examples from each of them.
        seed: Seed of the whole population.
        cache_size: LRU cache size.

    References:
        Li et al., "Federated Optimization in Heterogeneous Networks" (FedProx), arXiv:1812.06127;
        Caldas et al., "LEAF: A Benchmark for Federated Settings", arXiv:1812.01097.
    """

    def __init__(
        self,
        num_clients: int,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        iid: bool = False,
        num_features: int = 60,
        num_classes: int = 10,
        min_samples: int = 50,
        max_samples: int = 1000,
        size_exponent: float = 1.5,
        num_test_clients: int = 100,
        test_samples_per_client: int = 20,
        seed: int = 0,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        super().__init__(num_clients, cache_size=cache_size)
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        if num_features < 1 or num_classes < 2:
            raise ValueError(
                f"need num_features >= 1 and num_classes >= 2, got {num_features}, {num_classes}"
            )
        if not 1 <= min_samples <= max_samples:
            raise ValueError(
                f"need 1 <= min_samples <= max_samples, got {min_samples}, {max_samples}"
            )
        if size_exponent <= 0:
            raise ValueError(f"size_exponent must be > 0, got {size_exponent}")
        if num_test_clients < 1 or test_samples_per_client < 1:
            raise ValueError(
                "num_test_clients and test_samples_per_client must be >= 1, got "
                f"{num_test_clients}, {test_samples_per_client}"
            )
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.iid = bool(iid)
        self.num_features = int(num_features)
        self._num_classes = int(num_classes)
        self.min_samples = int(min_samples)
        self.max_samples = int(max_samples)
        self.size_exponent = float(size_exponent)
        self.num_test_clients = int(min(num_test_clients, num_clients))
        self.test_samples_per_client = int(test_samples_per_client)
        self.seed = int(seed)
        self._std = np.power(np.arange(1, num_features + 1, dtype=np.float64), -0.6)  # sqrt(j^-1.2)
        self._test: Arrays | None = None

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.num_features,)

    def client_size(self, client_id: int) -> int:
        """Number of training examples of ``client_id`` (no data is generated)."""
        rng = np.random.default_rng([self.seed, int(client_id), 0])
        u = 1.0 - rng.random()  # (0, 1]
        n = math.floor(self.min_samples * u ** (-1.0 / self.size_exponent))
        return int(min(self.max_samples, max(self.min_samples, n)))

    def _client_model(self, client_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d, c = self.num_features, self._num_classes
        key = [self.seed, 0xFFFFFFFF] if self.iid else [self.seed, int(client_id), 1]
        rng = np.random.default_rng(key)
        u = 0.0 if self.iid else rng.normal(0.0, self.alpha)
        big_b = 0.0 if self.iid else rng.normal(0.0, self.beta)
        W = rng.normal(u, 1.0, size=(d, c))
        b = rng.normal(u, 1.0, size=c)
        v = np.zeros(d) if self.iid else rng.normal(big_b, 1.0, size=d)
        return W, b, v

    def _generate(self, client_id: int, n: int, stream: int) -> Arrays:
        W, b, v = self._client_model(client_id)
        rng = np.random.default_rng([self.seed, int(client_id), stream])
        X = v + rng.normal(size=(n, self.num_features)) * self._std
        y = np.argmax(X @ W + b, axis=1)
        return X.astype(np.float32), y.astype(np.int64)

    def _load(self, client_id: int) -> Arrays:
        return self._generate(client_id, self.client_size(client_id), stream=2)

    def test_client_ids(self) -> np.ndarray:
        """The clients whose held-out examples form :meth:`test_set`."""
        return np.unique(
            np.linspace(0, self.num_clients - 1, self.num_test_clients).round().astype(np.int64)
        )

    def test_set(self) -> Arrays:
        if self._test is None:
            parts = [
                self._generate(int(k), self.test_samples_per_client, stream=3)
                for k in self.test_client_ids()
            ]
            self._test = (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
        return self._test
