"""Run fedadapt scenarios without Ray, for studies of hundreds of short runs.

The ServerApp body (:func:`simulations.server_app.serve`) and the ClientApp handlers
(:func:`simulations.client_app.handle_train`, :func:`~simulations.client_app.handle_warm_up`)
are the ones ``fedadapt simulate`` and ``fedadapt compare`` run on Flower's Ray simulation
runtime; here a Grid answers each message by calling the handler in the same process. Runs are
seeded, so a run gives the same metrics as under ``fedadapt compare``; ``--check`` repeats one
run through ``fedadapt compare`` and compares every metrics row (RESULTS.md says when it was
last checked). What this saves is Ray's start-up (10-20 s per process on 2 cores) and Flower's
per-message transport, so a 25-round digits run takes a few seconds and one process per core
runs the study.

Use the Ray path for anything else: this runner has no worker isolation, no deadlines across
processes, no retries and no resources; faults and timeouts behave differently.

    python docs/results/inprocess.py drift-digits --set client-optimizer=hd --out /tmp/run
    python docs/results/inprocess.py drift-digits --check
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class LocalGrid:
    """A Flower Grid whose worker nodes are handler calls in this process."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self._node_ids = list(range(1, spec.runtime.num_workers + 1))
        self._replies: dict[str, Any] = {}
        self._ids = itertools.count(1)

    def get_node_ids(self) -> list[int]:
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        from flwr.app import MessageType

        from simulations.client_app import handle_train, handle_warm_up

        ids = []
        for msg in messages:
            mid = f"local-{next(self._ids)}"
            msg.metadata.__dict__["_message_id"] = mid
            kind = msg.metadata.message_type
            if kind == MessageType.TRAIN:
                reply = handle_train(msg, self.spec)
            elif kind == MessageType.QUERY:
                reply = handle_warm_up(msg, self.spec)
            else:  # fedadapt's ClientApp answers train and query only
                reply = None
            if reply is not None:
                self._replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        return [self._replies.pop(m) for m in list(message_ids) if m in self._replies]

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        return self.pull_messages(self.push_messages(messages))


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """One run of a resolved config, in this process; returns its summary."""
    import torch
    from flwr.supercore.task_identity import TaskIdentity

    from simulations.checks import resolve
    from simulations.preflight import check_before_workers
    from simulations.reader import read
    from simulations.server_app import serve

    torch.set_num_threads(1)
    # Flower sets a ServerApp's identity; messages need one to be built
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    spec = read(resolve(cfg))
    check_before_workers(spec)
    return serve(LocalGrid(spec), spec)


def _rows(run_dir: str | Path) -> list[dict[str, Any]]:
    keep = ("round", "accuracy", "loss", "server-lr", "client-lr", "client-lr-min",
            "client-lr-max", "train-loss", "succeeded-ids")
    rows = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.append({k: row.get(k) for k in keep})
    return rows


def main() -> None:
    from simulations.cli import build_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--check", action="store_true",
                    help="also run it through `fedadapt compare` (Ray) and compare the rows")
    args = ap.parse_args()
    out = args.out or f"runs/inprocess-{Path(args.scenario).stem}"
    cfg = build_config(args.scenario, args.sets, args.seed, out)
    summary = run(cfg)
    print(json.dumps({k: summary.get(k) for k in ("final-accuracy", "best-accuracy")}))
    if args.check:
        import subprocess

        ray_out = out + "-ray"
        sets = [a for s in args.sets for a in ("--set", s)]
        subprocess.run([sys.executable, "-m", "simulations.cli", "compare", args.scenario,
                        "--strategies", str(cfg["strategy"]), "--seeds", str(args.seed + 1),
                        *sets, "--out", ray_out], check=True, cwd=ROOT)
        ray_dir = next(d for d in Path(ray_out).glob("*/*") if d.name.endswith(f"seed{args.seed}"))
        a, b = _rows(out), _rows(ray_dir)
        same = a == b
        print(f"in-process vs Ray: {len(a)} rows, identical: {same}")
        if not same:
            for ra, rb in zip(a, b, strict=False):
                if ra != rb:
                    print("first difference:", ra, rb)
                    break
            sys.exit(1)


if __name__ == "__main__":
    main()
