"""Who takes part in a round: the cohort and the nodes its messages go to.

Simulation mode: a seeded cohort of client ids from the population, split over the worker
nodes (``strategies.sampling``). Deployment mode: a seeded sample of the connected SuperNodes,
client id = node id. Waits for nodes speak the mode's words (workers and ``num_workers`` in
simulation; SuperNodes and ``min_available_nodes`` in a deployment).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.serverapp import Grid

from . import sampling
from .options import StrategyOptions

Plan = list[tuple[int, list[int]]]  # [(node id, [client ids]), ...]


class CohortSampler:
    """Draws each round's cohort and the message plan for it."""

    def __init__(self, options: StrategyOptions) -> None:
        self.options = options
        self._settled_workers: int | None = None

    def _simulation_workers(self, grid: Grid) -> list[int]:
        o = self.options
        get: Callable[[], list[int]] = lambda: list(grid.get_node_ids())  # noqa: E731
        if o.num_workers is None:
            if self._settled_workers is None:
                # unknown count: take the registered nodes once their number stopped changing
                nodes = sampling.wait_for_stable_nodes(get, timeout=o.wait_timeout)
                self._settled_workers = len(nodes)
                return nodes
            return sampling.wait_for_nodes(get, 1, timeout=o.wait_timeout)
        nodes = sampling.wait_for_nodes(get, o.num_workers, timeout=o.wait_timeout)
        return nodes[: o.num_workers]

    def plan(
        self,
        server_round: int,
        grid: Grid,
        stream: int,
        k_sim: int | None,
        fraction: float,
        min_nodes: int,
        min_available_nodes: int,
    ) -> tuple[Plan, sampling.Cohort]:
        o = self.options
        if o.simulation_mode:
            assert o.num_clients is not None
            workers = self._simulation_workers(grid)
            k = k_sim if k_sim is not None else (o.clients_per_round or 1)
            cohort = sampling.sample_cohort(
                o.num_clients,
                k,
                seed=o.seed,
                server_round=server_round,
                availability=o.availability,
                stream=stream,
            )
            split = (
                sampling.one_per_client
                if o.reply_mode == "per-client"
                else sampling.split_over_workers
            )
            return split(cohort.client_ids, workers), cohort
        need = max(min_nodes, min_available_nodes, k_sim or 0, 1)
        hint = (
            f"The strategy needs {need} SuperNode(s): the largest of min_available_nodes="
            f"{min_available_nodes}, min_train_nodes/min_evaluate_nodes={min_nodes} and "
            f"clients_per_round={k_sim}. Start more SuperNodes (`flower-supernode --superlink "
            f"...`), lower those settings, or raise worker_wait_timeout."
        )
        nodes = sampling.wait_for_nodes(
            lambda: list(grid.get_node_ids()),
            need,
            timeout=o.wait_timeout,
            what="SuperNode",
            hint=hint,
        )
        k = k_sim if k_sim is not None else max(int(len(nodes) * fraction), min_nodes)
        cohort = sampling.sample_nodes(
            nodes,
            k,
            seed=o.seed,
            server_round=server_round,
            availability=o.availability,
            stream=stream,
        )
        return [(nid, [nid]) for nid in cohort.client_ids], cohort
