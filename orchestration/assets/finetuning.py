"""Finetuning stage: label sequences ▶ multitask prompted finetuning (MTF) ▶ single-task runs.

Every label row of every task becomes a (history cut at prediction time + task token) sequence;
one MTF run learns all tasks, and, for the comparison the evaluation makes, one run per task
learns that task alone with the same per-task budget.
"""

import json

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster_duckdb import DuckDBResource
from pydantic import Field

from ehrmamba.finetune.train import FinetuneConfig, finetune
from ehrmamba.tokenize import LabelSample, Vocabulary, write_label_sequences
from orchestration.assets.modeling import SEQUENCES, _vocab_path
from orchestration.assets.validation import EVENTS, SPLITS
from orchestration.policies import FOLLOW_UPSTREAM, GPU_TRAINING_TAGS, TRAINING_RETRY
from orchestration.resources import PlatformSettings

LABEL_SEQUENCES = dg.AssetKey(["tokenization", "label_sequences"])
PRETRAINED = dg.AssetKey(["training", "pretrained_model"])
FINETUNED = dg.AssetKey(["training", "finetuned_model"])
SINGLE_TASK = dg.AssetKey(["training", "single_task_models"])
MTF_NAME = "ehrmamba-mtf"


class LabelSequencesConfig(dg.Config):
    """How many labels per task and split become sequences (a compute budget, not a filter on
    meaning: tuning and held_out keep their prevalence)."""

    max_len: int = 128
    """History tokens per label, most recent kept (the task token is never cut). Finetuning,
    and scoring tuning and held_out for MTF and single-task models, cost in proportion: 128
    keeps ``make demo`` inside 15 minutes on 2 cores; 512 or more for a real model."""
    train_per_task: int = 600
    tuning_per_task: int = 200
    held_out_per_task: int = 300
    train_positive_share: float = 0.3
    """Share of positives among a task's train rows when there are enough (0: natural)."""
    seed: int = 0


class FinetuneRunConfig(dg.Config):
    """Launchpad-editable finetuning settings; defaults fit the CPU demo budget."""

    tasks: list[str] = Field(default_factory=list)
    """Tasks to learn; empty: every task of the vocabulary."""
    max_steps: int = 120
    """-1: as many steps as max_epochs gives."""
    max_epochs: int = 1
    keep_epoch: str = "best_tuning"
    """best_tuning (the epoch with the best mean tuning AUROC) | last."""
    batch_size: int = 8
    """Rows per step, pooled over the tasks. On the 6,000-patient cohort, 48 (about the 8 rows
    of each task that a single-task step sees) scored as well on tuning and better on every
    held_out row of the two tasks checked (BENCHMARKS.md, MTF batch size); with max_epochs it
    costs the same, with max_steps six times the rows. single_task_models divides MTF's steps,
    not rows, among the tasks: raise its mtf_max_steps with this."""
    learning_rate: float = 5e-4
    balance: str = "tasks"
    """none | tasks | tasks_and_labels (see ehrmamba.finetune.train)."""
    task_loss_weights: dict[str, float] = Field(default_factory=dict)
    """Multiplies each row's loss by its task's weight (tasks not named: 1). On the
    6,000-patient cohort {"fluid_electrolyte_1y": 3.0} lifted that task by about 0.009 AUROC
    and cost hypertension about as much; 2.0 lifted it less and did not spare hypertension.
    {"fluid_electrolyte_1y": 3.0, "hypertension_1y": 2.0} kept both: over four seeds, the only
    recipe measured there with every task inside the interval of both single-task schedules
    (BENCHMARKS.md: weighting fluid/electrolyte's loss, and the two sections after it). Fixed
    in advance and rerun on a fresh cohort (synthetic seed 1, batch_size 48, max_epochs 3), it
    held: inside single-task's interval, above XGBoost on every task by the point estimate
    (BENCHMARKS.md, confirmation on a fresh cohort). Cohort-specific, so not the default."""
    seed: int = 0
    restarts: int = 1
    """Train this many times (seeds seed, seed + 1, ...) and keep the run best on tuning: a
    guard for scheduled retraining, since one MTF seed can land far below another (BENCHMARKS.md,
    training-seed spread). Each costs one more run; every seed's predictions go to the
    evaluation, which judges MTF against single-task over seeds (BENCHMARKS.md)."""


