"""Section 10.1 (integer non-maximum suppression) in plain Python: ints and Fractions, one box at a time.

Written from the document, not from either implementation: the IoU as an exact rational compared
with ``Fraction(iou_q16, 2^16)``, the visiting order as a sort on ``(-score, index)``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence


def iou(a: Sequence[int], b: Sequence[int]) -> Fraction:
    """The exact IoU of two (x1, y1, x2, y2) boxes of integer coordinates (0 when the union is empty)."""

    def area(r: Sequence[int]) -> int:
        return max(0, r[2] - r[0]) * max(0, r[3] - r[1])

    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = area(a) + area(b) - inter
    return Fraction(inter, union) if union > 0 else Fraction(0)


def nms_oracle(
    boxes: Sequence[Sequence[int]], scores: Sequence[int], *, iou_q16: int, score_min: int, max_detections: int,
    fill: int,
) -> list[int]:  # fmt: skip
    """One sample: the score code of each kept box, ``fill`` elsewhere."""
    t = Fraction(iou_q16, 1 << 16)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if len(kept) == max_detections:
            break
        if scores[i] < score_min or any(iou(boxes[k], boxes[i]) > t for k in kept):
            continue
        kept.append(i)
    return [scores[i] if i in kept else fill for i in range(len(scores))]
