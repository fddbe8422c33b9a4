"""GPU path: parity of mamba-ssm's CUDA kernels with the CPU path, and training throughput.

    bash benchmarks/model_gpu.sh          # installs mamba-ssm, then runs this file

1. Parity: one set of weights (the ``tiny`` preset, then ``small``), forward and gradients on
   the CPU (the project's numba scan) and on CUDA (mamba-ssm's selective scan), fp32, compared.
2. Throughput: training steps (forward + backward + AdamW, bf16 autocast) of the ``paper``
   preset at 2,048 tokens and the ``long`` preset at 16,384 tokens; tokens/s and peak memory.
"""

from __future__ import annotations

import argparse
import time

import torch

from ehrmamba.model import EHRMambaConfig, EHRMambaForPretraining, mamba_ssm_is_available


def parity(preset: str, batch: int, length: int, vocab: int = 1000) -> dict[str, float]:
    torch.manual_seed(0)
    config = EHRMambaConfig.preset(preset, vocab_size=vocab, dropout=0.0)
    cpu_model = EHRMambaForPretraining(config).float()
    gpu_model = EHRMambaForPretraining(config).float()
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model = gpu_model.cuda()
    ids = torch.randint(1, vocab, (batch, length))
    cpu_out = cpu_model(ids, labels=ids)
    cpu_out.loss.backward()
    gpu_out = gpu_model(ids.cuda(), labels=ids.cuda())
    gpu_out.loss.backward()
    logits_err = (cpu_out.logits - gpu_out.logits.cpu()).abs().max() / cpu_out.logits.abs().max()
    grad_err = max(
        float((p.grad - q.grad.cpu()).abs().max() / (p.grad.abs().max() + 1e-12))
        for p, q in zip(cpu_model.parameters(), gpu_model.parameters(), strict=True)
        if p.grad is not None
    )
    return {"logits_rel_err": float(logits_err), "max_grad_rel_err": grad_err}


def throughput(preset: str, batch: int, length: int, steps: int, vocab: int = 4000) -> dict:
    torch.manual_seed(0)
    config = EHRMambaConfig.preset(preset, vocab_size=vocab, max_seq_length=length)
    model = EHRMambaForPretraining(config).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    ids = torch.randint(1, vocab, (batch, length), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "preset": preset,
        "batch": batch,
        "tokens": length,
        "tokens_per_s": batch * length * steps / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs an NVIDIA GPU")
    if not mamba_ssm_is_available():
        raise SystemExit("mamba-ssm is not installed: run benchmarks/model_gpu.sh")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("\n| preset | batch x tokens | logits rel. err | max grad rel. err |")
    print("| --- | --- | ---: | ---: |")
    for preset, batch, length in [("tiny", 2, 256), ("small", 2, 1024)]:
        r = parity(preset, batch, length)
        print(
            f"| {preset} | {batch} x {length} | {r['logits_rel_err']:.2e} | "
            f"{r['max_grad_rel_err']:.2e} |"
        )
    print("\n| preset | batch x tokens | training tokens/s (bf16) | peak GiB |")
    print("| --- | --- | ---: | ---: |")
    for preset, batch, length in [("paper", 8, 2048), ("long", 1, 16384)]:
        r = throughput(preset, batch, length, args.steps)
        print(f"| {preset} | {batch} x {length} | {r['tokens_per_s']:,.0f} | {r['peak_gib']:.1f} |")


if __name__ == "__main__":
    main()
