"""Is the working tree bit for bit the code of a base commit? Every shipped scenario, and step
sequences of every optimizer, run at both and compared.

For each ``simulations/scenarios/*.toml`` the scenario runs for a few rounds
(``--rounds``, default 3; ``num-server-rounds`` set on the command line of the run, nothing else
changed; a scenario whose drift comes later runs until ``--rounds`` rounds after its last
changepoint, so the reaction to the drift is compared too) in-process, without Ray (``docs/results/inprocess.py``'s ``run(cfg)``), once with the
working tree's code and once with the base commit's (checked out with ``git worktree add`` into
a temporary directory and imported in a subprocess with that directory first on ``sys.path``
and ``PYTHONPATH``). Every ``metrics.jsonl`` row is compared value for value (floats by their
bits: ``json`` keeps every digit of a double), ignoring the wall-clock fields, and so are the
tensors of ``final_model.pt``.

Then every registered method's optimizer takes a few steps, on the client (``build_optimizer``)
and on the server (``ServerOptimizer.step`` over three clients' models), over each base it takes
(SGD, SGD with Nesterov momentum and weight decay, Adam), from the same seeded gradients at both
commits; parameters after every step, the ``lr`` of every step and the final ``state_dict()``
are compared byte for byte.

Prints one table (scenario or sequence -> identical / different / error) and exits 1 on any
difference (an error at one side only counts as a difference; one at both sides, e.g. a data set
that needs the network, is reported and does not).

Usage::

    python benchmarks/bitwise_check.py                   # base 6f424e7, 3 rounds, every scenario
    python benchmarks/bitwise_check.py --base HEAD~1 --rounds 5 --scenarios quickstart,drift-digits
    python benchmarks/bitwise_check.py --skip-scenarios  # optimizer step sequences only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# wall-clock fields of a metrics row (they differ between any two runs)
WALL_CLOCK = ("wall-time", "elapsed", "round-time", "fit-time", "eval-time", "seconds")
ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "MPLBACKEND": "Agg",
}


def _is_wall_clock(key: str) -> bool:
    return any(w in key for w in WALL_CLOCK) or key.endswith("-time") or key.endswith("-s")


# ---------------------------------------------------------------------------- child (one tree)
def _child(tree: Path, out: Path, scenarios: list[str], rounds: int, steps: bool) -> None:
    sys.path.insert(0, str(tree))
    os.chdir(tree)
    results: dict[str, object] = {}
    if scenarios:
        spec = importlib.util.spec_from_file_location(
            "inprocess", tree / "docs" / "results" / "inprocess.py"
        )
        assert spec is not None and spec.loader is not None
        inprocess = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(inprocess)
        from simulations.cli import build_config

        for name in scenarios:
            run_dir = out / "runs" / name
            try:
                n = rounds
                while True:
                    try:
                        cfg = build_config(name, [f"num-server-rounds={n}"], 0, str(run_dir))
                        break
                    except Exception as exc:  # noqa: BLE001 - a drift after the last round: run past it
                        late = re.search(r"\((\d+)\) is after the last round", str(exc))
                        if late is None or n > int(late.group(1)):
                            raise
                        n = int(late.group(1)) + rounds
                inprocess.run(cfg)
                rows = [
                    json.loads(line)
                    for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                ]
                results[f"scenario {name}"] = {
                    "rows": rows,
                    "model": str(run_dir / "final_model.pt"),
                }
            except BaseException as exc:  # noqa: BLE001 - reported, compared with the other side's
                if isinstance(exc, KeyboardInterrupt):
                    raise
                last = traceback.format_exception_only(type(exc), exc)[-1].strip()
                results[f"scenario {name}"] = {"error": last[:300]}
    if steps:
        results.update(_step_sequences(out))
    (out / "results.json").write_text(json.dumps(results))


def _canonical(x: object) -> object:
    """A value as JSON-able data that keeps every bit (tensors as dtype, shape and bytes)."""
    import torch

    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        return {
            "dtype": str(t.dtype),
            "shape": list(t.shape),
            "hex": t.reshape(-1).view(torch.uint8).numpy().tobytes().hex() if t.numel() else "",
        }
    if isinstance(x, dict):
        return {str(k): _canonical(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, list | tuple):
        return [_canonical(v) for v in x]
    if isinstance(x, float):
        return {"float": x.hex()}
    if x is None or isinstance(x, bool | int | str):
        return x
    return repr(x)


def _step_sequences(out: Path) -> dict[str, object]:
    import inspect

    import torch

    import fedadapt

    def params() -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        return [
            torch.randn(5, 4, generator=g).requires_grad_(),
            torch.randn(4, generator=g).requires_grad_(),
        ]

    def grad_stream(n: int) -> list[list[torch.Tensor]]:
        g = torch.Generator().manual_seed(1)
        bias = [torch.randn(5, 4, generator=g), torch.randn(4, generator=g)]
        return [[b + 0.8 * torch.randn(b.shape, generator=g) for b in bias] for _ in range(n)]

    results: dict[str, object] = {}
    variants: dict[str, dict[str, object]] = {
        "sgd": {},
        "nesterov-wd": {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        "adam": {"base": "adam"},
        # the methods with their own step: their options
        "cp-adam-options": {
            "scale_rate": 0.5,
            "eps_rel": 1.0,
            "eps": 1e-8,
            "bias_correction": "adam",
            "weight_decay": 0.01,
            "reset": "all",
        },
        "flash-options": {"adaptive_b3": False, "den_floor": 0.5},
        "adaptive-fedavg-options": {"decay": False, "max_ratio": 10.0},
        # a known change at round 3 (ServerOptimizer's oracle): every method's reset
        "change": {"change_rounds": [3]},
    }
    for name in fedadapt.available_optimizers():
        spec = fedadapt.method_spec(name)
        from fedadapt.registry import _REGISTRY

        accepted = set(inspect.signature(_REGISTRY[name]).parameters)
        for vname, kw in variants.items():
            if vname.endswith("-options") and not vname.startswith(name + "-"):
                continue
            if vname == "change":
                for key in [f"steps server {name} change"] if spec.on_server else []:
                    try:
                        results[key] = _canonical(
                            _one_sequence(name, "server", kw, params, grad_stream)
                        )
                    except Exception as exc:  # noqa: BLE001 - compared with the other side
                        results[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            if not set(kw) <= accepted:
                if vname != "sgd":
                    continue
                kw = {}
            for side in ("client", "server"):
                if (side == "client" and not spec.on_client) or (
                    side == "server" and not spec.on_server
                ):
                    continue
                key = f"steps {side} {name} {vname}"
                try:
                    results[key] = _canonical(_one_sequence(name, side, kw, params, grad_stream))
                except Exception as exc:  # noqa: BLE001 - compared with the other side
                    results[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return results


def _one_sequence(name: str, side: str, kw: dict, params, grad_stream) -> dict[str, object]:  # noqa: ANN001
    import torch

    import fedadapt

    ps = params()
    trace: list[object] = []
    if side == "client":
        lr = {"sgd": 0.05, "adam": 0.01}.get(name, 0.05)
        opt = fedadapt.build_optimizer(name, ps, lr=lr, **kw)
        for grads in grad_stream(6):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g.clone()
            opt.step()
            trace.append(
                {"params": [p.detach().clone() for p in ps], "lr": float(opt.param_groups[0]["lr"])}
            )
        return {"trace": trace, "state": opt.state_dict()}
    if "lr" not in kw and fedadapt.method_spec(name).server_lr is not None:
        # an explicit lr: what ServerOptimizer takes when none is given changed on purpose
        # (79fb378: the spec's server lr, before the class's client default)
        kw = {**kw, "lr": 0.05}
    server = fedadapt.ServerOptimizer(ps, name, **kw)
    for r, grads in enumerate(grad_stream(5)):
        with torch.no_grad():
            clients = [
                [
                    p.detach() - (0.3 + 0.2 * k) * g * (1.0 + 0.1 * r)
                    for p, g in zip(ps, grads, strict=True)
                ]
                for k in range(3)
            ]
        server.step(clients, [10.0, 20.0, 30.0])
        trace.append(
            {
                "params": [p.detach().clone() for p in ps],
                "info": {k: v for k, v in server.last_info.items() if isinstance(v, float)},
            }
        )
    return {"trace": trace, "state": server.state_dict()}


# ---------------------------------------------------------------------------- parent
def _run_tree(
    tree: Path, out: Path, args: argparse.Namespace, scenarios: list[str]
) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ENV, "PYTHONPATH": str(tree), "FLWR_HOME": str(out / "flwr-home")}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(tree),
        "--out",
        str(out),
        "--rounds",
        str(args.rounds),
        "--scenarios",
        ",".join(scenarios) or "-",
    ]
    if args.skip_steps:
        cmd.append("--skip-steps")
    proc = subprocess.run(
        cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=args.timeout
    )
    if proc.returncode != 0 or not (out / "results.json").exists():
        raise SystemExit(
            f"the run at {tree} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads((out / "results.json").read_text())


def _strip(rows: list[dict]) -> tuple[list[dict], set[str]]:
    ignored: set[str] = set()
    kept = []
    for row in rows:
        ignored |= {k for k in row if _is_wall_clock(k)}
        kept.append({k: v for k, v in row.items() if not _is_wall_clock(k)})
    return kept, ignored


def _same_model(a: str, b: str) -> bool:
    import torch

    ma, mb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return json.dumps(_canonical(ma)) == json.dumps(_canonical(mb))


def _first_difference(a: object, b: object, path: str = "") -> str:
    if type(a) is not type(b):
        return f"{path}: {str(a)[:80]} vs {str(b)[:80]}"
    if isinstance(a, dict):
        assert isinstance(b, dict)
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: only at {'base' if k in b else 'working tree'}"
            if a[k] != b[k]:
                return _first_difference(a[k], b[k], f"{path}.{k}")
    if isinstance(a, list):
        assert isinstance(b, list)
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {str(a)[:80]} vs {str(b)[:80]}"


def compare(
    now: dict[str, object], base: dict[str, object]
) -> tuple[list[tuple[str, str, str]], set[str]]:
    table = []
    ignored: set[str] = set()
    for key in sorted(set(now) | set(base)):
        a, b = now.get(key), base.get(key)
        if a is None or b is None:
            table.append((key, "only at " + ("base" if a is None else "working tree"), ""))
            continue
        assert isinstance(a, dict) and isinstance(b, dict)
        if "error" in a or "error" in b:
            if a.get("error") == b.get("error"):
                table.append((key, "error at both", str(a["error"])))
            else:
                table.append(
                    (
                        key,
                        "different",
                        f"working tree: {a.get('error', 'ok')} | base: {b.get('error', 'ok')}",
                    )
                )
            continue
        if key.startswith("scenario "):
            ra, ia = _strip(a["rows"])
            rb, ib = _strip(b["rows"])
            ignored |= ia | ib
            if ra != rb:
                table.append(
                    (
                        key,
                        "different",
                        f"{len(ra)} vs {len(rb)} rows; first: {_first_difference(ra, rb)}",
                    )
                )
            elif not _same_model(str(a["model"]), str(b["model"])):
                table.append((key, "different", "metrics identical, final_model.pt differs"))
            else:
                table.append((key, "identical", f"{len(ra)} metrics rows and the final model"))
        else:
            same = a == b
            table.append(
                (key, "identical" if same else "different", "" if same else _first_difference(a, b))
            )
    return table, ignored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--base", default="6f424e7", help="the commit to compare against (default 6f424e7)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds per scenario (default 3)")
    ap.add_argument(
        "--scenarios",
        default=None,
        help="comma-separated scenario names (default: every shipped one)",
    )
    ap.add_argument(
        "--skip-scenarios", action="store_true", help="only the optimizer step sequences"
    )
    ap.add_argument("--skip-steps", action="store_true", help="only the scenarios")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per side (default 3600)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        names = [] if args.scenarios in (None, "-") else args.scenarios.split(",")
        _child(Path(args.child), Path(args.out), names, args.rounds, not args.skip_steps)
        return
    if args.skip_scenarios:
        scenarios: list[str] = []
    elif args.scenarios:
        scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    else:
        scenarios = sorted(p.stem for p in (ROOT / "simulations" / "scenarios").glob("*.toml"))
    with tempfile.TemporaryDirectory(prefix="bitwise-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(base_tree), args.base],
            cwd=ROOT,
            check=True,
        )
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", args.base],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            print(
                f"working tree {ROOT} vs base {commit}; {args.rounds} rounds per scenario; "
                f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                flush=True,
            )
            now = _run_tree(ROOT, Path(tmp) / "out-now", args, scenarios)
            base = _run_tree(base_tree, Path(tmp) / "out-base", args, scenarios)
            table, ignored = compare(now, base)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False
            )
    print(f"\nignored wall-clock fields: {sorted(ignored) or 'none'}\n")
    print("| run | result | detail |\n|---|---|---|")
    for key, result, detail in table:
        print(f"| {key} | {result} | {detail} |")
    bad = [k for k, r, _ in table if r not in ("identical", "error at both")]
    n_same = sum(r == "identical" for _, r, _ in table)
    print(
        f"\n{n_same} identical, {len(bad)} different, {len(table) - n_same - len(bad)} errors at both sides"
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
