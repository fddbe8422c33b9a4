"""Next-token pretraining of EHRMamba with PyTorch Lightning, tracked in MLflow.

One function, :func:`pretrain`, from a sequences parquet file and its vocabulary to a trained
model: AdamW with linear warm-up and cosine decay, gradient clipping, bf16 on a GPU, checkpoints
(resume with ``resume_from``), a progress bar, and an MLflow run holding the parameters, the
loss and tuning perplexity (beside a unigram baseline's), the vocabulary and the model.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader

from ehrmamba.model import EHRMambaConfig, EHRMambaForPretraining
from ehrmamba.tokenize import SequenceDataset, Vocabulary, collate_sequences
from ehrmamba.train.optim import adamw_with_warmup
from ehrmamba.train.progress import LogProgress
from ehrmamba.train.tracking_scope import process_tracking_uri_kept

MODEL_INPUTS = (
    "input_ids",
    "token_type_ids",
    "time_weeks",
    "age_years",
    "visit_order",
    "visit_segment",
    "attention_mask",
)


@dataclass
class PretrainConfig:
    """What a pretraining run does; every field is logged to MLflow as a parameter."""

    preset: str = "tiny"
    max_epochs: int = 1
    max_steps: int = -1  # -1: as many as max_epochs gives
    batch_size: int = 8
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    gradient_clip_val: float = 1.0
    shuffle: bool = True
    seed: int = 0
    num_workers: int = 0
    accelerator: str = "auto"
    # Lightning's multi-process training: devices per node, "ddp"/"fsdp" under torchrun (or
    # "ddp_spawn" from a plain process), nodes; on a CPU each device is one gloo process.
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    log_every_n_steps: int = 10
    keep_checkpoints: int = 2
    progress_bar: bool = True
    experiment: str = "ehrmamba-pretraining"
    model_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainResult:
    run_id: str
    model_dir: Path
    checkpoint: Path | None  # last.ckpt: resume from here
    epoch_checkpoints: list[Path]  # the kept per-epoch checkpoints, oldest first
    metrics: dict[str, float]


class PretrainingModule(L.LightningModule):
    """The model and its optimisation; batches come from :func:`collate_sequences`."""

    def __init__(self, model_config: dict[str, Any], train_config: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters()
        self.model = EHRMambaForPretraining(EHRMambaConfig.from_dict(model_config))
        self.train_config = PretrainConfig(**train_config)
        self._val_loss_sum = 0.0
        self._val_tokens = 0

    def _loss(self, batch: dict[str, Any]) -> torch.Tensor:
        inputs = {k: batch[k] for k in MODEL_INPUTS}
        return self.model(**inputs, labels=batch["input_ids"]).loss

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self._loss(batch)
        # token-weighted: perplexity is over predicted tokens, not over batches
        tokens = int((batch["attention_mask"][:, 1:] != 0).sum())
        self._val_loss_sum += float(loss) * tokens
        self._val_tokens += tokens

    def on_validation_epoch_end(self) -> None:
        # with several processes each saw a shard of the tuning set: sum over all of them
        totals = torch.tensor(
            [self._val_loss_sum, float(self._val_tokens)], dtype=torch.float64, device=self.device
        )
        loss_sum, tokens = self.trainer.strategy.reduce(totals, reduce_op="sum").tolist()
        if tokens:
            loss = loss_sum / tokens
            self.log("tuning_loss", loss, prog_bar=True)
            self.log("tuning_perplexity", math.exp(min(loss, 50.0)), prog_bar=True)
        self._val_loss_sum, self._val_tokens = 0.0, 0

    def configure_optimizers(self):
        cfg = self.train_config
        return adamw_with_warmup(
            self.model,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            warmup_ratio=cfg.warmup_ratio,
            total_steps=self.trainer.estimated_stepping_batches,
        )


def unigram_perplexity(train: SequenceDataset, tuning: SequenceDataset, vocab_size: int) -> float:
    """Perplexity of predicting every tuning token from train token frequencies (add-one).

    The floor a sequence model must beat: it knows which codes are common, nothing more.
    """
    counts: Counter[int] = Counter()
    for ids in train._cols["input_ids"]:
        counts.update(ids[1:])
    total = sum(counts.values()) + vocab_size
    nll, n = 0.0, 0
    for ids in tuning._cols["input_ids"]:
        for token in ids[1:]:
            nll -= math.log((counts.get(token, 0) + 1) / total)
            n += 1
    return math.exp(nll / n) if n else float("nan")


def _precision(accelerator: str) -> str:
    cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true"


@process_tracking_uri_kept()
def pretrain(
    sequences: Path,
    vocab: Vocabulary,
    config: PretrainConfig,
    *,
    output_dir: Path,
    tracking_uri: str,
    artifact_location: str | None = None,
    resume_from: Path | None = None,
    run_name: str | None = None,
    progress_log: Callable[[str], None] | None = None,
) -> PretrainResult:
    """Train on the ``train`` split of ``sequences``, evaluate on ``tuning``, log to MLflow.

    ``progress_log`` receives a line every tenth of the run (step, loss, pace, time left): the
    Dagster asset passes its run log, where a progress bar would not show.
    """
    L.seed_everything(config.seed, workers=True)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train = SequenceDataset(sequences, splits=["train"])
    tuning = SequenceDataset(sequences, splits=["tuning"])
    if len(train) == 0:
        raise ValueError(f"{sequences} holds no train-split sequence to pretrain on")
    model_config = EHRMambaConfig.preset(
        config.preset, vocab_size=len(vocab.tokens), **config.model_overrides
    )
    module = PretrainingModule(model_config.to_dict(), asdict(config))
    loaders = {
        "train_dataloaders": DataLoader(
            train,
            batch_size=config.batch_size,
            shuffle=config.shuffle,
            collate_fn=collate_sequences,
            num_workers=config.num_workers,
        ),
    }
    if len(tuning):
        loaders["val_dataloaders"] = DataLoader(
            tuning,
            batch_size=config.batch_size,
            collate_fn=collate_sequences,
            num_workers=config.num_workers,
        )
    logger = MLFlowLogger(
        experiment_name=config.experiment,
        tracking_uri=tracking_uri,
        run_name=run_name,
        artifact_location=artifact_location or (output_dir / "mlflow-artifacts").resolve().as_uri(),
        log_model=False,
    )
    # one checkpoint per epoch, the newest `keep_checkpoints` kept (by step), plus last.ckpt
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="epoch{epoch}-step{step}",
        monitor="step",
        mode="max",
        save_top_k=config.keep_checkpoints,
        save_last=True,
        every_n_epochs=1,
        auto_insert_metric_name=False,
    )
    trainer = L.Trainer(
        max_epochs=config.max_epochs,
        max_steps=config.max_steps,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=_precision(config.accelerator),
        gradient_clip_val=config.gradient_clip_val,
        logger=logger,
        callbacks=[checkpoints]
        + ([LogProgress(progress_log, label="pretraining")] if progress_log else []),
        log_every_n_steps=config.log_every_n_steps,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        deterministic=False,
        num_sanity_val_steps=0,
    )
    logger.log_hyperparams(
        {
            **{f"train.{k}": v for k, v in asdict(config).items() if k != "model_overrides"},
            **{f"model.{k}": v for k, v in model_config.to_dict().items() if k != "extra"},
            "vocab.version": vocab.version,
            "vocab.size": len(vocab.tokens),
            "data.train_sequences": len(train),
            "data.tuning_sequences": len(tuning),
        }
    )
    trainer.fit(module, **loaders, ckpt_path=str(resume_from) if resume_from else None)
    if "val_dataloaders" in loaders and "tuning_loss" not in trainer.callback_metrics:
        # max_steps ended training inside an epoch, before its validation: evaluate now
        trainer.validate(module, dataloaders=loaders["val_dataloaders"], verbose=False)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if len(tuning):
        metrics["unigram_perplexity"] = unigram_perplexity(train, tuning, len(vocab.tokens))
    model_dir = output_dir / "model"
    if not trainer.is_global_zero:
        # under DDP every rank holds the same model; rank 0 alone saves and logs it
        return PretrainResult(
            run_id="", model_dir=model_dir, checkpoint=None, epoch_checkpoints=[], metrics=metrics
        )
    module.model.save_pretrained(model_dir)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run_id = logger.run_id
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_path = Path(tmp) / "vocabulary.json"
        vocab.save(vocab_path)
        client.log_artifact(run_id, str(vocab_path), "vocabulary")
        summary = Path(tmp) / "pretraining.json"
        summary.write_text(json.dumps({"metrics": metrics, "config": asdict(config)}, indent=2))
        client.log_artifact(run_id, str(summary))
    client.log_artifacts(run_id, str(model_dir), "model")
    last = Path(checkpoints.last_model_path) if checkpoints.last_model_path else None
    kept = sorted(
        (output_dir / "checkpoints").glob("epoch*.ckpt"),
        key=lambda p: int(p.stem.rsplit("step", 1)[1]),
    )
    return PretrainResult(
        run_id=run_id,
        model_dir=model_dir,
        checkpoint=last,
        epoch_checkpoints=kept,
        metrics=metrics,
    )


def load_pretrained_from_mlflow(
    run_id: str, tracking_uri: str
) -> tuple[EHRMambaForPretraining, Vocabulary]:
    """The model and vocabulary a pretraining run logged, ready for finetuning or serving."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    local = Path(tempfile.mkdtemp(prefix="ehrmamba-model-"))
    model_dir = Path(client.download_artifacts(run_id, "model", str(local)))
    vocab_dir = Path(client.download_artifacts(run_id, "vocabulary", str(local)))
    model = EHRMambaForPretraining.from_pretrained(model_dir)
    return model, Vocabulary.load(vocab_dir / "vocabulary.json")
