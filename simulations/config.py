"""Run-config keys: one table, defaults, and validation that fails before any worker starts.

Every scenario is a TOML file of Flower run-config keys (kebab-case; a TOML table ``[faults]``
becomes dotted keys ``faults.raise-fraction``, exactly as ``flwr run --run-config`` flattens it).
The same resolved dict drives ``flwr run`` (through ``context.run_config``) and
``fedadapt simulate`` (through a closure, because ``run_simulation`` leaves run_config empty).

:data:`KEYS` is the single source of truth: ``pyproject.toml``'s ``[tool.flwr.app.config]``
declares exactly these keys with these defaults (a test checks it), and
``docs/CONFIG.md`` is generated from it (``python -m simulations.config --markdown``).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

Value = bool | int | float | str


class ConfigError(ValueError):
    """A malformed scenario, CLI value or run-config key; the message names the key."""


@dataclass(frozen=True)
class Key:
    """One run-config key: its type, default, what it means and what it accepts."""

    name: str
    default: Value
    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None  # inclusive lower bound for numbers
    high: float | None = None  # inclusive upper bound for numbers
    dynamic_choices: Callable[[], list[str]] | None = field(default=None, compare=False)

    @property
    def kind(self) -> type:
        return type(self.default)

    def accepted(self) -> str:
        if self.dynamic_choices is not None:
            return "one of " + ", ".join(self.dynamic_choices())
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[
            self.kind
        ]
        if self.low is not None and self.high is not None:
            return f"{kind} in [{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{kind} >= {self.low:g}"
        return kind

    def coerce(self, raw: object) -> Value:
        """Return ``raw`` as this key's type, or raise :class:`ConfigError` naming the key."""
        kind = self.kind
        value: Value
        try:
            if isinstance(raw, str) and kind is not str:
                raw = _parse_scalar(raw)
            if kind is bool:
                if not isinstance(raw, bool):
                    raise TypeError
                value = raw
            elif kind is int:
                if isinstance(raw, bool) or not isinstance(raw, int | float):
                    raise TypeError
                if isinstance(raw, float) and not raw.is_integer():
                    raise TypeError
                value = int(raw)
            elif kind is float:
                if isinstance(raw, bool) or not isinstance(raw, int | float):
                    raise TypeError
                value = float(raw)
                if not math.isfinite(value):
                    raise TypeError
            else:
                if not isinstance(raw, str):
                    raise TypeError
                value = raw
        except (TypeError, ValueError):
            raise ConfigError(
                f"run-config key '{self.name}': got {raw!r}; accepted: {self.accepted()}"
            ) from None
        allowed = self.dynamic_choices() if self.dynamic_choices is not None else self.choices
        if allowed is not None and value not in allowed:
            raise ConfigError(
                f"run-config key '{self.name}': got {value!r}; accepted: {self.accepted()}"
            )
        if isinstance(value, int | float) and not isinstance(value, bool):
            if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high
            ):
                raise ConfigError(
                    f"run-config key '{self.name}': got {value!r}; accepted: {self.accepted()}"
                )
        return value


