"""``detection.nms`` (docs/arithmetic.md section 10.1): the integer reference and the C function against a
plain-Python oracle and ONNX Runtime's NonMaxSuppression; the float function against ONNX Runtime;
integer parameters from qparams; refusals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from quant.contract.codes import code_range
from quant.contract.custom import CustomOpAttrs, CustomOperand
from quant.contract.datapath import PRESETS
from quant.custom.nms import nms, nms_integer_params
from quant.reference.custom import run_custom
from tests.oracles.nms import nms_oracle

BACKENDS = ["torch_ref", "c"]


def run(backend: str, attrs: CustomOpAttrs, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    from quant.contract.backend import get_backend

    return get_backend(backend).custom(attrs, [boxes, scores]).astype(np.int64)


@st.composite
def cases(draw: st.DrawFn, max_coord: int = 255) -> dict[str, Any]:
    bits, signed = draw(st.integers(2, 8)), draw(st.booleans())
    lo, hi = code_range(bits, signed)
    n, a = draw(st.integers(1, 3)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    blo, bhi = draw(st.sampled_from([(lo, hi), (lo, min(hi, lo + 6))]))  # narrow ranges give ties and overlaps
    boxes = rng.integers(blo, bhi + 1, size=(n, a, 4))
    if draw(st.booleans()):  # corners in order, as detectors produce them (otherwise some are degenerate)
        boxes = np.concatenate([np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])],
                               axis=-1)  # fmt: skip
    scores = rng.integers(lo, hi + 1, size=(n, a))
    params = dict(iou_q16=draw(st.sampled_from([0, 1, 16384, 26214, 32768, 45875, 65535, 65536])),
                  score_min=draw(st.integers(lo - 1, hi + 1)), max_detections=draw(st.integers(1, a + 1)),
                  fill=draw(st.integers(lo, hi)))  # fmt: skip
    dtype = np.int8 if signed else np.uint8
    return dict(bits=bits, signed=signed, boxes=boxes.astype(dtype), scores=scores.astype(dtype), params=params)


def attrs_of(case: dict[str, Any]) -> CustomOpAttrs:
    a = case["scores"].shape[1]
    return CustomOpAttrs.build(op="detection.nms", params=case["params"], x_bits=[case["bits"]] * 2,
                               x_signed=[case["signed"]] * 2, y_bits=case["bits"], y_signed=case["signed"], shape=(a,))  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=120)
@given(case=cases())
def test_both_backends_match_the_oracle(backend: str, case: dict[str, Any]) -> None:
    got = run(backend, attrs_of(case), case["boxes"], case["scores"])
    want = [nms_oracle(b.astype(int).tolist(), s.astype(int).tolist(), **case["params"])
            for b, s in zip(case["boxes"], case["scores"])]  # fmt: skip
    np.testing.assert_array_equal(got, np.array(want))


def _ort_nms(boxes: np.ndarray, scores: np.ndarray, max_out: int, iou: float, score_threshold: float) -> list[set[int]]:
    """ONNX Runtime's NonMaxSuppression (corner boxes (y1, x1, y2, x2), one class): the kept indices per sample."""
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "k", "iou", "smin"], ["sel"], center_point_box=0)
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("smin", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("sel", TensorProto.INT64, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    yx = boxes[..., [1, 0, 3, 2]].astype(np.float32)
    (sel,) = sess.run(None, {"boxes": yx, "scores": scores[:, None, :].astype(np.float32),
                             "k": np.array([max_out], np.int64), "iou": np.array([iou], np.float32),
                             "smin": np.array([score_threshold], np.float32)})  # fmt: skip
    kept: list[set[int]] = [set() for _ in range(boxes.shape[0])]
    for b, _, i in sel.tolist():
        kept[b].add(i)
    return kept


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60)
@given(case=cases(), sixteenths=st.integers(0, 16))
def test_both_backends_keep_what_onnxruntime_keeps(backend: str, case: dict[str, Any], sixteenths: int) -> None:
    """Ordered corners and thresholds j/16, where ONNX Runtime's float32 IoU cannot round across the threshold;
    ties of equal scores included (both visit them by index). Scores above the fill code tell kept boxes apart."""
    b = case["boxes"].astype(np.int64)
    b = np.concatenate([np.minimum(b[..., :2], b[..., 2:]), np.maximum(b[..., :2], b[..., 2:])], axis=-1)
    lo, hi = code_range(case["bits"], case["signed"])
    dtype = case["boxes"].dtype
    case["boxes"] = b.astype(dtype)
    case["scores"] = np.clip(case["scores"].astype(np.int64), lo + 1, hi).astype(dtype)
    case["params"].update(iou_q16=sixteenths * 4096, fill=lo)
    got = run(backend, attrs_of(case), case["boxes"], case["scores"])
    p = case["params"]
    want = _ort_nms(b, case["scores"].astype(np.int64), p["max_detections"], sixteenths / 16, p["score_min"] - 0.5)
    assert [set(np.flatnonzero(row != lo).tolist()) for row in got] == want


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), a=st.integers(1, 10), sixteenths=st.integers(0, 16),
       k=st.integers(1, 11), threshold=st.sampled_from([None, 0.25, 0.5]))  # never a score: k / (2a + 1)  # fmt: skip
