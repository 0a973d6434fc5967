"""The method docs agree with the code: docstring examples run (doctest), docs/METHODS.md's
examples run, and its per-method facts (class, references, what a change restarts) are the
code's. The methods table itself is generated from the specs and checked by
tests/simulations/test_docs_tables.py (``python -m simulations.doctables --write``)."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
import torch

import fedadapt
from fedadapt.registry import _REGISTRY

ROOT = Path(__file__).resolve().parents[2]
METHODS = (ROOT / "docs" / "METHODS.md").read_text()
DRIFT = (ROOT / "docs" / "DRIFT.md").read_text()
MODULES = sorted(m.name for m in pkgutil.iter_modules(fedadapt.__path__, "fedadapt."))


def _globs() -> dict[str, object]:
    """What the examples assume: a small model, a loss, three clients' models."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(16, 4), torch.randn(16, 2)

    def loss() -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(x), y)

    with torch.no_grad():
        clients = [
            [p.detach() + 0.01 * (k + 1) * torch.randn_like(p) for p in model.parameters()]
            for k in range(3)
        ]
    return {
        "fedadapt": fedadapt,
        "torch": torch,
        "model": model,
        "global_model": torch.nn.Linear(4, 2),
        "x": x,
        "y": y,
        "loss": loss,
        "client_params": clients,
        "weights": [10, 20, 30],
    }


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, extraglobs=_globs(), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, (
        f"{module}: {result.failed} of {result.attempted} doctest examples failed"
    )


def test_every_public_class_and_module_with_an_example_runs_it():
    """An example written as a literal block (``Example::``) would never run: there is none."""
    for module in MODULES:
        text = inspect.getsource(importlib.import_module(module))
        assert "Example::" not in text, (
            f"{module}: an example that does not run (write it as >>> lines)"
        )
    attempted = sum(
        doctest.testmod(importlib.import_module(m), extraglobs=_globs()).attempted for m in MODULES
    )
    assert attempted >= 40


def test_methods_md_examples_run():
    result = doctest.testfile(
        str(ROOT / "docs" / "METHODS.md"),
        module_relative=False,
        optionflags=doctest.ELLIPSIS,
        verbose=False,
    )
    assert result.attempted >= 5 and result.failed == 0


def _sections() -> dict[str, str]:
    """METHODS.md's per-method sections: registered name -> text (header to the next header)."""
    out = {}
    headers = list(re.finditer(r"^#{2,3} .*$", METHODS, flags=re.M))
    for i, h in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(METHODS)
        m = re.match(r"#{2,3} (?:[0-9a-z]+\. )?`([a-z0-9-]+)`.*?\(`(\w+)`\)", h.group(0))
        if m:
            out[m.group(1)] = METHODS[h.start() : end]
    return out


def test_methods_md_names_each_methods_class():
    sections = _sections()
    assert len(sections) >= 9
    for name, text in sections.items():
        cls = re.match(r"#{2,3} [^(]*\(`(\w+)`\)", text).group(1)  # type: ignore[union-attr]
        assert name in _REGISTRY, f"METHODS.md documents {name!r}, which is not registered"
        assert _REGISTRY[name].__name__ == cls, (
            f"METHODS.md: {name} is {cls}, the registry has {_REGISTRY[name].__name__}"
        )


def test_methods_md_cites_the_papers_the_docstrings_cite():
    for name, text in _sections().items():
        doc = inspect.getdoc(_REGISTRY[name]) or ""
        refs = doc[doc.find("References:") :] if "References:" in doc else ""
        cited = set(re.findall(r"arXiv:(\d{4}\.\d{4,5})", refs))
        documented = set(re.findall(r"arXiv:(\d{4}\.\d{4,5})", text))
        assert cited, f"{name}: its docstring cites no paper"
        assert cited <= documented, (
            f"METHODS.md's {name} section lacks {sorted(cited - documented)}"
        )


def _restarted(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> set[str]:
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    opt.on_change()  # type: ignore[attr-defined]
    st = opt.state[params[0]]
    return {k for k in ("exp_avg", "exp_avg_sq", "drift") if k in st and not st[k].any()}


def test_what_a_change_restarts_is_documented_as_the_code_does_it():
    """cp-adam restarts the first moment only by default (docs said both in one place)."""
    params = [torch.zeros(3, requires_grad=True)]
    default = inspect.signature(fedadapt.ChangepointAdam).parameters["reset"].default
    assert default == "first-moment"
    assert _restarted(fedadapt.ChangepointAdam(params), params) == {"exp_avg"}
    params = [torch.zeros(3, requires_grad=True)]
    assert _restarted(fedadapt.ChangepointAdam(params, reset="all"), params) == {
        "exp_avg",
        "exp_avg_sq",
    }
    params = [torch.zeros(3, requires_grad=True)]
    assert _restarted(fedadapt.Flash(params), params) == {"exp_avg", "exp_avg_sq", "drift"}

    bullet = DRIFT[DRIFT.index("- `optimizer.on_change()`") :]
    bullet = " ".join(bullet[: bullet.index("\n- ")].split())
    cp = bullet[bullet.index("`cp-adam`") : bullet.index("`flash`")]
    assert "restarts its first moment" in cp and "keeps the second moment" in cp, cp
    assert 'default `reset="first-moment"`' in cp and '`reset="all"` restarts both moments' in cp, (
        cp
    )
    assert "`flash` restarts both moments, its drift degree" in bullet, bullet
    for text, where in (
        (inspect.getdoc(fedadapt.ChangepointAdam.on_change) or "", "on_change"),
        (inspect.getdoc(importlib.import_module("fedadapt.cpadam")) or "", "cpadam module"),
    ):
        flat = " ".join(text.split())
        assert (
            'default ``"first-moment"``' in flat or 'default (``reset="first-moment"``)' in flat
        ), where
        assert "both moments" not in flat.split("``")[0], where  # never "both" for the default
    # METHODS.md's summary of cp-adam says what the default does
    assert "a first-moment restart" in METHODS


def test_a_class_whose_signals_its_spec_does_not_list_is_refused_at_registration():
    """The server reads the spec's signals; a class declaring others would silently get none."""
    with pytest.raises(ValueError, match="must list them in signals"):
        fedadapt.register_optimizer(
            "fedexp-without-spec", fedadapt.FedExP, fedadapt.MethodSpec(side="server")
        )
    assert "fedexp-without-spec" not in fedadapt.available_optimizers()
    for name in fedadapt.available_optimizers():
        spec, cls = fedadapt.method_spec(name), _REGISTRY[name]
        assert set(getattr(cls, "required_signals", ())) <= set(spec.signals)