def _parse_scalar(text: str) -> object:
    """Parse a CLI ``--set`` value the way TOML would, falling back to a bare string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    return text


def _server_methods() -> list[str]:
    from fedadapt import methods_for

    return methods_for("server")


def _client_methods() -> list[str]:
    from fedadapt import methods_for

    return [AUTO, *methods_for("client")]


def _strategies() -> list[str]:
    from strategies import available_strategies

    return list(available_strategies())


# a key whose value the strategy chooses (client-optimizer, client-lr-state)
AUTO = "auto"
_DATASETS = ("digits", "mnist1d", "synthetic", "hub", "custom")
_MODELS = ("auto", "mlp", "cnn", "logreg", "tiny")
_PARTITIONERS = ("iid", "dirichlet", "pathological", "shard", "size")
_DRIFT_KINDS = ("none", "label-permutation", "label-shift", "rotation", "noise", "feature-shift")
_TRACKING = ("none", "mlflow", "tensorboard", "mlflow,tensorboard")

_KEY_LIST: list[Key] = [
    # --- what runs
    Key("scenario", "custom", "Scenario name (informational; written into the run directory)."),
    Key(
        "strategy",
        "fedadapt",
        "Strategy from the registry (`fedadapt methods` lists them).",
        dynamic_choices=_strategies,
    ),
    Key(
        "server-optimizer",
        "cp-adam",
        "fedadapt method applied to the pseudo-gradient on the "
        "server (strategy `fedadapt` only); the default `cp-adam` is fedadapt's changepoint-aware "
        "Adam (docs/DRIFT.md). Server-only and both-sides methods (`fedadapt methods`).",
        dynamic_choices=_server_methods,
    ),
    Key(
        "server-lr",
        0.0,
        "Initial server step size; 0 = the method's own default (1.0 for "
        "FedAvg-style server methods, 0.1 for `cp-adam`, Flower's own `eta` for FedAdam and "
        "friends, which take it as `eta`).",
        low=0.0,
    ),
    Key(
        "server-options",
        "{}",
        'JSON object of extra server-optimizer hyperparameters, e.g. `{"hyper_lr": 0.01}`.',
    ),
    Key("server-momentum", 0.9, "Server momentum of `fedavgm`.", low=0.0, high=0.999),
    Key(
        "proximal-mu",
        0.01,
        "Proximal coefficient of `fedprox` (sent in the train config; "
        "`plan.build_optimizer` adds the term on the client, `fedadapt.proximal`).",
        low=0.0,
    ),
    Key(
        "client-optimizer",
        AUTO,
        "fedadapt method used for local training on every client; "
        "client-only and both-sides methods (`fedadapt methods`). `auto`: the strategy's own "
        "(`fedadapt.DEFAULT_CLIENT_METHOD` for `fedadapt`, `sgd` for Flower's strategies and "
        "the published presets; today `sgd` for all, RESULTS.md §8).",
        dynamic_choices=_client_methods,
    ),
    Key("client-lr", 0.05, "Initial local step size.", low=1e-12),
    Key("client-options", "{}", "JSON object of extra client-optimizer hyperparameters."),
    Key(
        "client-lr-state",
        AUTO,
        "Adapted client step size across rounds: `reset` every round, "
        "`persist` from the client's last participation, `server`: aggregated and broadcast; "
        "`auto`: the strategy's own (today `reset` for all).",
        choices=(AUTO, "reset", "persist", "server"),
    ),
    Key(
        "client-lr-on-change",
        "keep",
        "What an alarm of the server's change detector does to "
        "carried client step sizes: `restart` from `client-lr`, or `keep` them.",
        choices=("restart", "keep"),
    ),
    # --- the server pipeline (docs/PIPELINE.md): bound, aggregate, privatize
    Key(
        "reply-mode",
        "mean",
        "Simulation replies: `mean` (one per worker, its clients' mean) or "
        "`per-client` (one per client: needed by clipping, robust aggregators, privacy).",
        choices=("mean", "per-client"),
    ),
    Key(
        "aggregator",
        "mean",
        "How updates combine before the server method: `mean` or Flower's robust rules.",
        choices=("mean", "median", "trimmed-mean", "krum", "multikrum", "bulyan"),
    ),
    Key("byzantine-clients", 1, "Byzantine clients assumed by krum, multikrum and bulyan.", low=0),
    Key("trim-fraction", 0.2, "Fraction cut at each end by `trimmed-mean`.", low=0.0, high=0.49),
    Key(
        "clip-norm",
        0.0,
        "Fixed bound on each update's norm (0 = none; the initial bound of `clip-quantile`).",
        low=0.0,
    ),
    Key(
        "clip-quantile",
        0.0,
        "Adaptive bound at this quantile of the update norms (Andrew et al.; 0 = off).",
        low=0.0,
        high=0.99,
    ),
    Key("clip-lr", 0.2, "Geometric step of the adaptive clip bound.", low=1e-6),
    Key(
        "max-norm-ratio",
        10.0,
        "Updates above this multiple of the cohort's median norm are clipped (0 = off).",
        low=0.0,
    ),
    Key(
        "over-bound",
        "clip",
        "An update above the norm bound is `clip`ped to it or `drop`ped.",
        choices=("clip", "drop"),
    ),
    Key(
        "max-client-share",
        0.75,
        "Largest share of the cohort's weight one client may hold (1 = no cap).",
        low=0.01,
        high=1.0,
    ),
    Key("max-client-examples", 1_000_000_000, "Largest example count a client may claim.", low=1),
    Key("max-reply-metrics", 64, "Largest number of metrics entries in a reply.", low=1),
    Key("max-metric-values", 10_000, "Largest number of metric values in a reply.", low=1),
    Key(
        "dp-noise-multiplier",
        0.0,
        "Gaussian noise on the clipped sum, in clip norms (0 = no "
        "differential privacy; needs clip-norm or clip-quantile).",
        low=0.0,
    ),
    Key(
        "dp-delta",
        1e-5,
        "The delta at which the privacy spent (epsilon) is reported.",
        low=1e-12,
        high=0.5,
    ),
    Key(
        "dp-sample-rate",
        0.0,
        "A client's chance to take part in a round, for the accountant "
        "(0 = clients-per-round / num-clients).",
        low=0.0,
        high=1.0,
    ),
    Key(
        "sums-only",
        False,
        "Refuse what secure aggregation cannot give the server (per-client "
        "values), before any worker starts.",
    ),
    # --- federation size
    Key("num-server-rounds", 10, "Number of rounds.", low=1),
    Key(
        "num-clients",
        20,
        "Population: client ids (data partitions), decoupled from workers.",
        low=1,
    ),
    Key("clients-per-round", 10, "Cohort size sampled from the population each round.", low=1),
    Key(
        "deployment",
        False,
        "Deployment mode (SuperLink + SuperNodes): each SuperNode is one "
        "client, its data the partition named by its node config `partition-id`; the cohort "
        "is sampled among the connected nodes (clients-per-round of them).",
    ),
    Key(
        "num-supernodes",
        0,
        "Worker slots (Flower supernodes). 0: as many as Ray runs at once "
        "(CPUs or GPUs divided by the client resources), capped at clients-per-round.",
        low=0,
    ),
    Key("client-num-cpus", 1.0, "Ray CPUs per worker (`client-resources-num-cpus`).", low=0.01),
    Key(
        "client-num-gpus",
        0.0,
        "Ray GPU fraction per worker (`client-resources-num-gpus`); "
        "clients use CUDA when it is > 0 and a GPU is visible.",
        low=0.0,
        high=1.0,
    ),
    Key("seed", 0, "Run seed: data, partitions, sampling, availability, drift, faults.", low=0),
    # --- local training
    Key("local-epochs", 1.0, "Local epochs per round (fractions allowed).", low=0.0),
    Key(
        "local-steps", 0, "If > 0: exact number of local steps per round (overrides epochs).", low=0
    ),
    Key(
        "local-steps-dist",
        "fixed",
        "Per-client spread of local work.",
        choices=("fixed", "uniform", "lognormal"),
    ),
    Key(
        "local-steps-spread",
        0.0,
        "Spread of the local-work distribution (uniform: +-fraction; lognormal: sigma).",
        low=0.0,
    ),
    Key("batch-size", 32, "Local minibatch size.", low=1),
    # --- data
    Key(
        "dataset",
        "digits",
        "Data set (`custom`: the function named by `data-loader`).",
        choices=_DATASETS,
    ),
    Key(
        "data-loader",
        "",
        'Your own data (with `dataset = "custom"`): '
        "`package.module:function`, called with `data-options`, returning `(X, y)`, "
        "`((X_train, y_train), (X_test, y_test))`, a `datasets.Dataset` or a `DatasetDict`; "
        "partitioned by `partitioner` and drifted like the built-in data (README, "
        '"Your own model and data").',
    ),
    Key("data-options", "{}", "JSON object of keyword arguments for `data-loader`."),
    Key(
        "model",
        "auto",
        "Model (`auto`: an MLP sized for the data set; a CNN for hub data).",
        choices=_MODELS,
    ),
    Key(
        "model-factory",
        "",
        "Your own model: `package.module:function`, called as "
        "`function(input_shape, num_classes, **model-options)` and returning a "
        "`torch.nn.Module` (leave `model` at `auto`).",
    ),
    Key(
        "model-options",
        "{}",
        "JSON object of keyword arguments for the model: for "
        '`model-factory`, or a built-in model\'s (`mlp`: `{"hidden": 128}`).',
    ),
    Key(
        "partitioner",
        "dirichlet",
        "flwr-datasets partitioner of the data pool.",
        choices=_PARTITIONERS,
    ),
    Key("partition-alpha", 0.5, "Dirichlet concentration (dirichlet).", low=1e-6),
    Key("partition-classes", 2, "Classes per client (pathological).", low=1),
    Key("partition-shards", 2, "Shards per client (shard).", low=1),
    Key("synthetic-alpha", 1.0, "Synthetic(alpha, beta): model heterogeneity.", low=0.0),
    Key("synthetic-beta", 1.0, "Synthetic(alpha, beta): data heterogeneity.", low=0.0),
    Key(
        "hub-dataset", "", "flwr-datasets `FederatedDataset` name or `csv`/`parquet` (dataset=hub)."
    ),
    Key("hub-data-files", "", "Local data files for a csv/parquet hub dataset."),
    Key("hub-feature-key", "img", "Feature column of the hub dataset."),
    Key("hub-label-key", "label", "Label column of the hub dataset."),
    Key(
        "test-fraction",
        0.2,
        "Share of the data pool held out as the centralized test set.",
        low=0.0,
        high=0.9,
    ),
    Key("cache-size", 64, "Client partitions kept in each worker's LRU cache.", low=1),
    # --- heterogeneity
    Key(
        "online-prob",
        1.0,
        "Probability that a sampled client is online this round.",
        low=0.0,
        high=1.0,
    ),
    Key(
        "dropout-prob",
        0.0,
        "Probability that a client drops out mid-round (its reply is lost).",
        low=0.0,
        high=1.0,
    ),
    Key("straggler-fraction", 0.0, "Share of clients that are stragglers.", low=0.0, high=1.0),
    Key(
        "straggler-work",
        0.5,
        "Fraction of their local work stragglers complete.",
        low=0.0,
        high=1.0,
    ),
    # --- drift
    Key("drift.kind", "none", "Concept operator applied at changepoints.", choices=_DRIFT_KINDS),
    Key(
        "drift.timing",
        "sudden",
        "How a changepoint unfolds.",
        choices=("sudden", "gradual", "recurring"),
    ),
    Key("drift.round", 0, "Round of the (first) changepoint; 0 = no drift.", low=0),
    Key("drift.width", 1, "Gradual drift: rounds over which the new concept mixes in.", low=1),
    Key("drift.period", 0, "Recurring drift: rounds between concept switches (0 = once).", low=0),
    Key(
        "drift.stagger",
        0,
        "0: all clients switch together; k > 0: client offsets spread over k rounds.",
        low=0,
    ),
    Key(
        "drift.severity",
        1.0,
        "Operator strength (rotation degrees / 90, noise std, shift, label-shift skew).",
        low=0.0,
    ),
    # --- evaluation, outputs, checkpoints
    Key(
        "target-accuracy",
        0.8,
        "Accuracy for `rounds to target` in summary.json.",
        low=0.0,
        high=1.0,
    ),
    Key("recovery-window", 3, "Rounds averaged for the pre-drift accuracy.", low=1),
    Key("eval-every", 1, "Centralized evaluation every k rounds.", low=1),
    Key("out-dir", "", "Run directory ('' = runs/<scenario>-<seed>-<timestamp>)."),
    Key(
        "worker-log",
        "",
        "If set: a JSON-lines file where every worker records, per message, "
        "the client ids it served, its process id and its Ray node (placement diagnostics).",
    ),
    # --- experiment tracking (simulations/tracking.py; README, "Experiment tracking")
    Key(
        "tracking",
        "none",
        "Log every run to MLflow, TensorBoard or both: the resolved config "
        "as parameters, every numeric round metric with step = round, the summary, plots and "
        "run files as artifacts; a sweep's runs nested under one parent run. Needs `pip install "
        "'fedadapt[tracking]'`.",
        choices=_TRACKING,
    ),
    Key(
        "tracking-uri",
        "",
        "MLflow tracking URI: a server (`http://host:5000`), a database "
        "(`sqlite:///path/mlflow.db`) or a file store (a path or `file:/path`); '' = "
        "`sqlite:///<run directory's parent>/mlruns/mlflow.db`, artifacts beside it.",
    ),
    Key("tracking-experiment", "", "MLflow experiment of the run ('' = the scenario name)."),
    Key(
        "tracking-parent",
        "",
        "MLflow run id of the parent run this run is nested under "
        "(`fedadapt compare` sets it: one parent run per sweep; '' = none).",
    ),
    Key(
        "tensorboard-dir",
        "",
        "TensorBoard log folder; the run writes to "
        "`<tensorboard-dir>/<run directory's name>` ('' = `tensorboard` beside the run "
        "directory).",
    ),
    Key("checkpoint-every", 0, "Write a checkpoint every k rounds (0 = never).", low=0),
    Key("resume-from", "", "Checkpoint file to resume from ('' = fresh run)."),
    Key(
        "round-timeout",
        600.0,
        "Seconds to wait for a round's replies; late ones are dropped.",
        low=1.0,
    ),
    Key(
        "client-timeout",
        0.0,
        "Seconds one client may train before its worker reports it as "
        "over the deadline and replies without it (0: 0.8 x round-timeout / clients in the "
        "message). Keeps one hung client from losing its worker's whole reply.",
        low=0.0,
    ),
    Key(
        "worker-wait-timeout",
        120.0,
        "Seconds the ServerApp waits for the worker supernodes.",
        low=1.0,
    ),
    # --- fault injection (issue: keep every run alive under faults)
    Key("faults.raise-fraction", 0.0, "Share of clients whose training raises.", low=0.0, high=1.0),
    Key(
        "faults.crash-fraction",
        0.0,
        "Share of clients that hard-crash their process (os._exit) once.",
        low=0.0,
        high=1.0,
    ),
    Key("faults.nan-fraction", 0.0, "Share of clients that return NaN weights.", low=0.0, high=1.0),
    Key(
        "faults.bad-shape-fraction",
        0.0,
        "Share of clients that return a wrongly shaped array.",
        low=0.0,
        high=1.0,
    ),
    Key(
        "faults.hang-fraction",
        0.0,
        "Share of clients that hang beyond the round timeout.",
        low=0.0,
        high=1.0,
    ),
    # --- Byzantine clients (simulations/attacks.py; docs/FAULTS.md, "Attacks")
    Key(
        "attack.kind",
        "none",
        "What Byzantine clients send (an omniscient attacker at the "
        "server side of the simulation): `sign-flip` (-own update), `scaling` (attack.scale x "
        "own update), `alie` (mean - z std of the honest updates), `ipm` (-eps x their mean), "
        "`free-rider` (the global model back, examples claimed).",
        choices=("none", "sign-flip", "scaling", "alie", "ipm", "free-rider"),
    ),
    Key(
        "attack.clients",
        0,
        "Byzantine clients per round: the cohort's k lowest in a seeded "
        "ranking of client ids (0: use attack.fraction).",
        low=0,
    ),
    Key(
        "attack.fraction",
        0.0,
        "Share of the population that is Byzantine, a fixed property "
        "of the client from (seed, client id) (0: use attack.clients).",
        low=0.0,
        high=1.0,
    ),
    Key("attack.scale", 10.0, "Factor on the own update of a `scaling` attacker."),
    Key(
        "attack.alie-z",
        1.0,
        "z of `alie` (0: the paper's z_max from the round's n and f).",
        low=0.0,
    ),
    Key(
        "attack.ipm-epsilon",
        0.5,
        "eps of `ipm`: the attacker sends -eps x the honest mean.",
        low=0.0,
    ),
]

KEYS: dict[str, Key] = {k.name: k for k in _KEY_LIST}


def defaults() -> dict[str, Value]:
    return {k.name: k.default for k in _KEY_LIST}


def flatten(table: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Flatten nested TOML tables into dotted keys, like ``flwr run --run-config``."""
    out: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def available_scenarios() -> dict[str, str]:
    """Shipped scenario names mapped to their one-line description (the TOML's first comment)."""
    out: dict[str, str] = {}
    for path in sorted(SCENARIO_DIR.glob("*.toml")):
        first = ""
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                first = line.lstrip("# ").strip()
                break
        out[path.stem] = first
    return out


