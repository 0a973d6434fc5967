"""The federation of a run: :class:`World` (data source, concepts, drift schedule, plans)
built from a :class:`~simulations.settings.WorldSpec` by :func:`world`, cached per process by
the spec itself (the data source by its own settings, so runs that differ only in their
strategy share it). Both sides of a run use it: a worker for its clients' data, the server for
the test set and the model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import torch

from simulations.data import ClientDataSource
from simulations.drift import Concept, DriftSchedule, apply_schedule, current_test_set
from simulations.faults import FaultPlan
from simulations.heterogeneity import Heterogeneity
from simulations.settings import WorldSpec

__all__ = ["World", "world"]


@dataclass
class World:
    """The federation of a :class:`WorldSpec`: data source, concepts, schedule, plans."""

    spec: WorldSpec
    source: ClientDataSource
    concepts: list[Concept]
    schedule: DriftSchedule

    @property
    def het(self) -> Heterogeneity:
        return self.spec.heterogeneity

    @property
    def faults(self) -> FaultPlan:
        return self.spec.faults

    @property
    def seed(self) -> int:
        return self.spec.data.seed

    def model(self) -> torch.nn.Module:
        return self.spec.model.build(self.source.input_shape, self.source.num_classes)

    def template(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """A model of this world on ``device``, built once per process and device, for reading
        shapes, dtypes and keys and for copying; callers never train or modify it. (Building
        one costs ~1.1 ms, paid by every message a worker served: ``torch.manual_seed``
        records a stack trace for each lazily initialised accelerator backend.)"""
        key = str(torch.device(device))
        cache = self.__dict__.setdefault("_templates", {})
        if key not in cache:
            cache[key] = self.model().to(device)
        return cache[key]

    def client_data(self, client_id: int, server_round: int) -> tuple[np.ndarray, np.ndarray]:
        """The client's training data under its current concept in ``server_round``."""
        X, y = self.source.get(int(client_id))
        return apply_schedule(
            X,
            y,
            schedule=self.schedule,
            concepts=self.concepts,
            client_id=int(client_id),
            server_round=int(server_round),
            seed=self.seed,
        )

    def test_data(self, server_round: int) -> tuple[np.ndarray, np.ndarray]:
        """The centralized test set under the population's concept mix in ``server_round``."""
        X, y = self.source.test_set()
        return current_test_set(
            X,
            y,
            schedule=self.schedule,
            concepts=self.concepts,
            server_round=max(int(server_round), 1),
            seed=self.seed,
        )


_SOURCES: dict[str, ClientDataSource] = {}
_WORLDS: dict[str, World] = {}
_CACHE_LIMIT = 4


def world(spec: WorldSpec) -> World:
    """The (cached) federation of ``spec``: a worker builds it once and reuses it for every
    message; the data source is cached by its own settings."""
    key = spec.key()
    if key in _WORLDS:
        return _WORLDS[key]
    data_key = json.dumps(dataclasses.asdict(spec.data), sort_keys=True, default=str)
    source = _SOURCES.get(data_key)
    if source is None:
        source = spec.data.build()
        if len(_SOURCES) >= _CACHE_LIMIT:
            _SOURCES.clear()
        _SOURCES[data_key] = source
    w = World(spec, source, spec.drift.concepts(source.num_classes), spec.drift.schedule())
    if len(_WORLDS) >= _CACHE_LIMIT:
        _WORLDS.clear()
    _WORLDS[key] = w
    return w
