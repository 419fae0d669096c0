"""scikit-learn's bundled 8x8 handwritten digits as a :class:`Dataset` (nothing is downloaded).

1797 images of 10 classes; pixels 0..16 scaled to [0, 1]; a stratified, seeded split with
``test_fraction`` of the samples held out (the split of ``experiments.digits``).
"""

from __future__ import annotations

from experiments.data.dataset import Dataset
from experiments.digits import load_digits_data

__all__ = ["load_digits"]


def load_digits(*, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """The digits: ``x`` float32 ``(N, 1, 8, 8)`` in [0, 1], ``y`` int64 in [0, 10).

    With the default ``test_fraction=0.25``: 1347 training and 450 test images.
    """
    data = load_digits_data(test_fraction=test_fraction, seed=seed)
    return Dataset(
        name="digits",
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        num_classes=10,
        input_shape=(1, 8, 8),
    )
