"""MNIST-1D generated with the mnist1d package: shapes, determinism, caching, no download."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.data import load_dataset, mnist1d


@pytest.fixture(autouse=True)
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package's download path fetches with requests.get: any call fails the test."""
    import requests

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("mnist1d tried to download")

    monkeypatch.setattr(requests, "get", refuse)


def test_shapes_dtypes_and_labels(tmp_path: Path) -> None:
    d = load_dataset("mnist1d", num_samples=200, cache_dir=tmp_path)
    assert (d.name, d.num_classes, d.input_shape) == ("mnist1d", 10, (1, 40))
    assert d.x_train.shape == (160, 1, 40) and d.x_test.shape == (40, 1, 40)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert set(torch.cat([d.y_train, d.y_test]).tolist()) == set(range(10))
    assert torch.bincount(torch.cat([d.y_train, d.y_test])).tolist() == [20] * 10
    x = torch.cat([d.x_train, d.x_test])
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std(unbiased=False)) - 1.0) < 1e-4


def test_the_same_seed_makes_the_same_set(tmp_path: Path) -> None:
    a = load_dataset("mnist1d", seed=3, num_samples=100, cache_dir=tmp_path / "a")
    b = load_dataset("mnist1d", seed=3, num_samples=100, cache_dir=tmp_path / "b")
    c = load_dataset("mnist1d", seed=4, num_samples=100, cache_dir=tmp_path / "a")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_the_second_load_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset("mnist1d", num_samples=100, cache_dir=tmp_path)

    def refuse(*args: object) -> None:
        raise AssertionError("regenerated a cached set")

    monkeypatch.setattr(mnist1d, "_generate", refuse)
    second = load_dataset("mnist1d", num_samples=100, cache_dir=tmp_path)
    assert torch.equal(first.x_train, second.x_train)
    with pytest.raises(AssertionError, match="regenerated"):
        load_dataset("mnist1d", num_samples=110, cache_dir=tmp_path)


def test_the_default_cache_is_under_xdg_cache_home(private_cache: Path) -> None:
    load_dataset("mnist1d", num_samples=100)
    assert [p.name.startswith("mnist1d-") for p in private_cache.iterdir()] == [True]


def test_the_global_generators_are_left_alone(tmp_path: Path) -> None:
    random.seed(11)
    np.random.seed(11)
    expected = (random.random(), np.random.rand())
    random.seed(11)
    np.random.seed(11)
    load_dataset("mnist1d", num_samples=100, cache_dir=tmp_path)
    assert (random.random(), np.random.rand()) == expected


@pytest.mark.parametrize("num_samples", [10, 105])
def test_num_samples_is_checked(num_samples: int) -> None:
    with pytest.raises(ValueError, match=f"num_samples={num_samples}"):
        load_dataset("mnist1d", num_samples=num_samples)
