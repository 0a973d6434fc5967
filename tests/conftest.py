"""Shared test settings: Flower and Ray stay quiet and local, matplotlib draws off-screen."""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# partitions kept between processes go to a folder of this test session, not the user's cache
if "FEDADAPT_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["FEDADAPT_CACHE_DIR"] = tempfile.mkdtemp(prefix="fedadapt-test-cache-")


import pytest  # noqa: E402


@pytest.fixture
def task_identity():
    """Instruction messages need a run/node/task identity (Flower sets it in a ServerApp)."""
    from flwr.supercore.task_identity import TaskIdentity

    old = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = old
