"""One task of an ``evaluate.py`` run re-evaluated on every held_out row, not a sample.

``evaluate.py`` scores a capped sample of held_out labels per task (the CPU budget), so a task
with 2% prevalence is judged on about 20 positives and every interval is about 0.2 wide. This
script takes the run's own models (MTF, the task's single-task model) and its matched baselines
(refitted on the same train labels), scores every held_out label row of the task at its natural
prevalence, and writes the usual report with the paired gaps MTF − single-task and MTF −
XGBoost. The F1 thresholds come from the run's sampled tuning rows, as in the run.

    .venv/bin/python benchmarks/evaluate_every_row.py --run /tmp/eval-6k-sel \
        --warehouse /tmp/eval-6k/warehouse.duckdb --task fluid_electrolyte_1y

Scoring costs about 30 ms per 256-token row per model on two CPU cores; the report says how
many rows and patients it holds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import duckdb
import pandas as pd

MTF = "ehrmamba-mtf"
SINGLE = "ehrmamba-single-task"


def main() -> None:
    from ehrmamba.evaluate import (
        EvaluationConfig,
        evaluate_models,
        finetuning_train_rows,
        join_demographics,
        run_matched_baselines,
    )
    from ehrmamba.finetune import FinetunedModel
    from ehrmamba.finetune.train import predict_sequences, predictions_frame
    from ehrmamba.tokenize import SequenceDataset, write_label_sequences

    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True, help="an evaluate.py --out directory")
    parser.add_argument("--task", required=True)
    parser.add_argument("--warehouse", type=Path, help="default: RUN/warehouse.duckdb")
    parser.add_argument("--out", type=Path, help="default: RUN/every-row-TASK")
    args = parser.parse_args()
    run, task = args.run, args.task
    warehouse = args.warehouse or run / "warehouse.duckdb"
    out = args.out or run / f"every-row-{task}"
    models = {
        MTF: run / "mtf" / "finetuned_model",
        SINGLE: run / f"single-{task}" / "finetuned_model",
    }
    run_labels = run / "seq" / "labels.parquet"
    for path in (warehouse, run_labels, *models.values()):
        if not path.exists():
            raise SystemExit(f"{path} does not exist: is {run} an evaluate.py output directory?")
    t0 = time.perf_counter()

    def log(what: str) -> None:
        print(f"{what}: {time.perf_counter() - t0:.0f} s", flush=True)

    bundles = {name: FinetunedModel.load(path) for name, path in models.items()}
    mtf = bundles[MTF]
    held_seq = out / "seq"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        if not (held_seq / "labels.parquet").exists():
            write_label_sequences(
                con,
                mtf.vocab,
                held_seq,
                [task],
                splits=["held_out"],
                max_len=mtf.settings.max_len,
                task_token_position=mtf.settings.task_token_position,
            )
        log("tokenized every held_out row")
        held = SequenceDataset(held_seq / "labels.parquet", splits=["held_out"], tasks=[task])
        tuning = SequenceDataset(run_labels, splits=["tuning"], tasks=[task])
        frames = []
        for name, bundle in bundles.items():
            for rows in (tuning, held):
                frames.append(predictions_frame(rows, predict_sequences(bundle.model, rows), name))
            log(f"{name}: {len(held)} held_out + {len(tuning)} tuning rows scored")
        scored = pd.concat(frames, ignore_index=True)
        base = run_matched_baselines(
            con,
            [task],
            eval_rows=scored.loc[scored["model"] == MTF, ["task", "subject_id", "prediction_time"]],
            train_rows=finetuning_train_rows(run_labels),
        )
        log("baselines fitted and scored")
        predictions = join_demographics(pd.concat([scored, base.predictions]), con)
    result = evaluate_models(
        predictions,
        out,
        EvaluationConfig(),
        title=f"{task} on every held_out row ({run})",
        comparisons=[(MTF, SINGLE), (MTF, "xgboost_counts")],
    )
    log("evaluated")
    held_rows = predictions[(predictions["model"] == MTF) & (predictions["split"] == "held_out")]
    patients = held_rows.groupby("subject_id")["label"].any()
    summary = {
        "rows": len(held_rows),
        "positive_rows": int(held_rows["label"].sum()),
        "patients": len(patients),
        "positive_patients": int(patients.sum()),
        "auroc": {
            r.model: [round(r.auroc, 4), round(r.auroc_low, 4), round(r.auroc_high, 4)]
            for r in result.metrics.itertuples(index=False)
        },
        "paired": {
            f"{r.model} - {r.reference}": [
                round(r.auroc_diff, 4),
                round(r.auroc_diff_low, 4),
                round(r.auroc_diff_high, 4),
            ]
            for r in result.paired.itertuples(index=False)
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"report: {result.report_path}")


if __name__ == "__main__":
    main()
