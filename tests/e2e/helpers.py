"""Process helpers for end-to-end tests: free ports, environment, stop-by-PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def simulation_superlink(
    tmp: Path, federation: str = "test", cwd: Path | None = None
) -> Iterator[dict[str, str]]:
    """A simulation SuperLink of its own (FLWR_HOME under ``tmp``, a free port, ``federation``
    its default address) while the block runs; yields the environment for `flwr` commands and
    stops the SuperLink by PID afterwards."""
    home = tmp / "flwr-home"
    home.mkdir()
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{federation}"\n[superlink.{federation}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    e = env(home)
    link = start(
        [
            str(BIN / "flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--disable-runtime-dependency-installation",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            str(home / "state.db"),
        ],
        tmp / "superlink.log",
        e,
        cwd=cwd,
    )
    try:
        wait_port(port)
        yield e
    finally:
        stop(link)
    assert link.poll() is not None


@contextlib.contextmanager
def flwr_run_tiny(
    tmp: Path, out: Path, extra_keys: str = ""
) -> Iterator[tuple[Any, dict[str, str]]]:
    """`flwr run .` of a tiny scenario (6 clients, 4 per round, 2 supernodes, 2 rounds, written
    to ``out``; ``extra_keys``: more TOML lines) against a :func:`simulation_superlink`. Yields
    the finished ``flwr run`` (a CompletedProcess) and the environment, while the SuperLink
    still runs (for `flwr ls`)."""
    scenario = tmp / "tiny.toml"
    scenario.write_text(
        'scenario = "tiny"\nnum-clients = 6\nclients-per-round = 4\nnum-supernodes = 2\n'
        f'num-server-rounds = 2\nout-dir = "{out}"\n{extra_keys}'
    )
    with simulation_superlink(tmp) as e:
        run = subprocess.run(
            [
                "flwr",
                "run",
                ".",
                "--run-config",
                str(scenario),
                "--federation-config",
                "num-supernodes=2 client-resources-num-cpus=1",
                "--stream",
            ],
            env=e,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        yield run, e