def scenario_path(name_or_path: str) -> Path:
    """A shipped scenario name or a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    shipped = SCENARIO_DIR / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    raise ConfigError(
        f"unknown scenario '{name_or_path}': not a TOML file; shipped scenarios: "
        + ", ".join(available_scenarios())
    )


def load_scenario(name_or_path: str) -> dict[str, object]:
    path = scenario_path(name_or_path)
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario file {path}: not valid TOML ({exc})") from None
    flat = flatten(table)
    flat.setdefault("scenario", path.stem)
    return flat


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``key=value`` strings from the CLI into a dict (values parsed later per key)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def coerce(
    raw: Mapping[str, object], *, base: Mapping[str, object] | None = None
) -> dict[str, Value]:
    """Defaults <- ``base`` <- ``raw``, every key known and coerced on its own. The cross-key
    checks come on top in :func:`simulations.checks.resolve`, which entry points call."""
    merged: dict[str, object] = dict(defaults())
    for layer in (base or {}), raw:
        for key, value in layer.items():
            if key not in KEYS:
                close = [k for k in KEYS if k.split(".")[-1] == key.split(".")[-1]]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(
                    f"unknown run-config key '{key}'{hint}; see docs/CONFIG.md or "
                    "`python -m simulations.config --markdown` for the accepted keys"
                )
            merged[key] = value
    return {name: KEYS[name].coerce(value) for name, value in merged.items()}


def markdown_table() -> str:
    lines = ["| key | default | accepted | meaning |", "|---|---|---|---|"]
    for k in _KEY_LIST:
        accepted = k.accepted() if k.dynamic_choices is None else "see `fedadapt` registries"
        lines.append(f"| `{k.name}` | `{json.dumps(k.default)}` | {accepted} | {k.help} |")
    return "\n".join(lines)


def pyproject_config_section() -> str:
    """The ``[tool.flwr.app.config]`` body that declares every key (kept in sync by a test)."""
    lines = []
    for k in _KEY_LIST:
        name = f'"{k.name}"' if "." in k.name else k.name
        lines.append(f"{name} = {json.dumps(k.default)}")
    return "\n".join(lines)


_DOC_HEADER = """# Run-config keys

Generated by `python -m simulations.config --write` from `simulations/config.py` (the single
source; `pyproject.toml`'s `[tool.flwr.app.config]` declares the same keys with the same
defaults, checked by a test). Keys are kebab-case; a TOML table `[drift]` in a scenario gives
the dotted keys `drift.*`. `fedadapt keys` prints this table; `fedadapt methods` lists the
accepted optimizer and strategy names.

"""
_BEGIN = "# --- keys: generated by `python -m simulations.config --write`"
_END = "# --- end of generated keys"


def write_generated(root: Path) -> None:
    """Rewrite pyproject's key section and docs/CONFIG.md from :data:`KEYS`."""
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    start, end = text.index(_BEGIN), text.index(_END)
    pyproject.write_text(
        text[:start] + _BEGIN + "\n" + pyproject_config_section() + "\n" + text[end:]
    )
    (root / "docs" / "CONFIG.md").write_text(_DOC_HEADER + markdown_table() + "\n")


if __name__ == "__main__":  # pragma: no cover
    import sys

    if "--write" in sys.argv:
        write_generated(Path(__file__).resolve().parents[1])
    elif "--pyproject" in sys.argv:
        print(pyproject_config_section())
    else:
        print(markdown_table())
