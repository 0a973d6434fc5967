"""Flower Message-API strategies that apply fedadapt's methods on the server.

Clients are not nodes: in simulation a population of client ids is sampled with a seeded
generator and split over worker nodes; in a deployment each SuperNode is a client. See
docs/STRATEGIES.md.

Strategies by name (:mod:`strategies.registry`): FedAdapt, the published methods as data
(:mod:`strategies.presets`: ``FedHyper(variant=...)``, ``FedExP()``...) and Flower's own
strategies with fedadapt's sampling (:mod:`strategies.flower_sampling`); an application's
settings become constructor arguments through :mod:`strategies.arguments`.
"""

from .aggregators import AGGREGATORS, Aggregator
from .arguments import StrategySettings, StrategySpec
from .bounds import Clipping, ReplyLimits, WeightCap
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .client import (
    ClientOutcome,
    EvaluateOutcome,
    EvaluatePlan,
    TrainPlan,
    TrainReplyBuilder,
    build_evaluate_reply,
    build_train_reply,
    error_reply,
    read_evaluate_message,
    read_train_message,
)
from .fedadapt_strategy import FedAdapt
from .flower_sampling import (
    FlowerSampling,
    SampledFedAdagrad,
    SampledFedAdam,
    SampledFedAvg,
    SampledFedAvgM,
    SampledFedProx,
    SampledFedYogi,
)
from .options import StrategyOptions
from .orchestration import Orchestration
from .pipeline import ServerPipeline
from .presets import (
    PRESETS,
    AdaptiveFedAvg,
    FedExP,
    FedHyper,
    Flash,
    OracleResetFedAdam,
    Preset,
    PresetStrategy,
)
from .privacy import GaussianPrivacy
from .protocol import ProtocolError
from .registry import (
    available_strategies,
    build_strategy,
    default_client,
    strategy_arguments,
    strategy_spec,
)
from .sampling import Cohort, WorkersNotReady, sample_cohort, sample_nodes, split_over_workers

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "Clipping",
    "GaussianPrivacy",
    "ReplyLimits",
    "ServerPipeline",
    "WeightCap",
    "CheckpointError",
    "ClientOutcome",
    "Cohort",
    "EvaluateOutcome",
    "EvaluatePlan",
    "FedAdapt",
    "FedExP",
    "FedHyper",
    "Flash",
    "AdaptiveFedAvg",
    "OracleResetFedAdam",
    "PRESETS",
    "Preset",
    "PresetStrategy",
    "FlowerSampling",
    "Orchestration",
    "ProtocolError",
    "SampledFedAdagrad",
    "SampledFedAdam",
    "SampledFedAvg",
    "SampledFedAvgM",
    "SampledFedProx",
    "SampledFedYogi",
    "StrategyOptions",
    "StrategySettings",
    "StrategySpec",
    "strategy_arguments",
    "strategy_spec",
    "available_strategies",
    "build_strategy",
    "default_client",
    "TrainPlan",
    "TrainReplyBuilder",
    "WorkersNotReady",
    "build_evaluate_reply",
    "build_train_reply",
    "error_reply",
    "load_checkpoint",
    "read_checkpoint",
    "read_evaluate_message",
    "read_train_message",
    "sample_cohort",
    "sample_nodes",
    "save_checkpoint",
    "split_over_workers",
]
