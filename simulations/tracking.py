"""Experiment tracking: every run's config, rounds, plots and summary in MLflow and TensorBoard.

Off by default; ``tracking = "mlflow"``, ``"tensorboard"`` or ``"mlflow,tensorboard"`` turns it
on (the optional extra ``pip install 'fedadapt[tracking]'`` brings both libraries). What a run
logs, through each library's own client:

* **MLflow** (:class:`mlflow.MlflowClient`): one run per fedadapt run, named after its run
  directory, in the experiment ``tracking-experiment`` (default: the scenario name) of the store
  ``tracking-uri`` (default: ``sqlite:///<run directory's parent>/mlruns/mlflow.db``, artifacts
  in ``mlruns/artifacts`` beside it; a path or ``file:`` URI is MLflow's file store, a
  ``http(s)://`` URI a tracking server). Parameters: the resolved config (``config.json``; a
  value longer than MLflow's limit is cut, and the run's tag ``fedadapt.truncated-params``
  names it). Metrics: every numeric key of every ``metrics.jsonl`` row with ``step = round``,
  and the summary's numbers as ``summary/<key>``. Artifacts at the end: ``config.json``,
  ``schedule.json``, ``metrics.jsonl``, ``summary.json`` and the plots. A run made by a sweep
  (``fedadapt compare``) carries the tag ``mlflow.parentRunId`` of the sweep's parent run
  (``tracking-parent``, set by :func:`sweep_tracking`).
* **TensorBoard** (:class:`torch.utils.tensorboard.SummaryWriter`): event files in
  ``<tensorboard-dir>/<run directory's name>`` (default ``tensorboard-dir``: ``tensorboard``
  beside the run directory), one scalar per numeric row key with ``step = round``, the config
  as text and as hyperparameters (with the summary's numbers as their metrics), the summary as
  text and the plots as images. A sweep writes one such subdirectory per run under its
  own ``tensorboard`` folder.

Bad keys fail in :func:`check_config` (called by :func:`simulations.checks.resolve`, so before
any worker starts): an unknown backend, a tracking key without its backend, an MLflow URI scheme
MLflow does not know, an unwritable path, or a library that is not installed (naming the package
and the extra). Once a run is going, tracking never stops it: a failure (a server that goes
away, a full disk) is reported once, naming the library and the cause, and that library's
tracking ends there while the run and its own files go on. MLflow calls run on a thread of
their own, so a slow or unreachable server never holds up a round.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from simulations.config import ConfigError, Value

P = ParamSpec("P")
R = TypeVar("R")

INSTALL_HINT = "pip install 'fedadapt[tracking]'"
BACKENDS = ("mlflow", "tensorboard")
# the run-config keys of tracking: a sweep driver that matches finished runs by their config
# leaves these out of the match (the parent run id differs on every invocation)
TRACKING_KEYS = (
    "tracking",
    "tracking-uri",
    "tracking-experiment",
    "tracking-parent",
    "tensorboard-dir",
)
# the schemes of MLflow's tracking stores (a path without a scheme is its file store)
MLFLOW_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
_PACKAGES = {
    "mlflow": ("mlflow", "MLflow (package mlflow-skinny or mlflow)"),
    "tensorboard": ("tensorboard", "TensorBoard (package tensorboard)"),
}
_NEEDS = {
    "tracking-uri": "mlflow",
    "tracking-experiment": "mlflow",
    "tracking-parent": "mlflow",
    "tensorboard-dir": "tensorboard",
}
_RUN_ID = re.compile(r"[A-Za-z0-9][\w-]{0,255}")  # MLflow's own run id pattern
ARTIFACT_SUFFIXES = (".json", ".jsonl", ".png")  # a run directory's files logged at the end
SWEEP_ARTIFACT_SUFFIXES = (".md", ".csv", ".json", ".tex", ".png")  # a sweep root's tables
FINISH_TIMEOUT = 60.0  # seconds the end of a run waits for MLflow calls still queued
PARENT_TIMEOUT = 60.0  # seconds a sweep waits for its parent run to be created


def backends(cfg: Mapping[str, object]) -> tuple[str, ...]:
    """The tracking libraries a config asks for (``tracking``), in a fixed order."""
    named = str(cfg.get("tracking", "none")).split(",")
    return tuple(b for b in BACKENDS if b in named)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules is not there
        return False


def _check_writable(key: str, path: Path) -> None:
    """``path`` is, or can be created as, a directory in a writable folder."""
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"run-config key '{key}': {path} exists and is not a directory; "
            "accepted: a new or existing directory"
        )
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"run-config key '{key}': {parent} (on the way to {path}) is not a writable directory"
        )


def _scheme(uri: str) -> str:
    """The store kind of an MLflow URI: ``sqlite`` for ``sqlite:///...``, ``postgresql`` for
    ``postgresql+psycopg2://...``, ``""`` for a plain path."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", uri)
    if match is None or len(match.group(1)) == 1:  # a Windows drive letter is a path
        return ""
    return match.group(1).split("+")[0].lower()


