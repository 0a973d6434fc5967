"""Published methods as data: each preset is a :class:`FedAdapt` configuration, not a subclass.

A :class:`Preset` names the FedAdapt arguments a published method fixes (its server method,
its client method), the client configuration it trains with when the caller names none, and
how an application's server lr reaches it. :data:`PRESETS` holds them by registry name;
:class:`PresetStrategy` is the one FedAdapt that runs any of them, so the server methods keep
their own names in ``fedadapt`` (``fedadapt.FedExP`` is the optimizer, ``strategies.FedExP(...)``
builds the strategy that steps with it). Every FedAdapt argument may still be given and
overrides the preset's.

======================  ==================================  ===================================
name                    server step                         client side
======================  ==================================  ===================================
``fedhyper-g``          ``fedhyper-g`` (global lr by HD)    ``client_optimizer`` (default sgd)
``fedhyper-gm``         ``fedhyper-gm`` (G with momentum)   same
``fedhyper-sl``         ``sgd`` lr 1 (FedAvg)               ``hd`` locally, ``client_lr_state=
                                                            "server"``: the mean final local lr
                                                            is broadcast next round
``fedhyper-cl``         ``sgd`` lr 1 (FedAvg)               ``fedhyper-cl`` per local step
``fedhyper-full``       ``fedhyper-gm``                     ``fedhyper-cl``
``fedexp``              ``fedexp``                          ``client_optimizer`` (default sgd)
``flash``               ``flash``                           sgd, early stop (the method's hint)
``adaptive-fedavg``     ``adaptive-fedavg``                 sgd at the lr scale it sends
``fedadam-oracle``      ``cp-adam``, reset at known rounds  fedadapt's default client
======================  ==================================  ===================================

Example:

>>> strategy = FedHyper(variant="GM", num_clients=100, clients_per_round=10, num_workers=2)
>>> strategy.server_optimizer, strategy.client_optimizer, strategy.preset.label
('fedhyper-gm', 'sgd', 'FedHyper')
>>> FedExP(server_options={"eps": 1e-3}).server_options  # the method's default lr, then yours
{'lr': 1.0, 'eps': 0.001}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .fedadapt_strategy import FedAdapt

__all__ = [
    "FEDHYPER_PRESETS",
    "FEDHYPER_VARIANTS",
    "PRESETS",
    "AdaptiveFedAvg",
    "FedExP",
    "FedHyper",
    "Flash",
    "OracleResetFedAdam",
    "Preset",
    "PresetStrategy",
]

# Published methods train their clients with plain local SGD, restarted every round.
_SGD_CLIENTS = ("sgd", "reset")


@dataclass(frozen=True)
class Preset:
    """A published method as a FedAdapt configuration.

    Attributes:
        label: the method's name; a checkpoint's ``strategy`` and the log's.
        server_method: the fedadapt server method (FedAdapt's ``server_optimizer``).
        server_options: its options the method fixes (FedHyper's server lr 1).
        client: the client method (``client_optimizer``) and lr state (``client_lr_state``)
            the method fixes, if it fixes them (FedHyper's SL, CL and FULL).
        default_client: the client method and lr state when neither the method nor the caller
            names one.
        server_lr_option: an application's server lr is ``server_options["lr"]`` (FedExP's
            step is its extrapolation: it has none).
        server_lr_fallback: an unset server lr is the method's ``fedadapt.default_server_lr``;
            ``False``: the preset's own ``server_options`` (Flash, Adaptive-FedAvg, the oracle).
        needs_change_rounds: the strategy takes the drift schedule's ``change_rounds`` (an
            oracle for studies); a checkpoint then records them.
        identity: what else a checkpoint of this preset records (FedHyper's ``variant``).
        reference: the paper.
    """

    label: str
    server_method: str
    server_options: Mapping[str, object] = field(default_factory=dict)
    client: Mapping[str, str] = field(default_factory=dict)
    default_client: tuple[str, str] = _SGD_CLIENTS
    server_lr_option: bool = True
    server_lr_fallback: bool = True
    needs_change_rounds: bool = False
    identity: Mapping[str, object] = field(default_factory=dict)
    reference: str = ""

    @property
    def arguments(self) -> dict[str, object]:
        """The FedAdapt arguments the method fixes (a caller's keyword overrides one)."""
        return {
            "server_optimizer": self.server_method,
            "server_options": dict(self.server_options),
            **self.client,
        }


_FEDHYPER = (
    'Wang, Wang, Li, "FedHyper: A Universal and Robust Learning Rate Scheduler for Federated '
    'Learning with Hypergradient Descent", ICLR 2024, arXiv:2310.03156'
)
_FEDEXP = (
    'Jhunjhunwala, Wang, Joshi, "FedExP: Speeding Up Federated Averaging via Extrapolation", '
    "ICLR 2023, arXiv:2301.09604"
)
_FLASH = 'Panchal et al., "Flash: Concept Drift Adaptation in Federated Learning", ICML 2023'
_ADAPTIVE_FEDAVG = (
    'Canonaco et al., "Adaptive Federated Learning in Presence of Concept Drift", IJCNN 2021'
)
_FEDADAM = 'Reddi et al., "Adaptive Federated Optimization", ICLR 2021, arXiv:2003.00295'


def _fedhyper(
    variant: str, server_method: str, server: Mapping[str, object] | None = None, **client: str
) -> Preset:
    """A FedHyper variant: the server lr starts at 1 (FedAvg's), clients as the variant says."""
    return Preset(
        "FedHyper",
        server_method,
        {"lr": 1.0, **(server or {})},
        client,
        identity={"variant": variant},
        reference=_FEDHYPER,
    )


PRESETS: dict[str, Preset] = {
    # the published rule: the raw inner product of the updates (fedhyper-g's default is its cosine)
    "fedhyper-g": _fedhyper("G", "fedhyper-g", {"hypergradient": "raw"}),
    "fedhyper-gm": _fedhyper("GM", "fedhyper-gm"),
    "fedhyper-sl": _fedhyper("SL", "sgd", client_optimizer="hd", client_lr_state="server"),
    "fedhyper-cl": _fedhyper("CL", "sgd", client_optimizer="fedhyper-cl"),
    "fedhyper-full": _fedhyper("FULL", "fedhyper-gm", client_optimizer="fedhyper-cl"),
    "fedexp": Preset("FedExP", "fedexp", server_lr_option=False, reference=_FEDEXP),
    "flash": Preset("Flash", "flash", server_lr_fallback=False, reference=_FLASH),
    "adaptive-fedavg": Preset(
        "AdaptiveFedAvg", "adaptive-fedavg", server_lr_fallback=False, reference=_ADAPTIVE_FEDAVG
    ),
    # the ceiling of fedadapt's default method: its clients run fedadapt's default client too
    "fedadam-oracle": Preset(
        "OracleResetFedAdam",
        "cp-adam",
        default_client=FedAdapt.default_client,
        server_lr_fallback=False,
        needs_change_rounds=True,
        reference=_FEDADAM,
    ),
}
# FedHyper(variant=...) by variant; what each fixes
FEDHYPER_VARIANTS = ("G", "GM", "SL", "CL", "FULL")
FEDHYPER_PRESETS: dict[str, Mapping[str, object]] = {
    v: PRESETS[f"fedhyper-{v.lower()}"].arguments for v in FEDHYPER_VARIANTS
}


class PresetStrategy(FedAdapt):
    """FedAdapt configured by a :class:`Preset`: its arguments under the caller's keywords.

    A checkpoint records the preset's ``label`` as its strategy (and the preset's
    ``identity``; the known ``change_rounds`` of a preset that takes them), so a run resumes
    only under the same published method.

    Args:
        preset: the method (an entry of :data:`PRESETS`).
        **kwargs: FedAdapt's keyword arguments; each overrides the preset's.
    """

    def __init__(self, preset: Preset, **kwargs: object) -> None:
        self.preset = preset
        self.default_client = preset.default_client  # read by the orchestration's set-up
        # FedAdapt checks every argument's value (and names an unknown one) at construction
        arguments: dict[str, Any] = {**preset.arguments, **kwargs}
        super().__init__(**arguments)

    def identity(self) -> dict[str, object]:
        own: dict[str, object] = {"strategy": self.preset.label, **self.preset.identity}
        if self.preset.needs_change_rounds:
            own["change-rounds"] = list(self.change_rounds)
        return {**super().identity(), **own}


def FedHyper(variant: str = "G", **kwargs: object) -> PresetStrategy:
    """FedHyper (Wang, Wang, Li, ICLR 2024, arXiv:2310.03156) as a FedAdapt configuration.

    ``variant`` (case-insensitive) is one of ``G``, ``GM``, ``SL``, ``CL``, ``FULL`` (the
    module's table, rows ``fedhyper-*``); every FedAdapt argument may still be given and
    overrides the preset. Deviation: the paper's SL computes the local lr on the server from
    the global hypergradient; here the clients adapt their lr with HD and the server broadcasts
    their example-weighted mean (``client_lr_state="server"``), which needs no step-size math
    in the strategy. The released code's SL is a no-op (docs/METHODS.md §9, FedHyper).
    """
    v = str(variant).upper()
    if v not in FEDHYPER_PRESETS:
        raise ValueError(
            f"FedHyper variant must be one of {list(FEDHYPER_VARIANTS)}, got {variant!r}"
        )
    return PresetStrategy(PRESETS[f"fedhyper-{v.lower()}"], **kwargs)


def FedExP(**kwargs: object) -> PresetStrategy:
    """FedExP (Jhunjhunwala, Wang, Joshi, ICLR 2023, arXiv:2301.09604): the server lr is the
    extrapolation ``max(1, mean ||Delta_i||^2 / (2 (||mean Delta||^2 + eps)))``, computed by
    fedadapt's ``fedexp`` from the clients' squared update norms (signal
    ``client_sq_norms_mean`` and ``num_clients``, which its method spec requires). With
    fedadapt's client calls the replies carry them; with a standard Flower ClientApp in a
    deployment the server computes them from each reply's model. ``server_options`` go to
    ``fedexp`` (e.g. ``{"eps": 1e-3}``)."""
    return PresetStrategy(PRESETS["fedexp"], **kwargs)


def Flash(**kwargs: object) -> PresetStrategy:
    """Flash (Panchal et al., "Flash: Concept Drift Adaptation in Federated Learning", ICML
    2023) as a FedAdapt configuration: the server step is fedadapt's ``flash`` (drift-aware
    adaptive step, guarded denominator, docs/DRIFT.md); its clients stop local training early
    on a local validation split (the ``early-stop-gamma`` hint the method declares)."""
    return PresetStrategy(PRESETS["flash"], **kwargs)


def AdaptiveFedAvg(**kwargs: object) -> PresetStrategy:
    """Adaptive-FedAvg (Canonaco et al., "Adaptive Federated Learning in Presence of Concept
    Drift", IJCNN 2021) as a FedAdapt configuration: FedAvg on the server whose parameter-
    variance ratio schedules the clients' lr (fedadapt's ``adaptive-fedavg`` declares the
    ``lr-scale`` hint, which the client calls apply)."""
    return PresetStrategy(PRESETS["adaptive-fedavg"], **kwargs)


def OracleResetFedAdam(**kwargs: object) -> PresetStrategy:
    """FedAdam whose state is reset at the *known* changepoint rounds: an oracle for studies
    only, the ceiling for fedadapt's change detector.

    The server step is ``cp-adam`` (FedAdam, Reddi et al., ICLR 2021, arXiv:2003.00295: eta
    0.1, betas (0.9, 0.99), with cp-adam's scale-free floor) with its detector replaced by the
    known rounds: at each one the same reaction as the default method (the first moment
    restarts, 3x local work for 5 rounds; ``server_options={"reset": "all"}`` restarts both
    moments). ``change_rounds`` are the rounds whose data are the first of a new concept; the
    simulation passes its drift schedule's changepoints. Its clients run fedadapt's default
    client configuration, like ``FedAdapt``'s: it is the ceiling of the default method."""
    return PresetStrategy(PRESETS["fedadam-oracle"], **kwargs)
