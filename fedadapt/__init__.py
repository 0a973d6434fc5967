"""fedadapt: adaptive step-size methods, one PyTorch implementation for clients and the server.

Every method is a ``torch.optim.Optimizer`` registered by name::

    opt = fedadapt.build_optimizer("hd", model.parameters(), lr=0.01)
    server = fedadapt.ServerOptimizer(global_model.parameters(), "hd", lr=1.0)

fedadapt never imports flwr or ray.
"""

from ._mechanism import AdaptiveOptimizer, global_dot
from .hypergradient import HypergradientDescent, MultiplicativeHypergradientDescent
from .registry import available_optimizers, build_optimizer, register_optimizer, step_size_stats
from .server import ServerOptimizer

register_optimizer("hd", HypergradientDescent)
register_optimizer("hd-mult", MultiplicativeHypergradientDescent)

__all__ = [
    "AdaptiveOptimizer",
    "HypergradientDescent",
    "MultiplicativeHypergradientDescent",
    "ServerOptimizer",
    "available_optimizers",
    "build_optimizer",
    "global_dot",
    "register_optimizer",
    "step_size_stats",
]
