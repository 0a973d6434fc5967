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
