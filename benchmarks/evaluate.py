"""The evaluation table on a cohort: EHRMamba MTF and single-task vs XGBoost / logistic regression.

Runs the library stages directly (no Dagster), in a fresh home:
ingest ▶ dbt build ▶ vocabulary ▶ sequences ▶ pretraining ▶ MTF + single-task finetuning ▶
baselines ▶ evaluation (bootstrap intervals) ▶ report. Great Expectations gates are not run
here: on ``../shared/data/synthea-r4`` one blocking expectation fails truthfully (LOINC 2885-2
unit error, see BENCHMARKS.md), and this script measures the models regardless.

    .venv/bin/python benchmarks/evaluate.py --source synthetic:2000 --out /tmp/eval-synth
    .venv/bin/python benchmarks/evaluate.py --source ../shared/data/synthea-r4 --out /tmp/ev-s
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import duckdb
import pandas as pd

SINGLE_TASK_BATCH = 8  # rows per single-task step


def main() -> None:
    from ehrmamba.evaluate import (
        EvaluationConfig,
        evaluate_models,
        finetuning_train_rows,
        join_demographics,
        run_matched_baselines,
    )
    from ehrmamba.fhir import ingest
    from ehrmamba.finetune.train import FinetuneConfig, finetune
    from ehrmamba.synth import write_cohort
    from ehrmamba.tokenize import (
        LabelSample,
        TokenizerConfig,
        fit_vocabulary,
        write_label_sequences,
        write_pretraining_sequences,
    )
    from ehrmamba.train import PretrainConfig, pretrain
    from orchestration.dbt_project import run_dbt

    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="synthetic:2000", help="synthetic:N or a FHIR dir")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--cohort-seed",
        type=int,
        default=0,
        help="synthetic cohort seed (synthetic:N only); another seed is a fresh cohort on "
        "which choices made on seed 0 can be confirmed",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="stop after pretraining: the warehouse, label sequences and pretrained model for "
        "benchmarks/finetune_one.py",
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=300,
        help="pretraining steps of 4 sequences; -1: --pretrain-epochs, which also caps this",
    )
    parser.add_argument(
        "--pretrain-epochs",
        type=int,
        default=1,
        help="passes over the train patients' pretraining sequences (one pass on 6,000 "
        "patients is 1,200 steps)",
    )
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=-1,
        help="MTF steps (single-task: as many rows over the number of tasks); -1: "
        "--finetune-epochs",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        default=2,
        help="passes over each model's training labels: MTF over all tasks, single over its own",
    )
    parser.add_argument(
        "--keep-epoch",
        choices=["best_tuning", "last"],
        default="best_tuning",
        help="which epoch's weights each finetuned model keeps (the same rule for all)",
    )
    parser.add_argument(
        "--pretrained", type=Path, help="a pretrained model of this warehouse to reuse"
    )
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument(
        "--train-per-task", type=int, default=2000, help="train labels per task (0: every row)"
    )
    parser.add_argument(
        "--eval-per-task",
        type=int,
        default=600,
        help="tuning labels per task, and held_out unless --held-out-per-task (0: every row)",
    )
    parser.add_argument(
        "--held-out-per-task",
        type=int,
        help="held_out labels per task; default --eval-per-task; 0: every row. A 1,000-row "
        "draw of a one-year condition task holds about 20 positives, too few to tell models "
        "0.02 AUROC apart",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="finetuning seed (row order, dropout, head initialization) of every model",
    )
    parser.add_argument(
        "--mtf-batch-size",
        type=int,
        default=SINGLE_TASK_BATCH,
        help="rows per MTF step (single-task models take 8); 48 gives each of six tasks about "
        "the 8 rows a single-task step has, in as many steps (BENCHMARKS.md, MTF batch size)",
    )
    parser.add_argument(
        "--restarts",
        type=int,
        default=1,
        help="finetuning runs per model (seeds --seed, --seed + 1, ...), the best on tuning "
        "kept; the report also compares MTF with single-task over all k seeds",
    )
    args = parser.parse_args()

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    db = out / "warehouse.duckdb"
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        timings[name] = round(time.perf_counter() - t, 1)
        print(f"{name}: {timings[name]} s", flush=True)
        t = time.perf_counter()

    if not db.exists():
        source = args.source
        if source.startswith("synthetic:"):
            source = out / "fhir"
            write_cohort(source, int(args.source.split(":")[1]), seed=args.cohort_seed)
            lap("synthesize")
        ingest(Path(source), db)
        lap("ingest")
        proc = run_dbt(["build", "--quiet"], duckdb_path=db, target_path=out / "dbt")
        if proc.returncode != 0:
            raise SystemExit(proc.stdout[-3000:])
        lap("dbt build")
    with duckdb.connect(str(db)) as con:
        vocab = fit_vocabulary(con, TokenizerConfig(max_len=512))
        vocab.save(out / "seq" / "vocab.json")  # for benchmarks/finetune_one.py
        seqs = write_pretraining_sequences(con, vocab, out / "seq", max_len=512)
        held_out = args.eval_per_task if args.held_out_per_task is None else args.held_out_per_task
        caps = {
            "train": args.train_per_task,
            "tuning": args.eval_per_task,
            "held_out": held_out,
        }
        sample = LabelSample({k: v for k, v in caps.items() if v > 0}, 0.3)
        labels = write_label_sequences(con, vocab, out / "seq", max_len=args.max_len, sample=sample)
    lap("tokenize")
    tracking = {
        "tracking_uri": f"sqlite:///{out / 'mlflow.db'}",
        "artifact_location": (out / "mlflow-artifacts").as_uri(),
    }
    pretrained_dir = args.pretrained
    if pretrained_dir is None:
        pretrained_dir = pretrain(
            seqs,
            vocab,
            PretrainConfig(
                preset=args.preset,
                max_steps=args.pretrain_steps,
                max_epochs=args.pretrain_epochs,
                batch_size=4,
                learning_rate=1e-3,
                progress_bar=False,
                model_overrides={"max_seq_length": 512},
            ),
            output_dir=out / "pretrain",
            **tracking,
        ).model_dir
    lap("pretrain" if args.pretrained is None else "pretrain (reused)")
    if args.prepare_only:
        (out / "timings.json").write_text(json.dumps(timings, indent=2))
        print(f"prepared: pretrained model {pretrained_dir}")
        return
    common = dict(
        learning_rate=5e-4,
        max_epochs=args.finetune_epochs,
        keep_epoch=args.keep_epoch,
        progress_bar=False,
        seed=args.seed,
        restarts=args.restarts,
    )
    mtf = finetune(
        labels,
        vocab,
        pretrained_dir,
        FinetuneConfig(
            name="ehrmamba-mtf",
            max_steps=args.finetune_steps,
            batch_size=args.mtf_batch_size,
            **common,
        ),
        output_dir=out / "mtf",
        progress_log=lambda line: print(line, flush=True),
        **tracking,
    )
    lap("finetune MTF")
    tasks = sorted(set(mtf.predictions["task"]))
    singles = []
    seeds = [mtf.seed_predictions]  # every restart: the report judges the recipes over seeds
    for task in tasks:
        single = finetune(
            labels,
            vocab,
            pretrained_dir,
            FinetuneConfig(
                tasks=[task],
                name=f"single-{task}",
                # a --finetune-steps cap gives each single-task model MTF's rows over the tasks
                max_steps=max(
                    1,
                    args.finetune_steps * args.mtf_batch_size // (SINGLE_TASK_BATCH * len(tasks)),
                )
                if args.finetune_steps > 0
                else -1,
                balance="none",
                batch_size=SINGLE_TASK_BATCH,
                **common,
            ),
            output_dir=out / f"single-{task}",
            progress_log=lambda line: print(line, flush=True),
            **tracking,
        )
        singles.append(single.predictions.assign(model="ehrmamba-single-task"))
        seeds.append(single.seed_predictions.assign(model="ehrmamba-single-task"))
    lap("finetune single-task")
    with duckdb.connect(str(db), read_only=True) as con:
        base = run_matched_baselines(
            con,
            tasks,
            eval_rows=mtf.predictions[["task", "subject_id", "prediction_time"]],
            train_rows=finetuning_train_rows(labels),
        )
        lap("baselines")
        preds = join_demographics(pd.concat([mtf.predictions, *singles, base.predictions]), con)
    result = evaluate_models(
        preds,
        out / "evaluation",
        EvaluationConfig(),
        notes=[f"{k}: baselines skipped ({v})" for k, v in base.skipped.items()],
        title=f"Evaluation on held_out ({args.source})",
        comparisons=[
            ("ehrmamba-mtf", ref)
            for ref in ("ehrmamba-single-task", "xgboost_counts")
            if ref in set(preds["model"])
        ],
        seed_predictions=pd.concat(seeds, ignore_index=True),
    )
    lap("evaluate")
    table = result.metrics.pivot_table(index="task", columns="model", values="auroc")
    print(table.round(3).to_markdown())
    print(result.summary.round(3).to_markdown(index=False))
    print(result.paired.round(4).to_markdown(index=False))
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"report: {result.report_path}")


if __name__ == "__main__":
    main()
