"""Selective scan (Mamba S6) on CPU: numba kernels with a hand-written backward.

The model calls :func:`selective_scan_channels_last`, whose tensors keep the layout the
linear layers produce, so nothing is transposed around the scan::

    u, delta, z: (batch, L, dim)     A: (dim, N)     B, C: (batch, L, N)
    D, delta_bias: (dim,)

:func:`selective_scan_fn` is the same computation with mamba_ssm's ``selective_scan_fn``
signature and layout (``u, delta, z: (batch, dim, L)``, ``B, C: (batch, N, L)``).

Recurrence (per batch b, channel d, state n)::

    dt_t = softplus(delta_t + delta_bias)      (softplus optional)
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t  = (sum_n C_t h_t + D * u_t) * silu(z_t)

Only the recurrence (``h`` and ``sum_n C_t h_t``) is a numba kernel; the elementwise parts
(bias, softplus, ``D``, the gate) are PyTorch ops whose gradients autograd provides.

Why this shape: a work item is one batch row and a block of ``BLOCK`` neighbouring channels.
Its innermost loops run across those channels, which are contiguous in memory, so LLVM turns
them into SIMD instructions (8 channels per AVX2 register) with 16 independent recurrences per
state, where a loop over the 16 states of one channel would serialise on the recurrence.

The forward keeps only a checkpoint of the state every ``CHUNK`` steps, so memory grows
linearly with L with a small constant: (batch, L / CHUNK, N, dim) instead of
(batch, L, N, dim). The backward walks the chunks in reverse, recomputes one chunk's states
from its checkpoint into a buffer of the work item, and runs the reverse-time recurrence

    g_t = dL/dh_t = C_t dy_t + exp(dt_{t+1} A) * g_{t+1}

Each work item writes its own partial sums of the gradients of B and C (shared by all
channels), so threads never race; they are summed over blocks afterwards. All arithmetic is
fp32.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 64  # steps between saved states; backward recomputes one chunk at a time
BLOCK = 64  # channels per work item: eight AVX2 registers of fp32

# Reassociation lets LLVM vectorize the sums over channels (dB, dC); contraction allows FMA.
_FASTMATH = {"reassoc", "contract", "nsz"}

_F = np.float32
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_EXP_LO, _EXP_HI = _F(-87.0), _F(88.0)
_HALF, _ONE, _ZERO = _F(0.5), _F(1.0), _F(0.0)


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _decay(dt, a, out, bits):
    """out[n, j] = exp(dt[j] * a[n, j]), fp32 (Cephes expf, max rel. error ~1e-7).

    Plain arithmetic on short rows so LLVM vectorizes it (libm's expf is a scalar call);
    2**k is built from the exponent bits in a second pass.
    """
    ns, width = a.shape
    for n in range(ns):
        for j in range(width):
            x = dt[j] * a[n, j]
            x = _EXP_LO if x < _EXP_LO else x
            x = _EXP_HI if x > _EXP_HI else x
            k = np.floor(x * _LOG2E + _HALF)
            r = x - k * _LN2_HI
            r = r - k * _LN2_LO
            p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
            out[n, j] = p * r * r + r + _ONE
            bits[n, j] = (np.int32(k) + np.int32(127)) << np.int32(23)
    scale = bits.view(np.float32)
    for n in range(ns):
        for j in range(width):
            out[n, j] = out[n, j] * scale[n, j]


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _scan_fwd_kernel(u, dt, AT, B, C, chunk, block, out, chk, last):
    """u, dt, out: (b, L, d); AT: (N, d); B, C: (b, L, N); chk: (b, n_chunks, N, d);
    last: (b, N, d)."""
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
        bits = np.empty((ns, w), dtype=np.int32)
        dt_t = np.empty(w, dtype=np.float32)
        dtu = np.empty(w, dtype=np.float32)
        y = np.empty(w, dtype=np.float32)
        for t in range(length):
            if t % chunk == 0:
                c = t // chunk
                for n in range(ns):
                    for j in range(w):
                        chk[b, c, n, d0 + j] = h[n, j]
            for j in range(w):
                dt_t[j] = dt[b, t, d0 + j]
                dtu[j] = dt_t[j] * u[b, t, d0 + j]
                y[j] = _ZERO
            _decay(dt_t, a, e, bits)
            for n in range(ns):
                bn = B[b, t, n]
                cn = C[b, t, n]
                for j in range(w):
                    hv = e[n, j] * h[n, j] + dtu[j] * bn
                    h[n, j] = hv
                    y[j] += cn * hv
            for j in range(w):
                out[b, t, d0 + j] = y[j]
        for n in range(ns):
            for j in range(w):
                last[b, n, d0 + j] = h[n, j]


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _scan_bwd_kernel(
    u, dt, AT, B, C, chunk, block, chk, dout, dlast, has_dlast, du, ddt, dA_part, dB_part, dC_part
):
    """Reverse-time recurrence, same work items as the forward.

    du, ddt: (b, L, d); dA_part: (b, N, d) (summed over batch later); dB_part, dC_part:
    (b, n_blocks, L, N) (summed over blocks later).
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
        bits = np.empty((ns, w), dtype=np.int32)
        dt_t = np.empty(w, dtype=np.float32)
        u_t = np.empty(w, dtype=np.float32)
        dtu = np.empty(w, dtype=np.float32)
        dy = np.empty(w, dtype=np.float32)
        du_t = np.empty(w, dtype=np.float32)
        ddt_t = np.empty(w, dtype=np.float32)
        for c in range(n_chunks - 1, -1, -1):
            t0 = c * chunk
            t1 = min(length, t0 + chunk)
            for n in range(ns):
                for j in range(w):
                    hs[0, n, j] = chk[b, c, n, d0 + j]
            for t in range(t0, t1):  # recompute this chunk's states from its checkpoint
                k = t - t0
                for j in range(w):
                    dt_t[j] = dt[b, t, d0 + j]
                    dtu[j] = dt_t[j] * u[b, t, d0 + j]
                e = es[k]
                _decay(dt_t, a, e, bits)
                for n in range(ns):
                    bn = B[b, t, n]
                    for j in range(w):
                        hs[k + 1, n, j] = e[n, j] * hs[k, n, j] + dtu[j] * bn
            for t in range(t1 - 1, t0 - 1, -1):
                k = t - t0
                for j in range(w):
                    dt_t[j] = dt[b, t, d0 + j]
                    u_t[j] = u[b, t, d0 + j]
                    dtu[j] = dt_t[j] * u_t[j]
                    dy[j] = dout[b, t, d0 + j]
                    du_t[j] = _ZERO
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
                        da[n, j] += wv * dt_t[j]
                        s_b += g * dtu[j]
                        du_t[j] += g * dt_t[j] * bn
                        gh[n, j] = g * ev
                    dC_part[b, blk, t, n] = s_c
                    dB_part[b, blk, t, n] = s_b
                for j in range(w):
                    du[b, t, d0 + j] = du_t[j]
                    ddt[b, t, d0 + j] = ddt_t[j]
        for n in range(ns):
            for j in range(w):
                dA_part[b, n, d0 + j] = da[n, j]


_EMPTY3 = np.zeros((0, 0, 0), dtype=np.float32)


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(device="cpu", dtype=torch.float32).contiguous()


class _RecurrenceCPU(torch.autograd.Function):
    """y_t = sum_n C_t h_t with h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t; last state too."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C):
        u_, dt_, B_, C_ = _f32(u), _f32(dt), _f32(B), _f32(C)
        AT = _f32(A).t().contiguous()  # (N, d): channels contiguous, as in u
        nb, length, nd = u_.shape
        ns = AT.shape[0]
        n_chunks = max(1, -(-length // CHUNK))
        out = np.empty((nb, length, nd), dtype=np.float32)
        chk = np.empty((nb, n_chunks, ns, nd), dtype=np.float32)
        last = np.zeros((nb, ns, nd), dtype=np.float32)
        _scan_fwd_kernel(
            u_.numpy(), dt_.numpy(), AT.numpy(), B_.numpy(), C_.numpy(),
            CHUNK, BLOCK, out, chk, last,
        )  # fmt: skip
        ctx.save_for_backward(u_, dt_, AT, B_, C_, torch.from_numpy(chk))
        ctx.dtypes = (u.dtype, dt.dtype, A.dtype, B.dtype, C.dtype)
        ctx.set_materialize_grads(False)  # an unused last state's gradient arrives as None
        y = torch.from_numpy(out).to(device=u.device, dtype=u.dtype)
        last_state = torch.from_numpy(last).to(u.device).transpose(1, 2)  # (b, d, N)
        return y, last_state

    @staticmethod
    def backward(ctx, dout, dlast):
        u_, dt_, AT, B_, C_, chk = ctx.saved_tensors
        nb, length, nd = u_.shape
        ns = AT.shape[0]
        n_blocks = -(-nd // BLOCK)
        du = np.empty((nb, length, nd), dtype=np.float32)
        ddt = np.empty((nb, length, nd), dtype=np.float32)
        dA_part = np.empty((nb, ns, nd), dtype=np.float32)
        dB_part = np.empty((nb, n_blocks, length, ns), dtype=np.float32)
        dC_part = np.empty((nb, n_blocks, length, ns), dtype=np.float32)
        has_dlast = dlast is not None
        if dout is None:
            dout = torch.zeros(u_.shape)
        dlast_ = _f32(dlast.transpose(1, 2)).numpy() if has_dlast else _EMPTY3
        _scan_bwd_kernel(
            u_.numpy(), dt_.numpy(), AT.numpy(), B_.numpy(), C_.numpy(), CHUNK, BLOCK,
            chk.numpy(), _f32(dout).numpy(), dlast_, has_dlast,
            du, ddt, dA_part, dB_part, dC_part,
        )  # fmt: skip
        dev = dout.device
        u_dt, dt_dt, A_dt, B_dt, C_dt = ctx.dtypes
        return (
            torch.from_numpy(du).to(device=dev, dtype=u_dt),
            torch.from_numpy(ddt).to(device=dev, dtype=dt_dt),
            torch.from_numpy(dA_part).sum(0).t().to(device=dev, dtype=A_dt),
            torch.from_numpy(dB_part).sum(1).to(device=dev, dtype=B_dt),
            torch.from_numpy(dC_part).sum(1).to(device=dev, dtype=C_dt),
        )


def selective_scan_channels_last(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
):
    """CPU selective scan on ``(batch, L, dim)`` tensors (``B, C: (batch, L, N)``).

    Returns ``y`` of shape ``(batch, L, dim)``, and with ``return_last_state`` also the state
    after the last step, ``(batch, dim, N)`` as mamba_ssm returns it.
    """
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()
    if delta_softplus:
        dt = F.softplus(dt)
    y, last = _RecurrenceCPU.apply(u, dt, A, B, C)
    if D is not None:
        y = torch.addcmul(y, u, D.to(y.dtype))
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return (y, last) if return_last_state else y


def selective_scan_fn(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
):
    """CPU selective scan with the signature and layout of mamba_ssm's ``selective_scan_fn``."""
    out = selective_scan_channels_last(
        u.transpose(1, 2),
        delta.transpose(1, 2),
        A,
        B.transpose(1, 2),
        C.transpose(1, 2),
        D=D,
        z=None if z is None else z.transpose(1, 2),
        delta_bias=delta_bias,
        delta_softplus=delta_softplus,
        return_last_state=return_last_state,
    )
    if return_last_state:
        return out[0].transpose(1, 2), out[1]
    return out.transpose(1, 2)


def selective_scan_ref(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
):
    """Naive PyTorch recurrence (Python loop over time), mamba_ssm's layout; for tests only."""
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    batch, dim, length = u.shape
    h = u.new_zeros(batch, dim, A.shape[1])
    dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A.float()))
    dBu = torch.einsum("bdl,bnl,bdl->bdln", delta, B.float(), u)
    ys = []
    for t in range(length):
        h = dA[:, :, t] * h + dBu[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t].float()))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D[:, None].float()
    if z is not None:
        y = y * torch.nn.functional.silu(z.float())
    return (y, h) if return_last_state else y