def _file_store_path(uri: str) -> Path | None:
    """The folder of a file-store URI (a path or ``file:``), None for other stores."""
    scheme = _scheme(uri)
    if scheme == "":
        return Path(uri).expanduser()
    if scheme == "file":
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return None


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (None for other stores or in-memory)."""
    if _scheme(uri) != "sqlite" or not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?")[0])


def check_config(cfg: Mapping[str, Value]) -> None:
    """The tracking keys of a resolved config; raises :class:`ConfigError` naming the key."""
    wanted = backends(cfg)
    for key, backend in _NEEDS.items():
        if cfg.get(key) and backend not in wanted:
            raise ConfigError(
                f"run-config key '{key}' ({cfg[key]!r}) is used by {backend} tracking only, and "
                f"'tracking' is {cfg.get('tracking')!r}; accepted: tracking = '{backend}' or "
                f"'mlflow,tensorboard', or '{key}' left empty"
            )
    for backend in wanted:
        module, what = _PACKAGES[backend]
        if not _installed(module):
            raise ConfigError(
                f"run-config key 'tracking' ({cfg.get('tracking')!r}): {what} is not installed; "
                f"install it with {INSTALL_HINT}"
            )
    uri = str(cfg.get("tracking-uri") or "")
    if uri:
        scheme = _scheme(uri)
        if scheme and scheme not in MLFLOW_SCHEMES:
            raise ConfigError(
                f"run-config key 'tracking-uri' ({uri!r}): MLflow has no store for the scheme "
                f"'{scheme}'; accepted: a path or a URI of scheme " + ", ".join(MLFLOW_SCHEMES)
            )
        folder = _file_store_path(uri)
        db = _sqlite_path(uri)
        if folder is not None:
            _check_writable("tracking-uri", folder)
        elif db is not None and str(db) not in ("", ":memory:"):
            _check_writable("tracking-uri", db.parent)
    parent = str(cfg.get("tracking-parent") or "")
    if parent and not _RUN_ID.fullmatch(parent):
        raise ConfigError(
            f"run-config key 'tracking-parent' ({parent!r}): not an MLflow run id; "
            "accepted: a run id (letters, digits, '_' and '-') or ''"
        )
    if cfg.get("tensorboard-dir"):
        _check_writable("tensorboard-dir", Path(str(cfg["tensorboard-dir"])).expanduser())


# ----------------------------------------------------------------------------- where runs go


@dataclass(frozen=True)
class MlflowTarget:
    """An MLflow store, the experiment in it, and where an experiment created here keeps its
    artifacts (None: the store's own default)."""

    uri: str
    experiment: str
    artifact_location: str | None = None


def default_store(folder: Path) -> str:
    """The default MLflow store of runs written under ``folder``: a SQLite database in
    ``folder/mlruns`` (MLflow's own default backend; its file store is in maintenance mode)."""
    return f"sqlite:///{folder.resolve() / 'mlruns' / 'mlflow.db'}"


def mlflow_target(cfg: Mapping[str, Value], run_dir: Path) -> MlflowTarget:
    """Where a run's MLflow run goes (``tracking-uri``, ``tracking-experiment``)."""
    uri = str(cfg.get("tracking-uri") or "") or default_store(run_dir.parent)
    experiment = str(cfg.get("tracking-experiment") or "") or str(cfg.get("scenario") or "fedadapt")
    db = _sqlite_path(uri)
    artifacts = None
    if db is not None and str(db) not in ("", ":memory:"):
        # beside the database, not MLflow's client-side default ./mlruns of the working folder
        artifacts = (db.resolve().parent / "artifacts").as_uri()
    return MlflowTarget(uri, experiment, artifacts)


def tensorboard_dir(cfg: Mapping[str, Value], run_dir: Path) -> Path:
    """A run's TensorBoard folder: ``<tensorboard-dir>/<run directory's name>``."""
    root = (
        Path(str(cfg.get("tensorboard-dir") or "")).expanduser()
        if cfg.get("tensorboard-dir")
        else run_dir.parent / "tensorboard"
    )
    return root / run_dir.name


# ----------------------------------------------------------------------------- values


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a row or summary (``round`` and flags left out; lists, strings
    and None have no scalar to log)."""
    return {
        str(k): float(v)
        for k, v in values.items()
        if k != "round"
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    }


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The summary's numbers as ``summary/<key>`` (apart from the per-round names)."""
    return {f"summary/{k}": v for k, v in numeric(summary).items()}


def _cause(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text if len(text) <= 300 else text[:297] + "..."


def _warn(library: str, exc: BaseException, where: str) -> None:
    from flwr.common.logger import log

    log(
        WARNING,
        "fedadapt: %s tracking stopped: %s; the run goes on without it (its own files: %s)",
        library,
        _cause(exc),
        where,
    )


# ----------------------------------------------------------------------------- the backends


class Backend(Protocol):
    """One tracking library's side of one run."""

    library: str

    def describe(self) -> str: ...

    def log_row(self, row: Mapping[str, Any]) -> None: ...

    def finish(self, run_dir: Path, summary: Mapping[str, Any], status: str) -> None: ...


class _Queue:
    """Calls run one after another on a daemon thread; the first failure is reported once and
    the rest are dropped. The caller never waits, except in :meth:`close` (bounded)."""

    def __init__(self, library: str, where: str) -> None:
        self.library, self.where = library, where
        self.failed: BaseException | None = None
        self._calls: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=f"fedadapt-{library}", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            if self.failed is not None:
                continue
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - any failure of tracking ends only tracking
                self.failed = exc
                _warn(self.library, exc, self.where)

    def submit(self, call: Callable[[], None]) -> None:
        if self.failed is None:
            self._calls.put(call)

    def close(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) for the queued calls; False if they did not end."""
        self._calls.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _client(uri: str) -> Any:
    """An MLflow client of the store ``uri`` (its folder made first)."""
    folder = _file_store_path(uri)
    if folder is not None:
        # a file store, named by the user: MLflow >= 3.7 refuses it unless this opt-out is
        # set (MLflow's own documented switch; the user's setting, if any, is kept)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        folder.mkdir(parents=True, exist_ok=True)
    db = _sqlite_path(uri)
    if db is not None and str(db) not in ("", ":memory:"):
        db.parent.mkdir(parents=True, exist_ok=True)
    # MLflow announces at INFO each database it creates or upgrades (two lines that land in
    # the middle of the round lines); fedadapt names the store itself (open_run)
    logging.getLogger("mlflow.store.db.utils").setLevel(WARNING)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, target: MlflowTarget) -> str:
    """The experiment's id, created when missing (another run may create it meanwhile)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(target.experiment)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(
            client.create_experiment(target.experiment, artifact_location=target.artifact_location)
        )
    except MlflowException:
        found = client.get_experiment_by_name(target.experiment)
        if found is None:
            raise
        return str(found.experiment_id)


def _param_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        return int(MAX_PARAM_VAL_LENGTH)
    except ImportError:  # pragma: no cover - every supported MLflow has it
        return 500


def params(config: Mapping[str, Any], limit: int | None = None) -> tuple[dict[str, str], list[str]]:
    """The config as MLflow parameters (``str(value)``, MLflow's own conversion) and the keys
    whose value was cut to the length MLflow accepts."""
    limit = _param_limit() if limit is None else limit
    out: dict[str, str] = {}
    cut: list[str] = []
    for key, value in config.items():
        text = str(value)
        if len(text) > limit:
            text = text[: limit - 3] + "..."
            cut.append(str(key))
        out[str(key)] = text
    return out, cut


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _log_params_and_tags(
    client: Any, run_id: str, config: Mapping[str, Any], tags: Mapping[str, str]
) -> None:
    from mlflow.entities import Param, RunTag

    values, cut = params(config)
    all_tags = dict(tags)
    if cut:
        all_tags["fedadapt.truncated-params"] = ",".join(cut)
    for chunk in _chunks([Param(k, v) for k, v in values.items()], 100):
        client.log_batch(run_id, params=list(chunk))
    if all_tags:
        for tag_chunk in _chunks([RunTag(k, v) for k, v in all_tags.items()], 100):
            client.log_batch(run_id, tags=list(tag_chunk))


def _log_metrics(client: Any, run_id: str, values: Mapping[str, float], step: int) -> None:
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    metrics = [Metric(k, v, stamp, step) for k, v in values.items()]
    for chunk in _chunks(metrics, 1000):
        client.log_batch(run_id, metrics=list(chunk))


def _artifact_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    return (
        sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in suffixes)
        if folder.is_dir()
        else []
    )


