"""Data sources: shapes, determinism, laziness, bounded caches, hub loading from local files."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import simulations.data
from simulations.data import (
    DATASET_NAMES,
    SyntheticSource,
    build_source,
    load_digits_arrays,
    make_mnist1d,
    split_train_test,
)


def test_digits_arrays_shape_range_and_labels() -> None:
    X, y = load_digits_arrays()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert X.min() == 0.0 and X.max() == 1.0


def test_split_train_test_is_a_stratified_partition() -> None:
    X = np.arange(100, dtype=np.float32)[:, None]
    y = np.repeat(np.arange(4), 25)
    (Xtr, ytr), (Xte, yte) = split_train_test(X, y, test_fraction=0.2, seed=3)
    assert sorted(np.concatenate([Xtr[:, 0], Xte[:, 0]]).tolist()) == list(range(100))
    assert np.bincount(yte).tolist() == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="test_fraction"):
        split_train_test(X, y, test_fraction=1.0)


def test_mnist1d_is_deterministic_balanced_and_seed_dependent() -> None:
    X1, y1 = make_mnist1d(300, seed=5)
    X2, y2 = make_mnist1d(300, seed=5)
    X3, _ = make_mnist1d(300, seed=6)
    assert X1.shape == (300, 40) and X1.dtype == np.float32 and y1.dtype == np.int64
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(X1, X3)
    assert np.bincount(y1).tolist() == [30] * 10
    with pytest.raises(ValueError, match="length"):
        make_mnist1d(10, length=8)


def test_digits_source_gives_client_arrays_and_test_set() -> None:
    source = build_source("digits", num_clients=10, partitioner="iid", seed=0)
    assert source.num_classes == 10 and source.input_shape == (1, 8, 8)
    X, y = source.get(0)
    assert X.shape[1:] == (1, 8, 8) and len(X) == len(y) > 0
    X_test, y_test = source.test_set()
    total = sum(len(source.get(k)[1]) for k in range(10))
    assert total + len(y_test) == 1797


def test_mnist1d_source_with_options() -> None:
    source = build_source("mnist1d", num_clients=4, options={"num_samples": 200}, seed=1)
    assert source.input_shape == (40,)
    assert sum(len(source.get(k)[1]) for k in range(4)) == 160


def test_get_is_cached_lru_and_bounded() -> None:
    source = build_source("digits", num_clients=20, partitioner="iid", cache_size=3)
    first = source.get(0)
    assert source.get(0) is first  # a cache hit returns the same arrays
    for k in (1, 2, 3):
        source.get(k)
    assert source.cached_client_ids() == [1, 2, 3]
    source.get(1)
    assert source.cached_client_ids() == [2, 3, 1]
    np.testing.assert_array_equal(source.get(0)[0], first[0])  # rebuilt identically
    source.clear_cache()
    assert source.cached_client_ids() == []


def test_get_rejects_unknown_client_ids() -> None:
    source = build_source("synthetic", num_clients=5)
    for bad in (-1, 5):
        with pytest.raises(ValueError, match=r"client_id must be in \[0, 5\)"):
            source.get(bad)


def test_unknown_dataset_names_accepted_values() -> None:
    with pytest.raises(ValueError) as info:
        build_source("cifar", num_clients=2)
    for name in DATASET_NAMES:
        assert name in str(info.value)


def test_unknown_source_options_name_themselves_and_the_accepted_ones() -> None:
    # a ValueError (what the pre-flight check reports), not a TypeError from deep inside
    with pytest.raises(ValueError, match=r"\['alpah'\] of dataset 'synthetic'.*alpha, beta"):
        build_source("synthetic", num_clients=3, options={"alpah": 0.5})
    with pytest.raises(ValueError, match=r"\['num_clients'\] of dataset 'synthetic'"):
        build_source("synthetic", num_clients=3, options={"num_clients": 4})
    with pytest.raises(ValueError, match=r"\['loader_option'\].*loader_options"):
        build_source("custom", num_clients=3, options={"loader": "m:f", "loader_option": {}})
    with pytest.raises(ValueError, match="must be a mapping"):
        build_source("custom", num_clients=3, options={"loader": "m:f", "loader_options": [1]})
    with pytest.raises(ValueError, match=r"\['subsets'\] of dataset 'hub'.*subset"):
        build_source("hub", num_clients=3, options={"dataset": "csv", "subsets": "x"})


def test_population_larger_than_pool_is_an_error() -> None:
    with pytest.raises(ValueError, match="exceeds the .* training examples"):
        build_source("digits", num_clients=5000)


def test_synthetic_million_clients_allocates_nothing_per_client() -> None:
    tracemalloc.start()
    try:
        source = SyntheticSource(1_000_000, seed=3, cache_size=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000  # bytes: 1,000,000 of anything would be far more
    for k in (0, 999_999, 123_456, 500_000, 7, 8):
        X, y = source.get(k)
        assert X.shape == (source.client_size(k), 60) and len(y) == len(X)
    assert source.cached_client_ids() == [123_456, 500_000, 7, 8]


def test_synthetic_is_a_pure_function_of_seed_and_client() -> None:
    a = SyntheticSource(1_000_000, seed=11, cache_size=0)
    b = SyntheticSource(1_000_000, seed=11, cache_size=0)
    c = SyntheticSource(1_000_000, seed=12, cache_size=0)
    np.testing.assert_array_equal(a.get(765_432)[0], b.get(765_432)[0])
    np.testing.assert_array_equal(a.get(765_432)[1], b.get(765_432)[1])
    assert a.get(765_432)[0].shape != c.get(765_432)[0].shape or not np.allclose(
        a.get(765_432)[0], c.get(765_432)[0]
    )
    assert not np.allclose(a.get(1)[0][:10].mean(0), a.get(2)[0][:10].mean(0))


def test_synthetic_sizes_follow_a_capped_power_law() -> None:
    source = SyntheticSource(10_000, min_samples=20, max_samples=500, seed=0)
    sizes = np.array([source.client_size(k) for k in range(2000)])
    assert sizes.min() >= 20 and sizes.max() <= 500
    assert np.median(sizes) < sizes.mean()  # right-skewed
    assert (sizes == 500).any()


def test_synthetic_test_set_and_iid_variant() -> None:
    source = SyntheticSource(1_000_000, num_test_clients=50, test_samples_per_client=4)
    X, y = source.test_set()
    assert X.shape == (200, 60) and y.min() >= 0 and y.max() < 10
    iid = SyntheticSource(100, iid=True, seed=2)
    np.testing.assert_array_equal(iid._client_model(3)[0], iid._client_model(4)[0])


def test_synthetic_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="alpha"):
        SyntheticSource(10, alpha=-1.0)
    with pytest.raises(ValueError, match="min_samples"):
        SyntheticSource(10, min_samples=10, max_samples=5)


def _write_csv(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % 3
    X = rng.normal(size=(rows, 4)) + y[:, None]
    lines = ["f0,f1,f2,f3,label"]
    lines += [",".join(f"{v:.4f}" for v in X[i]) + f",{y[i]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")


@pytest.mark.usefixtures("offline_hub")
def test_hub_source_reads_local_csv_files(tmp_path: Path) -> None:
    _write_csv(tmp_path / "train.csv", 60, seed=0)
    _write_csv(tmp_path / "test.csv", 15, seed=1)
    source = build_source(
        "hub",
        num_clients=3,
        partitioner="dirichlet",
        partitioner_params={"alpha": 1.0, "min_partition_size": 1},
        options={
            "dataset": "csv",
            "data_files": {
                "train": str(tmp_path / "train.csv"),
                "test": str(tmp_path / "test.csv"),
            },
            "label_column": "label",
            "feature_columns": ["f0", "f1", "f2", "f3"],
            "cache_dir": str(tmp_path / "hf-cache"),
        },
    )
    X, y = source.get(1)
    assert X.dtype == np.float32 and X.shape[1] == 4 and y.dtype == np.int64
    assert sum(len(source.get(k)[1]) for k in range(3)) == 60
    X_test, y_test = source.test_set()
    assert X_test.shape == (15, 4) and len(y_test) == 15
    assert source.num_classes == 3 and source.input_shape == (4,)


@pytest.mark.usefixtures("offline_hub")
def test_hub_source_holds_out_a_test_set_without_test_split(tmp_path: Path) -> None:
    _write_csv(tmp_path / "all.csv", 50, seed=2)
    source = build_source(
        "hub",
        num_clients=2,
        test_fraction=0.2,
        options={
            "dataset": "csv",
            "data_files": str(tmp_path / "all.csv"),
            "cache_dir": str(tmp_path / "hf-cache"),
        },
    )
    assert len(source.test_set()[1]) == 10
    assert sum(len(source.get(k)[1]) for k in range(2)) == 40
    assert source.input_shape == (4,)


def test_hub_source_requires_a_dataset_option() -> None:
    with pytest.raises(ValueError, match="options\\['dataset'\\]"):
        build_source("hub", num_clients=2)


@pytest.mark.usefixtures("offline_hub")
def test_hub_source_reads_an_image_column_from_parquet(tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    images = [
        PILImage.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)) for _ in range(30)
    ]
    features = Features({"img": Image(), "label": ClassLabel(names=["a", "b", "c"])})
    Dataset.from_dict(
        {"img": images, "label": [i % 3 for i in range(30)]}, features=features
    ).to_parquet(str(tmp_path / "train.parquet"))
    source = build_source(
        "hub",
        num_clients=3,
        options={
            "dataset": "parquet",
            "data_files": str(tmp_path / "train.parquet"),
            "feature_columns": ["img"],
            "cache_dir": str(tmp_path / "hf-cache"),
        },
    )
    X, y = source.get(0)
    assert X.shape[1:] == (3, 4, 4) and X.dtype == np.float32
    assert 0.0 <= X.min() and X.max() <= 1.0
    assert source.num_classes == 3 and source.input_shape == (3, 4, 4)


def test_importing_the_layer_pulls_in_no_heavy_frameworks() -> None:
    # torch comes with fedadapt (the bottom layer, home of the shared seeding module);
    # Flower, flwr-datasets, Hugging Face datasets and Ray stay out until a run needs them
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import simulations.data, simulations.heterogeneity\n"
        "import simulations.drift, simulations.recovery\n"
        "heavy = ('flwr', 'flwr_datasets', 'datasets', 'ray')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


DATA_MODULES = sorted(
    m.name for m in pkgutil.iter_modules(simulations.data.__path__, "simulations.data.")
)


@pytest.mark.parametrize("module", ["simulations.data", *DATA_MODULES])
def test_docstring_examples_run(module: str) -> None:
    mod = importlib.import_module(module)
    assert "Example::" not in inspect.getsource(mod), "an example that never runs: write >>> lines"
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"
    if module != "simulations.data.hub":  # (its example would need the hub)
        assert result.attempted > 0, f"{module} shows no example"