class SingleTaskRunConfig(dg.Config):
    steps_per_task: int = 0
    """0: the MTF run's steps divided by the number of tasks (the same budget per task);
    -1: as many steps as max_epochs over the task's own labels gives."""
    mtf_max_steps: int = 120
    max_epochs: int = 1
    keep_epoch: str = "best_tuning"
    """best_tuning (the epoch with the best mean tuning AUROC) | last."""
    batch_size: int = 8
    learning_rate: float = 5e-4
    seed: int = 0
    restarts: int = 1
    """Seeds per task, the best on tuning kept; match the MTF run's for a fair comparison. The
    evaluation compares MTF with single-task over every seed of both as well as between the
    two models kept."""


def _labels_path(platform: PlatformSettings):
    return platform.settings().artifacts_dir / "sequences" / "labels.parquet"


def finetune_record_path(platform: PlatformSettings, name: str = "mtf"):
    return platform.settings().artifacts_dir / "finetuning" / f"{name}.json"


@dg.asset(
    key=LABEL_SEQUENCES,
    group_name="tokenization",
    kinds={"parquet"},
    deps=[SEQUENCES, EVENTS, SPLITS],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb_writer",
    description="Per label: the history cut at its prediction time plus the task token "
    "(truncation never removes it), sampled per task and split within a compute budget.",
)
def label_sequences(
    context: dg.AssetExecutionContext,
    config: LabelSequencesConfig,
    duckdb: DuckDBResource,
    platform: PlatformSettings,
) -> dg.MaterializeResult:
    vocab = Vocabulary.load(_vocab_path(platform))
    caps = {
        "train": config.train_per_task,
        "tuning": config.tuning_per_task,
        "held_out": config.held_out_per_task,
    }
    sample = LabelSample(
        {k: v for k, v in caps.items() if v > 0},
        train_positive_share=config.train_positive_share or None,
        seed=config.seed,
    )
    out_dir = platform.settings().artifacts_dir / "sequences"
    with duckdb.get_connection() as con:
        path = write_label_sequences(con, vocab, out_dir, max_len=config.max_len, sample=sample)
    table = pq.read_table(path, columns=["task", "split", "label", "length"])
    counts: dict[str, dict[str, list[int]]] = {}
    for task, split, label in zip(
        table["task"].to_pylist(),
        table["split"].to_pylist(),
        table["label"].to_pylist(),
        strict=True,
    ):
        n = counts.setdefault(task, {}).setdefault(split, [0, 0])
        n[0] += 1
        n[1] += int(label)
    context.log.info(f"label sequences per task/split [rows, positives]: {counts}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path.resolve())),
            "sequences": table.num_rows,
            "tokens": int(pc.sum(table["length"]).as_py() or 0),
            "per_task": dg.MetadataValue.json(
                {
                    t: {s: {"rows": r, "positives": p} for s, (r, p) in v.items()}
                    for t, v in counts.items()
                }
            ),
        }
    )


