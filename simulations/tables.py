"""Tables of finished runs, the one reporting path of ``fedadapt compare`` and ``fedadapt report``.

A run is read from its directory (``config.json``, ``metrics.jsonl``, ``schedule.json``; its
summary is recomputed in memory by :func:`simulations.report.summarize`, never written back).
Runs are grouped by scenario, strategy (its true label, :func:`strategy_label`) and grid cell
(the keys a comparison varied); each group's seeds give one row:

* per run: final, best and time-averaged accuracy, rounds to the target accuracy, the change
  detector's alarms, failures;
* per changepoint (labelled by its round): pre-drift accuracy, dip, rounds to recover 95%, rounds
  to get back within 2 points, area under the drop, mean accuracy after the change.

A cell is ``mean ± sample std`` over the seeds that have a value (:data:`STATISTIC` says so under
every table), ``never`` where a run did not reach a level within its rounds, ``n/a`` where the
column does not apply (no such changepoint, no change detector, a run that had learned nothing
before the change). :func:`paired` gives per-seed differences against a baseline strategy with
Student-t confidence intervals (:data:`PAIRED_STATISTIC`).

:func:`write_tables` writes the same tables as Markdown, CSV (one row per group and column, plus
``runs.csv`` with one row per run), JSON and LaTeX (booktabs).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NA",
    "NEVER",
    "PAIRED_STATISTIC",
    "STATISTIC",
    "Run",
    "format_values",
    "infer_grid_keys",
    "load_run",
    "paired",
    "server_method",
    "strategy_label",
    "summary_table",
    "write_tables",
]

NEVER = "never"  # the level was not reached within the run's rounds
NA = "n/a"  # the column does not apply to this run

CONFIDENCE = 0.95
STATISTIC = (
    "Cells: mean ± sample standard deviation (n − 1 denominator) over the seeds of the row "
    "(column `seeds`); (k/n): only k of the n seeds have a value; `never`: not reached within "
    "the run's rounds; `n/a`: does not apply (no such changepoint, no change detector, or no "
    "learning before the change). Rounds are counted from the changepoint."
)
PAIRED_STATISTIC = (
    "Per-seed differences A − B (same scenario, grid cell and seed): mean [95% confidence "
    "interval, Student's t with n − 1 degrees of freedom] over the n pairs in which both runs "
    "have a value (one pair: no interval); `n/a`: no such pair."
)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    digits: int
    reached: bool = False  # None in a summary means "never reached"
    per_change: bool = False


RUN_COLUMNS = (
    Column("final-accuracy", "final acc", 3),
    Column("best-accuracy", "best acc", 3),
    Column("mean-accuracy", "mean acc", 3),
    Column("rounds-to-target", "rounds to target", 1, reached=True),
    Column("detector-alarms", "alarms", 1),
    Column("failures", "failures", 1),
)
CHANGE_COLUMNS = (
    Column("pre-drift-accuracy", "pre-drift acc", 3, per_change=True),
    Column("max-drop", "dip", 3, per_change=True),
    Column("rounds-to-recover", "rounds to 95%", 1, reached=True, per_change=True),
    Column("rounds-to-within-2pt", "rounds to 2 pt", 1, reached=True, per_change=True),
    Column("area-under-drop", "area under drop", 2, per_change=True),
    Column("mean-after", "mean acc after", 3, per_change=True),
)
# keys that never define a grid cell: identity, outputs, and what a strategy resolves itself
_NOT_CELL = {
    "seed",
    "scenario",
    "strategy",
    "server-optimizer",
    "client-optimizer",
    "client-lr-state",
    "out-dir",
    "worker-log",
    "resume-from",
    "checkpoint-every",
}


# ----------------------------------------------------------------------------- labels


def strategy_label(config: Mapping[str, Any]) -> str:
    """What ran, in the syntax of ``fedadapt compare --strategies``: ``fedadapt/<server>/<client>``
    for a strategy whose server method is the caller's choice, the registry name otherwise (a
    Flower strategy runs Flower's own server step), with ``(client <m>)`` when its clients ran
    another method than the strategy's default."""
    from strategies.registry import default_client, strategy_spec

    name = str(config.get("strategy"))
    client = config.get("client-optimizer")
    try:
        spec = strategy_spec(name)
        default = default_client(name)[0]
    except ValueError:
        return name
    if spec.takes_server_optimizer:
        label = f"{name}/{config.get('server-optimizer')}"
        return label + (f"/{client}" if client and client != "auto" else "")
    if client and client not in ("auto", default):
        return f"{name} (client {client})"
    return name


