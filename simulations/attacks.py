"""Byzantine clients in a simulated run (``attack.*`` run-config keys; docs/FAULTS.md, "Attacks").

The attacker is *omniscient*, as in the standard benchmarks (ByzFL; Baruch et al.; Xie et al.):
it sits at the server side of the simulation, a Grid wrapper (:class:`AttackGrid`) around the
grid the strategy talks to, and rewrites the Byzantine clients' train replies after every
honest reply of the round is known. Every client trains honestly first (so a Byzantine reply
carries a real example count, loss and step statistics); then the Byzantine clients' models
are replaced by ``x_t + Delta``, where ``x_t`` is the round's global model and ``Delta``:

================ ===========================================================================
``sign-flip``    ``-Delta_own``: the client's own honest update reversed (Allen-Zhu et al.,
                 "Byzantine-Resilient Non-Convex Stochastic Gradient Descent",
                 arXiv:2012.14368)
``scaling``      ``attack.scale x Delta_own`` (a boosted update; Bhagoji et al., "Analyzing
                 Federated Learning through an Adversarial Lens", arXiv:1811.12470)
``alie``         ``mu - z sigma`` per coordinate, ``mu`` and ``sigma`` the mean and standard
                 deviation (``n - 1`` in the denominator) of the round's honest updates
                 ("A Little Is Enough: Circumventing Defenses For Distributed Learning",
                 Baruch et al., NeurIPS 2019, arXiv:1902.06156); ``z = attack.alie-z``, or
                 with ``attack.alie-z = 0`` the paper's ``z_max = Phi^-1((n - s) / n)``,
                 ``s = floor(n / 2 + 1) - f`` for ``n`` replies of which ``f`` Byzantine
``ipm``          ``-eps mu`` (inner-product manipulation, "Fall of Empires: Breaking Byzantine-
                 tolerant SGD by Inner Product Manipulation", Xie et al., UAI 2019,
                 arXiv:1903.03936); ``eps = attack.ipm-epsilon``
``free-rider``   ``0``: the global model back, claiming the examples it was given without
                 training on them
================ ===========================================================================

Every Byzantine client is its own reply, so the strategy sees it as a separate client: with
``reply-mode = per-client`` each client is one message already; with ``reply-mode = mean``
(a worker's reply is the mean of the clients it served) the wrapper sends each Byzantine client
to its worker in a message of its own, and ``mu`` and ``sigma`` are then taken over the honest
replies the server sees (worker means).

Who is Byzantine is a fixed property of the client, from ``(seed, client id)`` as in
:class:`simulations.faults.FaultPlan` (its own stream): ``attack.fraction`` makes that share of
the population Byzantine (so a round has a varying number of them), ``attack.clients = k``
makes the ``k`` cohort members of lowest rank Byzantine in every round (exactly ``k`` of each
cohort). Simulation mode only: a deployment's clients are real processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch

from simulations.config import ConfigError
from simulations.faults import seeded_rank

KINDS = ("none", "sign-flip", "scaling", "alie", "ipm", "free-rider")
_RANK_STREAM = 0xBA


@dataclass(frozen=True)
class AttackPlan:
    """Which clients are Byzantine and what they send (from the ``attack.*`` keys)."""

    kind: str = "none"
    clients: int = 0
    fraction: float = 0.0
    scale: float = 10.0
    alie_z: float = 1.0
    ipm_epsilon: float = 0.5
    seed: int = 0
    num_clients: int = 1

    @property
    def active(self) -> bool:
        return self.kind != "none" and (self.clients > 0 or self.fraction > 0)

    def rank(self, client_id: int) -> int:
        return seeded_rank(client_id, self.seed, self.num_clients, _RANK_STREAM)

    def byzantine(self, cohort: Iterable[int]) -> set[int]:
        """The Byzantine members of a round's cohort."""
        ids = sorted({int(c) for c in cohort})
        if not self.active:
            return set()
        if self.clients > 0:
            return set(sorted(ids, key=self.rank)[: self.clients])
        edge = round(self.fraction * self.num_clients)
        return {c for c in ids if self.rank(c) < edge}

    def alie_factor(self, n: int, f: int) -> float:
        """ALIE's ``z``: the configured one, or the paper's ``z_max`` for ``n`` replies of
        which ``f`` are Byzantine (0 when the formula gives no room)."""
        if self.alie_z > 0:
            return self.alie_z
        s = math.floor(n / 2 + 1) - f
        p = (n - s) / n
        return NormalDist().inv_cdf(p) if 0.5 < p < 1.0 else 0.0

    def craft(
        self,
        own: Mapping[str, torch.Tensor],
        honest: Sequence[Mapping[str, torch.Tensor]],
        n_replies: int,
        n_byzantine: int,
    ) -> dict[str, torch.Tensor]:
        """The Byzantine update ``Delta`` from the client's own honest update and the round's
        honest updates (float64 tensors keyed like the model's floating-point entries)."""
        if self.kind == "sign-flip":
            return {k: -v for k, v in own.items()}
        if self.kind == "scaling":
            return {k: self.scale * v for k, v in own.items()}
        if self.kind == "free-rider":
            return {k: torch.zeros_like(v) for k, v in own.items()}
        if not honest:  # nothing to imitate this round: the honest update goes through
            return dict(own)
        out = {}
        z = self.alie_factor(n_replies, n_byzantine)
        for k in own:
            stack = torch.stack([h[k] for h in honest])
            mu = stack.mean(0)
            if self.kind == "ipm":
                out[k] = -self.ipm_epsilon * mu
            else:  # alie
                sd = stack.std(0) if len(honest) > 1 else torch.zeros_like(mu)
                out[k] = mu - z * sd
        return out


