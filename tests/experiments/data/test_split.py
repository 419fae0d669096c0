"""Stratified, seeded index selection."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.data.split import stratified_indices, stratified_split

LABELS = np.repeat(np.arange(4), [40, 30, 20, 10])  # 100 samples, unbalanced


@pytest.mark.parametrize("n", [0, 1, 7, 10, 33, 99, 100])
def test_the_count_is_exact_and_each_class_gets_its_share(n: int) -> None:
    picked = stratified_indices(LABELS, n, seed=3)
    assert len(picked) == n and len(np.unique(picked)) == n
    per_class = np.bincount(LABELS[picked], minlength=4)
    share = n * np.bincount(LABELS) / len(LABELS)
    assert np.all(np.abs(per_class - share) < 1.0), (per_class, share)


def test_the_choice_is_seeded() -> None:
    assert np.array_equal(stratified_indices(LABELS, 25, seed=1), stratified_indices(LABELS, 25, seed=1))
    assert not np.array_equal(stratified_indices(LABELS, 25, seed=1), stratified_indices(LABELS, 25, seed=2))


def test_a_count_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="n=101"):
        stratified_indices(LABELS, 101, seed=0)


def test_the_split_is_a_partition() -> None:
    train, test = stratified_split(LABELS, 0.2, seed=0)
    assert len(test) == 20 and len(train) == 80
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    assert np.bincount(LABELS[test]).tolist() == [8, 6, 4, 2]


def test_the_fraction_is_checked() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(LABELS, 1.0, seed=0)
