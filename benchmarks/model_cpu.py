"""CPU training-step benchmark: EHRMamba (numba scan) vs transformers Mamba and BERT.

One run, same machine, 2 torch threads, batch 4, hidden 256, 4 layers, state 16, at
sequence lengths 512, 2048 and 8192. For each configuration a fresh subprocess builds the
backbone and runs training steps (forward + backward of a mean-square loss on the final hidden
states; dropout 0 everywhere); it reports tokens/s and the peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), as total and as the growth over the RSS
after the model was built (the activation memory).

Configurations whose time or memory, extrapolated from the two previous lengths of the same
model (power law), would exceed ~5 minutes or 20 GB are skipped and marked so in the table.

    .venv/bin/pip install mambapy   # the faster transformers fallback, compared here
    .venv/bin/python benchmarks/model_cpu.py [--lengths 512 2048 8192] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

BATCH, HIDDEN, LAYERS, STATE, VOCAB, THREADS = 4, 256, 4, 16, 1000, 2
TIME_BUDGET_S = 300.0
MEM_BUDGET_MB = 20_000.0

MODELS = {
    "ehrmamba": "EHRMamba (this project, numba scan)",
    "hf_mamba_mambapy": "transformers Mamba + mambapy",
    "bert": "transformers BERT (sdpa)",
    "bert_eager": "transformers BERT (eager attention)",
    "hf_mamba_plain": "transformers Mamba, plain fallback",
}


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(name: str, length: int):
    if name == "ehrmamba":
        from ehrmamba.model import EHRMambaConfig, EHRMambaModel

        cfg = EHRMambaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            state_size=STATE,
            max_seq_length=length,
            dropout=0.0,
        )
        model = EHRMambaModel(cfg)
        return model, lambda ids: model(ids)
    if name.startswith("hf_mamba"):
        from transformers import MambaConfig, MambaModel

        cfg = MambaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            state_size=STATE,
            expand=2,
            conv_kernel=4,
            use_mambapy=name == "hf_mamba_mambapy",
        )
        model = MambaModel(cfg)
        return model, lambda ids: model(input_ids=ids, use_cache=False).last_hidden_state
    if name in ("bert", "bert_eager"):
        from transformers import BertConfig, BertModel

        cfg = BertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            intermediate_size=4 * HIDDEN,
            max_position_embeddings=max(512, length),
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        cfg._attn_implementation = "sdpa" if name == "bert" else "eager"
        model = BertModel(cfg, add_pooling_layer=False)
        return model, lambda ids: model(input_ids=ids).last_hidden_state
    raise ValueError(name)


def run_one(name: str, length: int, steps: int, warmup: int) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model, fwd = build(name, length)
    model.train()
    ids = torch.randint(1, VOCAB, (BATCH, length))
    rss_built = _maxrss_mb()

    def step():
        out = fwd(ids)
        loss = out.float().pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    step_s = min(times)
    peak = _maxrss_mb()
    return {
        "model": name,
        "length": length,
        "step_s": step_s,
        "tokens_per_s": BATCH * length / step_s,
        "peak_rss_mb": peak,
        "peak_growth_mb": peak - rss_built,
        "steps": steps,
        "warmup": warmup,
    }


def _extrapolate(points: list[tuple[int, float]], length: int) -> float | None:
    """Power-law extrapolation from the last two (length, value) points (or linear from one)."""
    if not points:
        return None
    if len(points) == 1:
        (l0, v0) = points[0]
        return v0 * length / l0
    (l0, v0), (l1, v1) = points[-2], points[-1]
    exponent = max(1.0, math.log(max(v1, 1e-9) / max(v0, 1e-9)) / math.log(l1 / l0))
    return v1 * (length / l1) ** exponent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "LENGTH"))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    if args.one:
        result = run_one(args.one[0], int(args.one[1]), args.steps, args.warmup)
        print("RESULT " + json.dumps(result), flush=True)
        return

    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "NUMBA_NUM_THREADS": str(THREADS)}
    results: list[dict] = []
    for name in args.models:
        history_t: list[tuple[int, float]] = []
        history_m: list[tuple[int, float]] = []
        for length in args.lengths:
            row = {"model": name, "length": length}
            if name == "hf_mamba_plain" and length != 512:
                row["skipped"] = "plain fallback run at 512 only (~11 tokens/s)"
                results.append(row)
                continue
            est_step = _extrapolate(history_t, length)
            est_mem = _extrapolate(history_m, length)
            if name == "hf_mamba_plain":
                est_step = BATCH * length / 11.0
            steps, warmup = args.steps, args.warmup
            if est_step is not None and est_step * (steps + warmup) > TIME_BUDGET_S:
                steps, warmup = 1, 0  # one cold step is all the budget allows
            if est_step is not None and est_step > TIME_BUDGET_S:
                row["skipped"] = f"estimated {est_step:.0f} s per step > {TIME_BUDGET_S:.0f} s"
            elif est_mem is not None and est_mem > MEM_BUDGET_MB:
                row["skipped"] = f"estimated {est_mem / 1024:.1f} GB > 20 GB"
            if "skipped" in row:
                print(f"skip {name} L={length}: {row['skipped']}", flush=True)
                results.append(row)
                continue
            cmd = [
                sys.executable,
                __file__,
                "--one",
                name,
                str(length),
                "--steps",
                str(steps),
                "--warmup",
                str(warmup),
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                err = " ".join(proc.stderr.split())[-200:]
                row["skipped"] = f"failed (rc {proc.returncode}): {err}"
            else:
                row = json.loads(lines[-1][len("RESULT ") :])
                history_t.append((length, row["step_s"]))
                history_m.append((length, row["peak_growth_mb"]))
            row["wall_s"] = time.perf_counter() - t0
            print(json.dumps(row), flush=True)
            results.append(row)
            if args.out:
                with open(args.out, "w") as fh:
                    json.dump(results, fh, indent=2)
    print()
    print(table(results))


def table(results: list[dict]) -> str:
    by = {(r["model"], r["length"]): r for r in results}
    lengths = sorted({r["length"] for r in results})
    lines = [
        "| model | length | tokens/s | peak RSS MB (growth) | vs mambapy | vs BERT sdpa "
        "| vs BERT eager |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in MODELS.items():
        for length in lengths:
            r = by.get((name, length))
            if r is None:
                continue
            if "skipped" in r:
                lines.append(f"| {label} | {length} | skipped: {r['skipped']} | | | | |")
                continue
            ratios = []
            for ref in ("hf_mamba_mambapy", "bert", "bert_eager"):
                other = by.get((ref, length), {})
                if "tokens_per_s" in other:
                    ratios.append(f"{r['tokens_per_s'] / other['tokens_per_s']:.2f}x")
                else:
                    ratios.append("n/a")
            lines.append(
                f"| {label} | {length} | {r['tokens_per_s']:.0f} | "
                f"{r['peak_rss_mb']:.0f} ({r['peak_growth_mb']:.0f}) | " + " | ".join(ratios) + " |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