def server_method(config: Mapping[str, Any]) -> str | None:
    """The fedadapt server method the run applied: the configured one for a strategy that takes
    it, the preset's own for a preset, ``None`` for Flower's strategies (their own step)."""
    from strategies.registry import strategy_spec

    try:
        spec = strategy_spec(str(config.get("strategy")))
    except ValueError:
        return None
    if spec.takes_server_optimizer:
        return str(config.get("server-optimizer"))
    return spec.server_method


def describe(config: Mapping[str, Any]) -> str:
    """A strategy with its server and client methods, in words (plot titles)."""
    label = strategy_label(config)
    method = server_method(config)
    client = config.get("client-optimizer")
    if method is None:
        server = "Flower's own server step"
    else:
        server = f"server {method}"
    return (
        f"{label} ({server}, client {client})"
        if client and client != "auto"
        else f"{label} ({server})"
    )


# ----------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One finished run: where it is, what ran and its summary (recomputed)."""

    dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)

    @property
    def scenario(self) -> str:
        return str(self.config.get("scenario"))

    @property
    def strategy(self) -> str:
        return strategy_label(self.config)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    def cell(self, grid_keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
        return tuple((k, _text(self.config.get(k))) for k in grid_keys)

    def name(self, grid_keys: Sequence[str]) -> str:
        """``strategy [cell] seed k``: what the run is, not where it was written."""
        cell = ",".join(f"{k}={v}" for k, v in self.cell(grid_keys))
        return f"{self.strategy}{f' [{cell}]' if cell else ''} seed {self.seed}"


def _text(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def load_run(run_dir: str | Path) -> Run:
    """A run directory read without writing anything: its summary is recomputed from its rows
    (the current report's definitions), keeping what only the run knew (``divergence``)."""
    from simulations.report import load_changepoints, load_config, load_rows, summarize

    path = Path(run_dir)
    rows = load_rows(path)
    config = load_config(path)
    summary = summarize(rows, config, load_changepoints(path))
    stored = path / "summary.json"
    if stored.is_file():
        try:
            old = json.loads(stored.read_text())
        except json.JSONDecodeError:
            old = {}
        if isinstance(old, dict) and old.get("divergence"):
            summary["divergence"] = old["divergence"]
    summary["run-dir"] = str(path)
    return Run(path, config, summary, rows)


def infer_grid_keys(runs: Sequence[Run]) -> list[str]:
    """The run-config keys whose value differs between runs of one scenario and strategy (the
    axes of a grid); seeds, outputs and what a strategy resolves are never cells."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.scenario, r.strategy), []).append(r)
    keys: list[str] = []
    for members in groups.values():
        for k in members[0].config:
            if k in _NOT_CELL or k in keys:
                continue
            if len({json.dumps(m.config.get(k), sort_keys=True) for m in members}) > 1:
                keys.append(k)
    return keys


# ----------------------------------------------------------------------------- values


def run_value(run: Run, column: Column, change: int | None = None) -> float | str:
    """A run's value in ``column`` (at changepoint index ``change``): a number, NEVER or NA."""
    s = run.summary
    if column.per_change:
        drifts = s.get("drifts") or []
        if change is None or change >= len(drifts):
            return NA
        d = drifts[change]
        if d.get("note"):
            return NA
        v = d.get(column.key)
    else:
        if column.key not in s:
            return NA
        v = s.get(column.key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return NEVER if (v is None and column.reached) else NA
    return float(v)


def format_values(values: Sequence[float | str], digits: int = 3) -> str:
    """``mean ± std (k/n, m never)`` of the numbers among ``values``; ``never`` / ``n/a`` when
    no seed has a number."""
    n = len(values)
    nums = [float(v) for v in values if not isinstance(v, str)]
    never = sum(1 for v in values if v == NEVER)
    if not nums:
        if never == n and n:
            return NEVER
        if never:
            return f"{NEVER} ({never}/{n})"
        return NA
    text = f"{statistics.fmean(nums):.{digits}f}"
    if len(nums) > 1:
        text += f" ± {statistics.stdev(nums):.{digits}f}"
    if len(nums) < n:
        text += f" ({len(nums)}/{n}" + (f", {never} {NEVER}" if never else "") + ")"
    return text


def _stats(values: Sequence[float | str]) -> dict[str, Any]:
    nums = [float(v) for v in values if not isinstance(v, str)]
    return {
        "mean": statistics.fmean(nums) if nums else None,
        "std": statistics.stdev(nums) if len(nums) > 1 else None,
        "n": len(nums),
        "never": sum(1 for v in values if v == NEVER),
        "n/a": sum(1 for v in values if v == NA),
        "values": [v if isinstance(v, str) else float(v) for v in values],
    }


# ----------------------------------------------------------------------------- tables


@dataclass
class Table:
    """One scenario's table: header, rows of cells, and the numbers behind them."""

    scenario: str
    header: list[str]
    rows: list[list[str]]
    records: list[dict[str, Any]]
    note: str


def _groups(runs: Sequence[Run], grid_keys: Sequence[str]) -> dict[str, dict[tuple, list[Run]]]:
    out: dict[str, dict[tuple, list[Run]]] = {}
    for r in runs:
        out.setdefault(r.scenario, {}).setdefault((r.strategy, r.cell(grid_keys)), []).append(r)
    for groups in out.values():
        for members in groups.values():
            members.sort(key=lambda r: r.seed)
    return out


def _changepoints(runs: Sequence[Run]) -> list[int]:
    """Changepoint rounds by index (the first run's that has the most)."""
    best: list[int] = []
    for r in runs:
        cps = [int(d.get("changepoint-round", 0)) for d in r.summary.get("drifts") or []]
        if len(cps) > len(best):
            best = cps
    return best


def _columns(changepoints: Sequence[int]) -> list[tuple[Column, int | None, str]]:
    cols: list[tuple[Column, int | None, str]] = [(c, None, c.label) for c in RUN_COLUMNS]
    for j, cp in enumerate(changepoints):
        at = f" @{cp}" if len(changepoints) > 1 else ""
        cols += [(c, j, c.label + at) for c in CHANGE_COLUMNS]
    return cols


def summary_table(runs: Sequence[Run], grid_keys: Sequence[str]) -> list[Table]:
    """One table per scenario, one row per strategy x grid cell over its seeds."""
    tables = []
    for scenario, groups in _groups(runs, grid_keys).items():
        members_all = [r for m in groups.values() for r in m]
        cps = _changepoints(members_all)
        cols = _columns(cps)
        header = ["strategy", *grid_keys, "seeds", *[label for _, _, label in cols]]
        rows, records = [], []
        for (strategy, cell), members in groups.items():
            cells = [strategy, *[v for _, v in cell], str(len(members))]
            rec: dict[str, Any] = {
                "scenario": scenario,
                "strategy": strategy,
                "cell": dict(cell),
                "seeds": [r.seed for r in members],
                "runs": [
                    {"name": r.name(grid_keys), "dir": str(r.dir), "seed": r.seed} for r in members
                ],
                "columns": {},
            }
            for col, j, label in cols:
                vals = [run_value(r, col, j) for r in members]
                cells.append(format_values(vals, col.digits))
                rec["columns"][label] = {
                    "key": col.key,
                    "changepoint-round": cps[j] if j is not None else None,
                    **_stats(vals),
                }
            rows.append(cells)
            records.append(rec)
        target = {str(r.config.get("target-accuracy")) for r in members_all}
        note = (
            STATISTIC
            + (f" Changepoints at rounds {', '.join(map(str, cps))}." if cps else "")
            + f" Target accuracy: {', '.join(sorted(target))}."
        )
        tables.append(Table(scenario, header, rows, records, note))
    return tables


def _match(label: str, wanted: str) -> bool:
    return label == wanted or label.split("/")[0].split(" ")[0] == wanted


def paired(runs: Sequence[Run], grid_keys: Sequence[str], baseline: str) -> list[Table]:
    """Per-seed differences of every strategy against ``baseline`` (a strategy label, or its
    registry name when one label has it), per scenario and grid cell, with confidence
    intervals. Raises ``ValueError`` when no run matches ``baseline``."""
    from scipy import stats

    tables = []
    found = False
    for scenario, groups in _groups(runs, grid_keys).items():
        cps = _changepoints([r for m in groups.values() for r in m])
        cols = _columns(cps)
        header = ["A − B", *grid_keys, "pairs", *[label for _, _, label in cols]]
        rows, records = [], []
        for (strategy, cell), members in groups.items():
            if _match(strategy, baseline):
                continue
            base = next(
                (m for (s, c), m in groups.items() if c == cell and _match(s, baseline)), None
            )
            if base is None:
                continue
            found = True
            by_seed = {r.seed: r for r in base}
            pairs = [(r, by_seed[r.seed]) for r in members if r.seed in by_seed]
            b_label = base[0].strategy
            cells = [f"{strategy} − {b_label}", *[v for _, v in cell], str(len(pairs))]
            rec: dict[str, Any] = {
                "scenario": scenario,
                "a": strategy,
                "b": b_label,
                "cell": dict(cell),
                "seeds": [a.seed for a, _ in pairs],
                "columns": {},
            }
            for col, j, label in cols:
                diffs = []
                for a, b in pairs:
                    va, vb = run_value(a, col, j), run_value(b, col, j)
                    if not isinstance(va, str) and not isinstance(vb, str):
                        diffs.append(va - vb)
                entry: dict[str, Any] = {
                    "key": col.key,
                    "n": len(diffs),
                    "diffs": diffs,
                    "mean": None,
                    "ci": None,
                    "std": None,
                }
                if diffs:
                    mean = statistics.fmean(diffs)
                    entry["mean"] = mean
                    text = f"{mean:+.{col.digits}f}"
                    if len(diffs) > 1:
                        sd = statistics.stdev(diffs)
                        half = (
                            float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(diffs) - 1))
                            * sd
                            / math.sqrt(len(diffs))
                        )
                        entry["std"], entry["ci"] = sd, [mean - half, mean + half]
                        text += f" [{mean - half:+.{col.digits}f}, {mean + half:+.{col.digits}f}]"
                    if len(diffs) < len(pairs):
                        text += f" ({len(diffs)}/{len(pairs)})"
                    cells.append(text)
                else:
                    cells.append(NA)
                rec["columns"][label] = entry
            rows.append(cells)
            records.append(rec)
        if rows:
            tables.append(Table(scenario, header, rows, records, PAIRED_STATISTIC))
    if not found:
        labels = sorted({r.strategy for r in runs})
        raise ValueError(
            f"baseline {baseline!r} matches no strategy with a paired run; "
            f"strategies here: {', '.join(labels)}"
        )
    return tables


# ----------------------------------------------------------------------------- formats


def markdown(tables: Sequence[Table], heading: str = "") -> str:
    out = []
    for t in tables:
        out.append(f"### {t.scenario}{f': {heading}' if heading else ''}\n")
        out.append("| " + " | ".join(t.header) + " |")
        out.append("|" + "---|" * len(t.header))
        out += ["| " + " | ".join(row) + " |" for row in t.rows]
        out.append(f"\n*{t.note}*\n")
    return "\n".join(out)


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex(text: str) -> str:
    s = "".join(_TEX.get(ch, ch) for ch in text)
    return s.replace("±", r"$\pm$").replace("−", r"$-$").replace("≥", r"$\geq$")


def latex(tables: Sequence[Table], heading: str = "") -> str:
    """booktabs tables (``\\usepackage{booktabs}``), the statistic in each caption."""
    out = []
    for t in tables:
        out.append(r"\begin{table}[ht]")
        out.append(r"\centering\small")
        out.append(
            r"\begin{tabular}{"
            + "l" * (len(t.header) - len(t.header[1:]))
            + "r" * len(t.header[1:])
            + "}"
        )
        out.append(r"\toprule")
        out.append(" & ".join(_tex(h) for h in t.header) + r" \\")
        out.append(r"\midrule")
        out += [" & ".join(_tex(c) for c in row) + r" \\" for row in t.rows]
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.append(
            r"\caption{"
            + _tex(f"{t.scenario}{f' ({heading})' if heading else ''}. " + t.note.replace("`", ""))
            + "}"
        )
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)


