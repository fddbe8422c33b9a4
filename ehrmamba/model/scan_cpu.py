"""Selective scan (Mamba S6) on CPU: numba kernels with a hand-written backward.

Same calling convention as mamba_ssm's ``selective_scan_fn``::

    y = selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False)

    u, delta: (batch, dim, L)     A: (dim, N)     B, C: (batch, N, L)
    D, delta_bias: (dim,)         z: (batch, dim, L) optional gate, y * silu(z)

Recurrence (per batch b, channel d, state n)::

    dt_t = softplus(delta_t + delta_bias)      (softplus optional)
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t  = sum_n C_t h_t + D * u_t

The forward keeps only a checkpoint of the state every ``CHUNK`` steps, so memory grows
linearly with L with a small constant: (batch, dim, L / CHUNK, N) instead of
(batch, dim, L, N). The backward walks the chunks in reverse, recomputes the states of one
chunk from its checkpoint into a thread-local buffer, and runs the reverse-time recurrence

    g_t = dh_t = dL/dh_t (from y_t) + exp(dt_{t+1} A) * g_{t+1}

All arithmetic is fp32. The kernels run parallel over (batch x channel) in the forward and
over (batch x channel-group) in the backward, where each group owns its own accumulator for
the gradients of B and C (which are shared by all channels) so threads never race.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

CHUNK = 64  # steps between saved states; backward recomputes one chunk at a time
_SOFTPLUS_THRESHOLD = 20.0  # same as mamba_ssm / torch.nn.functional.softplus

_F = np.float32
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_EXP_LO, _EXP_HI = _F(-87.0), _F(88.0)
_HALF, _ONE = _F(0.5), _F(1.0)


@numba.njit(cache=True, fastmath=False, inline="always")
def _exp_row(dt, a_row, out, bits):
    """out[n] = exp(dt * a_row[n]) in fp32 (Cephes expf, max rel. error ~1e-7).

    Written as plain arithmetic on short arrays so LLVM vectorizes it (libm's expf is a
    scalar call and costs 2-3x more); 2**k is built from the exponent bits.
    """
    for n in range(a_row.shape[0]):
        x = dt * a_row[n]
        x = _EXP_LO if x < _EXP_LO else x
        x = _EXP_HI if x > _EXP_HI else x
        k = np.floor(x * _LOG2E + _HALF)
        r = x - k * _LN2_HI
        r = r - k * _LN2_LO
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        out[n] = p * r * r + r + _ONE
        bits[n] = (np.int32(k) + np.int32(127)) << np.int32(23)
    scale = bits.view(np.float32)
    for n in range(a_row.shape[0]):
        out[n] = out[n] * scale[n]


@numba.njit(parallel=True, cache=True, fastmath=False)
def _scan_fwd_kernel(
    u, delta, A, Bt, Ct, Dv, z, bias, has_d, has_z, has_bias, softplus, chunk, out, chk, last
):
    """u, delta, z, out: (b, d, L); Bt, Ct: (b, L, N) (time-major); chk: (b, d, n_chunks, N)."""
    nb, nd, length = u.shape
    ns = A.shape[1]
    for item in numba.prange(nb * nd):
        b = item // nd
        d = item % nd
        h = np.zeros(ns, dtype=np.float32)
        e = np.empty(ns, dtype=np.float32)
        bits = np.empty(ns, dtype=np.int32)
        a_row = A[d]
        dd = Dv[d] if has_d else np.float32(0.0)
        db = bias[d] if has_bias else np.float32(0.0)
        for t in range(length):
            if t % chunk == 0:
                c = t // chunk
                for n in range(ns):
                    chk[b, d, c, n] = h[n]
            dt = delta[b, d, t] + db
            if softplus and dt <= _SOFTPLUS_THRESHOLD:
                dt = np.float32(math.log1p(math.exp(dt)))
            ut = u[b, d, t]
            dtu = dt * ut
            _exp_row(dt, a_row, e, bits)
            b_t = Bt[b, t]
            c_t = Ct[b, t]
            for n in range(ns):
                h[n] = e[n] * h[n] + dtu * b_t[n]
            y = np.float32(0.0)
            for n in range(ns):
                y += c_t[n] * h[n]
            y += dd * ut
            if has_z:
                zt = z[b, d, t]
                y = y * (zt / (np.float32(1.0) + np.float32(math.exp(-zt))))
            out[b, d, t] = y
        for n in range(ns):
            last[b, d, n] = h[n]


@numba.njit(parallel=True, cache=True, fastmath=False)
def _scan_bwd_kernel(
    u,
    delta,
    A,
    Bt,
    Ct,
    Dv,
    z,
    bias,
    has_d,
    has_z,
    has_bias,
    softplus,
    chunk,
    chk,
    dout,
    dlast,
    has_dlast,
    groups,
    du,
    ddelta,
    dz,
    dA_part,
    dD_part,
    dbias_part,
    dB_part,
    dC_part,
):
    """Reverse-time recurrence. Work item = (batch, channel group); per-item accumulators.

    dA_part, dD_part, dbias_part: (b, d, ...) (each item owns its channels, batches summed
    later); dB_part, dC_part: (b, groups, L, N) (channels of a group summed in place).
    """
    nb, nd, length = u.shape
    ns = A.shape[1]
    n_chunks = (length + chunk - 1) // chunk
    per_group = (nd + groups - 1) // groups
    for item in numba.prange(nb * groups):
        b = item // groups
        g = item % groups
        d_lo = g * per_group
        d_hi = min(nd, d_lo + per_group)
        hs = np.empty((chunk + 1, ns), dtype=np.float32)  # states h_{t-1}, h_t of a chunk
        das = np.empty((chunk, ns), dtype=np.float32)  # exp(dt * A) of a chunk
        dts = np.empty(chunk, dtype=np.float32)
        gh = np.empty(ns, dtype=np.float32)
        bits = np.empty(ns, dtype=np.int32)
        for d in range(d_lo, d_hi):
            a_row = A[d]
            dd = Dv[d] if has_d else np.float32(0.0)
            db = bias[d] if has_bias else np.float32(0.0)
            for n in range(ns):
                gh[n] = dlast[b, d, n] if has_dlast else np.float32(0.0)
            acc_dd = np.float32(0.0)
            acc_db = np.float32(0.0)
            for c in range(n_chunks - 1, -1, -1):
                t0 = c * chunk
                t1 = min(length, t0 + chunk)
                # recompute the states of this chunk from its checkpoint
                for n in range(ns):
                    hs[0, n] = chk[b, d, c, n]
                for t in range(t0, t1):
                    k = t - t0
                    dt = delta[b, d, t] + db
                    if softplus and dt <= _SOFTPLUS_THRESHOLD:
                        dt = np.float32(math.log1p(math.exp(dt)))
                    dts[k] = dt
                    dtu = dt * u[b, d, t]
                    e = das[k]
                    _exp_row(dt, a_row, e, bits)
                    b_t = Bt[b, t]
                    for n in range(ns):
                        hs[k + 1, n] = e[n] * hs[k, n] + dtu * b_t[n]
                # reverse-time recurrence over the chunk
                for t in range(t1 - 1, t0 - 1, -1):
                    k = t - t0
                    dt = dts[k]
                    ut = u[b, d, t]
                    dy = dout[b, d, t]
                    if has_z:
                        zt = z[b, d, t]
                        sig = np.float32(1.0) / (np.float32(1.0) + np.float32(math.exp(-zt)))
                        silu = zt * sig
                        y = dd * ut
                        for n in range(ns):
                            y += Ct[b, t, n] * hs[k + 1, n]
                        dz[b, d, t] = (
                            dy * y * sig * (np.float32(1.0) + zt * (np.float32(1.0) - sig))
                        )
                        dy = dy * silu
                    acc_dd += dy * ut
                    du_t = dy * dd
                    ddt = np.float32(0.0)
                    for n in range(ns):
                        bn = Bt[b, t, n]
                        dC_part[b, g, t, n] += dy * hs[k + 1, n]
                        gn = gh[n] + dy * Ct[b, t, n]  # dL/dh_t
                        e = das[k, n]
                        hprev = hs[k, n]
                        # h_t = e * h_{t-1} + dt * B * u, e = exp(dt * A)
                        w = gn * hprev * e
                        ddt += w * a_row[n] + gn * bn * ut
                        dA_part[b, d, n] += w * dt
                        dB_part[b, g, t, n] += gn * dt * ut
                        du_t += gn * dt * bn
                        gh[n] = gn * e
                    du[b, d, t] = du_t
                    raw = delta[b, d, t] + db
                    if softplus and raw <= _SOFTPLUS_THRESHOLD:
                        ddt = ddt / (np.float32(1.0) + np.float32(math.exp(-raw)))
                    ddelta[b, d, t] = ddt
                    acc_db += ddt
            dD_part[b, d] = acc_dd
            dbias_part[b, d] = acc_db


def _f32(x: torch.Tensor | None) -> torch.Tensor | None:
    if x is None:
        return None
    return x.detach().to(device="cpu", dtype=torch.float32).contiguous()


_EMPTY1 = np.zeros(0, dtype=np.float32)
_EMPTY3 = np.zeros((0, 0, 0), dtype=np.float32)


def _groups(batch: int, dim: int) -> int:
    threads = numba.get_num_threads()
    return max(1, min(dim, -(-4 * threads // batch)))


class SelectiveScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        u_, delta_, A_ = _f32(u), _f32(delta), _f32(A)
        Bt = _f32(B).transpose(1, 2).contiguous()  # (b, L, N): time-major for the kernel
        Ct = _f32(C).transpose(1, 2).contiguous()
        D_, z_, bias_ = _f32(D), _f32(z), _f32(delta_bias)
        nb, nd, length = u_.shape
        ns = A_.shape[1]
        n_chunks = max(1, -(-length // CHUNK))
        out = np.empty((nb, nd, length), dtype=np.float32)
        chk = np.empty((nb, nd, n_chunks, ns), dtype=np.float32)
        last = np.zeros((nb, nd, ns), dtype=np.float32)
        _scan_fwd_kernel(
            u_.numpy(),
            delta_.numpy(),
            A_.numpy(),
            Bt.numpy(),
            Ct.numpy(),
            D_.numpy() if D_ is not None else _EMPTY1,
            z_.numpy() if z_ is not None else _EMPTY3,
            bias_.numpy() if bias_ is not None else _EMPTY1,
            D_ is not None,
            z_ is not None,
            bias_ is not None,
            bool(delta_softplus),
            CHUNK,
            out,
            chk,
            last,
        )
        ctx.save_for_backward(u_, delta_, A_, Bt, Ct, D_, z_, bias_, torch.from_numpy(chk))
        ctx.delta_softplus = bool(delta_softplus)
        ctx.dtypes = (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype)
        y = torch.from_numpy(out).to(u.device)
        if return_last_state:
            return y, torch.from_numpy(last).to(u.device)
        return y

    @staticmethod
    def backward(ctx, dout, *rest):
        u_, delta_, A_, Bt, Ct, D_, z_, bias_, chk = ctx.saved_tensors
        nb, nd, length = u_.shape
        ns = A_.shape[1]
        dlast = rest[0] if rest and rest[0] is not None else None
        groups = _groups(nb, nd)
        du = np.empty((nb, nd, length), dtype=np.float32)
        ddelta = np.empty((nb, nd, length), dtype=np.float32)
        dz = np.empty((nb, nd, length) if z_ is not None else (0, 0, 0), dtype=np.float32)
        dA_part = np.zeros((nb, nd, ns), dtype=np.float32)
        dD_part = np.zeros((nb, nd), dtype=np.float32)
        dbias_part = np.zeros((nb, nd), dtype=np.float32)
        dB_part = np.zeros((nb, groups, length, ns), dtype=np.float32)
        dC_part = np.zeros((nb, groups, length, ns), dtype=np.float32)
        _scan_bwd_kernel(
            u_.numpy(),
            delta_.numpy(),
            A_.numpy(),
            Bt.numpy(),
            Ct.numpy(),
            D_.numpy() if D_ is not None else _EMPTY1,
            z_.numpy() if z_ is not None else _EMPTY3,
            bias_.numpy() if bias_ is not None else _EMPTY1,
            D_ is not None,
            z_ is not None,
            bias_ is not None,
            ctx.delta_softplus,
            CHUNK,
            chk.numpy(),
            _f32(dout).numpy(),
            _f32(dlast).numpy() if dlast is not None else _EMPTY3,
            dlast is not None,
            groups,
            du,
            ddelta,
            dz,
            dA_part,
            dD_part,
            dbias_part,
            dB_part,
            dC_part,
        )
        dev = dout.device
        u_dt, delta_dt, A_dt, B_dt, C_dt = ctx.dtypes

        def back(arr, dtype):
            return torch.from_numpy(arr).to(device=dev, dtype=dtype)

        dB = torch.from_numpy(dB_part).sum(1).transpose(1, 2)
        dC = torch.from_numpy(dC_part).sum(1).transpose(1, 2)
        return (
            back(du, u_dt),
            back(ddelta, delta_dt),
            torch.from_numpy(dA_part).sum(0).to(device=dev, dtype=A_dt),
            dB.to(device=dev, dtype=B_dt),
            dC.to(device=dev, dtype=C_dt),
            torch.from_numpy(dD_part).sum(0).to(dev) if D_ is not None else None,
            back(dz, torch.float32) if z_ is not None else None,
            torch.from_numpy(dbias_part).sum(0).to(dev) if bias_ is not None else None,
            None,
            None,
        )


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
    """CPU selective scan, signature of ``mamba_ssm.ops.selective_scan_interface``."""
    return SelectiveScanCPU.apply(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
    )


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
    """Naive PyTorch recurrence (Python loop over time), for tests only."""
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
