import sys
from pathlib import Path

import pytest

# the test doubles live next to the tests (importlib import mode adds nothing to sys.path)
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _task_identity(task_identity):
    """Every strategy test builds instruction messages (fixture in tests/conftest.py)."""
