"""``FedAdapt``: a Flower ``FedAvg`` whose server step is any fedadapt optimizer."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from logging import INFO

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

import fedadapt

from . import records as R
from .aggregators import Aggregator
from .bounds import Clipping, ReplyLimits, WeightCap
from .options import StrategyOptions, check_optimizer_name, init_flower, split_options
from .orchestration import Orchestration
from .pipeline import Plan, ServerPipeline
from .privacy import GaussianPrivacy
from .validation import CheckedReply

log = logging.getLogger(__name__)


class FedAdapt(Orchestration, FedAvg):
    r"""Federated averaging whose server step is a fedadapt optimizer, with clients decoupled
    from Flower nodes.

    Each round the clients' example-weighted mean model :math:`\bar x` is formed from the
    validated replies and the pseudo-gradient :math:`\hat g_t = x_t - \bar x` is handed to
    ``fedadapt.ServerOptimizer(name=server_optimizer, **server_options)``:

    .. math::

        x_{t+1} = \mathrm{step}_{\text{server\_optimizer}}(x_t, \hat g_t;\ \text{signals})

    so ``server_optimizer="sgd", server_options={"lr": 1.0}`` is FedAvg, ``"adam"`` is FedAdam,
    ``"hd"`` is server hypergradient descent. Buffers (non-float entries, BatchNorm statistics,
    ``buffer_keys``) take the plain weighted mean.

    Args:
        server_optimizer: a server method (``fedadapt.methods_for("server")``); default
            ``fedadapt.DEFAULT_SERVER_METHOD`` (``cp-adam``, docs/DRIFT.md).
        server_options: its hyperparameters. An unset ``lr`` is the method's own default
            (``fedadapt.method_spec(name).server_lr``: 0.1 for ``cp-adam``, 1.0 for ``sgd``);
            what is given wins. (``strategies.strategy_arguments`` also fills the spec's
            federation-dependent defaults, which need the number of rounds.)
        client_optimizer, client_options: the local optimizer every client builds with
            ``fedadapt.build_optimizer`` (sent in the train config every round). The local lr
            is, in this order: the carried lr (``client_lr_state``), ``client_options["lr"]``,
            the train config's ``"lr"`` (a warning when it disagrees with
            ``client_options["lr"]``), the optimizer's default.
        client_lr_state: ``"reset"`` (default: every round starts from ``client_options["lr"]``;
            with a large population a client participates rarely, a step size carried from
            many rounds ago is stale, and reset keeps rounds independent like the published
            baselines), ``"persist"`` (each client's final lr from its last participation,
            kept by the strategy keyed by client id) or ``"server"`` (the clients' final lrs
            aggregated by ``strategies.client_state.aggregate_lrs``, a trimmed geometric mean
            over clients, broadcast to every client next round: FedHyper-SL style). A carried
            lr stays within the client method's ``MethodSpec.carried_lr_bounds`` times
            ``client_options["lr"]``.
        client_lr_on_change: what an alarm of the server's change detector does to the
            carried lrs: ``"keep"`` (default, measured better in RESULTS.md §8.5) or
            ``"restart"`` (the next clients start again from the configured lr).
        num_clients: population size (simulation mode); ``None`` = deployment mode, where each
            connected SuperNode is one client and the client id is the node id. A standard
            Flower ClientApp works in deployment mode with every server method: the server
            computes the per-client statistics a method needs from the replies themselves.
        clients_per_round: cohort size (simulation; in deployment ``None`` uses
            ``fraction_train`` / ``min_train_nodes`` like FedAvg).
        evaluate_clients_per_round: evaluation cohort size (simulation; default
            ``clients_per_round``; 0 disables federated evaluation).
        num_workers: worker nodes to wait for and use (simulation); must agree with the
            federation's ``num-supernodes``.
        seed: cohorts are drawn from ``np.random.default_rng([seed, round, stream])``.
        availability: online probability per client per round, or ``(client_id, round) -> p``.
        reply_mode: ``"mean"`` (one reply per worker) or ``"per-client"``.
        checkpoint_dir, checkpoint_every: write a checkpoint every N rounds.
        on_round_end: called with the round's metrics dict (server lr and step stats, cosine
            between consecutive pseudo-gradients, client step-size summary, train loss, ids
            sampled / succeeded / failed and the reasons).
        extra_train_config: ``round -> dict`` merged into the train config (app keys).
        buffer_keys: state-dict keys averaged but never stepped (besides the automatic ones).
        worker_wait_timeout: seconds to wait for workers (simulation) or SuperNodes
            (deployment) to register; ``None`` (default): 120 s in simulation, 600 s in a
            deployment.
        aggregator, clipping, privacy, weight_cap, reply_limits, sums_only: the stages of the
            server pipeline between validation and the server method (docs/PIPELINE.md):
            ``aggregator`` a :class:`strategies.Aggregator` or its name (``"mean"`` default,
            ``"median"``, ``"trimmed-mean"``, ``"krum"``, ``"multikrum"``, ``"bulyan"``:
            Flower's own rules), ``clipping`` a :class:`strategies.Clipping` (default: an
            update above 10x the cohort's median norm is clipped to it), ``privacy`` a
            :class:`strategies.GaussianPrivacy` (noise on the clipped sum before the server
            method, epsilon from Opacus's RDP accountant), ``weight_cap`` a
            :class:`strategies.WeightCap` (default: no client above 75% of the cohort's
            examples), ``reply_limits`` a :class:`strategies.ReplyLimits` (example counts,
            metrics entries and sizes), ``sums_only``: refuse what secure aggregation cannot
            give (per-client values) before the run starts.
        options: the arguments above as one :class:`strategies.StrategyOptions` (keywords
            given as well override its fields).
        **flower_kwargs: Flower ``FedAvg`` arguments (``fraction_evaluate``, ``min_*_nodes``,
            ``train_metrics_aggr_fn`` / ``evaluate_metrics_aggr_fn`` aggregate the clients'
            own MetricRecord entries, example-weighted by default, beside fedadapt's).

    Example::

        strategy = FedAdapt(server_optimizer="hd", server_options={"lr": 1.0, "hyper_lr": 1e-3},
                            client_optimizer="sgd", client_options={"lr": 0.05},
                            num_clients=10_000, clients_per_round=50, num_workers=10)
        result = strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=100)
    """

    # fedadapt's default client configuration (RESULTS.md §8) when the caller names none
    default_client = (fedadapt.DEFAULT_CLIENT_METHOD, fedadapt.DEFAULT_CLIENT_LR_STATE)

    def __init__(
        self,
        *,
        server_optimizer: str | None = None,
        server_options: Mapping[str, object] | None = None,
        options: StrategyOptions | None = None,
        change_rounds: Iterable[int] = (),
        aggregator: Aggregator | str | None = None,
        clipping: Clipping | None = None,
        privacy: GaussianPrivacy | None = None,
        weight_cap: WeightCap | None = None,
        reply_limits: ReplyLimits | None = None,
        sums_only: bool = False,
        **kwargs: object,
    ) -> None:
        opts, flower_kwargs = split_options(options, kwargs)
        init_flower(FedAvg.__init__, self, flower_kwargs)
        if server_optimizer is None:
            server_optimizer = fedadapt.DEFAULT_SERVER_METHOD
        check_optimizer_name(server_optimizer, "server_optimizer", "server")
        self.server_optimizer = server_optimizer
        self.server_options = _server_options(server_optimizer, server_options)
        # known changepoints (oracle studies): the server optimizer's state is reset there
        self.change_rounds = sorted({int(r) for r in change_rounds})
        # build once on a dummy tensor: bad hyperparameters fail here, not in round 1
        _server_optimizer([torch.zeros(1)], server_optimizer, self.server_options)
        # the method's spec says which per-client signals it needs (and can use: server cprop's
        # conformity across clients), so it never silently falls back
        spec = fedadapt.method_spec(server_optimizer)
        self._init_orchestration(opts, required_signals=spec.wanted_signals)
        # validate -> bound -> aggregate -> privatize -> server method (docs/PIPELINE.md)
        self.pipeline = ServerPipeline(
            limits=reply_limits,
            weight_cap=weight_cap,
            clipping=clipping,
            aggregator=aggregator,
            privacy=privacy,
            sums_only=sums_only,
            method=server_optimizer,
            # a detector's per-client losses have a sums-only form (the cohort's mean loss)
            method_needs_per_client=bool(spec.wanted_signals)
            or (spec.per_client_values and not spec.uses_change_detector),
            population_mean_replies=opts.simulation_mode and opts.reply_mode == "mean",
        )
        if privacy is not None and privacy.sample_rate is None and not opts.simulation_mode:
            raise ValueError(
                "privacy: a deployment must give dp_sample_rate (GaussianPrivacy.sample_rate), "
                "the probability that a client takes part in a round; the accountant needs it"
            )
        self._server = None  # fedadapt.ServerOptimizer over self._params
        self._params: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ Flower API
    def summary(self) -> None:
        flwr_log(
            INFO,
            "\t└──> FedAdapt: server %s %s | client %s %s (lr state %s) | %s",
            self.server_optimizer,
            self.server_options,
            self.client_optimizer,
            self.client_options,
            self.client_lr_state,
            f"population {self.num_clients}, {self.clients_per_round}/round over {self.num_workers} workers"
            if self.simulation_mode
            else "deployment mode (client id = node id)",
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._layout = R.layout_of(arrays)
        self._sync_params(arrays)
        assert self._server is not None
        hints = self._server.client_hints()
        if hints:  # what the server method asks of the clients this round
            config = ConfigRecord(dict(config.items()))
            for k, v in hints.items():
                config[R.CFG_HINT_PREFIX + k] = float(v)
        return self._train_messages(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        t0 = time.perf_counter()
        checked, failures = self._check_replies(server_round, replies)
        checked, bounded, plan = self.pipeline.apply(
            server_round, checked, self._params, self.param_keys(), self._sample_rate()
        )
        failures = failures + bounded
        if not checked:
            # nothing valid: model, server optimizer and client state stay as they are
            info = self._round_info(server_round, [], failures, {}, time.perf_counter() - t0)
            self._finish_round(server_round, info, None)
            return None, self._metric_record(info)
        out = self._aggregate_checked(checked, plan)
        server_info: dict[str, float] = (
            dict(self._server.last_info) if self._server is not None else {}
        )
        server_info.update(plan.info)  # clip bound, clipped count, dp-epsilon
        self._update_client_state(checked, change=bool(server_info.get("change", 0.0)))
        info = self._round_info(
            server_round, checked, failures, server_info, time.perf_counter() - t0
        )
        self._finish_round(server_round, info, out)
        return out, self._metric_record(info)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._evaluate_messages(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self._aggregate_evaluate_checked(server_round, replies)

    # ------------------------------------------------------------------ server side
    def _sync_params(self, arrays: ArrayRecord) -> None:
        """Server copy of the parameters := the round's global arrays (built on first use)."""
        views = {k: R.array_to_tensor(arrays[k]) for k in self.param_keys()}
        if (
            self._server is None
            or set(views) != set(self._params)
            or any(
                views[k].shape != self._params[k].shape or views[k].dtype != self._params[k].dtype
                for k in views
            )
        ):
            self._params = {k: v.clone() for k, v in views.items()}
            self._server = _server_optimizer(
                list(self._params.values()),
                self.server_optimizer,
                self.server_options,
                self.change_rounds,
            )
            return
        with torch.no_grad():
            for k, v in views.items():
                self._params[k].copy_(v)

    def _sample_rate(self) -> float | None:
        """A client's chance to take part in a round (simulation), for the accountant."""
        if self.num_clients and self.clients_per_round:
            return min(1.0, self.clients_per_round / self.num_clients)
        return None

    def _aggregate_checked(
        self, checked: list[CheckedReply], plan: Plan | None = None
    ) -> ArrayRecord:
        assert self._layout is not None and self._server is not None
        total = sum(c.num_examples for c in checked)
        # the pipeline's capped weights (None: the example counts, the exact code of before)
        weights = plan.weights if plan is not None and plan.weights is not None else None
        wtotal = math.fsum(weights) if weights is not None else total
        pseudo = plan.pseudo_gradient if plan is not None else None
        pkeys = self.param_keys()
        mean: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for key in self._layout:
                if pseudo is not None and key in self._params:
                    continue  # the pipeline aggregated the parameters itself
                acc = None
                for i, c in enumerate(checked):
                    x = c.arrays[key]
                    w = c.num_examples / total if weights is None else weights[i] / wtotal
                    if acc is None:
                        # float entries accumulate in their own dtype, in place (like Flower's
                        # FedAvg, one model-sized buffer); integer buffers in float64
                        acc = (
                            torch.mul(x, w)
                            if x.is_floating_point()
                            else x.to(torch.float64).mul_(w)
                        )
                    else:
                        acc.add_(x, alpha=w)
                assert acc is not None
                mean[key] = acc
            signals = self._signals(checked, total, pkeys)
            if pseudo is not None:
                self._server.step_from_pseudo_gradient(pseudo, **signals)
            elif hasattr(self._server, "step_from_pseudo_gradient"):
                # pseudo-gradient x_t - mean, in place in the accumulator (model dtype): no
                # float64 copy of the model, so the server step adds no model-sized buffers
                # beyond the optimizer's own
                for k in pkeys:
                    mean[k].neg_().add_(self._params[k])
                self._server.step_from_pseudo_gradient([mean[k] for k in pkeys], **signals)
            else:
                self._server.step_from_mean([mean[k] for k in pkeys], **signals)
            for k in pkeys:
                mean.pop(k, None)
            out: dict[str, torch.Tensor] = {}
            for key, (dtype, _) in self._layout.items():
                if key in self._params:
                    out[key] = self._params[key]
                else:
                    tdt = R.torch_dtype(dtype)
                    out[key] = (mean[key] if tdt.is_floating_point else mean[key].round()).to(tdt)
        return R.tensors_to_record(out)

    def _signals(
        self, checked: list[CheckedReply], total: int, pkeys: list[str]
    ) -> dict[str, object]:
        want = set(self.required_signals)
        sig: dict[str, object] = {}
        if R.SIG_SQ_NORMS in want:
            s = math.fsum(
                n * v
                for c in checked
                for n, v in zip(c.client_num_examples, c.sq_norms or [], strict=True)
            )
            sig[R.SIG_SQ_NORMS] = s / total
        if R.SIG_NUM_CLIENTS in want:
            sig[R.SIG_NUM_CLIENTS] = sum(len(c.client_ids) for c in checked)
        if R.SIG_SQ_MEAN in want:
            sq = []
            for k in pkeys:
                acc = torch.zeros(self._params[k].shape, dtype=torch.float64)
                for c in checked:
                    assert c.signal_arrays is not None
                    acc.add_(c.signal_arrays[k])
                sq.append(acc.div_(total).to(self._params[k].dtype))
            sig[R.SIG_SQ_MEAN] = sq
        if self._server is not None and self._server.detector is not None:
            sig.update(_start_losses(checked, sums_only=self.pipeline.sums_only))
        return sig

    # ------------------------------------------------------------------ checkpoint hooks
    def identity(self) -> dict[str, object]:
        return {**super().identity(), "server-optimizer": self.server_optimizer}

    def server_state(self) -> dict[str, object]:
        if self._server is None:
            return {}
        return {
            "server_optimizer": self._server.state_dict(),
            "param_keys": list(self._params),
            "pipeline": self.pipeline.state_dict(),
        }

    def load_server_state(self, state: Mapping[str, object], arrays: ArrayRecord) -> None:
        self._layout = R.layout_of(arrays)
        self._current = arrays
        self._server = None
        self._sync_params(arrays)
        if "server_optimizer" in state:
            keys = list(state.get("param_keys", []))  # type: ignore[call-overload]
            if keys != list(self._params):
                raise ValueError(
                    f"checkpoint parameter keys {keys[:5]}... differ from the model's {list(self._params)[:5]}..."
                )
            assert self._server is not None
            self._server.load_state_dict(state["server_optimizer"])  # type: ignore[arg-type]
        if "pipeline" in state:
            self.pipeline.load_state_dict(state["pipeline"])  # type: ignore[arg-type]

    def step_size_setting(self) -> str:
        lr = self.server_options.get("lr")
        now = f", now {lr:g}" if isinstance(lr, int | float) else ""
        return (
            f"run config 'server-lr' (FedAdapt: server_options['lr']{now} for "
            f"{self.server_optimizer!r})"
        )

    def check_resumed_round(self, saved_round: int) -> None:
        if self._server is not None and self._server.round > saved_round:
            raise ValueError(
                f"server_optimizer.round = {self._server.round} is past the checkpoint's round "
                f"{saved_round}"
            )


def _server_options(name: str, given: Mapping[str, object] | None) -> dict[str, object]:
    """The server method's options: its spec's default lr under what the caller gave."""
    lr = fedadapt.method_spec(name).server_lr
    return {**({} if lr is None else {"lr": lr}), **dict(given or {})}


def _server_optimizer(
    params: list[torch.Tensor],
    name: str,
    options: Mapping[str, object],
    change_rounds: Iterable[int] = (),
):  # noqa: ANN202
    import fedadapt

    return fedadapt.ServerOptimizer(params, name, change_rounds=change_rounds, **dict(options))  # type: ignore[arg-type]


def _start_losses(checked: list[CheckedReply], sums_only: bool = False) -> dict[str, object]:
    """The change detector's signal: each client's round-start loss (fedadapt's client calls
    report it); from clients that do not, the training loss they report (a standard Flower
    ClientApp's ``train_loss``), so the detector still sees a drift's jump. ``sums_only``:
    the cohort's example-weighted mean loss, one number (what secure aggregation leaves)."""
    import fedadapt

    start = [
        (n, v)
        for c in checked
        for n, v in zip(c.client_num_examples, c.client_stats[R.C_START_LOSS], strict=True)
    ]
    if start and all(math.isfinite(v) for _, v in start):
        pairs = start
    else:
        pairs = [
            (n, v)
            for c in checked
            for n, v in zip(c.client_num_examples, c.client_stats[R.C_TRAIN_LOSS], strict=True)
        ]
        if not any(math.isfinite(v) for _, v in pairs):
            pairs = [(c.num_examples, c.train_loss) for c in checked]
    pairs = [(n, v) for n, v in pairs if math.isfinite(v)]
    if not pairs:
        return {}
    if sums_only:
        total = math.fsum(float(n) for n, _ in pairs)
        pairs = [(1, math.fsum(n * v for n, v in pairs) / total)]
    return {
        fedadapt.server.START_LOSSES: [v for _, v in pairs],
        fedadapt.server.START_WEIGHTS: [float(n) for n, _ in pairs],
    }


__all__ = ["FedAdapt"]
