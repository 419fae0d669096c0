"""Sub-byte storage of codes (docs/arithmetic.md section 3), torch reference.

Codes of ``b`` in {1, 2, 4} bits are packed along the last axis, little end first:
element ``i`` of a row goes to byte ``i * b // 8``, bits ``(i * b) % 8 ..
(i * b) % 8 + b - 1``, as ``b``-bit two's complement (signed) or plain binary
(unsigned); binary codes {-1, +1} are stored as bits {0, 1}. Each row is padded with
zero bits to a whole byte: a row of ``n`` codes takes ``ceil(n * b / 8)`` bytes. Other
widths (3, 5, 6, 7, 8) are stored one code per byte (the low 8 bits of the two's
complement). This is ONNX's int4/int2 layout (first element in the low bits).

>>> p = pack(torch.tensor([[1, -2, 7]]), 4)
>>> [f"{v:08b}" for v in p[0].tolist()]     # 1 = 0001 low nibble, -2 = 1110 high nibble; 7 then padding
['11100001', '00000111']
>>> unpack(p, 4, (1, 3)).tolist()
[[1, -2, 7]]
>>> unpack(pack(torch.tensor([-1, 1, 1, -1, 1]), 1), 1, (5,), signed=True).tolist()   # binary
[-1, 1, 1, -1, 1]
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from quant.contract.args import check_bool, check_pack_values
from quant.contract.codes import PACKED_BITS, check_bits, codes_shape, packed_row_bytes, packed_shape

__all__ = ["pack", "unpack"]


def pack(codes: torch.Tensor, bits: int, *, signed: Optional[bool] = None) -> torch.Tensor:
    """Pack integer ``codes`` (shape ``(..., n)``) into a uint8 tensor ``(..., packed_row_bytes(n, bits))``.

    Codes must lie in ``[-2^(b-1), 2^b - 1]`` (signed or unsigned ``b``-bit), or in the
    range of ``signed`` when given; for ``b = 1``, ``+1`` is bit 1 and ``0``/``-1`` bit 0
    (binary codes {-1, +1} and unsigned {0, 1} alike; mixing -1 and 0 is refused).
    """
    bits = check_bits(bits, "bits", "pack")
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError("pack: codes must be an integer tensor")
    if codes.dim() == 0:
        raise ValueError("pack: codes must have at least one dimension (rows are packed along the last)")
    c = codes.to(torch.int64)
    if signed is not None:
        signed = check_bool(signed, "signed", "pack")
    if c.numel():
        mixes = bits == 1 and bool((c == -1).any()) and bool((c == 0).any())
        check_pack_values(int(c.min()), int(c.max()), mixes, bits, signed)
    if bits == 1:
        fields = (c == 1).to(torch.int64)
    else:
        fields = c & ((1 << bits) - 1)
    if bits not in PACKED_BITS:
        return fields.to(torch.uint8)
    per = 8 // bits
    n = c.shape[-1]
    nbytes = packed_row_bytes(n, bits)
    padded = torch.nn.functional.pad(fields, (0, nbytes * per - n))
    groups = padded.reshape(*c.shape[:-1], nbytes, per)
    shifts = torch.arange(per, dtype=torch.int64) * bits
    return (groups << shifts).sum(dim=-1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, shape: Sequence[int], signed: bool = True) -> torch.Tensor:
    """Codes of ``shape`` from ``packed`` (uint8 ``(*shape[:-1], packed_row_bytes(shape[-1], bits))``).

    Returns int8 codes (uint8 for unsigned 8-bit codes); ``signed=True`` with ``bits=1``
    gives binary codes {-1, +1}. Padding bits are ignored.
    """
    bits = check_bits(bits, "bits", "unpack")
    signed = check_bool(signed, "signed", "unpack")
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise TypeError("unpack: packed must be a uint8 tensor")
    shape = codes_shape(shape, "unpack")
    n = shape[-1]
    expected = packed_shape(shape, bits)
    if tuple(packed.shape) != expected:
        raise ValueError(f"unpack: packed has shape {tuple(packed.shape)}, expected {expected} for codes of shape {shape}")
    b = packed.to(torch.int64)
    if bits in PACKED_BITS:
        per = 8 // bits
        shifts = torch.arange(per, dtype=torch.int64) * bits
        fields = ((b.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).reshape(*shape[:-1], b.shape[-1] * per)[..., :n]
    else:
        fields = b & ((1 << bits) - 1)
    if signed and bits == 1:
        codes = 2 * fields - 1
    elif signed:
        codes = fields - ((fields >> (bits - 1)) << bits)  # sign-extend the b-bit field
    else:
        codes = fields
    return codes.to(torch.uint8 if (bits == 8 and not signed) else torch.int8)