def test_the_float_function_keeps_what_onnxruntime_keeps(seed: int, a: int, sixteenths: int, k: int,
                                                         threshold: Any) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 12, size=(2, a, 4)).astype(np.float64)  # small integers: exact IoUs in float32
    boxes = np.concatenate([corners[..., :2].clip(max=corners[..., 2:]), corners[..., 2:]], axis=-1)
    scores = rng.permutation(np.arange(1, 2 * a + 1))[: 2 * a].reshape(2, a) / (2 * a + 1)  # distinct, in (0, 1)
    out = nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
              iou_threshold=sixteenths / 16, score_threshold=threshold, max_detections=k)  # fmt: skip
    want = _ort_nms(boxes, scores, k, sixteenths / 16, -1.0 if threshold is None else threshold)
    assert [set(np.flatnonzero(row.numpy() != 0).tolist()) for row in out] == want


def test_the_float_function_passes_gradients_to_the_kept_scores() -> None:
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9], [3.0, 3.0, 4.0, 4.0]]])
    scores = torch.tensor([[0.9, 0.8, 0.7]], requires_grad=True)
    nms(boxes, scores, iou_threshold=0.5).sum().backward()
    assert scores.grad is not None and scores.grad.tolist() == [[1.0, 0.0, 1.0]]


def _operand(scale: float, zero_point: int, bits: int, signed: bool, shape: tuple[int, ...]) -> CustomOperand:
    return CustomOperand(scale, zero_point, bits, signed, shape)


@given(scale=st.floats(1e-3, 1.0), zero_point=st.integers(-128, 127), threshold=st.floats(-2.0, 2.0))
def test_score_min_is_the_smallest_code_above_the_score_threshold(scale: float, zero_point: int, threshold: float) -> None:
    scores = _operand(scale, zero_point, 8, True, (6,))
    p = nms_integer_params([_operand(0.1, 0, 8, True, (6, 4)), scores], scores, PRESETS["tflite_int8"],
                           score_threshold=threshold)  # fmt: skip
    q = p["score_min"]
    assert -128 <= q <= 128
    if q <= 127:
        assert scale * (q - zero_point) > threshold
    if q > -128:
        assert scale * (q - 1 - zero_point) <= threshold + 1e-12
    assert p["fill"] == zero_point and p["max_detections"] == 6


def test_integer_params_of_the_options() -> None:
    scores = _operand(1 / 255, 0, 8, False, (5,))
    boxes = _operand(0.5, 3, 8, False, (5, 4))
    p = nms_integer_params([boxes, scores], scores, PRESETS["fbgemm_int8"], iou_threshold=0.45, max_detections=2)
    assert p == {"iou_q16": round(0.45 * 65536), "score_min": 0, "max_detections": 2, "fill": 0}


@pytest.mark.parametrize(("options", "message"), [
    ({"iou_threshold": 1.5}, "iou_threshold=1.5 must be a number in [0, 1]"),
    ({"iou_threshold": "half"}, "iou_threshold='half'"),
    ({"max_detections": 0}, "max_detections=0 must be None or an int >= 1"),
    ({"score_threshold": math.nan}, "score_threshold=nan must be None or a finite number"),
])  # fmt: skip
def test_bad_options_are_refused_by_name(options: dict[str, Any], message: str) -> None:
    boxes, scores = torch.zeros(1, 3, 4), torch.zeros(1, 3)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        nms(boxes, scores, **options)
    s = _operand(0.1, 0, 8, True, (3,))
    with pytest.raises(ValueError, match="detection.nms"):
        nms_integer_params([_operand(0.1, 0, 8, True, (3, 4)), s], s, PRESETS["tflite_int8"], **options)


