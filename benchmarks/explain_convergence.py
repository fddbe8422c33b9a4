"""How many integrated-gradients steps a complete explanation needs: steps spread evenly along
the path against steps placed by the path's logit profile (``ehrmamba.explain``'s default).

Models are the planted-code models of the explanation test, one per torch seed (their training
differs with the seed as it does between CPUs). Each explains the same fresh planted patients
both ways, with the step count doubling from 32 up to ``--max-steps`` until the completeness
error is within 5% of the logit change.

    .venv/bin/python benchmarks/explain_convergence.py --seeds 0-19
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from ehrmamba.explain import explain_layout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the cohort lives with the tests
from tests.planted_cohort import (
    PLANTED,
    TASK,
    fresh_planted_patient,
    layout,
    train_planted_model,
    vocabulary,
)

PLACEMENTS = {"even": 1, "profiled": 16}


def _seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-9", help="torch seeds of the models, e.g. 0-19")
    parser.add_argument("--patients", type=int, default=4, help="fresh patients per model")
    parser.add_argument("--max-steps", type=int, default=512)
    args = parser.parse_args()

    vocab = vocabulary()
    tally = {
        name: {"steps": Counter(), "unconverged": 0, "plant_first": 0, "seconds": 0.0}
        for name in PLACEMENTS
    }
    explained = 0
    for torch_seed in _seeds(args.seeds):
        model, accuracy = train_planted_model(vocab, torch_seed)
        if accuracy < 0.97:
            print(f"seed {torch_seed}: model did not learn the plant ({accuracy:.2f}), skipped")
            continue
        for seed in range(100, 100 + args.patients):
            subject = layout(vocab, fresh_planted_patient(seed))
            explained += 1
            row = []
            for name, segments in PLACEMENTS.items():
                start = time.perf_counter()
                result = explain_layout(
                    model,
                    vocab,
                    subject,
                    TASK,
                    max_len=128,
                    max_steps=args.max_steps,
                    segments=segments,
                )
                t = tally[name]
                t["seconds"] += time.perf_counter() - start
                t["steps"][result.n_steps if result.converged else "not converged"] += 1
                t["unconverged"] += not result.converged
                t["plant_first"] += result.events[0].code == PLANTED
                row.append(f"{name} {result.n_steps} steps, error {result.convergence_delta:.3f}")
            print(f"seed {torch_seed} patient {seed}: " + "; ".join(row), flush=True)
    summary = {
        name: {
            "explanations": explained,
            "steps_needed": {str(k): v for k, v in sorted(t["steps"].items(), key=str)},
            "not_converged": t["unconverged"],
            "plant_ranked_first": t["plant_first"],
            "seconds_per_explanation": round(t["seconds"] / max(explained, 1), 3),
        }
        for name, t in tally.items()
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
