"""fedadapt: adaptive step-size methods, one PyTorch implementation for clients and the server.

Every method is a ``torch.optim.Optimizer`` registered by name:

    >>> opt = fedadapt.build_optimizer("hd", model.parameters(), lr=0.01)
    >>> server = fedadapt.ServerOptimizer(global_model.parameters(), "hd", lr=1.0)

A rule wraps a base direction (``direction=``): fedadapt's own ``SGDDirection`` /
``AdamDirection`` (what ``base="sgd"|"adam"`` builds), or any torch optimizer for the scalar
rules (docs/METHODS.md, "Base directions"):

    >>> opt = fedadapt.HypergradientDescent(model.parameters(), lr=1e-3, hyper_lr=1e-6,
    ...                                     direction=fedadapt.TorchDirection(torch.optim.AdamW))

fedadapt never imports flwr or ray.
"""

from ._mechanism import AdaptiveOptimizer, global_dot
from .adaptive_fedavg import AdaptiveFedAvg
from .autodrop import AutoDrop
from .changepoint import ChangeDetector
from .conformity import CProp, conformity_scale
from .cpadam import ChangepointAdam
from .directions import AdamDirection, Direction, SGDDirection, TorchDirection
from .dsa import StructuredSelfAdaptive
from .exponentiated import ExponentiatedGradientStepSize
from .federated import FedExP, FedHyperCL, FedHyperG, FedHyperGM
from .flash import Flash, flash_early_stop
from .hypergradient import HypergradientDescent, MultiplicativeHypergradientDescent
from .registry import (
    DEFAULT_CLIENT_LR_STATE,
    DEFAULT_CLIENT_METHOD,
    DEFAULT_SERVER_METHOD,
    KNOWN_SIGNALS,
    SIG_CLIENT_SQ_MEAN,
    SIG_CLIENT_SQ_NORMS_MEAN,
    SIG_NUM_CLIENTS,
    Federation,
    MethodSpec,
    available_optimizers,
    build_optimizer,
    check_side,
    method_spec,
    methods_for,
    one_pass_window,
    register_optimizer,
    step_size_stats,
)
from .server import ServerOptimizer, default_server_lr, reset_on_change

# What each method is and needs lives with its registration (docs/CONTRACTS.md §1): strategies,
# the CLI and applications read ``method_spec(name)`` and never test a method's name.
# ``carried_lr_bounds`` are each method's own lr bounds (multiples of the configured lr); the
# additive HD has no upper bound within a round, and carries at most 1e3x like multiplicative HD.
register_optimizer("hd", HypergradientDescent, MethodSpec(carried_lr_bounds=(1e-3, 1e3)))
register_optimizer(
    "hd-mult", MultiplicativeHypergradientDescent, MethodSpec(carried_lr_bounds=(1e-3, 1e3))
)
register_optimizer("dsa", StructuredSelfAdaptive, MethodSpec(carried_lr_bounds=(0.1, 10.0)))
# on the server a window counts rounds: one expected pass over the population
register_optimizer(
    "autodrop", AutoDrop, MethodSpec(defaults=one_pass_window, carried_lr_bounds=(1e-3, 1.0))
)
# conformity across clients when the strategy supplies it, else across rounds; the scalar lr
# is not adapted (the per-coordinate scale is), so nothing is carried
register_optimizer(
    "cprop", CProp, MethodSpec(optional_signals=(SIG_CLIENT_SQ_MEAN, SIG_NUM_CLIENTS))
)
register_optimizer("eg", ExponentiatedGradientStepSize, MethodSpec(carried_lr_bounds=(0.1, 10.0)))
register_optimizer(
    "fedexp",
    FedExP,
    MethodSpec(side="server", signals=(SIG_CLIENT_SQ_NORMS_MEAN, SIG_NUM_CLIENTS)),
)
register_optimizer("fedhyper-g", FedHyperG, MethodSpec(side="server"))
register_optimizer("fedhyper-gm", FedHyperGM, MethodSpec(side="server"))
# FedHyper-CL is the clients' local rule (it needs the server's last global update); its
# server form is the same rule over the pseudo-gradient (the differential test keeps both)
register_optimizer(
    "fedhyper-cl",
    FedHyperCL,
    MethodSpec(needs_global_update=True, carried_lr_bounds=(0.1, 10.0)),
)
# the detector reads each client's round-start loss: per-client values
register_optimizer(
    "cp-adam",
    ChangepointAdam,
    MethodSpec(side="server", server_lr=0.1, uses_change_detector=True, per_client_values=True),
)
register_optimizer(
    "flash",
    Flash,
    MethodSpec(side="server", server_lr=0.1, client_hints={"early-stop-gamma": 0.04}),
)
# FedAvg's server step (no step size to set); it schedules the clients' lr per round
register_optimizer("adaptive-fedavg", AdaptiveFedAvg, MethodSpec(side="server", server_lr=None))

__all__ = [
    "DEFAULT_CLIENT_LR_STATE",
    "DEFAULT_CLIENT_METHOD",
    "DEFAULT_SERVER_METHOD",
    "KNOWN_SIGNALS",
    "SIG_CLIENT_SQ_MEAN",
    "SIG_CLIENT_SQ_NORMS_MEAN",
    "SIG_NUM_CLIENTS",
    "AdamDirection",
    "AdaptiveFedAvg",
    "AdaptiveOptimizer",
    "AutoDrop",
    "CProp",
    "ChangeDetector",
    "ChangepointAdam",
    "Direction",
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
    "SGDDirection",
    "ServerOptimizer",
    "StructuredSelfAdaptive",
    "TorchDirection",
    "available_optimizers",
    "build_optimizer",
    "check_side",
    "conformity_scale",
    "default_server_lr",
    "flash_early_stop",
    "global_dot",
    "method_spec",
    "methods_for",
    "one_pass_window",
    "register_optimizer",
    "reset_on_change",
    "step_size_stats",
]