def test_bad_shapes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, A, 4\), got \(1, 3, 5\)"):
        nms(torch.zeros(1, 3, 5), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"scores must have shape \(1, 3\) \(one per box\), got \(1, 4\)"):
        nms(torch.zeros(1, 3, 4), torch.zeros(1, 4))
    with pytest.raises(TypeError, match="detection.nms: takes 2 tensor argument"):
        nms(torch.zeros(1, 3, 4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_codes_outside_the_declared_range_are_refused_by_both_backends(backend: str) -> None:
    case: dict[str, Any] = dict(bits=4, signed=True, boxes=np.zeros((1, 2, 4), np.int8),
                                scores=np.array([[3, 9]], np.int8),
                                params=dict(iou_q16=0, score_min=-8, max_detections=1, fill=0))  # fmt: skip
    with pytest.raises(ValueError, match=r"detection.nms: input 1 has values in \[3, 9\] outside the int4 code range "
                                         r"\[-8, 7\]"):  # fmt: skip
        run(backend, attrs_of(case), case["boxes"], case["scores"])


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(iou_q16=70000), r"iou_q16=70000 must be an int in \[0, 65536\]"),
        (dict(max_detections=0), r"max_detections=0 must be an int in >= 1"),
        (dict(fill=256), r"fill=256 must be an int in \[0, 255\]"),
        (dict(y_bits=4), r"the output \(y_bits=4, y_signed=False\) must have the scores' code type"),
    ],
)
def test_the_record_refuses_what_the_op_cannot_take_for_both_backends(change: dict[str, Any], match: str) -> None:
    params = dict(iou_q16=0, score_min=0, max_detections=1, fill=0)
    params.update({k: v for k, v in change.items() if k in params})
    with pytest.raises(ValueError, match="detection.nms: " + match):
        CustomOpAttrs.build(op="detection.nms", params=params, x_bits=[8, 8], x_signed=[False, False],
                            y_bits=change.get("y_bits", 8), y_signed=False, shape=(2,))  # fmt: skip


def test_c_statuses_name_the_op_and_the_function() -> None:
    """A record built without the op's check (explicit param_names) reaches the C function, which refuses too."""
    attrs = CustomOpAttrs.build(op="detection.nms", params=dict(iou_q16=70000, score_min=0, max_detections=1, fill=0),
                                x_bits=[8, 8], x_signed=[False, False], y_bits=8, y_signed=False, shape=(2,),
                                param_names=("iou_q16", "score_min", "max_detections", "fill"))  # fmt: skip
    with pytest.raises(ValueError, match=r"custom op 'detection.nms': the C function qk_nms_scratch_bytes returned "
                                         r"status 22 \(an op parameter is outside its allowed values\)"):  # fmt: skip
        run("c", attrs, np.zeros((1, 2, 4), np.uint8), np.ones((1, 2), np.uint8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_batch_gives_the_empty_output_and_other_empty_dims_are_refused(backend: str) -> None:
    """Section 6 for custom ops, in both backends (the C ABI used to refuse an empty batch naming nothing)."""
    attrs = CustomOpAttrs.build(op="detection.nms", params=dict(iou_q16=0, score_min=0, max_detections=1, fill=0),
                                x_bits=[8, 8], x_signed=[False, False], y_bits=8, y_signed=False, shape=(3,))  # fmt: skip
    out = run(backend, attrs, np.zeros((0, 3, 4), np.uint8), np.zeros((0, 3), np.uint8))
    assert out.shape == (0, 3)
    with pytest.raises(ValueError, match=r"detection.nms: input 0 of shape \(1, 0, 4\) has an empty dimension"):
        run(backend, attrs, np.zeros((1, 0, 4), np.uint8), np.zeros((1, 0), np.uint8))
    with pytest.raises(ValueError, match=r"detection.nms: the inputs' batches \[0, 1\] mix empty and non-empty"):
        run(backend, attrs, np.zeros((0, 3, 4), np.uint8), np.zeros((1, 3), np.uint8))
