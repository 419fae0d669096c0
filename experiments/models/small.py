"""Small models of the shapes the integer datapath must run: used by the lowering and verification tests,
the benchmarks and the experiments. Each is an ordinary ``nn.Module``, written as a user would
(functional activations, ``x + y`` residuals), with an ``example_input(batch)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "BNCNN", "ResidualCNN", "InvertedResidualNet", "ActivationZoo", "KeywordSpotter", "Branches", "SqueezeExcite", "TinyAttention",
           "TinyDetector", "TransformerBlock", "SMALL_MODELS"]  # fmt: skip


class MLP(nn.Module):
    """Linear-ReLU-Linear-ReLU-Linear on 20 features."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(20, 32), nn.Linear(32, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
        return out

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 20)


class BNCNN(nn.Module):
    """Conv-BN-ReLU, strided conv-BN-ReLU6, max pool, conv, global average pool, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu6(self.bn2(self.conv2(x)))
        x = F.relu(self.conv3(self.pool(x)))
        out: torch.Tensor = self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return out

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 3, 16, 16)


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class ResidualCNN(nn.Module):
    """A stem, two ResNet-style basic blocks (``x + y`` residuals) and an average-pooled classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(_Block(8), _Block(8))
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        out: torch.Tensor = self.fc(self.pool(x).flatten(1))
        return out

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 3, 8, 8)


class _InvertedResidual(nn.Module):
    def __init__(self, c: int, expand: int) -> None:
        super().__init__()
        h = c * expand
        self.expand, self.dw = nn.Conv2d(c, h, 1), nn.Conv2d(h, h, 3, padding=1, groups=h)
        self.project = nn.Conv2d(h, c, 1)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.expand(x))
        y = self.act(self.dw(y))
        out: torch.Tensor = x + self.project(y)
        return out


class InvertedResidualNet(nn.Module):
    """MobileNetV2-style: expand (ReLU6), depthwise (hardswish), project, ``x + y``; global pool; classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.block1, self.block2 = _InvertedResidual(8, 3), _InvertedResidual(8, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(F.relu6(self.stem(x))))
        out: torch.Tensor = self.classifier(torch.flatten(self.pool(x), 1))
        return out

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 3, 16, 16)


class ActivationZoo(nn.Module):
    """Elementwise functions between linears, each an exact lookup table on the datapath."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.fc1(x))
        x = self.gelu(self.fc2(x)) + x
        out: torch.Tensor = self.fc3(F.hardswish(torch.tanh(x)))
        return out

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 12)


class KeywordSpotter(nn.Module):
    """A 1-D conv keyword-spotting model on 10 feature channels x 32 frames: conv-ReLU, max pool, a
    depthwise-separable block, average pool, global pool, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(10, 16, 5, padding=2)
        self.pool1 = nn.MaxPool1d(2)
        self.dw, self.pw = nn.Conv1d(16, 16, 3, padding=1, groups=16), nn.Conv1d(16, 24, 1)
        self.pool2 = nn.AvgPool1d(2)
        self.fc = nn.Linear(24, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.pw(F.relu6(self.dw(x)))))
        out: torch.Tensor = self.fc(torch.flatten(F.adaptive_avg_pool1d(x, 1), 1))
        return out

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 10, 32)


class Branches(nn.Module):
    """Two branches joined by ``torch.cat``, an asymmetric ``F.pad``, a ``permute`` and a linear on the
    last axis of a 3-D tensor (tokens), as in small sequence models."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 6, 1)
        self.c = nn.Conv2d(10, 8, 3)
        self.token = nn.Linear(8, 5)
        self.fc = nn.Linear(5 * 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.relu(self.a(x)), self.b(x)], dim=1)
        y = F.relu(self.c(F.pad(y, (1, 1, 2, 0))))              # (N, 8, 4, 4)
        t = y.flatten(2).permute(0, 2, 1)                          # (N, 16, 8): 16 tokens of 8 features
        out: torch.Tensor = self.fc(torch.flatten(self.token(t), 1))
        return out

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 3, 4, 4)


