"""The mixer's causal depthwise convolution and its SiLU, fused, on CPU (``cpu_kernels.py``).

``silu(conv1d(x, weight, bias, padding=K - 1, groups=dim)[..., :L])`` on ``(batch, L, dim)``
tensors. As PyTorch ops (K shifted multiply-adds, a bias add, a SiLU, and as many ops again in
the backward, each a full pass over the activations) this cost more than the selective scan
in a training step; here the forward is one pass and the backward two. Work items are
(batch row, block of channels) with the channel loop innermost, as in the scan.
"""

from __future__ import annotations

import numpy as np
import torch

from ehrmamba.model.cpu_kernels import conv_silu_bwd_kernel, conv_silu_fwd_kernel
from ehrmamba.model.scan_cpu import BLOCK, contiguous_f32


class CausalConvSiLUCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        nb, length, nd = x.shape
        x_ = contiguous_f32(x)
        wt = contiguous_f32(weight.reshape(nd, -1)).t().contiguous()  # (K, d)
        bias_ = contiguous_f32(bias) if bias is not None else torch.zeros(nd)
        out = np.empty((nb, length, nd), dtype=np.float32)
        conv_silu_fwd_kernel(x_.numpy(), wt.numpy(), bias_.numpy(), BLOCK, out)
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
        conv_silu_bwd_kernel(
            x_.numpy(), wt.numpy(), bias_.numpy(), contiguous_f32(gout).numpy(), BLOCK,
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
