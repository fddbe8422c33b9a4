"""The numba CPU selective scan against the naive PyTorch recurrence: outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from ehrmamba.model import scan_cpu
from ehrmamba.model.scan_cpu import selective_scan_fn, selective_scan_ref

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def _inputs(batch, dim, state, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(batch, dim, length, generator=g),
        "delta": torch.randn(batch, dim, length, generator=g) * 0.5,
        "A": -(torch.rand(dim, state, generator=g) * 2 + 0.1),
        "B": torch.randn(batch, state, length, generator=g),
        "C": torch.randn(batch, state, length, generator=g),
        "D": torch.randn(dim, generator=g),
        "z": torch.randn(batch, dim, length, generator=g),
        "delta_bias": torch.randn(dim, generator=g) * 0.3,
    }


def _run(fn, x, use, softplus, last_grad):
    if not softplus:  # keep dt = delta + bias >= 0 without softplus
        x = {**x, "delta": x["delta"].abs(), "delta_bias": x["delta_bias"].abs()}
    leaves = {k: v.clone().requires_grad_() for k, v in x.items() if k in use}
    args = {k: leaves.get(k) for k in NAMES}
    y, last = fn(
        args["u"],
        args["delta"],
        args["A"],
        args["B"],
        args["C"],
        D=args["D"],
        z=args["z"],
        delta_bias=args["delta_bias"],
        delta_softplus=softplus,
        return_last_state=True,
    )
    g = torch.Generator().manual_seed(123)
    loss = (y * torch.randn(y.shape, generator=g)).sum()
    if last_grad:
        loss = loss + (last * torch.randn(last.shape, generator=g)).sum()
    loss.backward()
    return y.detach(), last.detach(), {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize(
    ("use", "softplus", "length", "last_grad"),
    [
        (NAMES, True, 131, True),  # everything, odd length over two chunk boundaries
        (("u", "delta", "A", "B", "C"), False, 64, False),  # bare scan, exactly one chunk
        (("u", "delta", "A", "B", "C", "D"), True, 1, False),  # single step
        (("u", "delta", "A", "B", "C", "z"), False, 65, False),  # one past a chunk boundary
        (("u", "delta", "A", "B", "C", "delta_bias"), True, 127, True),
        (NAMES, False, 200, False),
    ],
)
def test_scan_matches_naive_recurrence(use, softplus, length, last_grad):
    assert scan_cpu.CHUNK == 64
    x = _inputs(2, 6, 5, length, seed=length)
    y, last, grads = _run(selective_scan_fn, x, use, softplus, last_grad)
    y_ref, last_ref, grads_ref = _run(selective_scan_ref, x, use, softplus, last_grad)
    assert y.shape == (2, 6, length) and last.shape == (2, 6, 5)
    assert _rel(y, y_ref) < 1e-4
    assert _rel(last, last_ref) < 1e-4
    assert set(grads) == set(use)
    for name in use:
        assert grads[name].shape == x[name].shape, name
        assert _rel(grads[name], grads_ref[name]) < 1e-4, name


def test_scan_without_last_state_returns_tensor():
    x = _inputs(1, 3, 4, 10)
    y = selective_scan_fn(x["u"], x["delta"].abs(), x["A"], x["B"], x["C"])
    assert isinstance(y, torch.Tensor) and y.shape == (1, 3, 10)
    ref = selective_scan_ref(x["u"], x["delta"].abs(), x["A"], x["B"], x["C"])
    assert _rel(y, ref) < 1e-4


def test_scan_memory_is_chunked():
    """The forward saves one state per CHUNK steps, not one per step."""
    x = _inputs(1, 2, 3, 300)
    leaves = {k: v.transpose(1, 2).contiguous().requires_grad_() for k, v in x.items()
              if k in ("u", "delta", "B", "C")}  # fmt: skip
    A = x["A"].requires_grad_()
    y, _ = scan_cpu.SelectiveScanCPU.apply(
        leaves["u"], leaves["delta"].abs(), A, leaves["B"], leaves["C"], None, None, None, False
    )
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    assert (1, 5, 3, 2) in [t.shape for t in saved]  # ceil(300 / 64) checkpoints
    assert all(t.numel() <= 3 * 300 for t in saved)  # nothing of size (batch, L, state, dim)


@pytest.mark.parametrize("dim", [1, 64, 130])  # under, exactly, and across channel blocks
def test_channels_last_scan_matches_naive_recurrence(dim):
    assert scan_cpu.BLOCK == 64
    x = _inputs(2, dim, 16, 70, seed=dim)
    use = NAMES
    y, last, grads = _run(scan_cpu.selective_scan_fn, x, use, True, True)
    y_ref, last_ref, grads_ref = _run(selective_scan_ref, x, use, True, True)
    assert _rel(y, y_ref) < 1e-4 and _rel(last, last_ref) < 1e-4
    for name in use:
        assert _rel(grads[name], grads_ref[name]) < 1e-4, name
    cl = {k: (v.transpose(1, 2).contiguous() if v.ndim == 3 else v) for k, v in x.items()}
    y_cl = scan_cpu.selective_scan_channels_last(
        cl["u"], cl["delta"], cl["A"], cl["B"], cl["C"], cl["D"], cl["z"], cl["delta_bias"], True
    )
    assert y_cl.shape == (2, 70, dim)
    assert _rel(y_cl.transpose(1, 2), y_ref) < 1e-4
