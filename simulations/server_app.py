"""Flower ServerApp for ``flwr run`` (``[tool.flwr.app.components] serverapp``) and its body.

The run config arrives in ``context.run_config`` (pyproject defaults + ``--run-config``); it is
validated and checked first (``simulations.preflight.check_before_workers``), so a malformed key
stops the run before any round with a message naming it. The federation's ``num-supernodes`` is
not visible here: the strategy waits (with a time limit, ``worker-wait-timeout``) for the run
config's worker count and otherwise names both settings.

:func:`serve` builds the model and the strategy, evaluates on the centralized current-concept
test set and on a fixed panel of clients' own current-concept data, and writes the run
directory (:class:`simulations.report.RunWriter`); it takes a
:class:`simulations.settings.RunSpec`, never the config dict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from simulations.checks import resolve
from simulations.preflight import check_before_workers
from simulations.reader import read, strategy_arguments
from simulations.settings import RUN_KEY, EvaluationSettings, RunSpec
from simulations.tracking import open_run
from simulations.world import World, world

RowCallback = Callable[[dict[str, Any]], None]

PANEL_SIZE = 20  # clients whose own current-concept data is evaluated every round


def _accuracy(model: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(X)))
        target = torch.from_numpy(np.ascontiguousarray(y))
        loss = float(torch.nn.functional.cross_entropy(logits, target))
        acc = float((logits.argmax(1) == target).float().mean())
    return acc, loss


def panel_ids(evaluation: EvaluationSettings) -> list[int]:
    """A fixed panel of client ids: the strategies' own seeded sampler (evaluation stream,
    round 0, which training never samples), so no population-sized allocation."""
    from strategies.sampling import EVALUATE_STREAM, sample_cohort

    n = evaluation.num_clients
    cohort = sample_cohort(
        n, min(PANEL_SIZE, n), seed=evaluation.seed, server_round=0, stream=EVALUATE_STREAM
    )
    return sorted(cohort.client_ids)


def make_evaluate(
    w: World, evaluation: EvaluationSettings, writer: Any | None
) -> Callable[[int, Any], Any]:
    """The strategy's ``evaluate_fn``: centralized and panel accuracy, drift events, one row."""
    from flwr.app import MetricRecord

    panel = panel_ids(evaluation)
    every, last = evaluation.every, evaluation.num_rounds
    model = w.model()

    def evaluate(server_round: int, arrays: Any) -> Any:
        row: dict[str, Any] = {}
        if server_round % every == 0 or server_round in (0, last):
            model.load_state_dict(arrays.to_torch_state_dict())
            acc, loss = _accuracy(model, *w.test_data(server_round))
            client_accs = []
            for cid in panel:
                Xp, yp = w.client_data(cid, max(server_round, 1))
                if len(yp):
                    client_accs.append(_accuracy(model, Xp, yp)[0])
            row = {
                "accuracy": acc,
                "loss": loss,
                "client-accuracy": float(np.mean(client_accs)) if client_accs else None,
            }
        row["drift-events"] = (
            [
                f"start cp{e.changepoint} {e.from_concept}->{e.to_concept} offset {e.offset}"
                for e in w.schedule.events(server_round)
            ]
            if server_round >= 1
            else []
        )
        if writer is not None:
            writer.add(server_round, row)
            writer.flush(server_round)
        metrics: dict[str, int | float | list[int] | list[float]] = {
            k: float(v) for k, v in row.items() if isinstance(v, float)
        }
        return MetricRecord(metrics) if metrics else None

    return evaluate


def make_strategy(
    spec: RunSpec,
    on_round_end: Callable[[dict[str, object]], None] | None,
    checkpoint_dir: str | None,
) -> Any:
    """The run's strategy from the registry, with fedadapt's sampling over the population."""
    from strategies import build_strategy

    kwargs = strategy_arguments(spec.strategy, spec.strategy_settings)
    key = spec.run_key
    kwargs["extra_train_config"] = lambda server_round: {RUN_KEY: key}
    kwargs["on_round_end"] = on_round_end
    kwargs["checkpoint_dir"] = checkpoint_dir
    kwargs["checkpoint_every"] = spec.output.checkpoint_every if checkpoint_dir else 0
    from simulations.runtime import FRACTION_EVALUATE_NOTICE, quiet_flower

    with quiet_flower(FRACTION_EVALUATE_NOTICE):  # off on purpose: evaluation is the server's
        return build_strategy(spec.strategy, **kwargs)


