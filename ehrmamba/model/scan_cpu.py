"""Selective scan (Mamba S6) on CPU: numba kernels (``cpu_kernels.py``), hand-written backward.

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

The whole of it, bias, softplus, skip and gate included, is one forward and one backward
kernel: as separate PyTorch ops those elementwise steps each read and wrote the full
(batch, L, dim) tensors and cost more than the recurrence itself.

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

import numpy as np
import torch

from ehrmamba.model.cpu_kernels import scan_bwd_kernel, scan_fwd_kernel

CHUNK = 64  # steps between saved states; backward recomputes one chunk at a time
BLOCK = 64  # channels per work item: eight AVX2 registers of fp32


_EMPTY3 = np.zeros((0, 0, 0), dtype=np.float32)


def contiguous_f32(x: torch.Tensor) -> torch.Tensor:
    """The fp32, C-contiguous CPU tensor the kernels read (no copy when it already is)."""
    return x.detach().to(device="cpu", dtype=torch.float32).contiguous()


class SelectiveScanCPU(torch.autograd.Function):
    """The whole selective scan (bias, softplus, recurrence, D skip, gate) in two kernels."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        nd = u.shape[-1]
        u_, delta_, B_, C_ = (contiguous_f32(t) for t in (u, delta, B, C))
        AT = contiguous_f32(A).t().contiguous()  # (N, d): channels contiguous, as in u
        D_ = contiguous_f32(D) if D is not None else torch.zeros(nd)
        bias_ = contiguous_f32(delta_bias) if delta_bias is not None else torch.zeros(nd)
        z_ = contiguous_f32(z) if z is not None else None
        nb, length, _ = u_.shape
        ns = AT.shape[0]
        n_chunks = max(1, -(-length // CHUNK))
        out = np.empty((nb, length, nd), dtype=np.float32)
        chk = np.empty((nb, n_chunks, ns, nd), dtype=np.float32)
        last = np.zeros((nb, ns, nd), dtype=np.float32)
        softplus = bool(delta_softplus)
        scan_fwd_kernel(
            u_.numpy(), delta_.numpy(), bias_.numpy(), AT.numpy(), B_.numpy(), C_.numpy(),
            D_.numpy(), z_.numpy() if z_ is not None else _EMPTY3, z_ is not None, softplus,
            CHUNK, BLOCK, out, chk, last,
        )  # fmt: skip
        ctx.save_for_backward(u_, delta_, bias_, AT, B_, C_, D_, z_, torch.from_numpy(chk))
        ctx.softplus = softplus
        ctx.given = (D is not None, z is not None, delta_bias is not None)
        ctx.dtypes = (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype)
        ctx.set_materialize_grads(False)  # an unused last state's gradient arrives as None
        y = torch.from_numpy(out).to(device=u.device, dtype=u.dtype)
        last_state = torch.from_numpy(last).to(u.device).transpose(1, 2)  # (b, d, N)
        return y, last_state

    @staticmethod
    def backward(ctx, dout, dlast):
        u_, delta_, bias_, AT, B_, C_, D_, z_, chk = ctx.saved_tensors
        nb, length, nd = u_.shape
        ns = AT.shape[0]
        n_blocks = -(-nd // BLOCK)
        if dout is None:
            dout = torch.zeros(u_.shape)
        has_z = z_ is not None
        du = np.empty((nb, length, nd), dtype=np.float32)
        ddelta = np.empty((nb, length, nd), dtype=np.float32)
        dz = np.empty((nb, length, nd) if has_z else (0, 0, 0), dtype=np.float32)
        dA_part = np.empty((nb, ns, nd), dtype=np.float32)
        dB_part = np.empty((nb, n_blocks, length, ns), dtype=np.float32)
        dC_part = np.empty((nb, n_blocks, length, ns), dtype=np.float32)
        dD_part = np.empty((nb, nd), dtype=np.float32)
        dbias_part = np.empty((nb, nd), dtype=np.float32)
        has_dlast = dlast is not None
        dlast_ = contiguous_f32(dlast.transpose(1, 2)).numpy() if has_dlast else _EMPTY3
        scan_bwd_kernel(
            u_.numpy(), delta_.numpy(), bias_.numpy(), AT.numpy(), B_.numpy(), C_.numpy(),
            D_.numpy(), z_.numpy() if has_z else _EMPTY3, has_z, ctx.softplus, CHUNK, BLOCK,
            chk.numpy(), contiguous_f32(dout).numpy(), dlast_, has_dlast,
            du, ddelta, dz, dA_part, dB_part, dC_part, dD_part, dbias_part,
        )  # fmt: skip
        dev = dout.device
        u_dt, delta_dt, A_dt, B_dt, C_dt = ctx.dtypes
        has_d, _, has_bias = ctx.given
        return (
            torch.from_numpy(du).to(device=dev, dtype=u_dt),
            torch.from_numpy(ddelta).to(device=dev, dtype=delta_dt),
            torch.from_numpy(dA_part).sum(0).t().to(device=dev, dtype=A_dt),
            torch.from_numpy(dB_part).sum(1).to(device=dev, dtype=B_dt),
            torch.from_numpy(dC_part).sum(1).to(device=dev, dtype=C_dt),
            torch.from_numpy(dD_part).sum(0).to(dev) if has_d else None,
            torch.from_numpy(dz).to(dev) if has_z else None,
            torch.from_numpy(dbias_part).sum(0).to(dev) if has_bias else None,
            None,
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
    y, last = SelectiveScanCPU.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
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