def plan_from_config(cfg: Mapping[str, Any]) -> AttackPlan:
    return AttackPlan(
        kind=str(cfg["attack.kind"]),
        clients=int(cfg["attack.clients"]),
        fraction=float(cfg["attack.fraction"]),
        scale=float(cfg["attack.scale"]),
        alie_z=float(cfg["attack.alie-z"]),
        ipm_epsilon=float(cfg["attack.ipm-epsilon"]),
        seed=int(cfg["seed"]),
        num_clients=int(cfg["num-clients"]),
    )


def check_config(cfg: Mapping[str, Any]) -> None:
    """Cross-key checks of the ``attack.*`` keys (each key's own range is checked by
    :func:`simulations.checks.resolve`); raises :class:`ConfigError` naming the key."""
    kind, k, frac = (
        str(cfg["attack.kind"]),
        int(cfg["attack.clients"]),
        float(cfg["attack.fraction"]),
    )
    if kind == "none":
        if k > 0 or frac > 0:
            raise ConfigError(
                f"run-config keys 'attack.clients' ({k}) / 'attack.fraction' ({frac:g}) name "
                f"Byzantine clients but 'attack.kind' is 'none'; accepted kinds: {list(KINDS[1:])}"
            )
        return
    if k > 0 and frac > 0:
        raise ConfigError(
            "run-config keys 'attack.clients' and 'attack.fraction' are both set; "
            "accepted: one of them (clients per round, or a share of the population)"
        )
    if k == 0 and frac == 0:
        raise ConfigError(
            f"run-config key 'attack.kind' ({kind!r}) needs Byzantine clients: set "
            "'attack.clients' (per round, >= 1) or 'attack.fraction' (in (0, 1])"
        )
    if k > int(cfg["clients-per-round"]):
        raise ConfigError(
            f"run-config key 'attack.clients' ({k}) is more than "
            f"'clients-per-round' ({cfg['clients-per-round']})"
        )
    if bool(cfg["deployment"]):
        raise ConfigError(
            "run-config key 'attack.kind': attacks are simulated (the server side "
            "rewrites replies); accepted with 'deployment = false' only"
        )


# ----------------------------------------------------------------------------- the grid wrapper


def _ids(msg: Any) -> list[int] | None:
    from strategies import records as R

    cfg = msg.content.config_records.get(R.CONFIG)
    if cfg is None or R.CFG_CLIENT_IDS not in cfg:
        return None
    return [int(c) for c in cfg[R.CFG_CLIENT_IDS]]  # type: ignore[union-attr]


def _with_ids(msg: Any, keep: list[int]) -> Any:
    """A copy of train message ``msg`` serving only ``keep`` (same node, same arrays)."""
    from flwr.app import ConfigRecord, Message, RecordDict

    from strategies import records as R

    cfg = msg.content.config_records[R.CONFIG]
    ids = [int(c) for c in cfg[R.CFG_CLIENT_IDS]]
    lrs = list(cfg[R.CFG_CLIENT_LRS]) if R.CFG_CLIENT_LRS in cfg else None
    new_cfg = ConfigRecord(dict(cfg.items()))
    new_cfg[R.CFG_CLIENT_IDS] = keep
    if lrs is not None:
        new_cfg[R.CFG_CLIENT_LRS] = [lrs[ids.index(c)] for c in keep]
    content = RecordDict({k: v for k, v in msg.content.items() if k != R.CONFIG})
    content[R.CONFIG] = new_cfg
    return Message(
        content=content,
        dst_node_id=int(msg.metadata.dst_node_id),
        message_type=msg.metadata.message_type,
    )


