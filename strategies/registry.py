"""One registry: every strategy by name, with what it is and which settings it takes.

``build_strategy(name, **kwargs)`` reaches every strategy by name; ``available_strategies()``
lists the names; ``strategy_spec(name)`` is the :class:`StrategySpec` an application reads
(:func:`strategy_arguments` maps its settings through it). The entries come from three places,
each a module of its own: FedAdapt itself, the published methods as data
(:mod:`strategies.presets`) and Flower's own strategies with fedadapt's sampling
(:mod:`strategies.flower_sampling`); the mapping of settings to constructor arguments is
:mod:`strategies.arguments`. The names this module held before that split (``FedHyper``,
``FedExP``, ``Flash``, the ``Sampled*`` classes...) are still importable from it (the ``X as X``
imports); their home is the module named above, and ``strategies`` exports them all.

Example:

>>> "fedexp" in available_strategies() and "fedavgm" in available_strategies()
True
>>> default_client("fedexp"), default_client("fedavg")
(('sgd', 'reset'), ('sgd', 'reset'))
>>> strategy_spec("fedhyper-gm").server_method
'fedhyper-gm'
"""

from __future__ import annotations

from functools import partial

from .arguments import StrategySettings, StrategySpec, spec_arguments
from .fedadapt_strategy import FedAdapt
from .flower_sampling import FlowerSampling as FlowerSampling
from .flower_sampling import SampledFedAdagrad as SampledFedAdagrad
from .flower_sampling import SampledFedAdam as SampledFedAdam
from .flower_sampling import SampledFedAvg as SampledFedAvg
from .flower_sampling import SampledFedAvgM as SampledFedAvgM
from .flower_sampling import SampledFedProx as SampledFedProx
from .flower_sampling import SampledFedYogi as SampledFedYogi
from .orchestration import Orchestration
from .presets import FEDHYPER_PRESETS as FEDHYPER_PRESETS
from .presets import FEDHYPER_VARIANTS as FEDHYPER_VARIANTS
from .presets import PRESETS, Preset, PresetStrategy
from .presets import AdaptiveFedAvg as AdaptiveFedAvg
from .presets import FedExP as FedExP
from .presets import FedHyper as FedHyper
from .presets import Flash as Flash
from .presets import OracleResetFedAdam as OracleResetFedAdam

__all__ = [
    "StrategySettings",
    "StrategySpec",
    "available_strategies",
    "build_strategy",
    "default_client",
    "strategy_arguments",
    "strategy_spec",
]


def _preset_spec(preset: Preset) -> StrategySpec:
    """A published method: FedAdapt with the preset's arguments."""
    return StrategySpec(
        partial(PresetStrategy, preset),
        preset.arguments,
        fedadapt_server=True,
        server_lr_option=preset.server_lr_option,
        server_lr_fallback=preset.server_lr_fallback,
        needs_change_rounds=preset.needs_change_rounds,
        default_client=preset.default_client,
    )


# FedOpt's server lr is its eta, the clients' lr its eta_l
_FEDOPT = {"eta": "server_lr", "eta_l": "client_lr"}

_SPECS: dict[str, StrategySpec] = {
    "fedadapt": StrategySpec(
        FedAdapt,
        fedadapt_server=True,
        server_lr_option=True,
        default_client=FedAdapt.default_client,
    ),
    **{name: _preset_spec(preset) for name, preset in PRESETS.items()},
    "fedavg": StrategySpec(SampledFedAvg),
    "fedavgm": StrategySpec(
        SampledFedAvgM,
        flower_arguments={
            "server_learning_rate": "server_lr",
            "server_momentum": "server_momentum",
        },
        flower_defaults={"server_learning_rate": 1.0},
    ),
    "fedadam": StrategySpec(SampledFedAdam, flower_arguments=_FEDOPT),
    "fedyogi": StrategySpec(SampledFedYogi, flower_arguments=_FEDOPT),
    "fedadagrad": StrategySpec(SampledFedAdagrad, flower_arguments=_FEDOPT),
    "fedprox": StrategySpec(SampledFedProx, flower_arguments={"proximal_mu": "proximal_mu"}),
}


def available_strategies() -> list[str]:
    """Every name :func:`build_strategy` accepts, sorted."""
    return sorted(_SPECS)


def strategy_spec(name: str) -> StrategySpec:
    """The :class:`StrategySpec` of ``name`` (case-insensitive); unknown names raise
    ``ValueError`` listing the accepted ones."""
    key = str(name).lower()
    if key not in _SPECS:
        raise ValueError(f"unknown strategy {name!r}; accepted: {available_strategies()}")
    return _SPECS[key]


def default_client(name: str) -> tuple[str, str]:
    """The client method and lr state strategy ``name`` runs when none is named: fedadapt's
    default client configuration for ``fedadapt`` (and the oracle of its default), ``sgd`` /
    ``reset`` for Flower's strategies and the presets of published methods."""
    return strategy_spec(name).default_client


def build_strategy(name: str, **kwargs: object) -> Orchestration:
    """Build a strategy by name (case-insensitive), e.g.
    ``build_strategy("fedadam", eta=0.01, num_clients=1000, clients_per_round=10, num_workers=5)``."""
    return strategy_spec(name).factory(**kwargs)


def strategy_arguments(name: str, settings: StrategySettings) -> dict[str, object]:
    """The constructor arguments of strategy ``name`` for ``settings`` (see
    :mod:`strategies.arguments`): ``build_strategy(name, **strategy_arguments(name, settings),
    **app_args)``; application arguments (``fraction_evaluate``, ``on_round_end``,
    checkpoints...) are added by the caller."""
    return spec_arguments(strategy_spec(name), settings, name)
