import sys
from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity

# the test doubles live next to the tests (importlib import mode adds nothing to sys.path)
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _task_identity():
    """Instruction messages need a run/node/task identity (Flower sets it in a ServerApp)."""
    old = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = old
