"""The registry's docstring examples run: the presets, the argument mapping, the registry."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

# the modules split out of strategies/registry.py (Flower's wrapping has no example: it needs a
# grid and replies, tests/strategies/test_strategy_registry.py runs it)
MODULES = ["strategies.arguments", "strategies.presets", "strategies.registry"]


@pytest.mark.parametrize("module", [*MODULES, "strategies.flower_sampling"])
def test_docstring_examples_run_and_none_is_a_literal_block(module: str) -> None:
    mod = importlib.import_module(module)
    assert "Example::" not in inspect.getsource(mod), "an example that never runs: write >>> lines"
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"
    assert result.attempted > 0 or module not in MODULES, f"{module} shows no example"
