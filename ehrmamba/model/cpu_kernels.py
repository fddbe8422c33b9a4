"""The CPU model's numba kernels: the selective scan, the causal convolution, and their math.

Why one file: numba's on-disk cache (``cache=True``) keys a compiled kernel on the source file
that defines it, and a helper inlined from another file does not invalidate it, so an edit to
a helper would leave stale machine code in every cache. Everything a kernel compiles in lives
here. The PyTorch side (autograd functions, layouts, the public API) is in ``scan_cpu.py`` and
``conv_cpu.py``.

The math helpers (``exp_row`` and friends) exist because libm's ``expf`` is a scalar call, so a
loop that calls it stays scalar; they are plain arithmetic (Cephes ``expf``, max relative error
~1e-7) with 2**k built from exponent bits in a second pass, and they inline into the caller's
loop nest. Each takes its output and an int32 scratch row of the same shape, so the kernels
allocate nothing per step.

Kernel layout: tensors are (batch, L, channels); a work item is one batch row and a block of
channels, with the channel loop innermost, which LLVM vectorizes (8 fp32 per AVX2 register).
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
    """out[n, j] = exp(dt[j] * a[n, j]): the state decay of every (state, channel) of a step.

    ``out`` and ``bits`` are C-contiguous, so the exponential runs over them as one row.
    """
    ns, width = a.shape
    for n in range(ns):
        for j in range(width):
            out[n, j] = dt[j] * a[n, j]
    flat = out.reshape(ns * width)
    exp_row(flat, flat, bits.reshape(ns * width))


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


# ------------------------------------------------------------------ selective scan
@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_fwd_kernel(
    u, delta, bias, AT, B, C, Dv, z, has_z, softplus, chunk, block, out, chk, last
):  # fmt: skip
    """u, delta, z, out: (b, L, d); bias, Dv: (d,); AT: (N, d); B, C: (b, L, N);
    chk: (b, n_chunks, N, d); last: (b, N, d)."""
    nb, length, nd = u.shape
    ns = AT.shape[0]
    n_blocks = (nd + block - 1) // block
    for item in numba.prange(nb * n_blocks):
        b = item // n_blocks
        d0 = (item % n_blocks) * block
        w = min(block, nd - d0)
        a = np.empty((ns, w), dtype=np.float32)
        for n in range(ns):
            for j in range(w):
                a[n, j] = AT[n, d0 + j]
        h = np.zeros((ns, w), dtype=np.float32)
        e = np.empty((ns, w), dtype=np.float32)
        ebits = np.empty((ns, w), dtype=np.int32)
        raw = np.empty(w, dtype=np.float32)
        dt_t = np.empty(w, dtype=np.float32)
        sig = np.empty(w, dtype=np.float32)
        tmp = np.empty(w, dtype=np.float32)
        bits = np.empty(w, dtype=np.int32)
        u_t = np.empty(w, dtype=np.float32)
        dtu = np.empty(w, dtype=np.float32)
        y = np.empty(w, dtype=np.float32)
        for t in range(length):
            if t % chunk == 0:
                c = t // chunk
                for n in range(ns):
                    for j in range(w):
                        chk[b, c, n, d0 + j] = h[n, j]
            for j in range(w):
                raw[j] = delta[b, t, d0 + j] + bias[d0 + j]
                u_t[j] = u[b, t, d0 + j]
            if softplus:
                softplus_row(raw, dt_t, sig, tmp, bits)
            else:
                dt_t[:] = raw
            for j in range(w):
                dtu[j] = dt_t[j] * u_t[j]
                y[j] = Dv[d0 + j] * u_t[j]
            decay_rows(dt_t, a, e, ebits)
            for n in range(ns):
                bn = B[b, t, n]
                cn = C[b, t, n]
                for j in range(w):
                    hv = e[n, j] * h[n, j] + dtu[j] * bn
                    h[n, j] = hv
                    y[j] += cn * hv
            if has_z:
                for j in range(w):
                    raw[j] = z[b, t, d0 + j]
                sigmoid_row(raw, sig, bits)
                for j in range(w):
                    y[j] = y[j] * raw[j] * sig[j]
            for j in range(w):
                out[b, t, d0 + j] = y[j]
        for n in range(ns):
            for j in range(w):
                last[b, n, d0 + j] = h[n, j]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_bwd_kernel(
    u, delta, bias, AT, B, C, Dv, z, has_z, softplus, chunk, block, chk, dout, dlast, has_dlast,
    du, ddelta, dz, dA_part, dB_part, dC_part, dD_part, dbias_part,
):  # fmt: skip
    """Reverse-time recurrence, same work items as the forward.

    du, ddelta, dz: (b, L, d); dA_part: (b, N, d) and dD_part, dbias_part: (b, d) (summed
    over batch later); dB_part, dC_part: (b, n_blocks, L, N) (summed over blocks later).
    """
    nb, length, nd = u.shape
    ns = AT.shape[0]
    n_blocks = (nd + block - 1) // block
    n_chunks = (length + chunk - 1) // chunk
    for item in numba.prange(nb * n_blocks):
        b = item // n_blocks
        blk = item % n_blocks
        d0 = blk * block
        w = min(block, nd - d0)
        a = np.empty((ns, w), dtype=np.float32)
        gh = np.empty((ns, w), dtype=np.float32)
        da = np.zeros((ns, w), dtype=np.float32)
        for n in range(ns):
            for j in range(w):
                a[n, j] = AT[n, d0 + j]
                gh[n, j] = dlast[b, n, d0 + j] if has_dlast else _ZERO
        hs = np.empty((chunk + 1, ns, w), dtype=np.float32)  # h_{t-1}, h_t of a chunk
        es = np.empty((chunk, ns, w), dtype=np.float32)  # exp(dt_t * A) of a chunk
        dts = np.empty((chunk, w), dtype=np.float32)  # dt of a chunk
        dsp = np.empty((chunk, w), dtype=np.float32)  # softplus'(delta + bias) of a chunk
        ebits = np.empty((ns, w), dtype=np.int32)
        bits = np.empty(w, dtype=np.int32)
        raw = np.empty(w, dtype=np.float32)
        tmp = np.empty(w, dtype=np.float32)
        sig = np.empty(w, dtype=np.float32)
        u_t = np.empty(w, dtype=np.float32)
        dtu = np.empty(w, dtype=np.float32)
        yp = np.empty(w, dtype=np.float32)
        dy = np.empty(w, dtype=np.float32)
        du_t = np.empty(w, dtype=np.float32)
        ddt_t = np.empty(w, dtype=np.float32)
        acc_d = np.zeros(w, dtype=np.float32)
        acc_bias = np.zeros(w, dtype=np.float32)
        for c in range(n_chunks - 1, -1, -1):
            t0 = c * chunk
            t1 = min(length, t0 + chunk)
            for n in range(ns):
                for j in range(w):
                    hs[0, n, j] = chk[b, c, n, d0 + j]
            for t in range(t0, t1):  # recompute this chunk's states from its checkpoint
                k = t - t0
                for j in range(w):
                    raw[j] = delta[b, t, d0 + j] + bias[d0 + j]
                dt_k = dts[k]
                if softplus:
                    softplus_row(raw, dt_k, dsp[k], tmp, bits)
                else:
                    for j in range(w):
                        dt_k[j] = raw[j]
                        dsp[k, j] = _ONE
                for j in range(w):
                    dtu[j] = dt_k[j] * u[b, t, d0 + j]
                e = es[k]
                decay_rows(dt_k, a, e, ebits)
                for n in range(ns):
                    bn = B[b, t, n]
                    for j in range(w):
                        hs[k + 1, n, j] = e[n, j] * hs[k, n, j] + dtu[j] * bn
            for t in range(t1 - 1, t0 - 1, -1):
                k = t - t0
                for j in range(w):
                    u_t[j] = u[b, t, d0 + j]
                    dtu[j] = dts[k, j] * u_t[j]
                    dy[j] = dout[b, t, d0 + j]
                if has_z:  # out = yp * silu(z), yp = sum_n C h + D u
                    for j in range(w):
                        yp[j] = Dv[d0 + j] * u_t[j]
                    for n in range(ns):
                        cn = C[b, t, n]
                        for j in range(w):
                            yp[j] += cn * hs[k + 1, n, j]
                    for j in range(w):
                        raw[j] = z[b, t, d0 + j]
                    sigmoid_row(raw, sig, bits)
                    for j in range(w):
                        zt = raw[j]
                        sg = sig[j]
                        dz[b, t, d0 + j] = dy[j] * yp[j] * sg * (_ONE + zt * (_ONE - sg))
                        dy[j] = dy[j] * zt * sg
                for j in range(w):
                    acc_d[j] += dy[j] * u_t[j]
                    du_t[j] = dy[j] * Dv[d0 + j]
                    ddt_t[j] = _ZERO
                for n in range(ns):
                    bn = B[b, t, n]
                    cn = C[b, t, n]
                    s_c = _ZERO
                    s_b = _ZERO
                    for j in range(w):
                        s_c += dy[j] * hs[k + 1, n, j]
                        g = gh[n, j] + dy[j] * cn  # dL/dh_t
                        ev = es[k, n, j]
                        # h_t = e * h_{t-1} + dt * B * u, e = exp(dt * A)
                        wv = g * hs[k, n, j] * ev
                        ddt_t[j] += wv * a[n, j] + g * bn * u_t[j]
                        da[n, j] += wv * dts[k, j]
                        s_b += g * dtu[j]
                        du_t[j] += g * dts[k, j] * bn
                        gh[n, j] = g * ev
                    dC_part[b, blk, t, n] = s_c
                    dB_part[b, blk, t, n] = s_b
                for j in range(w):
                    du[b, t, d0 + j] = du_t[j]
                    gd = ddt_t[j] * dsp[k, j]
                    ddelta[b, t, d0 + j] = gd
                    acc_bias[j] += gd
        for n in range(ns):
            for j in range(w):
                dA_part[b, n, d0 + j] = da[n, j]
        for j in range(w):
            dD_part[b, d0 + j] = acc_d[j]
            dbias_part[b, d0 + j] = acc_bias[j]


# ------------------------------------------------------------------ causal conv + SiLU
@numba.njit(cache=True, fastmath=FASTMATH, inline="always")
def _preactivation(x, wt, bias, b, t, d0, w, acc):
    """acc[j] = bias + sum_k wt[k] * x[t - K + 1 + k] for channels d0 .. d0 + w."""
    kernel = wt.shape[0]
    for j in range(w):
        acc[j] = bias[d0 + j]
    for k in range(kernel):
        s = t - kernel + 1 + k
        if s >= 0:
            for j in range(w):
                acc[j] += wt[k, d0 + j] * x[b, s, d0 + j]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_silu_fwd_kernel(x, wt, bias, block, out):
    """x, out: (b, L, d); wt: (K, d); bias: (d,)."""
    nb, length, nd = x.shape
    n_blocks = (nd + block - 1) // block
    for item in numba.prange(nb * n_blocks):
        b = item // n_blocks
        d0 = (item % n_blocks) * block
        w = min(block, nd - d0)
        acc = np.empty(w, dtype=np.float32)
        sig = np.empty(w, dtype=np.float32)
        bits = np.empty(w, dtype=np.int32)
        for t in range(length):
            _preactivation(x, wt, bias, b, t, d0, w, acc)
            sigmoid_row(acc, sig, bits)
            for j in range(w):
                out[b, t, d0 + j] = acc[j] * sig[j]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_silu_bwd_kernel(x, wt, bias, gout, block, gpre, dx, dw_part, db_part):
    """gpre (scratch), dx: (b, L, d); dw_part: (b, K, d); db_part: (b, d)."""
    nb, length, nd = x.shape
    kernel = wt.shape[0]
    n_blocks = (nd + block - 1) // block
    for item in numba.prange(nb * n_blocks):
        b = item // n_blocks
        d0 = (item % n_blocks) * block
        w = min(block, nd - d0)
        acc = np.empty(w, dtype=np.float32)
        sig = np.empty(w, dtype=np.float32)
        bits = np.empty(w, dtype=np.int32)
        dw = np.zeros((kernel, w), dtype=np.float32)
        db = np.zeros(w, dtype=np.float32)
        for t in range(length):  # gradient at the pre-activation: silu'(a) = s (1 + a (1 - s))
            _preactivation(x, wt, bias, b, t, d0, w, acc)
            sigmoid_row(acc, sig, bits)
            for j in range(w):
                s = sig[j]
                g = gout[b, t, d0 + j] * s * (_ONE + acc[j] * (_ONE - s))
                gpre[b, t, d0 + j] = g
                db[j] += g
        for t in range(length):
            for j in range(w):
                acc[j] = 0.0
            for k in range(kernel):
                s = t - kernel + 1 + k  # input step that tap k reads for output t
                if s >= 0:
                    for j in range(w):
                        dw[k, j] += gpre[b, t, d0 + j] * x[b, s, d0 + j]
                o = t + kernel - 1 - k  # output step whose tap k reads input t
                if o < length:
                    for j in range(w):
                        acc[j] += wt[k, d0 + j] * gpre[b, o, d0 + j]
            for j in range(w):
                dx[b, t, d0 + j] = acc[j]
        for k in range(kernel):
            for j in range(w):
                dw_part[b, k, d0 + j] = dw[k, j]
        for j in range(w):
            db_part[b, d0 + j] = db[j]
