"""Models by name: shapes, seeded initialisation, a quick fit on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simulations.data import load_digits_arrays, split_train_test
from simulations.models import MODEL_NAMES, build_model


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("mlp", (1, 8, 8)),
        ("mlp", (60,)),
        ("cnn", (1, 8, 8)),
        ("cnn", (40,)),
        ("cnn", (2, 40)),
        ("logreg", (60,)),
        ("tiny", (1, 8, 8)),
    ],
)
def test_models_map_a_batch_to_logits(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 10, seed=0)
    assert model(torch.zeros(3, *shape)).shape == (3, 10)


@pytest.mark.parametrize("name", ["mlp", "cnn", "logreg"])
def test_initialisation_is_seeded_and_leaves_global_rng_alone(name: str) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(name, (1, 8, 8), 10, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    b = build_model(name, (1, 8, 8), 10, seed=7)
    c = build_model(name, (1, 8, 8), 10, seed=8)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(
        not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )


def test_tiny_is_a_zero_initialised_linear_layer() -> None:
    model = build_model("tiny", (60,), 10)
    params = list(model.parameters())
    assert sum(p.numel() for p in params) == 60 * 10 + 10
    assert all(torch.count_nonzero(p) == 0 for p in params)


def test_bad_names_and_shapes_raise() -> None:
    with pytest.raises(ValueError) as info:
        build_model("resnet", (1, 8, 8), 10)
    for name in MODEL_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("cnn", (1, 2, 3, 4), 10)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", (4,), 1)


def test_mlp_learns_digits() -> None:
    X, y = load_digits_arrays()
    (Xtr, ytr), (Xte, yte) = split_train_test(X, y, seed=0)
    model = build_model("mlp", Xtr.shape[1:], 10, seed=0)
    Xt, yt = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    try:
        for _ in range(100):  # plain full-batch gradient descent
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(Xt), yt).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.5 * p.grad
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        acc = (model(torch.from_numpy(Xte)).argmax(1).numpy() == yte).mean()
    assert acc > 0.85, f"digits MLP accuracy {acc:.3f}"
    assert np.isfinite(acc)