def warm_up(grid: Any, spec: RunSpec) -> None:
    """Wait for the worker supernodes, then have each build the run's federation (data
    source, model) before round 1, so that Ray's actor start-up and the first data load are
    not charged to round 1's timeout. Bounded by ``worker-wait-timeout``."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from strategies.sampling import wait_for_nodes

    runtime = spec.runtime
    timeout = runtime.worker_wait_timeout
    start = time.time()
    nodes = wait_for_nodes(grid.get_node_ids, runtime.num_workers, timeout=timeout)
    msgs = [
        Message(
            RecordDict({"config": ConfigRecord({RUN_KEY: spec.run_key})}),
            dst_node_id=int(n),
            message_type=MessageType.QUERY,
        )
        for n in nodes[: runtime.num_workers]
    ]
    left = max(1.0, timeout - (time.time() - start))
    replies = list(grid.send_and_receive(msgs, timeout=left))
    bad = [r.error.reason for r in replies if r.has_error()]
    if bad:
        raise RuntimeError(f"workers could not set up the run: {bad[0]}")


def serve(grid: Any, spec: RunSpec, on_row: RowCallback | None = None) -> dict[str, Any]:
    """The ServerApp body: run every round, write the run directory, return the summary."""
    from flwr.app import ArrayRecord

    from simulations.report import RunWriter
    from simulations.resilience import RetryingGrid
    from strategies import read_checkpoint

    out = spec.output.directory().resolve()
    resume_round = None
    if spec.output.resume_from:
        resume_round = int(read_checkpoint(spec.output.resume_from)["round"])
    w = world(spec.world)
    writer = RunWriter(
        out, spec.config, resume_round=resume_round, changepoints=w.schedule.changepoint_rounds()
    )
    if on_row is not None:
        original = writer.flush

        def flush_and_tell(server_round: int) -> dict[str, Any]:
            row = original(server_round)
            on_row(row)
            return row

        writer.flush = flush_and_tell  # type: ignore[method-assign]

    def on_round_end(info: dict[str, object]) -> None:
        writer.add(int(info["round"]), info)  # type: ignore[call-overload]

    ckpt_dir = str(out / "checkpoints") if spec.output.checkpoint_every > 0 else None
    strategy = make_strategy(spec, on_round_end, ckpt_dir)
    # `auto` keys name what the strategy chose (its default client configuration)
    writer.resolve(
        {"client-optimizer": strategy.client_optimizer, "client-lr-state": strategy.client_lr_state}
    )
    initial = ArrayRecord(w.model().state_dict())
    if spec.output.resume_from:
        strategy.load_checkpoint(spec.output.resume_from)
    if not spec.runtime.deployment:
        warm_up(grid, spec)
    from simulations.attacks import attack_grid  # attack.*: Byzantine replies rewritten

    # MLflow / TensorBoard (`tracking`; no-op when off), every flushed row logged
    tracker = writer.tracker = open_run(writer.config, out, writer.rows)
    # a run that fails ends its tracked run as FAILED (KILLED on Ctrl-C)
    result = tracker.guard(strategy.start)(
        attack_grid(RetryingGrid(grid), spec.config),
        initial,
        num_rounds=spec.num_rounds,
        timeout=spec.training.round_timeout,
        evaluate_fn=make_evaluate(w, spec.evaluation, writer),
    )
    torch.save(result.arrays.to_torch_state_dict(), out / "final_model.pt")
    summary = writer.finish()
    if strategy.divergence.message is not None:  # the likely cause and the setting to change
        summary["divergence"] = strategy.divergence.message
    summary["run-dir"] = str(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    tracker.finish(out, summary)
    return summary


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    spec = read(resolve(dict(context.run_config)))
    check_before_workers(spec)
    summary = serve(grid, spec)
    print(f"fedadapt: run directory {summary['run-dir']}")
