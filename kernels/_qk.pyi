"""Type stubs of the CPython binding of the C kernel library (``kernels/_ext/qk_module.c``).

Arrays are passed through the buffer protocol: C-contiguous, with the element type checked
(int8/uint8 codes, int32 parameters, float32 multipliers, uint8 scratch). Dicts carry the C
structs, keyed by field name. Errors: ``OverflowError`` for an accumulator overflow in "error"
mode, ``ValueError`` for any other status of the library (either carries the value as ``qk_status``),
``TypeError`` for a wrong buffer.
"""

from typing import Any, Optional

from numpy.typing import NDArray

OVERFLOW_WRAP: int
OVERFLOW_SATURATE: int
OVERFLOW_ERROR: int
REQUANT_FIXED_POINT: int
REQUANT_FLOAT32: int
REQUANT_FLOAT64: int
REQUANT_POW2: int
FIXED_POINT_DOUBLE: int
FIXED_POINT_SINGLE: int
ROUND_HALF_AWAY: int
ROUND_HALF_UP: int
ROUND_HALF_EVEN: int
ROUND_FLOOR: int
ZP_AFTER_ROUNDING: int
ZP_BEFORE_ROUNDING: int
ISA_AUTO: int
ISA_PORTABLE: int
ISA_X86_AVX2: int
ISA_X86_AVX512_VNNI: int
#: The qk_status values (kernels/c/include/qk_types.h); an exception of a nonzero status carries it as
#: its ``qk_status`` attribute.
ERR_NULL: int
ERR_DATAPATH: int
ERR_SHAPE: int
ERR_X_LENGTH: int
ERR_W_LENGTH: int
ERR_BIAS_LENGTH: int
ERR_Y_LENGTH: int
ERR_PARAM_LENGTH: int
ERR_SCRATCH: int
ERR_BITS: int
ERR_ZERO_POINT: int
ERR_MULTIPLIER: int
ERR_SHIFT: int
ERR_BIAS_RANGE: int
ERR_OUTPUT_RANGE: int
ERR_CODE_RANGE: int
ERR_WINDOW: int
ERR_GROUPS: int
ERR_ISA: int
ERR_OVERFLOW: int
ERR_SIZE: int
ERR_PARAM_VALUE: int
ERR_CACHE: int

#: Structs cross the binding as dicts keyed by their C field names (see kernels/_abi.py):
#: qk_datapath, qk_conv2d_geometry, qk_pool2d_geometry, qk_add_params;
#: qk_requant_params = its scalar fields + multiplier/shift (int32) and fmultiplier (float32) arrays or None;
#: weights = {data: int8/uint8 codes or uint8 packed rows, packed_bits, zero_point: int32 array[, cache: uint8
#: array or None (conv2d and linear: qk_weights.cache)]}.
DatapathStruct = dict[str, int]
RequantStruct = dict[str, Any]
WeightsStruct = dict[str, Any]
Geometry = dict[str, int]

