"""One finetuning seed of one recipe on a prepared ``evaluate.py`` run, every held_out row scored.

The evaluation's targets turn on gaps of 0.01 to 0.02 AUROC, and one seed of a recipe against
one seed of another is a draw from the training seed's spread (BENCHMARKS.md, judging recipes
over seeds). Comparing recipes needs several seeds of each, and on a 2-core machine each seed is
a process pinned to one core. This script is that process: it finetunes one model (MTF, or
single-task with ``--task``) from the run's pretrained model and label sequences, then scores
every held_out row of the tasks named by ``--every-row`` (a 1,000-row draw of a one-year
condition task holds about 20 positives). ``benchmarks/recipe_gaps.py`` compares the recipes.

    .venv/bin/python benchmarks/evaluate.py --source synthetic:6000 --cohort-seed 1 \
        --out /tmp/c1 --pretrain-steps 500 --eval-per-task 1000 --prepare-only
    taskset -c 0 .venv/bin/python benchmarks/finetune_one.py --run /tmp/c1 --name mtf-s0 \
        --seed 0 --batch-size 48 --epochs 3 \
        --weight fluid_electrolyte_1y=3 --weight hypertension_1y=2
    taskset -c 1 .venv/bin/python benchmarks/finetune_one.py --run /tmp/c1 \
        --name single-hypertension-s0 --task hypertension_1y --seed 0 --epochs 3

Writes ``RUN/models/NAME/``: the bundle (``finetuned_model``), ``predictions.parquet`` (the
sampled tuning and held_out rows, as ``evaluate.py`` scores them), ``every_row.parquet`` (every
held_out row of the ``--every-row`` tasks) and ``summary.json`` (configuration, kept epoch,
per-task tuning AUROC, timings). Each model has its own MLflow store, so that two processes
never share a SQLite file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import torch

DEFAULT_EVERY_ROW = ("fluid_electrolyte_1y", "hypertension_1y")


def parse_weight(text: str) -> tuple[str, float]:
    task, sep, weight = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected TASK=WEIGHT, not {text!r}")
    return task, float(weight)


def every_row_sequences(run: Path, tasks: list[str], vocab, max_len: int, position: str) -> Path:
    """Every held_out row of ``tasks``, tokenized once per run and shared by its models (a
    single-task model reads its own task's rows from the same file).

    Written to a temporary directory and renamed into place, so that two processes started
    together cannot read a half-written file; the loser of the race discards its copy.
    """
    from ehrmamba.tokenize import write_label_sequences

    key = f"every-row-seq-{max_len}-{position}-" + "-".join(sorted(tasks))
    final = run / key
    if (final / "labels.parquet").exists():
        return final / "labels.parquet"
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=run))
    with duckdb.connect(str(run / "warehouse.duckdb"), read_only=True) as con:
        write_label_sequences(
            con,
            vocab,
            staging,
            sorted(tasks),
            splits=["held_out"],
            max_len=max_len,
            task_token_position=position,
        )
    try:
        os.rename(staging, final)
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return final / "labels.parquet"


def main() -> None:
    from ehrmamba.finetune import FinetunedModel
    from ehrmamba.finetune.train import (
        FinetuneConfig,
        finetune,
        predict_sequences,
        predictions_frame,
    )
    from ehrmamba.tokenize import SequenceDataset, Vocabulary

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="evaluate.py --prepare-only dir")
    parser.add_argument(
        "--pretrained", type=Path, help="default: RUN/pretrain/model (evaluate.py --pretrained)"
    )
    parser.add_argument("--name", required=True, help="this model's directory under RUN/models")
    parser.add_argument("--task", action="append", help="single-task (repeat for a subset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument(
        "--balance",
        default=None,
        help="default: 'tasks' for several tasks, 'none' for one (as evaluate.py)",
    )
    parser.add_argument(
        "--weight",
        type=parse_weight,
        action="append",
        default=[],
        metavar="TASK=W",
        help="task_loss_weights entry (repeatable)",
    )
    parser.add_argument(
        "--every-row",
        nargs="*",
        default=list(DEFAULT_EVERY_ROW),
        help="tasks whose every held_out row is scored (those this model answers)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (pin with taskset)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    run: Path = args.run
    labels = run / "seq" / "labels.parquet"
    pretrained = args.pretrained or run / "pretrain" / "model"
    for path in (labels, pretrained, run / "seq" / "vocab.json", run / "warehouse.duckdb"):
        if not path.exists():
            raise SystemExit(f"{path} does not exist: run evaluate.py --prepare-only --out {run}")
    out = run / "models" / args.name
    if (out / "summary.json").exists():
        raise SystemExit(f"{out} already holds a finished model; pick another --name")
    out.mkdir(parents=True, exist_ok=True)
    vocab = Vocabulary.load(run / "seq" / "vocab.json")
    t0 = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{args.name} {time.perf_counter() - t0:7.0f} s] {line}", flush=True)

    single = bool(args.task) and len(args.task) == 1
    config = FinetuneConfig(
        tasks=args.task,
        name="ehrmamba-single-task" if single else "ehrmamba-mtf",
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        balance=args.balance or ("none" if single else "tasks"),
        task_loss_weights=dict(args.weight),
        seed=args.seed,
        keep_epoch="best_tuning",
        progress_bar=False,
    )
    result = finetune(
        labels,
        vocab,
        pretrained,
        config,
        output_dir=out,
        tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
        progress_log=log,
    )
    train_seconds = time.perf_counter() - t0
    result.predictions.assign(seed=args.seed).to_parquet(out / "predictions.parquet", index=False)
    bundle = FinetunedModel.load(result.bundle_dir)
    tasks = sorted(set(args.every_row) & set(bundle.settings.tasks))
    rows = 0
    if tasks:
        seq = every_row_sequences(
            run,
            args.every_row,
            vocab,
            bundle.settings.max_len,
            bundle.settings.task_token_position,
        )
        held = SequenceDataset(seq, splits=["held_out"], tasks=tasks)
        frame = predictions_frame(held, predict_sequences(bundle.model, held), config.name)
        frame.assign(seed=args.seed).to_parquet(out / "every_row.parquet", index=False)
        rows = len(frame)
        log(f"scored {rows} held_out rows of {tasks}")
    summary = {
        "config": vars(args),
        "kept_epoch": result.metrics.get("kept_epoch"),
        "tuning_auroc": {
            k.removeprefix("tuning.auroc."): v
            for k, v in result.metrics.items()
            if k.startswith("tuning.auroc.")
        },
        "every_row_tasks": tasks,
        "every_row_rows": rows,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))  # Paths
    log(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
