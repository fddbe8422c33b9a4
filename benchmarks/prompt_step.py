"""Scoring six tasks from one scan: the k-token task prompt in one pass against k single steps.

Serving scans a patient's history once, copies the recurrent state for each task, and advances
each copy through the task prompt (the task token written ``k`` times). ``step_tokens`` runs the
projections and the convolution of the k tokens in one pass; the baseline is what it replaced,
``step`` called k times. Thread CPU time, one thread (as a serving model worker runs), the
``small`` preset with random weights (time does not depend on their values), rounds interleaved.

    .venv/bin/python benchmarks/prompt_step.py --repeats 1,4,8 --history 317
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _inputs(vocab_size: int, batch: int, length: int, generator: torch.Generator) -> dict:
    return {
        "input_ids": torch.randint(10, vocab_size, (batch, length), generator=generator),
        "token_type_ids": torch.randint(0, 4, (batch, length), generator=generator),
        "time_weeks": torch.rand(batch, length, generator=generator).cumsum(-1),
        "age_years": 40 + torch.rand(batch, length, generator=generator).cumsum(-1) / 50,
        "visit_order": torch.arange(length).repeat(batch, 1) // 8,
        "visit_segment": (torch.arange(length).repeat(batch, 1) // 8) % 2 + 1,
    }


def main() -> None:
    from ehrmamba.model import EHRMambaConfig, EHRMambaForMultitask
    from ehrmamba.model.modeling_ehrmamba import repeat_cache

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", default="1,4,8", help="prompt lengths k to measure")
    parser.add_argument("--history", type=int, default=317, help="history tokens")
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--vocab-size", type=int, default=2000)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = EHRMambaForMultitask(EHRMambaConfig.preset("small", vocab_size=args.vocab_size))
    model.eval()
    generator = torch.Generator().manual_seed(0)
    history = _inputs(args.vocab_size, 1, args.history, generator)
    # each task's cache is advanced through its prompt; the scan before it is shared and timed
    # once

    def scanned(n_tasks: int) -> list:
        cache = model.backbone.allocate_inference_cache(1)
        model.backbone(**history, cache=cache)
        return repeat_cache(cache, n_tasks)

    def one_step_per_token(cache: list, prompt: dict) -> torch.Tensor:
        for i in range(prompt["input_ids"].shape[1]):
            hidden = model.backbone.step(cache, **{n: v[:, i] for n, v in prompt.items()})
        return model.classifier(hidden)

    def one_pass(cache: list, prompt: dict) -> torch.Tensor:
        return model.classifier(model.backbone.step_tokens(cache, **prompt))

    def thread_ms(fn, *args) -> float:
        start = time.thread_time()
        fn(*args)
        return (time.thread_time() - start) * 1e3

    with torch.no_grad():
        scans = [thread_ms(scanned, args.tasks) for _ in range(args.rounds)]
        print(f"history scan ({args.history} tokens): {statistics.median(scans):.1f} ms\n")
        print("| k | one step per token, ms | one pass (step_tokens), ms | ratio | max abs diff |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for k in [int(x) for x in args.repeats.split(",")]:
            prompt = _inputs(args.vocab_size, args.tasks, k, generator)
            base = scanned(args.tasks)
            diff = one_step_per_token(_copy(base), prompt) - one_pass(_copy(base), prompt)
            baseline, ours = [], []
            for _ in range(args.rounds):
                baseline.append(thread_ms(one_step_per_token, _copy(base), prompt))
                ours.append(thread_ms(one_pass, _copy(base), prompt))
            b, o = statistics.median(baseline), statistics.median(ours)
            print(f"| {k} | {b:.2f} | {o:.2f} | {b / o:.2f} | {diff.abs().max().item():.1e} |")


def _copy(cache: list) -> list:
    return [(conv.clone(), ssm.clone()) for conv, ssm in cache]


if __name__ == "__main__":
    main()
