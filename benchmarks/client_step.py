"""Cost of a whole local iteration of each client method against torch SGD, on small models.

One iteration is what a client does per minibatch: ``zero_grad``, forward, cross-entropy loss,
backward, ``optimizer.step()``. On the models federated simulations train (a logistic
regression, the digits MLP) the forward and backward passes take tens of microseconds, so the
optimizer's fixed per-step cost (Python, dispatcher calls, host reads) decides the ratio.

Two models: (a) logistic regression ``nn.Linear(60, 10)``, batch 10; (b) the simulations' ``mlp``
(``simulations.models.build_model("mlp", (1, 8, 8), 10)``: digits, 64-64-10), batch 32 (the
simulations' default ``batch-size``). Every method runs on its own copy of the same initial
model, in the same process, interleaved: each repeat runs a block of ``--iters`` iterations of
every method in turn (the order rotates every repeat, so load drift affects all methods alike),
after ``--warmup`` untimed repeats. A block's time divided by ``--iters`` is one per-iteration
sample; the table gives the median and the minimum over the repeats and the ratios to the
reference SGD (ratio of medians / ratio of minima).

The reference is the faster (by median) of ``torch.optim.SGD(foreach=True)`` and
``torch.optim.SGD(fused=True)`` (when this torch supports fused SGD on the device); the row
``sgd`` is fedadapt's registry entry (torch SGD, foreach), a check on the noise. Goal (issue
19): every client method at most 1.3x the reference. A timing is never asserted in a test.

Usage::

    python benchmarks/client_step.py                     # CPU, 1 thread, 200 repeats x 20 iterations
    python benchmarks/client_step.py --repeats 50 --iters 10
    python benchmarks/client_step.py --device cuda
    # before/after in one process: an older fedadapt package as extra rows "<method> @baseline"
    git archive 06e6f4a fedadapt | tar -x -C /tmp/base
    python benchmarks/client_step.py --baseline /tmp/base/fedadapt

Besides the ratio of medians and of minima, the table gives the median over repeats of the
paired ratio (each block against the reference's block of the same repeat, run next to it):
the steadiest of the three when other jobs share the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fedadapt  # noqa: E402
from simulations.models import build_model  # noqa: E402

GOAL = 1.3
FOREACH = "torch SGD (foreach)"
FUSED = "torch SGD (fused)"
METHODS = ("sgd", "hd", "hd-mult", "dsa", "autodrop", "cprop", "eg", "fedhyper-cl")
LR = 0.01


def models(device: torch.device) -> list[tuple[str, Callable[[], nn.Module], int, tuple[int, ...]]]:
    """``(label, builder, batch size, input shape)`` of the two benchmark models."""

    def logreg() -> nn.Module:
        torch.manual_seed(0)
        return nn.Linear(60, 10)

    def mlp() -> nn.Module:
        return build_model("mlp", (1, 8, 8), 10, seed=0)

    return [
        ("logreg: nn.Linear(60, 10), batch 10", logreg, 10, (60,)),
        ("digits mlp (simulations `mlp`, 64-64-10), batch 32", mlp, 32, (1, 8, 8)),
    ]


def fused_sgd_works(device: torch.device) -> bool:
    p = nn.Parameter(torch.zeros(3, device=device))
    p.grad = torch.ones(3, device=device)
    try:
        torch.optim.SGD([p], lr=0.1, fused=True).step()
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


BASELINE = " @baseline"
_baseline = None  # the package given by --baseline


def load_baseline(path: str):  # noqa: ANN201
    """Import the fedadapt package in directory ``path`` under the name ``fedadapt_baseline``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "fedadapt_baseline", os.path.join(path, "__init__.py"), submodule_search_locations=[path]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline: no package in {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fedadapt_baseline"] = module
    spec.loader.exec_module(module)
    return module


def build(label: str, params, device: torch.device) -> torch.optim.Optimizer:
    params = list(params)
    if label == FOREACH:
        return torch.optim.SGD(params, lr=LR, foreach=True)
    if label == FUSED:
        return torch.optim.SGD(params, lr=LR, fused=True)
    if label.endswith(BASELINE):
        assert _baseline is not None, "--baseline not loaded"
        opt = _baseline.build_optimizer(label[: -len(BASELINE)], params, lr=LR)
    else:
        opt = fedadapt.build_optimizer(label, params, lr=LR)
    if hasattr(opt, "set_global_update"):
        # FedHyper-CL's previous global update x_t - x_{t-1}, as strategies/client.py passes it
        gen = torch.Generator().manual_seed(1)
        opt.set_global_update(
            [1e-3 * torch.randn(p.shape, generator=gen).to(device) for p in params]
        )
    return opt


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_model(
    builder,
    batch: int,
    shape: tuple[int, ...],
    device: torch.device,
    labels: list[str],
    repeats: int,
    iters: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Per-iteration times (seconds, one sample per repeat) of every label on one model."""
    gen = torch.Generator().manual_seed(0)
    # a pool of random batches with random labels, and every block starts again from the
    # initial parameters (as a client's round starts from the global model; the optimizer
    # keeps its state): no method trains into a memorised regime (near-zero loss, subnormal
    # softmax outputs), which makes the forward and backward passes slower on CPU and would
    # be charged to the methods that train fastest
    batches = [
        (
            torch.randn((batch, *shape), generator=gen).to(device),
            torch.randint(0, 10, (batch,), generator=gen).to(device),
        )
        for _ in range(16)
    ]
    base = builder().to(device)
    initial = [p.detach().clone() for p in base.parameters()]
    runs = []
    for label in labels:
        model = builder().to(device)
        model.load_state_dict(base.state_dict())
        runs.append(
            {
                "label": label,
                "model": model,
                "opt": build(label, model.parameters(), device),
                "times": [],
            }
        )
    loss_fn = nn.CrossEntropyLoss()
    nb = len(batches)
    for r in range(warmup + repeats):
        k = r % len(runs)
        for run in runs[k:] + runs[:k]:
            model, opt = run["model"], run["opt"]
            with torch.no_grad():
                for p, p0 in zip(model.parameters(), initial, strict=True):
                    p.copy_(p0)
            sync(device)
            t0 = time.perf_counter()
            for i in range(iters):
                x, y = batches[(r * iters + i) % nb]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
            sync(device)
            if r >= warmup:
                run["times"].append((time.perf_counter() - t0) / iters)
    skipped = {
        run["label"]: sum(g.get("skipped", 0) for g in run["opt"].param_groups) for run in runs
    }
    if any(skipped.values()):
        print(f"warning: skipped steps {skipped}", file=sys.stderr)
    return {run["label"]: run["times"] for run in runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--repeats", type=int, default=200, help="timed blocks per method (default 200)"
    )
    ap.add_argument("--iters", type=int, default=20, help="iterations per block (default 20)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed blocks first (default 10)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated client methods")
    ap.add_argument(
        "--baseline",
        default=None,
        help="directory of another fedadapt package: its methods run as extra rows '<method> @baseline'",
    )
    args = ap.parse_args()
    global _baseline
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    torch.set_num_threads(args.threads)
    refs = [FOREACH] + ([FUSED] if fused_sgd_works(device) else [])
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    labels = refs + methods
    if args.baseline:
        _baseline = load_baseline(os.path.abspath(args.baseline))
        labels += [m + BASELINE for m in methods if m != "sgd"]
    print(
        f"device: {device}, threads: {torch.get_num_threads()}, torch {torch.__version__}, "
        f"repeats: {args.repeats} x {args.iters} iterations (+{args.warmup} warm-up), lr {LR}; "
        f"fused SGD on this device: {'yes' if FUSED in refs else 'no'}; load average before: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    for title, builder, batch, shape in models(device):
        times = bench_model(
            builder, batch, shape, device, labels, args.repeats, args.iters, args.warmup
        )
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        ref = min(refs, key=lambda k: med[k])
        n_params = sum(p.numel() for p in builder().parameters())
        print(f"### {title} ({n_params:,} parameters); reference: {ref} (the faster median)\n")
        print(
            f"| method | median iteration (us) | min iteration (us) | ratio to {ref}: median / min "
            f"| paired ratio (median) | <= {GOAL}x (median) | <= {GOAL}x (min) |"
        )
        print("|---|---|---|---|---|---|---|")
        for label in labels:
            rm, rb = med[label] / med[ref], best[label] / best[ref]
            paired = statistics.median(a / b for a, b in zip(times[label], times[ref], strict=True))
            goal = label != "sgd" and (label in methods or label.endswith(BASELINE))
            print(
                f"| {label} | {med[label] * 1e6:.1f} | {best[label] * 1e6:.1f} | {rm:.2f}x / {rb:.2f}x | {paired:.2f}x "
                f"| {('yes' if rm <= GOAL else 'no') if goal else '-'} | {('yes' if rb <= GOAL else 'no') if goal else '-'} |"
            )
        print(flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
