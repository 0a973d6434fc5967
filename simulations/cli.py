"""The ``fedadapt`` command: simulate, compare, report, scenarios, keys.

Every command resolves and validates its configuration completely before Ray or any worker
starts: an unknown scenario, key or value ends the command with exit status 2 and a message that
names the key and what it accepts.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from simulations.checks import resolve
from simulations.config import (
    ConfigError,
    available_scenarios,
    load_scenario,
    markdown_table,
    parse_assignments,
)
from simulations.sweep import SweepHooks, SweepProgress

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="fedadapt: adaptive step sizes for federated learning on Flower.",
)
console = Console(stderr=True)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def build_config(
    scenario: str, sets: list[str] | None = None, seed: int | None = None, out: str | None = None
) -> dict[str, Any]:
    """Scenario file + ``--set`` overrides + flags -> a validated config (raises ConfigError)."""
    base = load_scenario(scenario)
    overrides: dict[str, object] = dict(parse_assignments(sets or []))
    if seed is not None:
        overrides["seed"] = seed
    if out is not None:
        overrides["out-dir"] = out
    return resolve(overrides, base=base)


def round_status(row: dict[str, Any]) -> str:
    """The few numbers of a round a terminal shows (the rest is in metrics.jsonl)."""
    acc = row.get("accuracy")
    lr = row.get("server-lr")
    status = f"acc {acc:.3f}" if isinstance(acc, float) else ""
    if isinstance(lr, float):
        status += f"  server lr {lr:.3g}"
    if row.get("failed-ids"):
        status += f"  failures {len(row['failed-ids'])}"
    if row.get("server-detector-alarm") == 1.0:
        status += "  detector alarm"
    return status.strip()


def plain_round_line(label: str, row: dict[str, Any], total: int) -> str:
    """One plain line per round when the output is not a terminal (a log file, CI)."""
    elapsed = row.get("elapsed")
    took = f"  {elapsed:.1f} s" if isinstance(elapsed, float) else ""
    return f"{label} round {int(row['round'])}/{total}  {round_status(row)}{took}".rstrip()


BACKEND_HELP = (
    "Where the run's clients train: 'ray' (Flower's simulation runtime on Ray, "
    "the default) or 'local' (no Ray: the same ServerApp and ClientApp handlers "
    "in-process; simulate: bitwise the Ray run; refuses, before anything starts, "
    "faults.crash/hang-fraction > 0, a round-timeout other than the default, "
    "client-num-gpus > 0 and deployment = true)."
)


def _check_backend(backend: str, specs: list[Any]) -> None:
    from simulations.local import BACKENDS, check_local

    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "local":
        check_local(specs)


def _progress_runner(spec: Any, backend: str = "ray") -> dict[str, Any]:
    from simulations.experiment import run_experiment
    from simulations.local import run_local

    def run(on_round: Any) -> dict[str, Any]:
        if backend == "local":
            return run_local(spec, on_round)
        return run_experiment(spec, on_round=on_round)

    starting = "starting Ray ..." if backend == "ray" else "starting (local) ..."
    rounds, label = spec.num_rounds, spec.output.scenario
    if not console.is_terminal:  # redirected: one plain line per round, as it happens

        def plain(row: dict[str, Any]) -> None:
            console.print(
                plain_round_line(label, row, rounds), highlight=False, soft_wrap=True, markup=False
            )

        console.print(f"{label}: {starting}", highlight=False)
        return run(plain)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("round {task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=rounds, status=starting)

        def on_round(row: dict[str, Any]) -> None:
            progress.update(task, completed=int(row["round"]), status=round_status(row))

        return run(on_round)


@app.command()
def simulate(
    scenario: Annotated[str, typer.Argument(help="Shipped scenario name or a TOML file.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a run-config key: key=value.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed (overrides the scenario's).")] = None,
    out: Annotated[str | None, typer.Option(help="Run directory.")] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "ray",
) -> None:
    """Run one scenario (on Flower's Ray simulation runtime, or --backend local without Ray)
    and write its run directory."""
    from simulations.experiment import prepare

    try:
        cfg = build_config(scenario, set_, seed, out)
        (spec,) = prepare([cfg])  # everything the run will build, on a dummy, before Ray
        _check_backend(backend, [spec])
    except ConfigError as exc:
        _fail(str(exc))
        return
    summary = _progress_runner(spec, backend)
    console.print_json(json.dumps(summary, default=str))
    console.print(f"run directory: [bold]{summary['run-dir']}[/]")


def _parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid expects key=v1,v2,..., got {item!r}")
        key, values = item.split("=", 1)
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise ConfigError(f"--grid {key}: no values")
        grid.append((key.strip(), vals))
    return grid


def strategy_overrides(token: str) -> dict[str, str]:
    """``fedavg`` or ``fedadapt/<server-optimizer>[/<client-optimizer>]`` -> config overrides."""
    from simulations.config import KEYS
    from strategies.registry import strategy_spec

    parts = token.split("/")
    out = {"strategy": parts[0]}
    try:
        takes = strategy_spec(parts[0]).takes_server_optimizer
    except ValueError as exc:
        raise ConfigError(f"run-config key 'strategy' (--strategies {token!r}): {exc}") from None
    if not takes:  # the scenario's server method belongs to FedAdapt only
        out["server-optimizer"] = str(KEYS["server-optimizer"].default)
    if len(parts) > 1:
        if not takes:
            raise ConfigError(
                f"--strategies {token!r}: only 'fedadapt/<server>/<client>' takes optimizers"
            )
        out["server-optimizer"] = parts[1]
    if len(parts) > 2:
        out["client-optimizer"] = parts[2]
    if len(parts) > 3:
        raise ConfigError(f"--strategies {token!r}: at most fedadapt/<server>/<client>")
    return out


class _CompareProgress(SweepHooks):
    """``fedadapt compare``'s progress: runs done, running, skipped and the time left; a bar
    on a terminal, plain lines otherwise."""

    def __init__(self, total: int, rounds: int) -> None:
        self.counts = SweepProgress(total)
        self.rounds = rounds
        self.progress: Progress | None = None
        self.task: Any = None
        self.current: dict[int, str] = {}  # run index -> "name r/R"

    def sweep_start(self, runs: Any, skipped: Any) -> None:
        self.counts.skipped = len(skipped)
        if skipped:
            self._line(
                f"{len(skipped)} of {len(runs)} runs already complete (same config "
                "digest): read from disk, not run again (--redo runs them)"
            )
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]runs"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "runs", total=len(runs), completed=len(skipped), status="starting ..."
            )

    def parallel_chosen(self, parallel: int) -> None:
        self.counts.parallel = parallel
        self._line(f"{parallel} run(s) at once")

    def run_start(self, run: Any) -> None:
        self.counts.start(run.index)
        self.current[run.index] = f"{run.name} 0/{self.rounds}"
        if self.progress is None:
            self._line(f"[start] {run.name}  ({self.counts.status()})")
        self._refresh()

    def run_round(self, run: Any, row: dict[str, Any]) -> None:
        rounds = int(run.config.get("num-server-rounds", self.rounds))
        self.current[run.index] = f"{run.name} {int(row['round'])}/{rounds}"
        if self.progress is None:
            self._line(plain_round_line(f"  {run.name}", row, rounds))
        self._refresh()

    def run_end(self, run: Any, summary: dict[str, Any], seconds: float) -> None:
        self.counts.end(run.index)
        self.current.pop(run.index, None)
        acc = summary.get("final-accuracy")
        self._line(
            f"[done] {run.name}"
            + (f": final acc {acc:.3f}" if acc is not None else "")
            + f" in {seconds:.1f} s  ({self.counts.status()})"
        )
        self._refresh()

    def run_failed(self, run: Any, error: BaseException) -> None:
        self.counts.end(run.index, failed=True)
        self.current.pop(run.index, None)
        self._line(f"[failed] {run.name}: {error!r}  ({self.counts.status()})")
        self._refresh()

    def sweep_end(self, summaries: Any) -> None:
        if self.progress is not None:
            self._refresh()
            self.progress.stop()

    def _refresh(self) -> None:
        if self.progress is None:
            return
        status = self.counts.status()
        room = console.width - len(status) - 50  # the bar, the elapsed time, separators
        running = "; ".join(list(self.current.values())[:3])
        if running and room > 12:
            status += " | " + (running if len(running) <= room else running[: room - 1] + "…")
        self.progress.update(
            self.task, completed=self.counts.done + self.counts.skipped, status=status
        )

    def _line(self, text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True, markup=False)


@app.command()
def compare(
    scenario: Annotated[str, typer.Argument(help="Shipped scenario name or a TOML file.")],
    strategies: Annotated[
        str,
        typer.Option(help="Comma list: registry names or fedadapt/<server-opt>/<client-opt>."),
    ],
    seeds: Annotated[int, typer.Option(help="Seeds 0..K-1 for every combination.")] = 1,
    grid: Annotated[
        list[str] | None, typer.Option("--grid", help="key=v1,v2,... (repeatable).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value for all runs.")] = None,
    out: Annotated[str | None, typer.Option(help="Comparison directory.")] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Add per-seed differences of every strategy against this one "
            "(95% confidence intervals)."
        ),
    ] = None,
    parallel: Annotated[
        str,
        typer.Option(
            help="Runs at once: 'auto' (the cluster's worker slots over one run's "
            "workers) or a number; 1 runs them one after another."
        ),
    ] = "auto",
    address: Annotated[
        str | None,
        typer.Option(
            help="Attach to a running Ray cluster (host:port as `ray start --head` "
            "prints it, or 'auto'); default: RAY_ADDRESS, else a local Ray."
        ),
    ] = None,
    redo: Annotated[
        bool,
        typer.Option(
            "--redo",
            help="Run every run again, even those already complete under "
            "--out with the same config.",
        ),
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            help=BACKEND_HELP + " With 'local' the runs go to "
            "--jobs processes; --parallel and --address are "
            "Ray's."
        ),
    ] = "ray",
    jobs: Annotated[
        int,
        typer.Option(
            help="--backend local: processes running runs at once (0: this "
            "machine's CPUs); each uses one torch thread."
        ),
    ] = 0,
    run_plots: Annotated[
        bool,
        typer.Option(
            "--run-plots/--no-run-plots",
            help="Each run draws its own plots (about 0.9 s a quickstart run); "
            "the comparison's tables and plot are drawn either way.",
        ),
    ] = True,
) -> None:
    """Run every strategy x grid cell x seed, several at once, then tables (Markdown, CSV,
    JSON, LaTeX) and plots. Run again, it skips the runs already complete (same resolved
    config) and does the rest."""
    import os

    from simulations.compare import write_comparison
    from simulations.sweep import SweepRun, check_address, parse_parallel

    try:
        n_parallel = parse_parallel(parallel)
        ray_addr = check_address(address) if address is not None else None
        tokens = [t.strip() for t in strategies.split(",") if t.strip()]
        if baseline is not None and not any(
            t == baseline or t.split("/")[0] == baseline for t in tokens
        ):
            raise ConfigError(f"--baseline {baseline!r}: not among --strategies {tokens}")
        grid_axes = _parse_grid(grid or [])
        cells = list(itertools.product(*[[(k, v) for v in vals] for k, vals in grid_axes]))
        base_sets = list(set_ or [])
        root = Path(out or f"runs/compare-{Path(scenario).stem}")
        plans = []
        for token in tokens:
            for cell in cells:
                for s in range(seeds):
                    sets = base_sets + [f"{k}={v}" for k, v in strategy_overrides(token).items()]
                    sets += [f"{k}={v}" for k, v in cell]
                    cell_name = "-".join(f"{k}{v}" for k, v in cell)
                    name = token.replace("/", "_") + (f"-{cell_name}" if cell_name else "")
                    cfg = build_config(scenario, sets, s, str(root / name / f"{name}-seed{s}"))
                    plans.append((token, dict(cell), s, cfg))
        from simulations.experiment import prepare

        if root.exists() and not root.is_dir():
            raise ConfigError(f"--out {root}: exists and is not a directory")
        specs = prepare([p[3] for p in plans])  # read and pre-flighted once, handed on
        _check_backend(backend, specs)
        if backend == "local" and ray_addr is not None:
            raise ConfigError(
                f"--address {ray_addr}: a Ray cluster is --backend ray's; "
                "--backend local runs on this machine (--jobs)"
            )
        if jobs < 0:
            raise ConfigError(f"--jobs {jobs}: expected 0 (this machine's CPUs) or a count >= 1")
    except ConfigError as exc:
        _fail(str(exc))
        return
    if ray_addr is not None:
        os.environ["RAY_ADDRESS"] = ray_addr  # simulations.runtime.ray_address reads it

    def run_name(i: int) -> str:
        token, cell, s, _ = plans[i]
        cell_text = ",".join(f"{k}={v}" for k, v in cell.items())
        return f"{token}{f' [{cell_text}]' if cell_text else ''} seed {s}"

    runs = [
        SweepRun(
            i,
            run_name(i),
            dict(p[3]),
            labels={"strategy": p[0], "cell": p[1], "seed": p[2]},
            spec=spec,
        )
        for i, (p, spec) in enumerate(zip(plans, specs, strict=True))
    ]
    if backend == "local":
        from simulations.local import default_jobs

        where = f"local, {jobs or default_jobs()} process(es)"
    else:
        where = f"Ray cluster {ray_addr}" if ray_addr else "one Ray session"
    console.print(f"{len(plans)} runs into {root} ({where})", highlight=False)
    from simulations.experiment import RunFailed
    from simulations.sweep import run_sweep
    from simulations.tracking import sweep_tracking

    progress = _CompareProgress(len(runs), specs[0].num_rounds)
    # tracking (run-config key `tracking`): one parent run for the sweep, its runs nested; the
    # tracking keys it fills in are outside the resume digest (simulations.sweep)
    with sweep_tracking([r.config for r in runs], root) as tracked:
        for run, cfg in zip(runs, tracked.configs, strict=True):
            run.config = dict(cfg)
        try:
            summaries = run_sweep(
                runs,
                root=root,
                parallel=n_parallel,
                redo=redo,
                hooks=[progress],
                backend=backend,
                jobs=jobs,
                run_plots=run_plots,
            )
        except RunFailed as exc:
            console.print(
                f"[bold red]error:[/] {escape(str(exc))}; the runs that finished are "
                "kept: run the same command again to redo only the failed ones",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(code=1) from None
        results = [
            {"strategy": token, "cell": cell, "seed": s, "summary": summary}
            for (token, cell, s, _), summary in zip(plans, summaries, strict=True)
        ]
        try:
            table = write_comparison(root, results, [k for k, _ in grid_axes], baseline)
        except ValueError as exc:
            _fail(str(exc))
            return
    print(table)
    console.print(
        f"written to [bold]{root}[/]: comparison.md, comparison.csv, comparison.json, "
        "comparison.tex, runs.csv, accuracy.png",
        highlight=False,
    )


@app.command("report")
def report_cmd(
    run_dir: Annotated[str, typer.Argument(help="A run directory or a folder of runs.")],
    out: Annotated[
        str | None, typer.Option(help="Folder for the tables and plots (default RUN_DIR/report).")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Add per-seed differences of every strategy against this one, with "
            "95% confidence intervals."
        ),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Comparison plots beside the tables.")] = True,
) -> None:
    """Tables (Markdown, CSV, JSON, LaTeX) and comparison plots of finished runs; the runs'
    own files are only read."""
    from simulations.report import report

    try:
        table, where = report(run_dir, out=out, baseline=baseline, plots=plots)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
        return
    print(table)
    console.print(
        f"written to [bold]{where}[/]: report.md, report.csv, report.json, "
        "report.tex, runs.csv" + (" and plots" if plots else ""),
        highlight=False,
    )


@app.command()
def scenarios() -> None:
    """List the shipped scenarios, one line each."""
    for name, line in available_scenarios().items():
        desc = line.split(":", 1)[1].strip() if ":" in line else line
        print(f"{name:20s} {desc}")


@app.command()
def methods() -> None:
    """List fedadapt's optimizers and the strategy registry."""
    import strategies

    print(method_table())
    print()
    print("strategies (strategy):", ", ".join(strategies.available_strategies()))


def method_table() -> str:
    """Every fedadapt method with what its spec declares: where it runs (`client-optimizer`
    takes client and both-sides methods, `server-optimizer` server and both-sides ones), its
    default step sizes, the bounds of a carried client step size, and its needs."""
    import fedadapt

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:g}"

    rows = [
        "| method | side | server lr | client lr | carried lr bounds | needs |",
        "|---|---|---|---|---|---|",
    ]
    for name in fedadapt.available_optimizers():
        sp = fedadapt.method_spec(name)
        needs = [*sp.signals, *(f"{s} (optional)" for s in sp.optional_signals)]
        if sp.needs_global_update:
            needs.append("global update")
        if sp.uses_change_detector:
            needs.append("change detector")
        if sp.per_client_values:
            needs.append("per-client values")
        bounds = (
            "-"
            if sp.carried_lr_bounds is None
            else "[{:g}, {:g}] x lr".format(*sp.carried_lr_bounds)
        )
        rows.append(
            f"| {name} | {sp.side} | {num(sp.server_lr if sp.on_server else None)} | "
            f"{num(sp.client_lr if sp.on_client else None)} | {bounds} | "
            f"{', '.join(needs) or '-'} |"
        )
    return "\n".join(rows)


@app.command()
def keys() -> None:
    """Print the run-config key table (markdown)."""
    print(markdown_table())


def main() -> None:
    try:
        app()
    except ConfigError as exc:  # pragma: no cover - commands catch their own
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