def _floats(record: Any) -> dict[str, torch.Tensor]:
    return {
        k: v.to(torch.float64)
        for k, v in record.to_torch_state_dict().items()
        if v.is_floating_point()
    }


class AttackGrid:
    """A Grid whose train replies from Byzantine clients are replaced (module docstring)."""

    def __init__(self, grid: Any, plan: AttackPlan) -> None:
        self._grid = grid
        self.plan = plan
        self.replaced = 0  # Byzantine replies rewritten so far

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Any], *, timeout: float | None = None
    ) -> list[Any]:
        from flwr.app import MessageType

        msgs = list(messages)
        train = [
            m for m in msgs if m.metadata.message_type == MessageType.TRAIN and _ids(m) is not None
        ]
        if not train:
            return list(self._grid.send_and_receive(msgs, timeout=timeout))
        bad = self.plan.byzantine(c for m in train for c in (_ids(m) or []))
        is_train = {id(m) for m in train}
        out_msgs: list[Any] = []
        sent_to: dict[int, Any] = {}  # Byzantine client -> the message that served it alone
        for m in msgs:
            ids = _ids(m) if id(m) in is_train else None
            if not ids or not bad.intersection(ids):
                out_msgs.append(m)
                continue
            honest_ids = [c for c in ids if c not in bad]
            if honest_ids:
                out_msgs.append(_with_ids(m, honest_ids))
            for c in ids:
                if c in bad:
                    single = m if ids == [c] else _with_ids(m, [c])
                    sent_to[c] = single
                    out_msgs.append(single)
        replies = list(self._grid.send_and_receive(out_msgs, timeout=timeout))
        if sent_to:
            self._rewrite(replies, sent_to, train[0])
        return replies

    def _rewrite(self, replies: list[Any], sent_to: dict[int, Any], any_train: Any) -> None:
        from strategies import records as R

        x0 = _floats(any_train.content.array_records[R.ARRAYS])
        honest: list[dict[str, torch.Tensor]] = []
        byz: list[tuple[int, Any]] = []
        for r in replies:
            if r.has_error() or R.ARRAYS not in r.content.array_records:
                continue
            clients = r.content.config_records.get(R.CLIENTS)
            ids = [int(c) for c in clients[R.C_IDS]] if clients is not None else []  # type: ignore[union-attr]
            if len(ids) == 1 and ids[0] in sent_to:
                byz.append((ids[0], r))
                continue
            try:
                state = _floats(r.content.array_records[R.ARRAYS])
                honest.append({k: state[k] - x0[k] for k in x0})
            except (KeyError, RuntimeError, ValueError):  # a malformed reply: validation's job
                continue
        n_replies = len(honest) + len(byz)
        for cid, r in byz:
            own_state = _floats(r.content.array_records[R.ARRAYS])
            own = {k: own_state[k] - x0[k] for k in x0}
            delta = self.plan.craft(own, honest, n_replies, len(byz))
            r.content = _reply_content(sent_to[cid], r, {k: x0[k] + delta[k] for k in x0})
            self.replaced += 1


def _reply_content(sent: Any, reply: Any, model: Mapping[str, torch.Tensor]) -> Any:
    """The reply of one client whose model is ``model`` (the reply's other entries kept:
    example count, losses, step statistics), rebuilt by the ClientApp's own reply builder so
    that any signals it carries match the new model."""
    from strategies import ClientOutcome, TrainReplyBuilder, read_train_message
    from strategies import records as R

    plan = read_train_message(sent)
    clients = reply.content.config_records[R.CLIENTS]
    state = {
        k: (model[k].to(v.dtype) if k in model else v)
        for k, v in reply.content.array_records[R.ARRAYS].to_torch_state_dict().items()
    }

    def first(key: str) -> float:
        values = clients.get(key) or [math.nan]
        return float(values[0])

    outcome = ClientOutcome(
        int(clients[R.C_IDS][0]),
        state,
        int(clients[R.C_NUM_EXAMPLES][0]),
        first(R.C_TRAIN_LOSS),
        {k: first(k) for k in R.STEP_STAT_KEYS},
        start_loss=first(R.C_START_LOSS),
    )
    builder = TrainReplyBuilder(plan)
    builder.add(outcome)
    return builder.content()


def attack_grid(grid: Any, config: Mapping[str, Any]) -> Any:
    """``grid`` wrapped by :class:`AttackGrid` when the run config sets an attack, else
    ``grid`` itself."""
    plan = plan_from_config(config)
    return AttackGrid(grid, plan) if plan.active else grid


__all__ = ["KINDS", "AttackGrid", "AttackPlan", "attack_grid", "check_config", "plan_from_config"]
