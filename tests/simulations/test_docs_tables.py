"""Every table of keys, defaults and methods in docs/ is generated from the code or checked
against it here (issue 21 §5)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import fedadapt
from simulations.config import KEYS
from simulations.doctables import stale

ROOT = Path(__file__).resolve().parents[2]


def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables as rows of stripped cells (header first, separator dropped)."""
    out: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                current.append(cells)
        elif current:
            out.append(current)
            current = []
    return out


def test_generated_docs_are_current():
    """docs/CONFIG.md and the methods block of docs/METHODS.md come from the code; run
    `python -m simulations.doctables --write` when this fails."""
    assert stale() == []


def test_readme_methods_table_names_every_registered_method():
    readme = (ROOT / "README.md").read_text()
    table = next(t for t in tables(readme) if t[0][:2] == ["name", "method"])
    names = {n for row in table[1:] for n in re.findall(r"`([a-z0-9-]+)`", row[0])}
    assert names == set(fedadapt.available_optimizers())


def _literal(text: str) -> object:
    text = text.strip("`")
    if text in ("True", "False"):
        return text == "True"
    return ast.literal_eval(text)


def _hyperparameter_tables() -> list[tuple[str, list[list[str]]]]:
    found = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        for t in tables(path.read_text()):
            if t[0][:2] == ["hyperparameter", "default"]:
                found.append((path.name, t))
    return found


@pytest.mark.parametrize(("doc", "table"), _hyperparameter_tables())
def test_hyperparameter_defaults_in_docs_are_the_code_defaults(doc, table):
    """A docs table of a method's hyperparameters and defaults matches the signature of the one
    fedadapt class that takes exactly those names."""
    documented = {row[0].strip("`"): _literal(row[1]) for row in table[1:]}
    owners = []
    for name in fedadapt.__all__:
        obj = getattr(fedadapt, name)
        if inspect.isclass(obj):
            params = inspect.signature(obj.__init__).parameters
            if set(documented) <= set(params):
                owners.append((name, params))
    assert owners, f"{doc}: no fedadapt class takes {sorted(documented)}"
    name, params = owners[0]
    code = {k: params[k].default for k in documented}
    assert code == documented, f"{doc} vs {name}"


def test_pipeline_keys_exist():
    text = (ROOT / "docs" / "PIPELINE.md").read_text()
    table = next(t for t in tables(text) if "run-config keys" in t[0])
    col = table[0].index("run-config keys")
    named = {k for row in table[1:] for k in re.findall(r"`([a-z0-9.-]+)`", row[col])}
    assert named and named <= set(KEYS), named - set(KEYS)
