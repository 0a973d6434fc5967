"""The interface every data source implements: per-client arrays on demand, a bounded LRU cache.

A federation reads its data through a :class:`ClientDataSource`: ``get(client_id)`` returns
that client's training arrays, built on demand inside the worker and kept in a small bounded
LRU cache; ``test_set()`` returns the centralized test arrays; ``num_classes`` and
``input_shape`` size the model.

Example (a cache of two clients keeps the two most recently used):

>>> from simulations.data import build_source
>>> source = build_source("synthetic", num_clients=100, cache_size=2)
>>> _ = source.get(5), source.get(7), source.get(5), source.get(9)
>>> source.cached_client_ids()  # least recently used first
[5, 9]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict

import numpy as np

__all__ = ["DEFAULT_CACHE_SIZE", "Arrays", "ClientDataSource"]

Arrays = tuple[np.ndarray, np.ndarray]
"""``(X float32, y int64)``."""

DEFAULT_CACHE_SIZE = 64


class ClientDataSource(ABC):
    """Per-client training data loaded on demand, with a bounded LRU cache.

    Subclasses implement :meth:`_load` (one client's arrays) and :meth:`test_set`. Nothing
    whose size is the population is allocated: only the ``cache_size`` most recently used
    clients are held.

    Args:
        num_clients: The population size; valid ids are ``0 .. num_clients - 1``.
        cache_size: How many clients' arrays to keep (>= 0; 0 disables the cache).
    """

    def __init__(self, num_clients: int, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.num_clients = int(num_clients)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, Arrays] = OrderedDict()

    @property
    @abstractmethod
    def num_classes(self) -> int:
        """Number of classes."""

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example (without the batch axis)."""

    @abstractmethod
    def _load(self, client_id: int) -> Arrays:
        """Build one client's training arrays (uncached)."""

    @abstractmethod
    def test_set(self) -> Arrays:
        """The centralized test arrays ``(X, y)``."""

    def get(self, client_id: int) -> Arrays:
        """Client ``client_id``'s training arrays ``(X float32, y int64)``, cached (LRU)."""
        cid = int(client_id)
        if not 0 <= cid < self.num_clients:
            raise ValueError(f"client_id must be in [0, {self.num_clients}), got {client_id}")
        hit = self._cache.get(cid)
        if hit is not None:
            self._cache.move_to_end(cid)
            return hit
        arrays = self._load(cid)
        if self.cache_size > 0:
            self._cache[cid] = arrays
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return arrays

    def cached_client_ids(self) -> list[int]:
        """Ids currently held in the cache, least recently used first."""
        return list(self._cache)

    def clear_cache(self) -> None:
        """Drop every cached client."""
        self._cache.clear()
