"""The Dataset checks and the registry: names, options and dispatch."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import experiments.data as data
from experiments.data import DATASETS, Dataset, load_dataset


def _fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        name="toy",
        x_train=torch.zeros(4, 1, 3),
        y_train=torch.tensor([0, 1, 2, 1]),
        x_test=torch.zeros(2, 1, 3),
        y_test=torch.tensor([2, 0]),
        num_classes=3,
        input_shape=(1, 3),
    )
    fields.update(overrides)
    return fields


def test_a_consistent_split_is_accepted_and_frozen() -> None:
    d = Dataset(**_fields())
    with pytest.raises(AttributeError):
        d.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"num_classes": 1}, "num_classes"),
        ({"x_train": torch.zeros(4, 1, 3, dtype=torch.float64)}, "x_train"),
        ({"y_test": torch.tensor([2, 0], dtype=torch.int32)}, "y_test"),
        ({"input_shape": (3,)}, "x_train"),
        ({"y_train": torch.tensor([0, 1, 2])}, "y_train"),
        ({"y_test": torch.tensor([3, 0])}, "y_test"),
        ({"y_train": torch.tensor([0, -1, 2, 1])}, "y_train"),
    ],
)
def test_an_inconsistent_split_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Dataset(**_fields(**overrides))


def test_the_registry_lists_every_dataset() -> None:
    assert DATASETS == ("digits", "fashion_mnist", "mnist1d", "spoken_digits")


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'.*digits, fashion_mnist, mnist1d, spoken_digits"):
        load_dataset("cifar10")


def test_an_unknown_option_lists_the_dataset_s_options() -> None:
    with pytest.raises(ValueError, match="unknown option.*subset.*'digits'.*test_fraction"):
        load_dataset("digits", subset=10)


def test_the_seed_and_options_reach_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(*, seed: int = 0, num_samples: int = 5000, cache_dir: Any = None) -> Dataset:
        seen.update(seed=seed, num_samples=num_samples)
        return Dataset(**_fields())

    monkeypatch.setitem(data._LOADERS, "mnist1d", fake)
    load_dataset("mnist1d", seed=7, num_samples=100)
    assert seen == {"seed": 7, "num_samples": 100}
