"""Models by name for the experiments, built for a dataset's input shape and number of classes.

``build_model(name, input_shape, num_classes, width=...)``: ``mlp`` (any input, flattened),
``cnn`` (the small CNN of ``digits_cnn``, any image), ``resnet8`` / ``resnet20`` (CIFAR-style
ResNets, any image), ``mobilenet`` (MobileNetV2-style inverted residuals with ReLU6 and
hardswish), ``kws`` (a 1-D conv keyword spotter on ``(channels, frames)`` features), ``lstm``,
``transformer`` (sequences, or images row by row) and ``unet`` (images): see
:mod:`experiments.models.sequence`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from experiments.models.digits_cnn import DigitsCNN
from experiments.models.resnet import ResNet20
from experiments.models.sequence import LSTMClassifier, TinyBert, TransformerClassifier, UNetLike

__all__ = ["MODELS", "build_model"]


class MLP(nn.Module):
    """Flatten, then Linear-ReLU x2 (``4 width`` and ``2 width`` units) and a classifier."""

    def __init__(self, features: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(features, 4 * width), nn.Linear(4 * width, 2 * width)
        self.fc3 = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))
        return out


class _InvertedResidual(nn.Module):
    def __init__(self, c: int, expand: int) -> None:
        super().__init__()
        h = c * expand
        self.expand, self.bn1 = nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h)
        self.dw, self.bn2 = nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h)
        self.project, self.bn3 = nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.bn1(self.expand(x)))
        y = self.act(self.bn2(self.dw(y)))
        out: torch.Tensor = x + self.bn3(self.project(y))
        return out


class MobileNetLike(nn.Module):
    """MobileNetV2-style: a stem conv, inverted residual blocks (expand + ReLU6, depthwise + hardswish,
    project, ``x + y``), a strided conv between two stages, global pooling and a classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.stage1 = nn.Sequential(_InvertedResidual(width, 3), _InvertedResidual(width, 3))
        self.down, self.bn_down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width)
        self.stage2 = nn.Sequential(_InvertedResidual(2 * width, 3), _InvertedResidual(2 * width, 3))
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(F.relu6(self.bn(self.stem(x))))
        x = self.stage2(F.relu6(self.bn_down(self.down(x))))
        out: torch.Tensor = self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return out


class KeywordSpotter1D(nn.Module):
    """1-D convs over ``(channels, frames)`` features: conv-BN-ReLU, max pool, two depthwise-separable
    blocks (ReLU6), global average pooling and a classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(in_channels, width, 5, padding=2, bias=False), nn.BatchNorm1d(width)
        self.pool = nn.MaxPool1d(2)
        self.dw1, self.pw1 = nn.Conv1d(width, width, 3, padding=1, groups=width), nn.Conv1d(width, 2 * width, 1)
        self.dw2, self.pw2 = nn.Conv1d(2 * width, 2 * width, 3, padding=1, groups=2 * width), nn.Conv1d(2 * width, 2 * width, 1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.pw1(F.relu6(self.dw1(x))))
        x = F.relu(self.pw2(F.relu6(self.dw2(x))))
        out: torch.Tensor = self.fc(torch.flatten(F.adaptive_avg_pool1d(x, 1), 1))
        return out


def _image(input_shape: Sequence[int], name: str) -> int:
    if len(input_shape) != 3:
        raise ValueError(f"model {name!r} needs image inputs (C, H, W), the data has shape {tuple(input_shape)}")
    return int(input_shape[0])


#: name -> factory(input_shape, num_classes, width).
MODELS: dict[str, Callable[[Sequence[int], int, int], nn.Module]] = {
    "mlp": lambda s, k, w: MLP(math.prod(s), k, w),
    "cnn": lambda s, k, w: DigitsCNN(w, _image(s, "cnn"), k),
    "resnet8": lambda s, k, w: ResNet20(k, blocks=1, in_channels=_image(s, "resnet8")),
    "resnet20": lambda s, k, w: ResNet20(k, blocks=3, in_channels=_image(s, "resnet20")),
    "mobilenet": lambda s, k, w: MobileNetLike(_image(s, "mobilenet"), k, w),
    "kws": lambda s, k, w: KeywordSpotter1D(int(s[0]), k, w) if len(s) == 2 else _refuse_kws(s),
    "lstm": lambda s, k, w: LSTMClassifier(_step_features(s), k, w, images=len(s) == 3),
    "transformer": lambda s, k, w: TransformerClassifier(_step_features(s), int(s[1]), k, w, images=len(s) == 3),
    "bert": lambda s, k, w: TinyBert(_step_features(s), int(s[1]), k, w, images=len(s) == 3),
    "unet": lambda s, k, w: UNetLike(_image(s, "unet"), k, w) if s[1] % 4 == 0 and s[2] % 4 == 0 else _refuse_unet(s),
}


def _step_features(shape: Sequence[int]) -> int:
    """Features per step of ``(C, T)`` sequences (``C``) or of images read row by row (``C * W``)."""
    if len(shape) not in (2, 3):
        raise ValueError(f"sequence models need (channels, steps) or image inputs, the data has shape {tuple(shape)}")
    return int(shape[0]) * (int(shape[2]) if len(shape) == 3 else 1)


def _refuse_unet(shape: Sequence[int]) -> nn.Module:
    raise ValueError(f"model 'unet' needs image sides that are multiples of 4, the data has shape {tuple(shape)}")


def _refuse_kws(shape: Sequence[int]) -> nn.Module:
    raise ValueError(f"model 'kws' needs (channels, frames) inputs, the data has shape {tuple(shape)}")


def build_model(name: str, input_shape: Sequence[int], num_classes: int, width: int = 16) -> nn.Module:
    """The model ``name`` for inputs of ``input_shape`` (no batch) and ``num_classes`` classes."""
    if name not in MODELS:
        raise ValueError(f"model={name!r} is not one of {', '.join(sorted(MODELS))}")
    return MODELS[name](tuple(input_shape), num_classes, width)
