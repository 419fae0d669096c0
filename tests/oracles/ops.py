"""Element-by-element Python formulations of the ops of docs/arithmetic.md, for small cases.

Python ints and Fractions (NumPy scalars for float32/float64 steps), one output at a time,
following the document's formulas literally; the scalar primitives (rounding of rationals,
section 4 accumulation, section 5 of one accumulator) come from the sibling modules
``rounding``, ``accumulation`` and ``requant``. Nothing here is shared with either backend,
so a backend agreeing with it is evidence.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Optional, Sequence

import numpy as np

from quant.contract.datapath import Datapath
from tests.oracles.accumulation import accumulate_scalar
from tests.oracles.requant import fixed_point_multiply, requant_scalar, sat32
from tests.oracles.rounding import round_float, round_rational


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    return int(v[0]), int(v[1])


def _out_range(y_bits: int, y_signed: bool, y_min: Optional[int], y_max: Optional[int]) -> tuple[int, int]:
    lo, hi = (-(1 << (y_bits - 1)), (1 << (y_bits - 1)) - 1) if y_signed else (0, (1 << y_bits) - 1)
    return max(lo, y_min if y_min is not None else lo), min(hi, y_max if y_max is not None else hi)


def _mult(multiplier: Any, c: int) -> float:
    arr = np.asarray(multiplier).reshape(-1)
    return float(arr[0] if arr.size == 1 else arr[c])


def conv2d(
    x: np.ndarray, w: np.ndarray, bias: Optional[np.ndarray], *, x_zero_point: int, w_zero_point: Any,
    y_zero_point: int, multiplier: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
    y_bits: int = 8, y_signed: bool = True, y_min: Optional[int] = None, y_max: Optional[int] = None,
    datapath: Datapath,
) -> np.ndarray:  # fmt: skip
    """Section 4 then 5 for every output element, products in canonical (c, u, v) order."""
    n, c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    zw = np.broadcast_to(np.asarray(w_zero_point).reshape(-1), (c_out,))
    lo, hi = _out_range(y_bits, y_signed, y_min, y_max)
    out = np.zeros((n, c_out, ho, wo), dtype=np.int64)
    og = c_out // groups
    for b in range(n):
        for o in range(c_out):
            g = o // og
            for i in range(ho):
                for j in range(wo):
                    products = []
                    for c in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                r, s = i * sh + u * dh - ph, j * sw + v * dw - pw
                                xv = int(x[b, g * cg + c, r, s]) if (0 <= r < h and 0 <= s < wd) else x_zero_point
                                products.append((xv - x_zero_point) * (int(w[o, c, u, v]) - int(zw[o])))
                    acc = accumulate_scalar(int(bias[o]) if bias is not None else 0, products,
                                            datapath.acc_bits, datapath.overflow)  # fmt: skip
                    out[b, o, i, j] = requant_scalar(acc, _mult(multiplier, o), datapath, y_zero_point, lo, hi)
    return out


def linear(
    x: np.ndarray, w: np.ndarray, bias: Optional[np.ndarray], *, x_zero_point: int, w_zero_point: Any,
    y_zero_point: int, multiplier: Any, y_bits: int = 8, y_signed: bool = True, y_min: Optional[int] = None,
    y_max: Optional[int] = None, datapath: Datapath,
) -> np.ndarray:  # fmt: skip
    m, k = x.shape
    n_out = w.shape[0]
    zw = np.broadcast_to(np.asarray(w_zero_point).reshape(-1), (n_out,))
    lo, hi = _out_range(y_bits, y_signed, y_min, y_max)
    out = np.zeros((m, n_out), dtype=np.int64)
    for r in range(m):
        for o in range(n_out):
            products = [(int(x[r, t]) - x_zero_point) * (int(w[o, t]) - int(zw[o])) for t in range(k)]
            acc = accumulate_scalar(int(bias[o]) if bias is not None else 0, products, datapath.acc_bits,
                                    datapath.overflow)  # fmt: skip
            out[r, o] = requant_scalar(acc, _mult(multiplier, o), datapath, y_zero_point, lo, hi)
    return out


def requantize(
    q: np.ndarray, *, in_zero_point: int, multiplier: Any, y_zero_point: int, y_bits: int = 8, y_signed: bool = True,
    axis: Optional[int] = None, datapath: Datapath,
) -> np.ndarray:  # fmt: skip
    lo, hi = _out_range(y_bits, y_signed, None, None)
    out = np.zeros(q.shape, dtype=np.int64)
    for idx in np.ndindex(*q.shape):
        c = idx[axis] if axis is not None else 0
        acc = sat32(int(q[idx]) - in_zero_point)
        out[idx] = requant_scalar(acc, _mult(multiplier, c), datapath, y_zero_point, lo, hi)
    return out


def add(
    a: np.ndarray, b: np.ndarray, *, a_zero_point: int, b_zero_point: int, a_multiplier: float, b_multiplier: float,
    y_zero_point: int, y_bits: int = 8, y_signed: bool = True, y_min: Optional[int] = None,
    y_max: Optional[int] = None, datapath: Datapath,
) -> np.ndarray:  # fmt: skip
    """Section 6.1, per requantization mode."""
    dp = datapath
    lo, hi = _out_range(y_bits, y_signed, y_min, y_max)
    out = np.zeros(a.shape, dtype=np.int64)
    for idx in np.ndindex(*a.shape):
        da, db = int(a[idx]) - a_zero_point, int(b[idx]) - b_zero_point
        if dp.requant == "fixed_point":
            big = 2.0 * max(a_multiplier, b_multiplier)
            left = max(0, dp.acc_bits - 4 - dp.a_bits)
            sa = fixed_point_multiply(da << left, a_multiplier / big, dp)
            sb = fixed_point_multiply(db << left, b_multiplier / big, dp)
            y = fixed_point_multiply(sa + sb, big / 2.0**left, dp) + y_zero_point
        elif dp.requant == "pow2":
            ka, kb = 1 - np.frexp(a_multiplier)[1], 1 - np.frexp(b_multiplier)[1]
            k = max(ka, kb)
            v = da * 2 ** (k - ka) + db * 2 ** (k - kb)
            y0 = round_rational(Fraction(v, 2**k), dp.rounding) if k >= 0 else sat32(v * 2**-k)
            y = y0 + y_zero_point
        else:
            ft = np.float32 if dp.requant == "float32" else np.float64
            p = ft(ft(da) * ft(np.float32(a_multiplier))) + ft(ft(db) * ft(np.float32(b_multiplier)))
            if dp.zero_point_order == "after_rounding":
                y = round_float(float(p), dp.rounding) + y_zero_point
            else:
                y = round_float(float(ft(p + ft(y_zero_point))), dp.rounding)
        out[idx] = max(lo, min(hi, y))
    return out


def _windows(h: int, k: int, s: int, p: int, d: int) -> list[list[int]]:
    ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
    if ho < 1:
        raise ValueError("empty output")
    return [[i * s + u * d - p for u in range(k) if 0 <= i * s + u * d - p < h] for i in range(ho)]


def _pool_args(x: np.ndarray, kernel_size: Any, stride: Any, padding: Any, dilation: Any) -> Sequence[Any]:
    if kernel_size is None:
        return (x.shape[2], x.shape[3]), (1, 1), (0, 0), (1, 1)
    k = _pair(kernel_size)
    return k, _pair(stride) if stride is not None else k, _pair(padding), _pair(dilation)


def avg_pool2d(x: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0, *, zero_point: int,
               datapath: Datapath) -> np.ndarray:  # fmt: skip
    k, s, p, d = _pool_args(x, kernel_size, stride, padding, 1)
    rows, cols = _windows(x.shape[2], k[0], s[0], p[0], d[0]), _windows(x.shape[3], k[1], s[1], p[1], d[1])
    out = np.zeros(x.shape[:2] + (len(rows), len(cols)), dtype=np.int64)
    for b, c in np.ndindex(*x.shape[:2]):
        for i, rr in enumerate(rows):
            for j, cc in enumerate(cols):
                vals = [int(x[b, c, r, q]) for r in rr for q in cc]
                cnt = len(vals)
                out[b, c, i, j] = round_rational(Fraction(sum(vals) - cnt * zero_point, cnt),
                                                 datapath.rounding) + zero_point  # fmt: skip
    return out


def max_pool2d(x: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1) -> np.ndarray:
    k, s, p, d = _pool_args(x, kernel_size, stride, padding, dilation)
    rows, cols = _windows(x.shape[2], k[0], s[0], p[0], d[0]), _windows(x.shape[3], k[1], s[1], p[1], d[1])
    out = np.zeros(x.shape[:2] + (len(rows), len(cols)), dtype=np.int64)
    for b, c in np.ndindex(*x.shape[:2]):
        for i, rr in enumerate(rows):
            for j, cc in enumerate(cols):
                out[b, c, i, j] = max(int(x[b, c, r, q]) for r in rr for q in cc)
    return out


def lut(x: np.ndarray, table: np.ndarray, *, x_bits: int, x_signed: bool, channels: int = 1) -> np.ndarray:
    """One table, or with ``channels`` tables ``table[c]`` for every element ``x[n, c, ...]``."""
    qmin = -(1 << (x_bits - 1)) if x_signed else 0
    binary = x_bits == 1 and x_signed
    rows = table.reshape(channels, 1 << x_bits)
    out = np.zeros(x.shape, dtype=np.int64)
    for idx in np.ndindex(x.shape):
        v = int(x[idx])
        out[idx] = int(rows[idx[1] if channels > 1 else 0][int(v > 0) if binary else v - qmin])
    return out


def layernorm(
    x: np.ndarray, gamma: Optional[np.ndarray], bias: Optional[np.ndarray], *, eps_term: int, gamma_zero_point: int,
    multiplier: Any, y_zero_point: int, y_bits: int, y_signed: bool, y_min: Optional[int] = None,
    y_max: Optional[int] = None, datapath: Datapath,
) -> np.ndarray:  # fmt: skip
    """Section 6.5 with Python ints (``math.isqrt``), one row and one output at a time."""
    import math

    lo, hi = _out_range(y_bits, y_signed, y_min, y_max)
    n = x.shape[-1]
    rows = x.reshape(-1, n).astype(np.int64)
    out = np.zeros(rows.shape, dtype=np.int64)
    for r, row in enumerate(rows):
        q = [int(v) for v in row]
        total = sum(q)
        c = [n * v - total for v in q]
        w0 = min(sum(ci * ci for ci in c) + eps_term, (1 << 62) - 1)
        p = max(k for k in range(17) if w0 * 4**k < 1 << 62)
        den = max(1, math.isqrt((w0 * 4**p) // n))
        for i, ci in enumerate(c):
            g = 1 if gamma is None else int(gamma[i]) - gamma_zero_point
            t = round_rational(Fraction(g * ci * 2 ** (15 + p), den), datapath.rounding)
            acc = sat32(t + (0 if bias is None else int(bias[i])))
            out[r, i] = requant_scalar(acc, _mult(multiplier, i), datapath, y_zero_point, lo, hi)
    return out.reshape(x.shape)


def _recurrent_parts(mode: str) -> tuple[Any, Any, Any, list[int], list[int]]:
    """``(sat16, rrs, lookup, sigmoid table, tanh table)`` of sections 6.6/6.7, built here from their text."""
    import math

    lo16, hi16 = -(1 << 15), (1 << 15) - 1

    def sat16(v: int) -> int:
        return max(lo16, min(hi16, v))

    def rrs(v: int, s: int) -> int:
        return v if s <= 0 else round_rational(Fraction(v, 1 << s), mode)

    def table(fn: Any) -> list[int]:
        return [sat16(round((1 << 15) * fn((128 * n - (1 << 15)) / 4096.0))) for n in range(513)]

    def lookup(t: list[int], p: int) -> int:
        u = p + (1 << 15)
        return t[u >> 7] + rrs((t[(u >> 7) + 1] - t[u >> 7]) * (u & 127), 7)

    return sat16, rrs, lookup, table(lambda v: 1.0 / (1.0 + math.exp(-v))), table(math.tanh)


def _gate_parts(
    x_t: np.ndarray, h: Sequence[int], w_ih: np.ndarray, w_hh: np.ndarray, b_ih: Optional[np.ndarray],
    b_hh: Optional[np.ndarray], x_zero_point: int, h_zero_point: int, zi: Sequence[int], zh: Sequence[int],
    ih_multiplier: Any, hh_multiplier: Any, dp: Datapath,
) -> tuple[list[int], list[int]]:  # fmt: skip
    """One step's input parts and recurrent parts of every gate row, each requantized to Q3.12 (sections 6.6, 6.7)."""
    lo16, hi16 = -(1 << 15), (1 << 15) - 1
    qa, qh = [], []
    for j in range(w_ih.shape[0]):
        a = accumulate_scalar(0 if b_ih is None else int(b_ih[j]), [(int(x_t[q]) - x_zero_point) * (int(w_ih[j, q]) - zi[j])
                              for q in range(w_ih.shape[1])], dp.acc_bits, dp.overflow)  # fmt: skip
        r = accumulate_scalar(0 if b_hh is None else int(b_hh[j]), [(h[q] - h_zero_point) * (int(w_hh[j, q]) - zh[j])
                              for q in range(w_hh.shape[1])], dp.acc_bits, dp.overflow)  # fmt: skip
        qa.append(requant_scalar(a, _mult(ih_multiplier, j), dp, 0, lo16, hi16))
        qh.append(requant_scalar(r, _mult(hh_multiplier, j), dp, 0, lo16, hi16))
    return qa, qh