def csv_text(tables: Sequence[Table]) -> str:
    """One row per table row and column: tidy, with mean, std (or CI) and counts."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "scenario",
            "row",
            "cell",
            "column",
            "key",
            "changepoint-round",
            "mean",
            "std",
            "ci-low",
            "ci-high",
            "n",
            "never",
            "n/a",
            "text",
            "statistic",
        ]
    )
    for t in tables:
        for row, rec in zip(t.rows, t.records, strict=True):
            name = rec.get("strategy") or f"{rec['a']} − {rec['b']}"
            cell = ";".join(f"{k}={v}" for k, v in rec["cell"].items())
            for k, (label, entry) in enumerate(rec["columns"].items()):
                ci = entry.get("ci") or [None, None]
                w.writerow(
                    [
                        t.scenario,
                        name,
                        cell,
                        label,
                        entry["key"],
                        entry.get("changepoint-round", ""),
                        _num(entry.get("mean")),
                        _num(entry.get("std")),
                        _num(ci[0]),
                        _num(ci[1]),
                        entry["n"],
                        entry.get("never", ""),
                        entry.get("n/a", ""),
                        row[len(row) - len(rec["columns"]) + k],
                        t.note,
                    ]
                )
    return buf.getvalue()


def _num(v: Any) -> str:
    return "" if v is None else repr(float(v))


def runs_csv(runs: Sequence[Run], grid_keys: Sequence[str]) -> str:
    """One row per run: its name, directory and every column's value."""
    cps = _changepoints(runs)
    cols = _columns(cps)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "scenario",
            "name",
            "strategy",
            *grid_keys,
            "seed",
            "server-method",
            "client-method",
            "dir",
            *[label for _, _, label in cols],
        ]
    )
    for r in runs:
        vals = [run_value(r, c, j) for c, j, _ in cols]
        w.writerow(
            [
                r.scenario,
                r.name(grid_keys),
                r.strategy,
                *[v for _, v in r.cell(grid_keys)],
                r.seed,
                server_method(r.config) or "Flower's own",
                r.config.get("client-optimizer"),
                str(r.dir),
                *[v if isinstance(v, str) else repr(v) for v in vals],
            ]
        )
    return buf.getvalue()


def write_tables(
    out: Path, stem: str, runs: Sequence[Run], grid_keys: Sequence[str], baseline: str | None = None
) -> str:
    """Write ``<stem>.md``, ``<stem>.csv``, ``<stem>.json``, ``<stem>.tex`` and ``runs.csv``
    (and the paired tables in the same files when ``baseline`` is given) under ``out``; return
    the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    tables = summary_table(runs, grid_keys)
    pairs = paired(runs, grid_keys, baseline) if baseline else []
    md = markdown(tables)
    if pairs:
        md += "\n" + markdown(pairs, f"paired differences against {baseline}")
    (out / f"{stem}.md").write_text(md + "\n")
    (out / f"{stem}.csv").write_text(csv_text([*tables, *pairs]))
    (out / f"{stem}.tex").write_text(
        latex(tables) + (latex(pairs, f"paired differences against {baseline}") if pairs else "")
    )
    (out / "runs.csv").write_text(runs_csv(runs, grid_keys))
    payload: dict[str, Any] = {
        "statistic": STATISTIC,
        "groups": [rec for t in tables for rec in t.records],
    }
    if pairs:
        payload["paired-statistic"] = PAIRED_STATISTIC
        payload["paired"] = [rec for t in pairs for rec in t.records]
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return md
