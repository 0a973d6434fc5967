"""fedadapt: adaptive step-size methods, one PyTorch implementation for clients and the server.

Every method is a ``torch.optim.Optimizer`` registered by name::

    opt = fedadapt.build_optimizer("hd", model.parameters(), lr=0.01)
    server = fedadapt.ServerOptimizer(global_model.parameters(), "hd", lr=1.0)

fedadapt never imports flwr or ray.
"""

from ._mechanism import AdaptiveOptimizer, global_dot
from .adaptive_fedavg import AdaptiveFedAvg
from .autodrop import AutoDrop
from .changepoint import ChangeDetector
from .conformity import CProp, conformity_scale
from .cpadam import ChangepointAdam
from .dsa import StructuredSelfAdaptive
from .exponentiated import ExponentiatedGradientStepSize
from .federated import FedExP, FedHyperCL, FedHyperG, FedHyperGM
from .flash import Flash, flash_early_stop
from .hypergradient import HypergradientDescent, MultiplicativeHypergradientDescent
from .registry import (
    KNOWN_SIGNALS,
    SIG_CLIENT_SQ_MEAN,
    SIG_CLIENT_SQ_NORMS_MEAN,
    SIG_NUM_CLIENTS,
    Federation,
    MethodSpec,
    available_optimizers,
    build_optimizer,
    method_spec,
    one_pass_window,
    register_optimizer,
    step_size_stats,
)
from .server import ServerOptimizer, default_server_lr, reset_on_change

# What each method needs lives with its registration (docs/CONTRACTS.md §1): strategies and
# applications read ``method_spec(name)`` and never test a method's name.
register_optimizer("hd", HypergradientDescent)
register_optimizer("hd-mult", MultiplicativeHypergradientDescent)
register_optimizer("dsa", StructuredSelfAdaptive)
# on the server a window counts rounds: one expected pass over the population
register_optimizer("autodrop", AutoDrop, MethodSpec(defaults=one_pass_window))
# conformity across clients when the strategy supplies it, else across rounds
register_optimizer(
    "cprop", CProp, MethodSpec(optional_signals=(SIG_CLIENT_SQ_MEAN, SIG_NUM_CLIENTS))
)
register_optimizer("eg", ExponentiatedGradientStepSize)
register_optimizer(
    "fedexp", FedExP, MethodSpec(signals=(SIG_CLIENT_SQ_NORMS_MEAN, SIG_NUM_CLIENTS))
)
register_optimizer("fedhyper-g", FedHyperG)
register_optimizer("fedhyper-gm", FedHyperGM)
register_optimizer("fedhyper-cl", FedHyperCL, MethodSpec(needs_global_update=True))
register_optimizer("cp-adam", ChangepointAdam)
register_optimizer("flash", Flash)
register_optimizer("adaptive-fedavg", AdaptiveFedAvg)

__all__ = [
    "KNOWN_SIGNALS",
    "SIG_CLIENT_SQ_MEAN",
    "SIG_CLIENT_SQ_NORMS_MEAN",
    "SIG_NUM_CLIENTS",
    "AdaptiveFedAvg",
    "AdaptiveOptimizer",
    "AutoDrop",
    "CProp",
    "ChangeDetector",
    "ChangepointAdam",
    "ExponentiatedGradientStepSize",
    "Federation",
    "FedExP",
    "FedHyperCL",
    "Flash",
    "FedHyperG",
    "FedHyperGM",
    "HypergradientDescent",
    "MethodSpec",
    "MultiplicativeHypergradientDescent",
    "ServerOptimizer",
    "StructuredSelfAdaptive",
    "available_optimizers",
    "build_optimizer",
    "conformity_scale",
    "default_server_lr",
    "flash_early_stop",
    "global_dot",
    "method_spec",
    "one_pass_window",
    "register_optimizer",
    "reset_on_change",
    "step_size_stats",
]
