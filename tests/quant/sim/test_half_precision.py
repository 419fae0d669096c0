"""float16 / bfloat16 inputs are simulated in float32 and cast back: a small scale no longer overflows its
reciprocal (zeros used to become NaN), and the values are those of float32 fake-quant of the same inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from quant.contract.spec import QuantSpec
from tests.quant.sim.fake_quant_paths import fake_quant_path  # noqa: F401 (autouse: both paths)
from quant.sim.functional import fake_quantize, quantize

SPEC = QuantSpec(bits=8, signed=False, symmetric=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_small_scale_gives_no_nan(dtype: torch.dtype) -> None:
    x = torch.tensor([0.0, 1e-4, -5e-4, 1e-3], dtype=dtype)
    y = fake_quantize(x, torch.tensor(1e-5), torch.tensor(100, dtype=torch.int32), SPEC)
    assert y.dtype == dtype and not bool(torch.isnan(y).any()) and float(y[0]) == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@given(values=st.lists(st.floats(-4.0, 4.0, width=16), min_size=1, max_size=40), scale=st.floats(1e-4, 0.1),
       zero_point=st.integers(0, 255))  # fmt: skip
def test_half_inputs_equal_float32_fake_quant_cast_back(dtype: torch.dtype, values: list[float], scale: float,
                                                        zero_point: int) -> None:  # fmt: skip
    x = torch.tensor(values, dtype=dtype)
    s, z = torch.tensor(scale), torch.tensor(zero_point, dtype=torch.int32)
    assert torch.equal(fake_quantize(x, s, z, SPEC), fake_quantize(x.to(torch.float32), s, z, SPEC).to(dtype))
    assert torch.equal(quantize(x, s, z, SPEC), quantize(x.to(torch.float32), s, z, SPEC))


def test_gradients_reach_half_inputs_and_float32_scales() -> None:
    x = torch.tensor([0.1, 0.5, 9.0], dtype=torch.float16, requires_grad=True)
    s = torch.tensor(0.01, requires_grad=True)
    fake_quantize(x, s, torch.tensor(0, dtype=torch.int32), SPEC).sum().backward()  # type: ignore[no-untyped-call]
    assert x.grad is not None and x.grad.dtype == torch.float16 and x.grad.tolist() == [1.0, 1.0, 0.0]
