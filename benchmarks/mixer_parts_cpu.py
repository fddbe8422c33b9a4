"""Where one Mamba mixer layer's training time goes on the CPU, part by part.

Forward + backward of each part of ``MambaMixer`` at the ``model_cpu.py`` configuration
(batch 4, hidden 256, so 512 channels, state 16, 2 threads), at 2,048 tokens by default:
the linear layers, the causal convolution + SiLU as PyTorch ops beside the fused numba kernel
that replaces them, and the selective scan (numba, softplus and gate fused) beside the same
scan with its elementwise parts as PyTorch ops around the bare recurrence. Median of
``--repeats`` after one warm-up, interleaved so machine noise hits every part alike.

    .venv/bin/python benchmarks/mixer_parts_cpu.py [--length 2048] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ehrmamba.model.conv_cpu import causal_conv1d_silu
from ehrmamba.model.modeling_ehrmamba import causal_conv1d
from ehrmamba.model.scan_cpu import SelectiveScanCPU, selective_scan_channels_last

BATCH, HIDDEN, CHANNELS, STATE, KERNEL = 4, 256, 512, 16, 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    b, L, d, n = BATCH, args.length, CHANNELS, STATE

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape) * scale).requires_grad_()

    hidden, x = leaf(b, L, HIDDEN), leaf(b, L, d)
    in_proj = torch.nn.Linear(HIDDEN, 2 * d, bias=False)
    out_proj = torch.nn.Linear(d, HIDDEN, bias=False)
    conv = torch.nn.Conv1d(d, d, KERNEL, groups=d, padding=KERNEL - 1)
    u, delta, z = leaf(b, L, d), leaf(b, L, d, scale=0.5), leaf(b, L, d)
    B, C = leaf(b, L, n), leaf(b, L, n)
    A = (-(torch.rand(d, n) * 2 + 0.1)).requires_grad_()
    D, bias = leaf(d), leaf(d, scale=0.3)

    def backward(y):
        y.backward(torch.ones_like(y))

    def scan_unfused():
        dt = F.softplus(delta + bias)
        y, _ = SelectiveScanCPU.apply(u, dt, A, B, C, None, None, None, False)
        return (y + u * D) * F.silu(z)

    parts = {
        "in_proj (256 -> 1024)": lambda: backward(in_proj(hidden)),
        "out_proj (512 -> 256)": lambda: backward(out_proj(x)),
        "conv + SiLU, PyTorch ops": lambda: backward(
            F.silu(causal_conv1d(x, conv.weight, conv.bias))
        ),
        "conv + SiLU, fused kernel": lambda: backward(
            causal_conv1d_silu(x, conv.weight, conv.bias)
        ),
        "scan, elementwise parts as PyTorch ops": lambda: backward(scan_unfused()),
        "scan, fused kernel": lambda: backward(
            selective_scan_channels_last(u, delta, A, B, C, D, z, bias, True)
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in parts}
    for rep in range(args.repeats + 1):
        for name, run in parts.items():
            started = time.perf_counter()
            run()
            if rep:  # the first round warms up (numba loads its cache, allocator)
                times[name].append(time.perf_counter() - started)
    print(f"batch {b} x {L} tokens x {d} channels, state {n}, 2 threads; forward + backward")
    print("| part | ms (median) |\n| --- | ---: |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
