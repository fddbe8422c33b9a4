"""fp32 exp, softplus and sigmoid over short rows, written so LLVM vectorizes them in numba.

libm's ``expf`` is a scalar call, so a loop that calls it stays scalar; these helpers are
plain arithmetic (Cephes ``expf``, max relative error ~1e-7) with 2**k built from exponent bits
in a second pass, and they inline into the caller's loop nest. Each takes its output and an
int32 scratch row of the same shape, so the kernels allocate nothing per step.
"""

from __future__ import annotations

import numba
import numpy as np

FASTMATH = {"reassoc", "contract", "nsz"}  # reassociation vectorizes sums; contraction: FMA

_F = np.float32
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_EXP_LO, _EXP_HI = _F(-87.0), _F(88.0)
_HALF, _ONE, _TWO, _ZERO = _F(0.5), _F(1.0), _F(2.0), _F(0.0)
# 2 * atanh(s) = log((1 + s) / (1 - s)), odd series in s; s <= 1/3 here, error < 1e-7
_L3, _L5, _L7, _L9, _L11 = _F(1 / 3), _F(1 / 5), _F(1 / 7), _F(1 / 9), _F(1 / 11)


@numba.njit(cache=True, fastmath=FASTMATH, inline="always")
def exp_row(x, out, bits):
    """out[j] = exp(x[j]) for a 1-D row."""
    for j in range(x.shape[0]):
        v = x[j]
        v = _EXP_LO if v < _EXP_LO else v
        v = _EXP_HI if v > _EXP_HI else v
        k = np.floor(v * _LOG2E + _HALF)
        r = v - k * _LN2_HI
        r = r - k * _LN2_LO
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        out[j] = p * r * r + r + _ONE
        bits[j] = (np.int32(k) + np.int32(127)) << np.int32(23)
    scale = bits.view(np.float32)
    for j in range(x.shape[0]):
        out[j] = out[j] * scale[j]


@numba.njit(cache=True, fastmath=FASTMATH, inline="always")
def decay_rows(dt, a, out, bits):
    """out[n, j] = exp(dt[j] * a[n, j]): the state decay of every (state, channel) of a step."""
    ns, width = a.shape
    for n in range(ns):
        for j in range(width):
            v = dt[j] * a[n, j]
            v = _EXP_LO if v < _EXP_LO else v
            v = _EXP_HI if v > _EXP_HI else v
            k = np.floor(v * _LOG2E + _HALF)
            r = v - k * _LN2_HI
            r = r - k * _LN2_LO
            p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
            out[n, j] = p * r * r + r + _ONE
            bits[n, j] = (np.int32(k) + np.int32(127)) << np.int32(23)
    scale = bits.view(np.float32)
    for n in range(ns):
        for j in range(width):
            out[n, j] = out[n, j] * scale[n, j]


@numba.njit(cache=True, fastmath=FASTMATH, inline="always")
def softplus_row(x, out, sig, scratch, bits):
    """out = softplus(x) = max(x, 0) + log1p(exp(-|x|)); sig = sigmoid(x), its derivative.

    Matches ``torch.nn.functional.softplus`` (threshold 20) to fp32 rounding: beyond 20 the
    log1p term is below 2e-9 of x.
    """
    for j in range(x.shape[0]):
        scratch[j] = -abs(x[j])
    exp_row(scratch, scratch, bits)  # v = exp(-|x|) in (0, 1]
    for j in range(x.shape[0]):
        v = scratch[j]
        s = v / (_TWO + v)  # log1p(v) = 2 atanh(v / (2 + v))
        s2 = s * s
        lp = _TWO * s * (_ONE + s2 * (_L3 + s2 * (_L5 + s2 * (_L7 + s2 * (_L9 + s2 * _L11)))))
        xj = x[j]
        out[j] = (xj if xj > _ZERO else _ZERO) + lp
        inv = _ONE / (_ONE + v)
        sig[j] = inv if xj >= _ZERO else v * inv


@numba.njit(cache=True, fastmath=FASTMATH, inline="always")
def sigmoid_row(x, out, bits):
    """out[j] = 1 / (1 + exp(-x[j]))."""
    for j in range(x.shape[0]):
        out[j] = -x[j]
    exp_row(out, out, bits)
    for j in range(x.shape[0]):
        out[j] = _ONE / (_ONE + out[j])