def conv2d_output_size(geometry: Geometry, /) -> tuple[int, int]: ...
def conv2d_scratch_bytes(geometry: Geometry, datapath: DatapathStruct, /) -> int: ...
def conv2d_cache_bytes(geometry: Geometry, datapath: DatapathStruct, weights: WeightsStruct, /) -> int: ...
def conv2d(
    *,
    geometry: Geometry,
    datapath: DatapathStruct,
    x: NDArray[Any],
    x_zero_point: int,
    weights: WeightsStruct,
    bias: Optional[NDArray[Any]],
    requant: RequantStruct,
    y: NDArray[Any],
    scratch: NDArray[Any],
    isa: int,
) -> None: ...
def linear_scratch_bytes(m: int, k: int, n: int, datapath: DatapathStruct, /) -> int: ...
def linear_cache_bytes(k: int, n: int, datapath: DatapathStruct, weights: WeightsStruct, /) -> int: ...
def linear(
    *,
    m: int,
    k: int,
    n: int,
    datapath: DatapathStruct,
    x: NDArray[Any],
    x_zero_point: int,
    weights: WeightsStruct,
    bias: Optional[NDArray[Any]],
    requant: RequantStruct,
    y: NDArray[Any],
    scratch: NDArray[Any],
    isa: int,
) -> None: ...
def requantize(
    *,
    q: NDArray[Any],
    outer: int,
    channels: int,
    inner: int,
    in_zero_point: int,
    datapath: DatapathStruct,
    requant: RequantStruct,
    y: NDArray[Any],
    isa: int,
) -> None: ...
def add(*, a: NDArray[Any], b: NDArray[Any], params: dict[str, Any], datapath: DatapathStruct, y: NDArray[Any]) -> None: ...
def mul(
    *,
    a: NDArray[Any],
    b: NDArray[Any],
    rows: int,
    inner: int,
    a_zero_point: int,
    b_zero_point: int,
    datapath: DatapathStruct,
    requant: RequantStruct,
    y: NDArray[Any],
    isa: int,
) -> None: ...
def softmax(
    *,
    x: NDArray[Any],
    outer: int,
    length: int,
    inner: int,
    x_bits: int,
    x_signed: bool,
    table: NDArray[Any],
    y_bits: int,
    y_signed: bool,
    datapath: DatapathStruct,
    y: NDArray[Any],
) -> None: ...
def layernorm(
    *,
    x: NDArray[Any],
    rows: int,
    length: int,
    x_bits: int,
    x_signed: bool,
    eps_term: int,
    gamma: Optional[NDArray[Any]],
    gamma_zero_point: int,
    bias: Optional[NDArray[Any]],
    datapath: DatapathStruct,
    requant: RequantStruct,
    y: NDArray[Any],
    isa: int,
) -> None: ...
def lstm_scratch_bytes(features: int, hidden: int, /) -> int: ...
def gru_scratch_bytes(features: int, hidden: int, /) -> int: ...
def gru(
    *,
    n: int,
    steps: int,
    features: int,
    hidden: int,
    datapath: DatapathStruct,
    x: NDArray[Any],
    x_zero_point: int,
    h_zero_point: int,
    w_ih: WeightsStruct,
    w_hh: WeightsStruct,
    b_ih: Optional[NDArray[Any]],
    b_hh: Optional[NDArray[Any]],
    rq_ih: RequantStruct,
    rq_hh: RequantStruct,
    rq_hq: RequantStruct,
    rq_out: RequantStruct,
    reverse: bool,
    sigmoid_table: NDArray[Any],
    tanh_table: NDArray[Any],
    y: NDArray[Any],
    scratch: NDArray[Any],
) -> None: ...
def lstm(
    *,
    n: int,
    steps: int,
    features: int,
    hidden: int,
    datapath: DatapathStruct,
    x: NDArray[Any],
    x_zero_point: int,
    h_zero_point: int,
    w_ih: WeightsStruct,
    w_hh: WeightsStruct,
    b_ih: Optional[NDArray[Any]],
    b_hh: Optional[NDArray[Any]],
    rq_ih: RequantStruct,
    rq_hh: RequantStruct,
    rq_out: RequantStruct,
    cell_shift: int,
    reverse: bool,
    sigmoid_table: NDArray[Any],
    tanh_table: NDArray[Any],
    y: NDArray[Any],
    scratch: NDArray[Any],
) -> None: ...
def avg_pool2d(
    *, geometry: Geometry, datapath: DatapathStruct, x: NDArray[Any], x_signed: bool, zero_point: int, y: NDArray[Any]
) -> None: ...
def max_pool2d(*, geometry: Geometry, x: NDArray[Any], x_signed: bool, y: NDArray[Any]) -> None: ...
def lut(
    *,
    x: NDArray[Any],
    channels: int,
    inner: int,
    x_bits: int,
    x_signed: bool,
    table: NDArray[Any],
    table_signed: bool,
    y: NDArray[Any],
) -> None: ...
def pack(
    *, codes: NDArray[Any], codes_signed: bool, rows: int, cols: int, bits: int, range: int, packed: NDArray[Any]
) -> None: ...
def unpack(*, packed: NDArray[Any], rows: int, cols: int, bits: int, signed: bool, codes: NDArray[Any]) -> None: ...
def rounding_right_shift(v: int, k: int, mode: int, /) -> int: ...
def srdhm(a: int, b: int, n: int, /) -> int: ...
def isa_query(isa: int, /) -> tuple[bool, int]: ...
def status_message(status: int, /) -> str: ...
def abi() -> dict[str, tuple[int, tuple[tuple[str, int, str], ...]]]: ...
def struct_bytes(name: str, fields: dict[str, Any], /) -> bytes: ...
