"""Sequence and encoder-decoder models of the zoo: the layers beyond Conv/Linear that quantization must cover.

- :class:`LSTMClassifier`: a 1-layer LSTM over the time axis of ``(channels, steps)`` inputs (``mnist1d``,
  keyword features), its last hidden state to a classifier;
- :class:`TransformerClassifier`: a linear token embedding, a learned position embedding, a 2-layer
  ``nn.TransformerEncoder`` (multi-head attention, LayerNorm, GELU MLP), mean pooling and a classifier;
  images become tokens row by row;
- :class:`TinyBert`: a 2-layer BERT encoder built from ``transformers``' own ``BertConfig``/``BertModel`` (random
  init, nothing downloaded; the eager attention, ``torch.matmul`` and softmax, as Hugging Face writes it), fed
  a linear embedding of the steps, mean pooled; needs ``transformers`` (in the dev extras);
- :class:`UNetLike`: a U-Net-style encoder-decoder on images (strided convs down, ``ConvTranspose2d`` up,
  concatenated skips), then global pooling and a classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LSTMClassifier", "TransformerClassifier", "TinyBert", "UNetLike"]


def _as_steps(x: torch.Tensor, images: bool) -> torch.Tensor:
    """``(N, C, T)`` -> ``(N, T, C)``; images ``(N, C, H, W)`` -> rows as steps ``(N, H, C * W)`` (decided when
    the model is built, so that ``torch.fx`` traces it)."""
    if images:
        return x.permute(0, 2, 1, 3).flatten(2)
    return x.transpose(1, 2)


class LSTMClassifier(nn.Module):
    """``LSTM(features, width)`` over the steps, then ``Linear(width, classes)`` of the last hidden state."""

    def __init__(self, features: int, num_classes: int, width: int = 64, images: bool = False) -> None:
        super().__init__()
        self.images = images
        self.lstm = nn.LSTM(features, width, batch_first=True)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lstm(_as_steps(x, self.images))[0]  # (indexing, not unpacking: torch.fx traces it)
        logits: torch.Tensor = self.fc(out[:, -1])
        return logits


class TransformerClassifier(nn.Module):
    """Token embedding + positions, ``layers`` pre-norm-free encoder layers (GELU MLP), mean pool, classifier."""

    def __init__(self, features: int, steps: int, num_classes: int, width: int = 32, layers: int = 2, heads: int = 4,
                 images: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.images = images
        self.embed = nn.Linear(features, width)
        self.positions = nn.Embedding(steps, width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, activation="gelu",
                                           batch_first=True)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)
        self.register_buffer("steps", torch.arange(steps), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(_as_steps(x, self.images)) + self.positions(self.steps)
        logits: torch.Tensor = self.fc(self.norm(self.encoder(tokens)).mean(dim=1))
        return logits


class TinyBert(nn.Module):
    """``Linear(features, width)`` of the steps as ``inputs_embeds`` of a ``layers``-layer ``BertModel`` (``heads``
    heads, GELU MLP of ``2 width``, random init), mean pooled, ``Linear(width, classes)``."""

    def __init__(self, features: int, steps: int, num_classes: int, width: int = 32, layers: int = 2, heads: int = 4,
                 images: bool = False) -> None:  # fmt: skip
        super().__init__()
        try:
            from transformers import BertConfig, BertModel
        except ImportError as err:  # pragma: no cover - the dev extras install it
            raise ImportError("model 'bert' needs the transformers package: pip install transformers (the dev "
                              "extras of this project install it)") from err
        config = BertConfig(vocab_size=2, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=2 * width, max_position_embeddings=max(steps, 8),
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
        config._attn_implementation = "eager"  # torch.matmul and softmax, not the fused kernel
        self.images = images
        self.embed = nn.Linear(features, width)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(inputs_embeds=self.embed(_as_steps(x, self.images))).last_hidden_state
        logits: torch.Tensor = self.fc(hidden.mean(dim=1))
        return logits


class UNetLike(nn.Module):
    """Two strided-conv downsamplings, two ``ConvTranspose2d`` upsamplings with concatenated skips, then a
    global average pool and a classifier (inputs whose sides are multiples of 4)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.enc0 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.enc1 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.enc2 = nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1)
        self.up1 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec1 = nn.Conv2d(4 * width, 2 * width, 3, padding=1)
        self.up0 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec0 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = F.relu(self.enc0(x))
        e1 = F.relu(self.enc1(e0))
        e2 = F.relu(self.enc2(e1))
        d1 = F.relu(self.dec1(torch.cat([F.relu(self.up1(e2)), e1], dim=1)))
        d0 = F.relu(self.dec0(torch.cat([F.relu(self.up0(d1)), e0], dim=1)))
        logits: torch.Tensor = self.fc(F.adaptive_avg_pool2d(d0, 1).flatten(1))
        return logits
