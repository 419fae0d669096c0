"""Stratified, seeded index selection shared by the loaders.

``stratified_indices(labels, n, seed)`` picks ``n`` indices whose class counts are
proportional to the classes' counts in ``labels``: class ``c`` with ``n_c`` of ``N``
samples gets ``floor(n n_c / N)``, and the ``n - sum`` samples left over go one each to the
classes with the largest remainders (ties broken by a seeded shuffle of the classes). The
samples within each class are a seeded random choice. ``stratified_split`` uses it to hold
out a test set.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_indices", "stratified_split"]


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices into ``labels`` (int array ``(N,)``), stratified by class, ascending.

    >>> stratified_indices(np.array([0, 0, 0, 0, 1, 1]), 3, seed=0).size
    3
    >>> np.bincount(np.array([0, 0, 0, 0, 1, 1])[stratified_indices(np.array([0, 0, 0, 0, 1, 1]), 3, seed=0)]).tolist()
    [2, 1]
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0 <= n <= len(labels):
        raise ValueError(f"n={n} must be in [0, {len(labels)}]")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / len(labels) if len(labels) else counts.astype(np.float64)
    quota = np.floor(exact).astype(np.int64)
    order = rng.permutation(len(classes))
    # Largest remainder first; a stable sort keeps the shuffled order among equal remainders.
    by_remainder = order[np.argsort(-(exact - quota)[order], kind="stable")]
    quota[by_remainder[: n - int(quota.sum())]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` index arrays: ``round(N test_fraction)`` stratified test samples, the rest train."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be in (0, 1)")
    test = stratified_indices(labels, int(round(len(labels) * test_fraction)), seed)
    train = np.setdiff1d(np.arange(len(labels)), test, assume_unique=True)
    return train, test
