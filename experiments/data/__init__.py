"""Offline datasets by name for the experiments: ``load_dataset(name, seed=..., **options)``.

Nothing is downloaded at run time. ``digits`` ships with scikit-learn, ``mnist1d`` is
generated with the ``mnist1d`` package, ``fashion_mnist`` is read from the Debian package
``dataset-fashion-mnist`` and ``spoken_digits`` is synthesized with espeak-ng and sox; the
Debian packages come with ``make data``. Generated sets are cached under
``$XDG_CACHE_HOME/lowbit-quant`` (see :mod:`experiments.data.cache`).

==================  ==============  ==================  ===============================================
name                input_shape     train / test        options
==================  ==============  ==================  ===============================================
``digits``          ``(1, 8, 8)``   1347 / 450          ``test_fraction``
``fashion_mnist``   ``(1, 28, 28)`` 60000 / 10000       ``subset``, ``test_subset``, ``root``
``mnist1d``         ``(1, 40)``     4000 / 1000         ``num_samples``, ``cache_dir``
``spoken_digits``   ``(40, 49)``    225 / 75            ``variants_per_word``, ``test_fraction``,
                                                        ``cache_dir``, ``progress``, ``workers``
==================  ==============  ==================  ===============================================

Every set has 10 classes.
"""

from __future__ import annotations

import inspect
from typing import Callable

from experiments.data.dataset import Dataset, DatasetNotInstalledError
from experiments.data.digits import load_digits
from experiments.data.fashion_mnist import load_fashion_mnist
from experiments.data.mnist1d import load_mnist1d
from experiments.data.spoken_digits import load_spoken_digits

__all__ = ["DATASETS", "Dataset", "DatasetNotInstalledError", "load_dataset"]

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist1d": load_mnist1d,
    "spoken_digits": load_spoken_digits,
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)


def load_dataset(name: str, *, seed: int = 0, **options: object) -> Dataset:
    """The dataset ``name`` (one of :data:`DATASETS`) made with ``seed`` and the loader's ``options``.

    ``ValueError`` for an unknown name or option, listing the known ones.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    loader = _LOADERS[name]
    known = [p for p in inspect.signature(loader).parameters if p != "seed"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; its options: {', '.join(known)}")
    return loader(seed=seed, **options)
