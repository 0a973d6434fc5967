"""Model and data: an MLP on a synthetic 5-class problem, one partition per SuperNode."""

import numpy as np
import torch
from torch import nn

FEATURES, CLASSES, PER_CLIENT = 20, 5, 240


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, 32)
        self.fc2 = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _teacher() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(FEATURES, CLASSES))


def load_data(partition_id: int, num_partitions: int, n: int = PER_CLIENT):
    rng = np.random.default_rng(1000 + partition_id)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = (x @ _teacher()).argmax(axis=1)
    return torch.from_numpy(x), torch.from_numpy(y)


def test_set():
    x, y = load_data(10_000, 1, n=1000)
    return x, y


def train(net: Net, x, y, epochs: int, lr: float) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[i : i + 32]), y[i : i + 32])
            loss.backward()
            opt.step()
    return float(loss)


def evaluate(net: Net, x, y) -> tuple[float, float]:
    net.eval()
    with torch.no_grad():
        out = net(x)
        return float(nn.functional.cross_entropy(out, y)), float(
            (out.argmax(1) == y).float().mean()
        )
