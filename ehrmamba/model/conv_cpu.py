"""The mixer's causal depthwise convolution and its SiLU, fused, on CPU (numba).

``silu(conv1d(x, weight, bias, padding=K - 1, groups=dim)[..., :L])`` on ``(batch, L, dim)``
tensors. As PyTorch ops (K shifted multiply-adds, a bias add, a SiLU, and as many ops again in
the backward, each a full pass over the activations) this cost more than the selective scan
in a training step; here the forward is one pass and the backward two. Work items are
(batch row, block of channels) with the channel loop innermost, as in the scan.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from ehrmamba.model.simd_math import FASTMATH, sigmoid_row

BLOCK = 64
_ONE = np.float32(1.0)


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
def _conv_silu_fwd_kernel(x, wt, bias, block, out):
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
def _conv_silu_bwd_kernel(x, wt, bias, gout, block, gpre, dx, dw_part, db_part):
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


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(device="cpu", dtype=torch.float32).contiguous()


class CausalConvSiLUCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        nb, length, nd = x.shape
        x_ = _f32(x)
        wt = _f32(weight.reshape(nd, -1)).t().contiguous()  # (K, d)
        bias_ = _f32(bias) if bias is not None else torch.zeros(nd)
        out = np.empty((nb, length, nd), dtype=np.float32)
        _conv_silu_fwd_kernel(x_.numpy(), wt.numpy(), bias_.numpy(), BLOCK, out)
        ctx.save_for_backward(x_, wt, bias_)
        ctx.meta = (x.dtype, weight.shape, weight.dtype, bias is not None)
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, gout):
        x_, wt, bias_ = ctx.saved_tensors
        x_dtype, w_shape, w_dtype, has_bias = ctx.meta
        nb, length, nd = x_.shape
        gpre = np.empty((nb, length, nd), dtype=np.float32)
        dx = np.empty((nb, length, nd), dtype=np.float32)
        dw_part = np.empty((nb, wt.shape[0], nd), dtype=np.float32)
        db_part = np.empty((nb, nd), dtype=np.float32)
        _conv_silu_bwd_kernel(
            x_.numpy(), wt.numpy(), bias_.numpy(), _f32(gout).numpy(), BLOCK,
            gpre, dx, dw_part, db_part,
        )  # fmt: skip
        dev = gout.device
        dw = torch.from_numpy(dw_part).sum(0).t().reshape(w_shape).to(device=dev, dtype=w_dtype)
        db = torch.from_numpy(db_part).sum(0).to(dev) if has_bias else None
        return torch.from_numpy(dx).to(device=dev, dtype=x_dtype), dw, db


def causal_conv1d_silu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``silu`` of the causal depthwise convolution; x: (batch, L, dim), weight: (dim, 1, K)."""
    return CausalConvSiLUCPU.apply(x, weight, bias)