def lstm(
    x: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: Optional[np.ndarray], b_hh: Optional[np.ndarray], *,
    x_zero_point: int, h_zero_point: int, ih_zero_point: Sequence[int], hh_zero_point: Sequence[int],
    ih_multiplier: Any, hh_multiplier: Any, out_multiplier: float, cell_shift: int, reverse: bool, datapath: Datapath,
) -> np.ndarray:  # fmt: skip
    """Section 6.6 with Python ints, one sample, step and element at a time (its own sigmoid/tanh tables)."""
    dp, k = datapath, cell_shift
    sat16, rrs, lookup, sig, tanh = _recurrent_parts(dp.rounding)

    n, steps, _ = x.shape
    rows = w_ih.shape[0]
    hidden = rows // 4
    zi = list(ih_zero_point) * (rows if len(ih_zero_point) == 1 else 1)
    zh = list(hh_zero_point) * (rows if len(hh_zero_point) == 1 else 1)
    a_lo, a_hi = _out_range(dp.a_bits, dp.a_signed, None, None)
    out = np.zeros((n, steps, hidden), dtype=np.int64)
    for s in range(n):
        h, c = [h_zero_point] * hidden, [0] * hidden
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            qa, qh = _gate_parts(x[s, t], h, w_ih, w_hh, b_ih, b_hh, x_zero_point, h_zero_point, zi, zh,
                                 ih_multiplier, hh_multiplier, dp)  # fmt: skip
            p = [sat16(u + v) for u, v in zip(qa, qh)]
            new_h = []
            for j in range(hidden):
                i, f = lookup(sig, p[j]), lookup(sig, p[hidden + j])
                g, o = lookup(tanh, p[2 * hidden + j]), lookup(sig, p[3 * hidden + j])
                c[j] = sat16(rrs(f * c[j], 15) + rrs(i * g, 30 - k))
                v = rrs(c[j], k - 12) if k >= 12 else sat16(c[j] * (1 << (12 - k)))
                new_h.append(requant_scalar(o * lookup(tanh, v), out_multiplier, dp, h_zero_point, a_lo, a_hi))
            h = new_h
            out[s, t] = h
    return out


