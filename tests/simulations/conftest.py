"""Fixtures shared by the simulation tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_runs(monkeypatch):
    """Fail the test if a run starts (the CLI must refuse the input before any run)."""
    import simulations.experiment as experiment

    def boom(*args, **kwargs):  # pragma: no cover - reaching it is the failure
        raise AssertionError("a run started despite invalid input")

    monkeypatch.setattr(experiment, "run_experiment", boom)
    monkeypatch.setattr(experiment, "run_many", boom)
