"""``detection.nms``: greedy non-maximum suppression on integer codes (docs/arithmetic.md section 10.1).

The post-processing of single-shot detectors (MobileSSD): of each sample's ``A`` candidate
boxes, keep the highest-scoring ones that no kept box overlaps by more than an IoU threshold.
The output is dense, so shapes stay static: the scores ``(N, A)`` with every suppressed entry
set to zero.

``nms(boxes, scores, *, iou_threshold=0.5, score_threshold=None, max_detections=None)`` in a
model: ``boxes (N, A, 4)`` as ``(x1, y1, x2, y2)``, ``scores (N, A)``. On the datapath:

* the IoU is tested exactly on box *codes*: all four coordinates share one scale and zero point,
  which cancel from an IoU, so with integer widths ``max(0, x2 - x1)`` and intersections
  ``max(0, min(x2) - max(x1))`` (likewise in y), a box is suppressed when
  ``inter * 2^16 > iou_q16 * union`` (``iou_q16 = round(t * 2^16)``, half to even; never when
  ``union = 0``);
* boxes are visited by score code, highest first, ties by lower index; a score code below
  ``score_min`` (the smallest code whose real value exceeds ``score_threshold``) is never kept,
  and at most ``max_detections`` boxes are;
* the output has the scores' qparams: a kept box's score code, else ``fill``, the code of 0.

The float function does the same on real values (IoU ``inter / union > t``, scores
``> score_threshold``). The two differ only where quantization changes an order or an overlap
near the threshold, which verification measures.

>>> boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]]])
>>> nms(boxes, torch.tensor([[0.9, 0.8, 0.7]]), iou_threshold=0.5)  # box 1 overlaps box 0 with IoU 0.9
tensor([[0.9000, 0.0000, 0.7000]])
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from quant.contract.codes import code_range
from quant.contract.custom import CustomOpAttrs, CustomOperand
from quant.contract.datapath import Datapath
from quant.custom.registry import register_op

__all__ = ["nms", "nms_check_params", "nms_integer_params", "nms_keep", "nms_reference"]


def _check_shapes(boxes_shape: Sequence[int], scores_shape: Sequence[int], batch: bool) -> None:
    lead = 1 if batch else 0
    if len(boxes_shape) != 2 + lead or boxes_shape[-1] != 4:
        raise ValueError(f"detection.nms: boxes must have shape ({'N, ' if batch else ''}A, 4), got {tuple(boxes_shape)}")
    if tuple(scores_shape) != tuple(boxes_shape[:-1]):
        raise ValueError(f"detection.nms: scores must have shape {tuple(boxes_shape[:-1])} (one per box), got "
                         f"{tuple(scores_shape)}")  # fmt: skip


def nms_keep(over: torch.Tensor, order: Sequence[int], eligible: Sequence[bool], max_detections: int) -> list[int]:
    """The greedy pass shared by both definitions: the indices kept, visiting ``order`` and suppressing every
    later box ``j`` with ``over[i, j]`` for a kept ``i``; ineligible boxes are skipped, at most ``max_detections``."""
    rows = over.tolist()
    suppressed = [False] * len(order)
    kept: list[int] = []
    for pos, i in enumerate(order):
        if len(kept) == max_detections:
            break
        if suppressed[i] or not eligible[i]:
            continue
        kept.append(i)
        for j in order[pos + 1 :]:
            if rows[i][j]:
                suppressed[j] = True
    return kept


def _areas(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Areas ``(A,)`` and pairwise intersections ``(A, A)`` of boxes ``b (A, 4)`` (int64 or float64)."""
    zero = torch.zeros((), dtype=b.dtype)
    area = torch.maximum(b[:, 2] - b[:, 0], zero) * torch.maximum(b[:, 3] - b[:, 1], zero)
    iw = torch.minimum(b[:, None, 2], b[None, :, 2]) - torch.maximum(b[:, None, 0], b[None, :, 0])
    ih = torch.minimum(b[:, None, 3], b[None, :, 3]) - torch.maximum(b[:, None, 1], b[None, :, 1])
    return area, torch.maximum(iw, zero) * torch.maximum(ih, zero)


def _nms_float(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    iou_threshold: float = 0.5,
    score_threshold: Optional[float] = None,
    max_detections: Optional[int] = None,
) -> torch.Tensor:
    """Greedy non-maximum suppression: the scores ``(N, A)`` of the boxes kept, 0 for the suppressed ones."""
    _check_shapes(tuple(boxes.shape), tuple(scores.shape), batch=True)
    _check_options(iou_threshold, score_threshold, max_detections)
    keep = torch.zeros(scores.shape, dtype=scores.dtype, device=scores.device)
    limit = scores.shape[1] if max_detections is None else int(max_detections)
    for n in range(boxes.shape[0]):
        b = boxes[n].detach().to(torch.float64).cpu()
        s = scores[n].detach().to(torch.float64).cpu()
        area, inter = _areas(b)
        union = area[:, None] + area[None, :] - inter
        over = (union > 0) & (inter > iou_threshold * union)
        order = torch.argsort(-s, stable=True).tolist()
        eligible = (s > score_threshold if score_threshold is not None else torch.ones_like(s, dtype=torch.bool)).tolist()
        for i in nms_keep(over, order, eligible, limit):
            keep[n, i] = 1
    return scores * keep


