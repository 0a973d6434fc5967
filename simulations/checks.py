"""Cross-key checks of a run config, and :func:`resolve`, which every entry point calls.

:mod:`simulations.config` declares the keys and coerces each on its own (:func:`~simulations.config.coerce`);
this module checks them together (a key that only makes sense with another, paths and import
paths that must exist, the attack and tracking keys) so that a resolved config is one a run
can be read from (:func:`simulations.reader.read`). Every failure is one
:class:`~simulations.config.ConfigError` naming the key and what is accepted, raised before any
worker starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from simulations.config import KEYS, ConfigError, Value, coerce

__all__ = ["check_config", "json_object", "resolve"]

Config = Mapping[str, Value]


def resolve(
    raw: Mapping[str, object], *, base: Mapping[str, object] | None = None
) -> dict[str, Value]:
    """Defaults <- ``base`` <- ``raw``, every key known and coerced
    (:func:`simulations.config.coerce`), then the cross-key checks (:func:`check_config`) and
    the tracking keys' (:func:`simulations.tracking.check_config`: libraries, URI, paths).
    Idempotent: a resolved config resolves to itself."""
    cfg = coerce(raw, base=base)
    check_config(cfg)
    from simulations.tracking import check_config as check_tracking

    check_tracking(cfg)
    return cfg


def json_object(cfg: Config, key: str) -> dict[str, Any]:
    """The JSON object in ``cfg[key]`` (the ``*-options`` keys); anything else is refused naming the key."""
    text = str(cfg[key])
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"run-config key '{key}': not a JSON object ({exc}): {text!r}") from None
    if not isinstance(opts, dict):
        raise ConfigError(f"run-config key '{key}': expected a JSON object, got {text!r}")
    return opts


def check_config(cfg: Config) -> None:
    """Cross-key checks of a coerced config (called by :func:`resolve`)."""
    for key in ("server-options", "client-options", "model-options", "data-options"):
        json_object(cfg, key)
    from simulations.plugins import check_path

    for key in ("model-factory", "data-loader"):
        if cfg[key]:
            try:
                check_path(key, str(cfg[key]))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    if (cfg["dataset"] == "custom") != bool(cfg["data-loader"]):
        raise ConfigError(
            "run-config keys 'dataset'/'data-loader': your own data needs both, dataset = "
            f"'custom' and data-loader = 'package.module:function' (got dataset "
            f"{cfg['dataset']!r}, data-loader {cfg['data-loader']!r})"
        )
    if cfg["model-factory"] and cfg["model"] != "auto":
        raise ConfigError(
            f"run-config keys 'model' ({cfg['model']!r}) and 'model-factory' "
            f"({cfg['model-factory']!r}) both name a model; accepted: model = 'auto' with "
            "model-factory, or a built-in model without it"
        )
    if int(cfg["clients-per-round"]) > int(cfg["num-clients"]):
        raise ConfigError(
            f"run-config key 'clients-per-round' ({cfg['clients-per-round']}) exceeds "
            f"'num-clients' ({cfg['num-clients']}); accepted: at most num-clients"
        )
    if cfg["dataset"] == "hub" and not cfg["hub-dataset"]:
        raise ConfigError("run-config key 'hub-dataset' must be set when dataset = 'hub'")
    if cfg["drift.kind"] != "none" and int(cfg["drift.round"]) < 1:
        raise ConfigError(
            f"run-config key 'drift.round': drift.kind is {cfg['drift.kind']!r} but drift.round "
            "is 0; accepted: a round >= 1"
        )
    if cfg["drift.kind"] != "none" and int(cfg["drift.round"]) > int(cfg["num-server-rounds"]):
        raise ConfigError(
            f"run-config key 'drift.round' ({cfg['drift.round']}) is after the last round "
            f"({cfg['num-server-rounds']})"
        )
    if cfg["drift.kind"] == "rotation" and cfg["dataset"] in ("synthetic", "mnist1d"):
        raise ConfigError(
            f"run-config key 'drift.kind': rotation needs images, dataset {cfg['dataset']!r} has "
            "none; accepted there: label-permutation, label-shift, noise, feature-shift"
        )
    if cfg["resume-from"]:
        from strategies import CheckpointError, read_checkpoint

        try:
            read_checkpoint(str(cfg["resume-from"]))
        except CheckpointError as exc:
            raise ConfigError(f"run-config key 'resume-from': {exc}") from None
    total_faults = sum(float(cfg[k]) for k in KEYS if k.startswith("faults."))
    if total_faults > 1.0:
        raise ConfigError(
            f"run-config keys 'faults.*' add up to {total_faults:g}; accepted: a total <= 1"
        )
    default_server = KEYS["server-optimizer"].default
    from strategies.registry import strategy_spec

    takes = strategy_spec(str(cfg["strategy"])).takes_server_optimizer
    if not takes and cfg["server-optimizer"] != default_server:
        # Only a strategy whose server method is the caller's choice applies it; say so
        # instead of ignoring it.
        from strategies.registry import available_strategies

        choosers = [n for n in available_strategies() if strategy_spec(n).takes_server_optimizer]
        raise ConfigError(
            f"run-config key 'server-optimizer' ({cfg['server-optimizer']!r}) is not used by "
            f"strategy {cfg['strategy']!r}; accepted: {default_server!r} (the default, unused) "
            f"or a strategy that takes a server method: {choosers}"
        )
    from simulations.attacks import check_config as check_attack  # the attack.* keys

    check_attack(cfg)