class SqueezeExcite(nn.Module):
    """Conv, then a squeeze-excitation gate (global pool, two linears, sigmoid) multiplying each channel,
    as in MobileNetV3 and EfficientNet."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(8, 4), nn.Linear(4, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        s = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(s)))).reshape(-1, 8, 1, 1)
        y = y * gate
        out: torch.Tensor = self.head(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))
        return out

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 3, 8, 8)


class TinyAttention(nn.Module):
    """One attention-like block on 6 tokens of 8 features: query and key projections, softmax over the
    tokens of their products (``mul`` and a sum as a 1x1 reduction), a value projection and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.score = nn.Linear(8, 1)
        self.fc = nn.Linear(6 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # x: (N, 6, 8)
        gate = self.score(self.q(x) * self.k(x))                 # (N, 6, 1)
        weights = torch.softmax(gate, dim=1)                     # over the tokens
        y = self.v(x) * weights                                  # (N, 6, 8), one weight per token
        out: torch.Tensor = self.fc(torch.flatten(y, 1))
        return out

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 6, 8)


class TransformerBlock(nn.Module):
    """A post-norm transformer encoder block on 6 tokens of 8 features, written as Hugging Face models write it:
    two-head scaled dot-product self-attention (``nn.Linear`` projections, ``q / sqrt(d)``, ``torch.matmul``,
    softmax), a residual and ``nn.LayerNorm``, a GELU MLP, a residual and ``nn.LayerNorm``, and a classifier."""

    heads, tokens, width = 2, 6, 8

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.out = nn.Linear(8, 8)
        self.norm1, self.norm2 = nn.LayerNorm(8), nn.LayerNorm(8)
        self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)
        self.fc = nn.Linear(6 * 8, 3)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, self.tokens, self.heads, self.width // self.heads).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # x: (N, 6, 8)
        head = self.width // self.heads
        q, k, v = self.split(self.q(x) / head**0.5), self.split(self.k(x)), self.split(self.v(x))
        p = torch.softmax(torch.matmul(q, k.transpose(-2, -1)), dim=-1)      # (N, 2, 6, 6)
        context = torch.matmul(p, v).permute(0, 2, 1, 3).reshape(-1, self.tokens, self.width)
        y = self.norm1(self.out(context) + x)
        y = self.norm2(y + self.down(F.gelu(self.up(y))))
        out: torch.Tensor = self.fc(torch.flatten(y, 1))
        return out

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 6, 8)


class TinyDetector(nn.Module):
    """A single-shot detector on 16x16 images with integer non-maximum suppression as its post-processing:
    a strided conv backbone, one box (x1, y1, x2, y2 offsets from each cell's anchor) and one score per
    cell of a 4x4 grid, and ``detection.nms`` (the custom op of :mod:`quant.custom.nms`) keeping at most
    5 boxes. Returns the suppressed scores ``(N, 16)`` and the boxes ``(N, 16, 4)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.box, self.score = nn.Conv2d(16, 4, 1), nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from quant.custom.nms import nms

        f = F.relu(self.conv2(F.relu(self.conv1(x))))
        boxes = torch.flatten(self.box(f), 2).permute(0, 2, 1)   # (N, 16, 4)
        scores = torch.sigmoid(torch.flatten(self.score(f), 1))  # (N, 16)
        kept: torch.Tensor = nms(boxes, scores, iou_threshold=0.4, max_detections=5)
        return kept, boxes

    @staticmethod
    def example_input(batch: int = 4) -> torch.Tensor:
        return torch.randn(batch, 1, 16, 16)


#: Every small model by name.
SMALL_MODELS: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "bn_cnn": BNCNN,
    "residual": ResidualCNN,
    "inverted_residual": InvertedResidualNet,
    "activations": ActivationZoo,
    "keyword_spotter": KeywordSpotter,
    "branches": Branches,
    "squeeze_excite": SqueezeExcite,
    "attention": TinyAttention,
    "transformer_block": TransformerBlock,
    "detector": TinyDetector,
}