class MlflowRun:
    """One fedadapt run as an MLflow run; every call goes through a :class:`_Queue`."""

    library = "MLflow"

    def __init__(
        self,
        target: MlflowTarget,
        run_name: str,
        config: Mapping[str, Any],
        tags: Mapping[str, str],
        rows: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.target = target
        self.run_id: str | None = None
        self._client: Any = None
        self._queue = _Queue(self.library, target.uri)
        config, tags, rows = dict(config), dict(tags), [dict(r) for r in rows]

        def start() -> None:
            self._client = _client(target.uri)
            experiment = _experiment_id(self._client, target)
            run = self._client.create_run(experiment, run_name=run_name, tags=tags)
            self.run_id = str(run.info.run_id)
            _log_params_and_tags(self._client, self.run_id, config, {})
            for row in rows:  # a resumed run's rows up to its checkpoint
                _log_metrics(self._client, self.run_id, numeric(row), int(row["round"]))

        self._queue.submit(start)
        self._last_round = max((int(r["round"]) for r in rows), default=0)

    def describe(self) -> str:
        return f"MLflow {self.target.uri} (experiment {self.target.experiment!r})"

    def log_row(self, row: Mapping[str, Any]) -> None:
        values, step = numeric(row), int(row["round"])
        self._last_round = max(self._last_round, step)

        def log() -> None:
            assert self.run_id is not None
            _log_metrics(self._client, self.run_id, values, step)

        self._queue.submit(log)

    def finish(self, run_dir: Path, summary: Mapping[str, Any], status: str) -> None:
        values, step = summary_metrics(summary), self._last_round

        def end() -> None:
            assert self.run_id is not None
            if values:
                _log_metrics(self._client, self.run_id, values, step)
            for path in _artifact_files(run_dir, ARTIFACT_SUFFIXES):
                self._client.log_artifact(self.run_id, str(path))
            self._client.set_terminated(self.run_id, status)

        self._queue.submit(end)
        if not self._queue.close(FINISH_TIMEOUT):
            _warn(
                self.library,
                TimeoutError(f"calls still pending after {FINISH_TIMEOUT:g} s"),
                str(run_dir),
            )


class TensorBoardRun:
    """One fedadapt run as a TensorBoard run folder (``SummaryWriter``, which writes on its own
    thread)."""

    library = "TensorBoard"

    def __init__(
        self, log_dir: Path, config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        fresh = not (log_dir.is_dir() and any(log_dir.glob("events.out.tfevents.*")))
        # a resumed run continues its folder: events after its checkpoint round are dropped
        # (TensorBoard's purge_step); a new folder gets the kept rows again
        resumed_at = max((int(r["round"]) for r in rows), default=None)
        purge = resumed_at + 1 if resumed_at is not None and not fresh else None
        self.log_dir = log_dir
        self.config = dict(config)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)
        self.writer.add_text("config", "```\n" + json.dumps(self.config, indent=2) + "\n```")
        if fresh:
            for row in rows:
                self.log_row(row)

    def describe(self) -> str:
        return f"TensorBoard {self.log_dir}"

    def log_row(self, row: Mapping[str, Any]) -> None:
        step = int(row["round"])
        for key, value in numeric(row).items():
            self.writer.add_scalar(key, value, step)

    def finish(self, run_dir: Path, summary: Mapping[str, Any], status: str) -> None:
        self.writer.add_text(
            "summary", "```\n" + json.dumps(dict(summary), indent=2, default=str) + "\n```"
        )
        self.writer.add_text("status", status)
        for path in _artifact_files(run_dir, (".png",)):
            import matplotlib.image

            self.writer.add_image(
                f"plots/{path.stem}", matplotlib.image.imread(path), dataformats="HWC"
            )
        hparams = {k: v for k, v in self.config.items() if isinstance(v, bool | int | float | str)}
        # the hyperparameters dashboard: the config against the summary's numbers, in this
        # run's own folder (run_name ".")
        self.writer.add_hparams(hparams, summary_metrics(summary), run_name=".")
        self.writer.close()


# ----------------------------------------------------------------------------- one run


@dataclass
class RunTracking:
    """The tracking of one run: the backends its config asks for (none when off). No method
    raises: a library that fails is reported once and dropped."""

    backends: list[Backend] = field(default_factory=list)
    where: str = ""

    @property
    def libraries(self) -> list[str]:
        return [b.library for b in self.backends]

    def _each(self, call: Callable[[Backend], None]) -> None:
        for backend in list(self.backends):
            try:
                call(backend)
            except Exception as exc:  # noqa: BLE001 - tracking never ends a run
                _warn(backend.library, exc, self.where)
                self.backends.remove(backend)

    def guard(self, call: Callable[P, R]) -> Callable[P, R]:
        """``call`` that, if it raises, first ends the tracked run as ``FAILED`` (``KILLED``
        on Ctrl-C) with the files written so far."""

        @functools.wraps(call)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return call(*args, **kwargs)
            except BaseException as exc:
                if self.backends:
                    status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
                    self.finish(Path(self.where), {}, status)
                raise

        return guarded

    def log_row(self, row: Mapping[str, Any]) -> None:
        """One ``metrics.jsonl`` row, ``step = round``."""
        self._each(lambda b: b.log_row(row))

    def finish(
        self, run_dir: Path, summary: Mapping[str, Any] | None = None, status: str = "FINISHED"
    ) -> None:
        """Summary numbers, artifacts from ``run_dir``, the run's end status
        (``FINISHED``, ``FAILED``, ``KILLED``); a second call does nothing."""
        if summary is None:
            path = run_dir / "summary.json"
            try:
                summary = json.loads(path.read_text()) if path.is_file() else {}
            except (OSError, json.JSONDecodeError):
                summary = {}
        done = dict(summary or {})
        self._each(lambda b: b.finish(run_dir, done, status))
        self.backends = []


def run_tags(config: Mapping[str, Any], run_dir: Path) -> dict[str, str]:
    from simulations.tables import strategy_label

    tags = {
        "fedadapt.run-dir": str(run_dir),
        "fedadapt.scenario": str(config.get("scenario")),
        "fedadapt.strategy-label": strategy_label(config),
        "fedadapt.seed": str(config.get("seed")),
    }
    if config.get("tracking-parent"):
        tags["mlflow.parentRunId"] = str(config["tracking-parent"])
    return tags


def open_run(
    config: Mapping[str, Any], run_dir: str | Path, rows: Sequence[Mapping[str, Any]] = ()
) -> RunTracking:
    """Start tracking a run whose resolved config is ``config`` and whose directory is
    ``run_dir``; ``rows`` are the rows it already has (a resumed run's). Off: no backends."""
    run_dir = Path(run_dir).resolve()
    tracking = RunTracking(where=str(run_dir))
    wanted = backends(config)
    if "mlflow" in wanted:
        tracking.backends.append(
            MlflowRun(
                mlflow_target(config, run_dir),
                run_dir.name,
                config,
                run_tags(config, run_dir),
                rows,
            )
        )
    if "tensorboard" in wanted:
        try:
            tracking.backends.append(TensorBoardRun(tensorboard_dir(config, run_dir), config, rows))
        except Exception as exc:  # noqa: BLE001 - tracking never ends a run
            _warn(TensorBoardRun.library, exc, str(run_dir))
    if tracking.backends:
        from flwr.common.logger import log

        log(INFO, "fedadapt: tracking to %s", "; ".join(b.describe() for b in tracking.backends))
    return tracking


# ----------------------------------------------------------------------------- sweeps


@dataclass
class Sweep:
    """A sweep's tracking: the configs its runs must use (``configs[i]`` for the ``i``-th
    config given), the MLflow parent run they nest under, and the TensorBoard folder holding one
    subfolder per run."""

    configs: list[dict[str, Value]]
    parent_run_id: str | None = None
    target: MlflowTarget | None = None
    tensorboard_dir: Path | None = None


def _shared(cfgs: Sequence[Mapping[str, Value]]) -> tuple[dict[str, Value], list[str]]:
    """The keys every config gives the same value (the sweep's parameters) and those that vary
    (run directories and tracking keys left out)."""
    skip = {"out-dir", *TRACKING_KEYS}
    keys = [k for k in cfgs[0] if k not in skip]
    same = {k: cfgs[0][k] for k in keys if all(c.get(k) == cfgs[0][k] for c in cfgs)}
    return same, [k for k in keys if k not in same]


def _with_timeout(call: Callable[[], str], timeout: float) -> str:
    """``call()`` on a daemon thread, waited for at most ``timeout`` s (its error re-raised)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = call()
        except Exception as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    thread = threading.Thread(target=work, name="fedadapt-mlflow-parent", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" in box:
        raise box["error"]
    if "value" not in box:
        raise TimeoutError(f"no answer within {timeout:g} s")
    return str(box["value"])


@contextmanager
def sweep_tracking(
    cfgs: Sequence[Mapping[str, Value]], root: str | Path, name: str | None = None
) -> Iterator[Sweep]:
    """One parent run for a sweep (``fedadapt compare``), its runs nested under it.

    ``cfgs``: the sweep's resolved configs (validated already); ``root``: the sweep's folder.
    Yields a :class:`Sweep` whose ``configs`` are ``cfgs`` with the tracking keys filled in:
    every run of the sweep goes to one MLflow store and experiment (``tracking-uri``, default
    ``sqlite:///<root>/mlruns/mlflow.db``; ``tracking-experiment``, default the scenario) with
    ``tracking-parent`` set to the parent run, and writes its TensorBoard folder under
    ``tensorboard-dir`` (default ``<root>/tensorboard``). Run the sweep from those configs (in
    this process or others). The parent run gets the keys all runs share as parameters, the
    varied keys as the tag ``fedadapt.varied-keys``, the sweep's tables and plots (files of
    ``root`` itself) as artifacts on exit, and the status ``FINISHED``, ``FAILED`` (an
    exception) or ``KILLED`` (Ctrl-C). A config with tracking off is left as it is; with no
    MLflow in any config no parent run is made. Creating the parent never raises: a store
    that fails is reported once and the runs are tracked without a parent.

    Example::

        with sweep_tracking(cfgs, root) as sweep:
            summaries = run_many(sweep.configs)
            write_comparison(root, ...)
    """
    root = Path(root).resolve()
    out = [dict(c) for c in cfgs]
    mlflow_cfgs = [c for c in out if "mlflow" in backends(c)]
    target: MlflowTarget | None = None
    parent: str | None = None
    client: Any = None
    if mlflow_cfgs:
        first = mlflow_cfgs[0]
        uri = str(first.get("tracking-uri") or "") or default_store(root)
        target = mlflow_target({**first, "tracking-uri": uri}, root)
        same, varied = _shared(mlflow_cfgs)
        tags = {
            "fedadapt.sweep-root": str(root),
            "fedadapt.runs": str(len(mlflow_cfgs)),
            "fedadapt.varied-keys": json.dumps(varied),
            "fedadapt.scenario": str(first.get("scenario")),
        }

        def create() -> str:
            nonlocal client
            client = _client(target.uri)
            run = client.create_run(
                _experiment_id(client, target), run_name=name or root.name, tags=tags
            )
            _log_params_and_tags(client, run.info.run_id, same, {})
            return str(run.info.run_id)

        try:
            parent = _with_timeout(create, PARENT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the runs go on without a parent
            _warn("MLflow", exc, f"{root}, the sweep's parent run")
            parent = None
    tb_root: Path | None = None
    for c in out:
        wanted = backends(c)
        if "mlflow" in wanted and target is not None:
            own = str(c.get("tracking-uri") or "") or target.uri
            experiment = str(c.get("tracking-experiment") or "") or target.experiment
            c["tracking-uri"], c["tracking-experiment"] = own, experiment
            if parent is not None and (own, experiment) == (target.uri, target.experiment):
                c["tracking-parent"] = parent
        if "tensorboard" in wanted:
            c["tensorboard-dir"] = str(c.get("tensorboard-dir") or root / "tensorboard")
            tb_root = tb_root or Path(str(c["tensorboard-dir"]))
    sweep = Sweep(out, parent, target, tb_root)
    status = "FINISHED"
    try:
        yield sweep
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if parent is not None and client is not None:
            files = _artifact_files(root, SWEEP_ARTIFACT_SUFFIXES)
            run_id = parent

            def end() -> str:
                for path in files:
                    client.log_artifact(run_id, str(path))
                client.set_terminated(run_id, status)
                return run_id

            try:
                _with_timeout(end, FINISH_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - the sweep's results are on disk
                _warn("MLflow", exc, f"{root}, the sweep's parent run")
