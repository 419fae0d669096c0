"""A registered custom op on the int64 torch reference (docs/arithmetic.md section 10).

``run_custom(attrs, *codes)`` checks each input against its declared code type, calls the op's
registered integer ``reference(*codes, **params)`` on int64 tensors and checks what it returns:
an integer tensor of the record's output shape (the batch of the first input) holding codes of
the output type. A reference that returns anything else is a ``ValueError`` naming the op, so a
wrong definition is never taken for a result.

>>> from quant.contract.custom import CustomOpAttrs
>>> import quant.custom.nms  # registers detection.nms
>>> attrs = CustomOpAttrs.build(op="detection.nms", params=dict(iou_q16=32768, score_min=0, max_detections=5,
...                             fill=0), x_bits=[8, 8], x_signed=[False, False], y_bits=8, y_signed=False, shape=(3,))
>>> boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]])
>>> run_custom(attrs, boxes, torch.tensor([[200, 210, 90]])).tolist()  # box 0 overlaps box 1 with IoU 0.81
[[0, 210, 90]]
"""

from __future__ import annotations

import torch

from quant.contract.args import check_code_values
from quant.contract.custom import CustomOpAttrs, custom_op_def
from quant.reference._checks import check_codes, int_tensor

__all__ = ["run_custom"]


def run_custom(attrs: CustomOpAttrs, *codes: torch.Tensor) -> torch.Tensor:
    """The registered reference of ``attrs.op`` on ``codes`` (checked in and out), as int64 codes."""
    op = attrs.op
    definition = custom_op_def(op)
    if len(codes) != definition.n_inputs:
        raise ValueError(f"{op}: takes {definition.n_inputs} input(s), got {len(codes)}")
    xs = []
    for i, (c, bits, signed) in enumerate(zip(codes, attrs.x_bits, attrs.x_signed)):
        t = int_tensor(c, f"input {i}", op)
        check_codes(t, f"input {i}", op, bits, signed)
        xs.append(t)
    if attrs.batch([tuple(t.shape) for t in xs]) == 0:  # an empty batch: the empty output (section 6)
        return torch.empty((0, *attrs.shape), dtype=torch.int64)
    y = definition.reference(*xs, **attrs.param_dict)
    want = (int(xs[0].shape[0]), *attrs.shape)
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{op}: the Python reference returned {type(y).__name__}"
                         f"{'' if not isinstance(y, torch.Tensor) else ' of dtype ' + str(y.dtype)}, "
                         "not an integer tensor of codes")  # fmt: skip
    if tuple(y.shape) != want:
        raise ValueError(f"{op}: the Python reference returned shape {tuple(y.shape)}, the program expects {want}")
    y = y.to(torch.int64)
    if y.numel():
        has_zero = attrs.y_bits == 1 and attrs.y_signed and bool(torch.any(y == 0))
        check_code_values(int(y.min()), int(y.max()), has_zero, "the Python reference's output", op, attrs.y_bits,
                          attrs.y_signed)  # fmt: skip
    return y