def upstream_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict:
    """The metadata of an upstream asset's latest materialization (where its outputs are)."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(
            f"{key.to_user_string()} has never been materialized; materialize it first"
        )
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _finetune(context, platform, config: FinetuneConfig, record: str) -> dict:
    settings = platform.settings()
    vocab = Vocabulary.load(_vocab_path(platform))
    pretrained = upstream_metadata(context, PRETRAINED)
    result = finetune(
        _labels_path(platform),
        vocab,
        pretrained["model_dir"],
        config,
        output_dir=settings.artifacts_dir / "finetuning" / context.run.run_id / config.name,
        tracking_uri=settings.mlflow_tracking_uri,
        artifact_location=settings.mlflow_artifact_location,
        run_name=f"{config.name}-{context.run.run_id[:8]}",
        progress_log=context.log.info,
    )
    predictions = result.bundle_dir.parent / "predictions.parquet"
    result.predictions.to_parquet(predictions, index=False)
    seed_predictions = result.bundle_dir.parent / "seed_predictions.parquet"
    result.seed_predictions.to_parquet(seed_predictions, index=False)
    info = {
        "name": config.name,
        "run_id": result.run_id,
        "bundle_dir": str(result.bundle_dir.resolve()),
        "predictions": str(predictions.resolve()),
        # every restart's predictions, for the evaluation's comparison of recipes over seeds
        "seed_predictions": str(seed_predictions.resolve()),
        "pretrained_run_id": pretrained.get("mlflow_run_id"),
        "pretrained_model_dir": str(pretrained["model_dir"]),
        "metrics": result.metrics,
    }
    path = finetune_record_path(platform, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))
    context.log.info(f"{config.name}: MLflow run {result.run_id}")
    return info


def _auroc_metadata(metrics: dict[str, float]) -> dict:
    return {
        k: dg.MetadataValue.float(round(float(v), 4))
        for k, v in sorted(metrics.items())
        if ".auroc." in k or k == "train_loss"
    }


@dg.asset(
    key=FINETUNED,
    group_name="training",
    kinds={"pytorch", "mlflow"},
    deps=[LABEL_SEQUENCES, PRETRAINED],
    retry_policy=TRAINING_RETRY,
    op_tags=GPU_TRAINING_TAGS,
    description="One model for all tasks (multitask prompted finetuning) from the pretrained "
    "model: pooled, shuffled, task-balanced (patient, task) pairs; one shared head.",
)
def finetuned_model(
    context: dg.AssetExecutionContext, config: FinetuneRunConfig, platform: PlatformSettings
) -> dg.MaterializeResult:
    info = _finetune(
        context,
        platform,
        FinetuneConfig(
            tasks=list(config.tasks) or None,
            name=MTF_NAME,
            max_steps=config.max_steps,
            max_epochs=config.max_epochs,
            keep_epoch=config.keep_epoch,  # type: ignore[arg-type]
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            balance=config.balance,  # type: ignore[arg-type]
            task_loss_weights=dict(config.task_loss_weights),
            seed=config.seed,
            restarts=config.restarts,
            progress_bar=False,
        ),
        "mtf",
    )
    kept_seed = info["metrics"].get("kept_seed")
    return dg.MaterializeResult(
        metadata={
            "mlflow_run_id": info["run_id"],
            "bundle_dir": dg.MetadataValue.path(info["bundle_dir"]),
            **({"kept_seed": int(kept_seed)} if kept_seed is not None else {}),
            **_auroc_metadata(info["metrics"]),
        }
    )


@dg.asset(
    key=SINGLE_TASK,
    group_name="training",
    kinds={"pytorch", "mlflow"},
    deps=[LABEL_SEQUENCES, PRETRAINED],
    retry_policy=TRAINING_RETRY,
    op_tags=GPU_TRAINING_TAGS,
    description="For comparison with MTF: one finetuning run per task on that task alone, "
    "with the same number of steps per task as the MTF run spends on it.",
)
def single_task_models(
    context: dg.AssetExecutionContext, config: SingleTaskRunConfig, platform: PlatformSettings
) -> dg.MaterializeResult:
    table = pq.read_table(_labels_path(platform), columns=["task", "split"])
    tasks = sorted(set(table.filter(pc.equal(table["split"], "train"))["task"].to_pylist()))
    steps = config.steps_per_task or (
        max(1, config.mtf_max_steps // max(1, len(tasks))) if config.mtf_max_steps > 0 else -1
    )
    records = {}
    for task in tasks:
        records[task] = _finetune(
            context,
            platform,
            FinetuneConfig(
                tasks=[task],
                name=f"ehrmamba-single-{task}",
                max_steps=steps,
                max_epochs=config.max_epochs,
                keep_epoch=config.keep_epoch,  # type: ignore[arg-type]
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                balance="none",
                seed=config.seed,
                restarts=config.restarts,
                progress_bar=False,
            ),
            f"single-{task}",
        )
    index = finetune_record_path(platform, "single")
    index.write_text(
        json.dumps(
            {
                t: {"predictions": r["predictions"], "seed_predictions": r["seed_predictions"]}
                for t, r in records.items()
            },
            indent=2,
        )
    )
    return dg.MaterializeResult(
        metadata={
            "steps_per_task": steps,
            "runs": dg.MetadataValue.json({t: r["run_id"] for t, r in records.items()}),
            **{
                f"held_out.auroc.{t}": dg.MetadataValue.float(
                    round(float(r["metrics"][f"held_out.auroc.{t}"]), 4)
                )
                for t, r in records.items()
                if f"held_out.auroc.{t}" in r["metrics"]
            },
        }
    )