def gru(
    x: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: Optional[np.ndarray], b_hh: Optional[np.ndarray], *,
    x_zero_point: int, h_zero_point: int, ih_zero_point: Sequence[int], hh_zero_point: Sequence[int],
    ih_multiplier: Any, hh_multiplier: Any, hq_multiplier: float, out_multiplier: float, reverse: bool,
    datapath: Datapath,
) -> np.ndarray:  # fmt: skip
    """Section 6.7 with Python ints, one sample, step and element at a time (its own sigmoid/tanh tables)."""
    dp = datapath
    sat16, rrs, lookup, sig, tanh = _recurrent_parts(dp.rounding)
    lo16, hi16 = -(1 << 15), (1 << 15) - 1

    n, steps, _ = x.shape
    rows = w_ih.shape[0]
    hidden = rows // 3
    zi = list(ih_zero_point) * (rows if len(ih_zero_point) == 1 else 1)
    zh = list(hh_zero_point) * (rows if len(hh_zero_point) == 1 else 1)
    a_lo, a_hi = _out_range(dp.a_bits, dp.a_signed, None, None)
    out = np.zeros((n, steps, hidden), dtype=np.int64)
    for s in range(n):
        h = [h_zero_point] * hidden
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            qa, qh = _gate_parts(x[s, t], h, w_ih, w_hh, b_ih, b_hh, x_zero_point, h_zero_point, zi, zh,
                                 ih_multiplier, hh_multiplier, dp)  # fmt: skip
            new_h = []
            for j in range(hidden):
                rg = lookup(sig, sat16(qa[j] + qh[j]))
                zg = lookup(sig, sat16(qa[hidden + j] + qh[hidden + j]))
                ng = lookup(tanh, sat16(qa[2 * hidden + j] + rrs(rg * qh[2 * hidden + j], 15)))
                hq = requant_scalar(h[j] - h_zero_point, hq_multiplier, dp, 0, lo16, hi16)
                new_h.append(requant_scalar(((1 << 15) - zg) * ng + zg * hq, out_multiplier, dp, h_zero_point, a_lo, a_hi))
            h = new_h
            out[s, t] = h
    return out
