"""Process helpers for end-to-end tests: free ports, environment, stop-by-PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(flwr_home: Path | None = None, **extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        MPLBACKEND="Agg",
        PYTHONUNBUFFERED="1",
    )
    if flwr_home is not None:
        e["FLWR_HOME"] = str(flwr_home)
    e.update(extra)
    return e


def start(
    cmd: list[str], log: Path, env_: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen:
    """Start a process in its own session, output to ``log``."""
    fh = log.open("wb")
    return subprocess.Popen(
        cmd,
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env_,
        cwd=str(cwd or ROOT),
        start_new_session=True,
    )


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process by PID (and its process group, i.e. the children it spawned), then
    SIGKILL what is left."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # the group is the process's own session, started above
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