def _check_options(iou_threshold: float, score_threshold: Optional[float], max_detections: Optional[int]) -> None:
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)) or not 0 <= iou_threshold <= 1:
        raise ValueError(f"detection.nms: iou_threshold={iou_threshold!r} must be a number in [0, 1]")
    if score_threshold is not None and (isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float))
                                        or not math.isfinite(score_threshold)):  # fmt: skip
        raise ValueError(f"detection.nms: score_threshold={score_threshold!r} must be None or a finite number")
    if max_detections is not None and (isinstance(max_detections, bool) or not isinstance(max_detections, int)
                                       or max_detections < 1):  # fmt: skip
        raise ValueError(f"detection.nms: max_detections={max_detections!r} must be None or an int >= 1")


def nms_integer_params(
    inputs: Sequence[CustomOperand],
    output: CustomOperand,
    datapath: Datapath,
    *,
    iou_threshold: float = 0.5,
    score_threshold: Optional[float] = None,
    max_detections: Optional[int] = None,
) -> dict[str, int]:
    """``iou_q16``, ``score_min``, ``max_detections`` and ``fill`` from the options and the scores' qparams."""
    boxes, scores = inputs
    _check_shapes(boxes.shape, scores.shape, batch=False)
    _check_options(iou_threshold, score_threshold, max_detections)
    lo, hi = code_range(scores.bits, scores.signed)
    if score_threshold is None:
        score_min = lo
    else:  # s (q - z) > t  <=>  q >= floor(z + t / s) + 1
        score_min = min(max(math.floor(scores.zero_point + score_threshold / scores.scale) + 1, lo), hi + 1)
    return {
        "iou_q16": round(iou_threshold * 65536),
        "score_min": score_min,
        "max_detections": scores.shape[0] if max_detections is None else max_detections,
        "fill": min(max(output.zero_point, lo), hi),
    }


def nms_reference(
    boxes: torch.Tensor, scores: torch.Tensor, *, iou_q16: int, score_min: int, max_detections: int, fill: int
) -> torch.Tensor:
    """Section 10.1 on int64 codes: ``boxes (N, A, 4)``, ``scores (N, A)`` -> the kept score codes, else ``fill``."""
    _check_shapes(tuple(boxes.shape), tuple(scores.shape), batch=True)
    out = torch.full(scores.shape, fill, dtype=torch.int64)
    for n in range(boxes.shape[0]):
        b, s = boxes[n].to(torch.int64), scores[n].to(torch.int64)
        area, inter = _areas(b)
        union = area[:, None] + area[None, :] - inter
        over = (union > 0) & (inter * 65536 > iou_q16 * union)
        order = torch.argsort(-s, stable=True).tolist()
        kept = nms_keep(over, order, (s >= score_min).tolist(), max_detections)
        out[n, kept] = s[kept]
    return out


def nms_check_params(attrs: CustomOpAttrs) -> None:
    """The parameters and code types the integer NMS takes (the record refuses the rest, for both backends):
    ``iou_q16`` in [0, 65536], ``max_detections >= 1``, ``fill`` a code of the output, which has the scores'
    code type."""
    p = attrs.param_dict
    if attrs.y_bits != attrs.x_bits[1] or attrs.y_signed != attrs.x_signed[1]:
        raise ValueError(f"the output (y_bits={attrs.y_bits}, y_signed={attrs.y_signed}) must have the scores' code "
                         f"type (x_bits[1]={attrs.x_bits[1]}, x_signed[1]={attrs.x_signed[1]})")  # fmt: skip
    lo, hi = code_range(attrs.y_bits, attrs.y_signed)
    for name, value, low, high in (("iou_q16", p["iou_q16"], 0, 65536), ("max_detections", p["max_detections"], 1, None),
                                   ("fill", p["fill"], lo, hi)):  # fmt: skip
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"{name}={value} must be an int in {allowed}")


nms: Any = register_op(
    "detection.nms",
    n_inputs=2,
    float_fn=_nms_float,
    integer_params=nms_integer_params,
    reference=nms_reference,
    param_names=("iou_q16", "score_min", "max_detections", "fill"),
    c_symbol="qk_nms",
    output_like=1,
    check_params=nms_check_params,
)
