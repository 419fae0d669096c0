"""Accumulation of products in an A-bit accumulator (docs/arithmetic.md section 4).

``accumulate(x, w, bias, datapath)`` computes, for every group ``g``, row ``p`` and output
``o``::

    acc[g, p, o] = bias[g, o] + sum_k x[g, p, k] * w[g, o, k]

in the **canonical order**: the bias first, then ``k = 0, 1, ..., K-1``. ``x`` and ``w``
are the zero-point-shifted operands (``x - z_x``, ``w - z_w``) as int64 tensors; the
reduction axis ``k`` is last and is already in canonical order (conv2d: flattened
``(c_in, kh, kw)``). The accumulator has ``A = datapath.acc_bits`` bits:

* ``wrap``: the exact sum reduced modulo ``2^A`` to ``[-2^(A-1), 2^(A-1))``;
* ``saturate``: the running sum is clamped to the A-bit range after the bias and after
  every product;
* ``error``: as ``saturate``, but a clamp that changes a value raises ``OverflowError``
  naming the op and the output index.

Fast path: the exact sums come from one matrix product (float64 when every partial sum
is below 2^53, which makes it exact, else int64). Saturation and errors are only
possible where the bound ``|bias| + sum_k |x_k| |w_k|`` leaves the A-bit range; only
those outputs are expanded into their products, checked with an int64 prefix sum
(``cumsum``), and, where a prefix sum leaves the range, summed again sequentially with
the clamp after every step.

>>> from quant.contract.datapath import Datapath
>>> dp = Datapath(acc_bits=8, overflow="saturate")
>>> x = torch.tensor([[[100, 100, -100]]]); w = torch.tensor([[[1, 1, 1]]])
>>> accumulate(x, w, None, dp, op="demo").tolist()    # 100, 127 (clamped), 27
[[[27]]]
>>> accumulate(x, w, None, dp.with_(overflow="wrap"), op="demo").tolist()   # exact 100
[[[100]]]
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.datapath import Datapath
from quant.reference.integer import wrap

__all__ = ["accumulate", "CHUNK_ELEMENTS"]

#: Upper bound on the number of int64 products expanded at once (memory stays below ~64 MiB).
CHUNK_ELEMENTS: int = 1 << 23
_EXACT_F64 = float(1 << 53)


def _matmul_exact(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``einsum('gpk,gok->gpo')`` exactly, on int64 (float64 where every partial sum is < 2^53)."""
    k = x.shape[-1]
    xmax = int(x.abs().max()) if x.numel() else 0
    wmax = int(w.abs().max()) if w.numel() else 0
    if xmax * wmax * k < _EXACT_F64:
        return torch.einsum("gpk,gok->gpo", x.to(torch.float64), w.to(torch.float64)).to(torch.int64)
    return torch.einsum("gpk,gok->gpo", x, w)


def accumulate(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: Optional[torch.Tensor],
    datapath: Datapath,
    *,
    op: str,
) -> torch.Tensor:
    """A-bit accumulators ``(G, P, O)`` (int64) of ``x (G, P, K)``, ``w (G, O, K)``, ``bias (G, O)`` or None.

    See the module docstring for the arithmetic. ``op`` names the operation in errors.
    """
    g, p, k = x.shape
    o = w.shape[1]
    lo, hi = datapath.acc_range
    b = bias.to(torch.int64) if bias is not None else torch.zeros((g, o), dtype=torch.int64)
    exact = _matmul_exact(x, w) + b[:, None, :]
    if datapath.overflow == "wrap":
        return wrap(exact, datapath.acc_bits)
    # Any prefix sum is bounded by |b| + sum |x_k| |w_k|; within [lo, hi] no clamp can happen.
    bound = _matmul_exact(x.abs(), w.abs()) + b.abs()[:, None, :]
    risky = (bound > hi).nonzero()
    if risky.shape[0] == 0:
        return exact
    out = exact.clone()
    rows_per_chunk = max(1, CHUNK_ELEMENTS // max(k, 1))
    for start in range(0, risky.shape[0], rows_per_chunk):
        idx = risky[start : start + rows_per_chunk]
        gi, pi, oi = idx[:, 0], idx[:, 1], idx[:, 2]
        prods = x[gi, pi, :] * w[gi, oi, :]  # (R, K), canonical order along k
        bi = b[gi, oi]
        prefix = bi[:, None] + torch.cumsum(prods, dim=1)
        leaves = (bi < lo) | (bi > hi) | ((prefix < lo) | (prefix > hi)).any(dim=1)
        if not bool(leaves.any()):
            continue
        if datapath.overflow == "error":
            first = int(leaves.nonzero()[0, 0])
            where = tuple(int(v) for v in idx[first].tolist())
            raise OverflowError(
                f"{op}: the {datapath.acc_bits}-bit accumulator overflows at output (group, row, channel) "
                f"= {where} (datapath overflow='error')"
            )
        sel = leaves.nonzero()[:, 0]
        run = torch.clamp(bi[sel], lo, hi)
        sub = prods[sel]
        for j in range(k):  # sequential: the clamp after every add is part of the result
            run = torch.clamp(run + sub[:, j], lo, hi)
        out[gi[sel], pi[sel], oi[sel]] = run
    return out
