"""scikit-learn's bundled digits through the registry."""

from __future__ import annotations

import torch

from experiments.data import load_dataset


def test_shapes_dtypes_and_labels() -> None:
    d = load_dataset("digits")
    assert (d.name, d.num_classes, d.input_shape) == ("digits", 10, (1, 8, 8))
    assert d.x_train.shape == (1347, 1, 8, 8) and d.x_test.shape == (450, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    assert set(d.y_test.tolist()) == set(range(10))


def test_the_split_follows_the_seed_and_the_fraction() -> None:
    a, b, c = load_dataset("digits", seed=1), load_dataset("digits", seed=1), load_dataset("digits", seed=2)
    assert torch.equal(a.y_test, b.y_test) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.y_test, c.y_test)
    assert len(load_dataset("digits", test_fraction=0.5).y_test) == 899
