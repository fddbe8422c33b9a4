"""Multitask prompted finetuning (MTF) of a pretrained EHRMamba, tracked in MLflow.

One run learns every task at once: the (patient, task) sequences of all tasks are pooled and
shuffled, each ends (or starts) with its task token, and one shared head answers. The same code
with one task is single-task finetuning, the comparison the paper makes. Balancing is a sampler
choice: ``none`` (pooled as they come), ``tasks`` (each task drawn equally often), or
``tasks_and_labels`` (each task equally, and within a task positives and negatives equally);
see :mod:`ehrmamba.finetune.sampling`. ``task_loss_weights`` is the other knob: it leaves the
draw alone and scales how much each task's rows count in the loss. Which epoch's weights the run
keeps is the best on the tuning split by default (see :mod:`ehrmamba.finetune.selection`), and
with ``restarts`` the same split picks among runs from several seeds.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import mlflow
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.entities import Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score
from torch.utils.data import DataLoader

from ehrmamba.finetune.bundle import FinetunedModel, FinetuneSettings
from ehrmamba.finetune.sampling import (
    BALANCE_OPTIONS,
    StratifiedCyclingSampler,
    balance_strata,
)
from ehrmamba.finetune.selection import (
    BestWeights,
    SelectEpochOnTuning,
    describe_tasks,
    mean_of,
    task_aurocs,
)
from ehrmamba.model import EHRMambaForMultitask, EHRMambaForPretraining
from ehrmamba.tokenize import SequenceDataset, Vocabulary, collate_sequences
from ehrmamba.train.optim import adamw_with_warmup
from ehrmamba.train.pretrain import MODEL_INPUTS, _precision
from ehrmamba.train.progress import LogProgress
from ehrmamba.train.tracking_scope import process_tracking_uri_kept

BUNDLE_ARTIFACT = "finetuned_model"
PREDICTION_COLUMNS = (
    "subject_id",
    "prediction_time",
    "task",
    "split",
    "label",
    "score",
    "model",
)


@dataclass
class FinetuneConfig:
    """What a finetuning run does; every field is logged to MLflow as a parameter."""

    tasks: list[str] | None = None  # None: every task in the label sequences
    name: str = "ehrmamba-mtf"  # the model's name in predictions and reports
    max_epochs: int = 1
    max_steps: int = -1
    batch_size: int = 8
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    gradient_clip_val: float = 1.0
    balance: Literal["none", "tasks", "tasks_and_labels"] = "tasks"
    # each row's loss is multiplied by its task's weight (tasks not named: 1). Balancing picks
    # which rows a step sees; this sets how hard each task pulls on the shared model, e.g. to
    # lift a task that MTF learns worse than its single-task model (BENCHMARKS.md)
    task_loss_weights: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    accelerator: str = "auto"
    eval_batch_size: int = 32
    log_every_n_steps: int = 10
    progress_bar: bool = True
    experiment: str = "ehrmamba-finetuning"
    # "best_tuning": score tuning after every epoch, keep the epoch with the best mean AUROC;
    # "last": keep the weights training ends with
    keep_epoch: Literal["best_tuning", "last"] = "best_tuning"
    # train this many times, with seeds seed, seed + 1, ..., and keep the run whose kept weights
    # score best on tuning: one MTF seed on the 6,000-patient cohort fell 0.10 AUROC below
    # another on hypertension, and tuning showed it (BENCHMARKS.md, training-seed spread). It
    # does not always: seeds trade one task against another, which the mean over tasks hides
    # (BENCHMARKS.md, choosing among seeds)
    restarts: int = 1

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_OPTIONS:
            raise ValueError(f"balance must be one of {BALANCE_OPTIONS}, not {self.balance!r}")
        if self.keep_epoch not in ("best_tuning", "last"):
            raise ValueError(f"keep_epoch must be 'best_tuning' or 'last', not {self.keep_epoch!r}")
        if self.restarts < 1:
            raise ValueError(f"restarts must be at least 1, not {self.restarts}")
        bad = {t: w for t, w in self.task_loss_weights.items() if not (w > 0 and math.isfinite(w))}
        if bad:
            raise ValueError(f"task_loss_weights must be positive and finite, not {bad}")


@dataclass
class FinetuneResult:
    run_id: str
    bundle_dir: Path  # a FinetunedModel directory
    metrics: dict[str, float]
    predictions: pd.DataFrame  # PREDICTION_COLUMNS, tuning and held_out rows
    thresholds: dict[str, float] = field(default_factory=dict)
    # PREDICTION_COLUMNS + "seed": the tuning and held_out rows of every restart's kept weights
    # (the chosen seed's are ``predictions``), so that evaluation can judge the recipe over
    # seeds and not only the one model kept
    seed_predictions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=[*PREDICTION_COLUMNS, "seed"])
    )


class FinetuningModule(L.LightningModule):
    def __init__(self, model: EHRMambaForMultitask, config: FinetuneConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def training_step(self, batch, batch_idx):
        inputs = {k: batch[k] for k in MODEL_INPUTS}
        weights = self.config.task_loss_weights
        row_weights = (
            torch.tensor([weights.get(t, 1.0) for t in batch["task"]], device=self.device)
            if weights
            else None
        )
        loss = self.model(**inputs, labels=batch["labels"], loss_weights=row_weights).loss
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        cfg = self.config
        return adamw_with_warmup(
            self.model,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            warmup_ratio=cfg.warmup_ratio,
            total_steps=self.trainer.estimated_stepping_batches,
            decay="linear",
        )


@torch.no_grad()
def predict_sequences(
    model: EHRMambaForMultitask, dataset: SequenceDataset, *, batch_size: int = 32
) -> np.ndarray:
    """Probabilities for every row of a label-sequence dataset, in its order.

    Rows are scored in length-sorted batches (less padding), then put back in order.
    """
    model.eval()
    device = next(model.parameters()).device
    lengths = np.array([len(x) for x in dataset._cols["input_ids"]])
    order = np.argsort(lengths, kind="stable")
    scores = np.empty(len(dataset), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = collate_sequences([dataset[int(i)] for i in rows])
        inputs = {k: batch[k].to(device) for k in MODEL_INPUTS}
        scores[rows] = torch.sigmoid(model(**inputs).logits.float()).cpu().numpy()
    return scores


def predictions_frame(
    dataset: SequenceDataset, scores: np.ndarray, model_name: str
) -> pd.DataFrame:
    table = dataset.table
    return pd.DataFrame(
        {
            "subject_id": table["subject_id"].to_numpy(),
            "prediction_time": table["prediction_time"].to_pandas(),
            "task": table["task"].to_pylist(),
            "split": table["split"].to_pylist(),
            "label": np.asarray(dataset.labels, dtype=bool),
            "score": scores,
            "model": model_name,
        }
    )


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximizes F1 (0.5 when the labels hold one class only)."""
    if labels.min() == labels.max():
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def _task_metrics(frame: pd.DataFrame, thresholds: dict[str, float]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for (split, task), g in frame.groupby(["split", "task"]):
        y, s = g["label"].to_numpy(), g["score"].to_numpy()
        if y.min() != y.max():
            metrics[f"{split}.auroc.{task}"] = float(roc_auc_score(y, s))
        if task in thresholds:
            metrics[f"{split}.f1.{task}"] = float(f1_score(y, s >= thresholds[task]))
    return metrics


@dataclass
class _Attempt:
    """One training run from the pretrained model with one seed, and the weights it keeps."""

    seed: int
    run_id: str
    tuning_scores: np.ndarray | None  # None when the label sequences hold no tuning row
    held_out_scores: np.ndarray  # of the kept weights, in the held_out dataset's order
    tuning_task_aurocs: dict[str, float]  # each task that tuning can rank
    kept_epoch: int | None  # None with keep_epoch="last"
    epochs: list[dict]  # each epoch: mean and per-task tuning AUROC
    trainer_metrics: dict[str, float]

    @property
    def tuning_auroc(self) -> float:
        """The mean over tasks; NaN when tuning cannot rank (one class, or no rows)."""
        return mean_of(self.tuning_task_aurocs)


def _train_attempt(
    config: FinetuneConfig,
    seed: int,
    *,
    vocab: Vocabulary,
    train: SequenceDataset,
    tuning: SequenceDataset,
    held_out: SequenceDataset,
    pretrained_dir: Path,
    logger: MLFlowLogger,
    label: str,
    progress_log: Callable[[str], None] | None,
) -> tuple[_Attempt, EHRMambaForMultitask]:
    """The run's summary, and its model on the CPU in eval mode with the kept weights."""
    L.seed_everything(seed, workers=True)
    pretrained = EHRMambaForPretraining.from_pretrained(pretrained_dir)
    module = FinetuningModule(EHRMambaForMultitask.from_pretraining(pretrained), config)
    generator = torch.Generator().manual_seed(seed)
    sampler = StratifiedCyclingSampler(
        balance_strata(train.tasks, train.labels, config.balance), len(train), generator
    )
    loader = DataLoader(
        train, batch_size=config.batch_size, sampler=sampler, collate_fn=collate_sequences
    )
    callbacks: list[L.Callback] = []
    if progress_log:
        callbacks.append(LogProgress(progress_log, label=label))
    selection = None
    if config.keep_epoch == "best_tuning" and len(tuning):

        def score_tuning(m: torch.nn.Module) -> tuple[dict[str, float], np.ndarray]:
            scores = predict_sequences(m, tuning, batch_size=config.eval_batch_size)
            return task_aurocs(tuning.tasks, tuning.labels, scores), scores

        selection = SelectEpochOnTuning(score_tuning, log=progress_log, label=label)
        callbacks.append(selection)
    trainer = L.Trainer(
        max_epochs=config.max_epochs,
        max_steps=config.max_steps,
        accelerator=config.accelerator,
        devices=1,
        precision=_precision(config.accelerator),
        gradient_clip_val=config.gradient_clip_val,
        logger=logger,
        log_every_n_steps=config.log_every_n_steps,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    logger.log_hyperparams(
        {**_run_params(config, module.model, vocab, train), "finetune.seed": seed}
    )
    trainer.fit(module, train_dataloaders=loader)

    model = module.model.cpu().eval()
    tuning_scores = None
    kept_epoch = None
    per_task: dict[str, float] = {}
    epochs: list[dict] = []
    if selection is not None and selection.best.state is not None:
        selection.best.restore(model)
        per_task, tuning_scores = selection.best.payload
        kept_epoch = selection.best.index
        epochs = selection.epochs
    elif len(tuning):
        tuning_scores = predict_sequences(model, tuning, batch_size=config.eval_batch_size)
        per_task = task_aurocs(tuning.tasks, tuning.labels, tuning_scores)
    attempt = _Attempt(
        seed=seed,
        run_id=logger.run_id,
        tuning_scores=tuning_scores,
        held_out_scores=(
            predict_sequences(model, held_out, batch_size=config.eval_batch_size)
            if len(held_out)
            else np.empty(0)
        ),
        tuning_task_aurocs=per_task,
        kept_epoch=kept_epoch,
        epochs=epochs,
        trainer_metrics={k: float(v) for k, v in trainer.callback_metrics.items()},
    )
    return attempt, model


def _run_params(
    config: FinetuneConfig, model: EHRMambaForMultitask, vocab: Vocabulary, train: SequenceDataset
) -> dict[str, object]:
    positives = {
        t: int(sum(lab for tk, lab in zip(train.tasks, train.labels, strict=True) if tk == t))
        for t in sorted(set(train.tasks))
    }
    return {
        # dicts as JSON: Lightning's log_hyperparams would otherwise flatten them into one
        # parameter per key (none at all for an empty one), unlike the parent run's
        **{
            f"finetune.{k}": json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
            for k, v in asdict(config).items()
        },
        **{f"model.{k}": v for k, v in model.config.to_dict().items() if k != "extra"},
        "vocab.version": vocab.version,
        "data.train_sequences": len(train),
        **{f"data.train_positives.{t}": n for t, n in positives.items()},
    }


def _start_parent_run(
    client: mlflow.MlflowClient, experiment: str, run_name: str, artifact_location: str
) -> str:
    """The run that holds a multi-seed finetuning's result; each seed's run is its child."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found is not None
        else client.create_experiment(experiment, artifact_location=artifact_location)
    )
    return client.create_run(experiment_id, run_name=run_name).info.run_id


def _best_of_seeds(
    config: FinetuneConfig,
    *,
    vocab: Vocabulary,
    train: SequenceDataset,
    tuning: SequenceDataset,
    held_out: SequenceDataset,
    pretrained_dir: Path,
    tracking_uri: str,
    artifact_location: str,
    run_name: str,
    parent_run_id: str | None,
    progress_log: Callable[[str], None] | None,
) -> tuple[_Attempt, EHRMambaForMultitask, list[_Attempt]]:
    """Train ``config.restarts`` times and return the run best on tuning, its model (with the
    kept weights) and every run; with one restart, that run."""
    best = BestWeights()
    attempts: list[_Attempt] = []
    for restart in range(config.restarts):
        seed = config.seed + restart
        attempt, model = _train_attempt(
            config,
            seed,
            vocab=vocab,
            train=train,
            tuning=tuning,
            held_out=held_out,
            pretrained_dir=pretrained_dir,
            logger=MLFlowLogger(
                experiment_name=config.experiment,
                tracking_uri=tracking_uri,
                run_name=f"{run_name}-seed{seed}" if parent_run_id else run_name,
                artifact_location=artifact_location,
                log_model=False,
                tags={MLFLOW_PARENT_RUN_ID: parent_run_id} if parent_run_id else None,
            ),
            label=f"{config.name} seed {seed}" if parent_run_id else config.name,
            progress_log=progress_log,
        )
        kept = best.offer(restart, attempt.tuning_auroc, model, payload=attempt)
        attempts.append(attempt)
        if parent_run_id and progress_log:
            note = " (best so far, kept)" if kept else f" (seed {best.payload.seed} stays best)"
            progress_log(
                f"{config.name}: seed {seed} tuning mean AUROC {attempt.tuning_auroc:.4f}{note}"
                + describe_tasks(attempt.tuning_task_aurocs)
            )
    best.restore(model)
    return best.payload, model, attempts


@process_tracking_uri_kept()
def finetune(
    label_sequences: Path,
    vocab: Vocabulary,
    pretrained_dir: Path,
    config: FinetuneConfig,
    *,
    output_dir: Path,
    tracking_uri: str,
    artifact_location: str | None = None,
    run_name: str | None = None,
    progress_log: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Finetune on the ``train`` rows, then score ``tuning`` and ``held_out``; log to MLflow.

    ``progress_log`` receives a line every tenth of the run (see ``ehrmamba.train.progress``)
    and, with ``keep_epoch="best_tuning"``, each epoch's tuning score.

    With ``config.restarts`` above 1, the run is repeated with seeds ``seed``, ``seed + 1``, ...
    (each an MLflow child run with its own curves) and the one whose kept weights score best on
    ``tuning`` becomes the result, logged to the parent run that ``run_id`` names.

    Returns the saved :class:`FinetunedModel` directory (its thresholds maximize F1 on
    ``tuning``) and the predictions that evaluation compares against the baselines.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train = SequenceDataset(label_sequences, splits=["train"], tasks=config.tasks)
    if len(train) == 0:
        raise ValueError(
            f"{label_sequences} holds no train-split label sequence for {config.tasks}"
        )
    tasks = sorted(set(train.tasks))
    unknown = sorted(set(config.task_loss_weights) - set(tasks))
    if unknown:
        raise ValueError(f"task_loss_weights names task(s) {unknown} not trained here: {tasks}")
    tuning = SequenceDataset(label_sequences, splits=["tuning"], tasks=tasks)
    held_out = SequenceDataset(label_sequences, splits=["held_out"], tasks=tasks)
    if config.restarts > 1 and len(tuning) == 0:
        raise ValueError(
            f"restarts={config.restarts} picks the seed best on the tuning split, and "
            f"{label_sequences} holds no tuning-split label sequence for {tasks}"
        )
    artifact_location = artifact_location or (output_dir / "mlflow-artifacts").resolve().as_uri()
    run_name = run_name or config.name
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    parent_run_id = None
    if config.restarts > 1:
        parent_run_id = _start_parent_run(client, config.experiment, run_name, artifact_location)
    try:
        chosen, model, attempts = _best_of_seeds(
            config,
            vocab=vocab,
            train=train,
            tuning=tuning,
            held_out=held_out,
            pretrained_dir=pretrained_dir,
            tracking_uri=tracking_uri,
            artifact_location=artifact_location,
            run_name=run_name,
            parent_run_id=parent_run_id,
            progress_log=progress_log,
        )
    except BaseException:
        if parent_run_id:
            client.set_terminated(parent_run_id, "FAILED")
        raise

    restarts = [
        {
            "seed": a.seed,
            "run_id": a.run_id,
            "tuning_auroc_mean": a.tuning_auroc,
            "tuning_auroc": a.tuning_task_aurocs,
            "kept_epoch": a.kept_epoch,
        }
        for a in attempts
    ]
    seed_predictions = pd.concat(
        [
            _attempt_predictions(a, tuning, held_out, config.name).assign(seed=a.seed)
            for a in attempts
        ],
        ignore_index=True,
    )
    predictions = (
        seed_predictions[seed_predictions["seed"] == chosen.seed]
        .drop(columns="seed")
        .reset_index(drop=True)
    )
    tuning_rows = predictions[predictions["split"] == "tuning"]
    thresholds = {
        task: best_f1_threshold(g["label"].to_numpy(), g["score"].to_numpy())
        for task, g in tuning_rows.groupby("task")
    }
    metrics = dict(chosen.trainer_metrics)
    metrics |= _task_metrics(predictions, thresholds)
    aurocs = [v for k, v in metrics.items() if k.startswith("held_out.auroc.")]
    if aurocs:
        metrics["held_out.auroc.mean"] = float(np.mean(aurocs))
    if chosen.kept_epoch is not None:
        metrics["kept_epoch"] = float(chosen.kept_epoch)
    if parent_run_id:
        metrics["kept_seed"] = float(chosen.seed)

    run_id = parent_run_id or chosen.run_id
    if parent_run_id:
        params = {
            **_run_params(config, model, vocab, train),
            **{f"restart.seed{r['seed']}.run_id": r["run_id"] for r in restarts},
        }
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        for i, r in enumerate(restarts):
            if math.isfinite(r["tuning_auroc_mean"]):
                client.log_metric(
                    run_id, "restart_tuning_auroc_mean", r["tuning_auroc_mean"], step=i
                )
            for task, value in r["tuning_auroc"].items():
                client.log_metric(run_id, f"restart_tuning_auroc.{task}", value, step=i)
    bundle = FinetunedModel(
        model,
        vocab,
        FinetuneSettings(
            tasks=tasks,
            max_len=max(len(x) for x in train._cols["input_ids"]),
            task_token_position=vocab.config.task_token_position,
            thresholds=thresholds,
            version=run_id,
        ),
    )
    bundle_dir = bundle.save(output_dir / BUNDLE_ARTIFACT)
    for name, value in metrics.items():
        if math.isfinite(value):
            client.log_metric(run_id, name, value)
    client.log_artifacts(run_id, str(bundle_dir), BUNDLE_ARTIFACT)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.parquet"
        predictions.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path))
        if parent_run_id:
            path = Path(tmp) / "seed_predictions.parquet"
            seed_predictions.to_parquet(path, index=False)
            client.log_artifact(run_id, str(path))
        summary = Path(tmp) / "finetuning.json"
        summary.write_text(
            json.dumps(
                {
                    "metrics": metrics,
                    "thresholds": thresholds,
                    "epochs": chosen.epochs,
                    "restarts": restarts,
                    "config": asdict(config),
                },
                indent=2,
            )
        )
        client.log_artifact(run_id, str(summary))
    if parent_run_id:
        client.set_terminated(parent_run_id)
    return FinetuneResult(
        run_id=run_id,
        bundle_dir=bundle_dir,
        metrics=metrics,
        predictions=predictions,
        thresholds=thresholds,
        seed_predictions=seed_predictions,
    )


def _attempt_predictions(
    attempt: _Attempt, tuning: SequenceDataset, held_out: SequenceDataset, name: str
) -> pd.DataFrame:
    frames = []
    if attempt.tuning_scores is not None:
        frames.append(predictions_frame(tuning, attempt.tuning_scores, name))
    if len(held_out):
        frames.append(predictions_frame(held_out, attempt.held_out_scores, name))
    if not frames:
        return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def load_finetuned_from_mlflow(run_id: str, tracking_uri: str) -> FinetunedModel:
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    local = Path(tempfile.mkdtemp(prefix="ehrmamba-finetuned-"))
    return FinetunedModel.load(client.download_artifacts(run_id, BUNDLE_ARTIFACT, str(local)))
