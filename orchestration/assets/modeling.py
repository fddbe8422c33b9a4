"""Tokenization and pretraining stages: vocabulary ▶ sequences ▶ pretrained model (MLflow)."""

import json
import shutil
from typing import Literal

import dagster as dg
import pyarrow.parquet as pq
from dagster_duckdb import DuckDBResource

from ehrmamba.tokenize import (
    TokenizerConfig,
    Vocabulary,
    fit_vocabulary,
    write_pretraining_sequences,
)
from ehrmamba.train import PretrainConfig, pretrain
from orchestration.assets.validation import EVENTS, SPLITS
from orchestration.pipes_training import pretrain_with_torchrun
from orchestration.policies import FOLLOW_UPSTREAM, GPU_TRAINING_TAGS, TRAINING_RETRY
from orchestration.resources import PlatformSettings

VOCABULARY = dg.AssetKey(["tokenization", "vocabulary"])
SEQUENCES = dg.AssetKey(["tokenization", "pretraining_sequences"])


class TokenizerRunConfig(dg.Config):
    """Launchpad-editable tokenizer settings."""

    n_bins: int = 5
    min_count: int = 1
    max_len: int = 512
    """Sequences keep their most recent ``max_len`` tokens; at most the model preset's context.
    512 keeps the CPU demo inside its time budget; the paper used 2048."""
    task_token_repeats: int = 4
    """The task prompt: the task token written this many times at the end of a label's history.
    4 gave MTF its best tuning AUROC (see BENCHMARKS.md); 1 is the paper's single token."""


class PretrainRunConfig(dg.Config):
    """Launchpad-editable pretraining settings; the defaults fit the CPU demo budget."""

    preset: Literal["tiny", "small", "paper", "long"] = "small"
    max_epochs: int = 1
    max_steps: int = 100
    batch_size: int = 4
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.1
    seed: int = 0
    launcher: Literal["in_process", "torchrun"] = "in_process"
    """``torchrun``: train in ``devices`` processes launched through Dagster Pipes (DDP)."""
    devices: int = 1
    """GPUs (or CPU processes) per node; more than one needs ``launcher: torchrun``."""
    strategy: str = "auto"
    """Lightning strategy: ``auto`` (``ddp`` under torchrun with several devices), ``fsdp``."""
    num_nodes: int = 1


def _vocab_path(platform: PlatformSettings):
    return platform.settings().artifacts_dir / "vocabulary" / "current.json"


@dg.asset(
    key=VOCABULARY,
    group_name="tokenization",
    kinds={"python"},
    deps=[EVENTS, SPLITS],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb_writer",
    description="Token vocabulary with lab-value quantile bins fitted on the train split only; "
    "saved as a versioned JSON artifact.",
)
def vocabulary(
    context: dg.AssetExecutionContext,
    config: TokenizerRunConfig,
    duckdb: DuckDBResource,
    platform: PlatformSettings,
) -> dg.MaterializeResult:
    max_len = config.max_len
    tok_config = TokenizerConfig(
        n_bins=config.n_bins,
        min_count=config.min_count,
        max_len=max_len,
        task_token_repeats=config.task_token_repeats,
    )
    with duckdb.get_connection() as con:
        vocab = fit_vocabulary(con, tok_config)
    target = _vocab_path(platform)
    target.parent.mkdir(parents=True, exist_ok=True)
    versioned = target.with_name(f"{vocab.version}.json")
    vocab.save(versioned)
    shutil.copyfile(versioned, target)
    context.log.info(f"vocabulary {vocab.version}: {len(vocab.tokens):,} tokens")
    return dg.MaterializeResult(
        metadata={
            "version": vocab.version,
            "tokens": len(vocab.tokens),
            "path": dg.MetadataValue.path(str(versioned.resolve())),
            "max_len": max_len,
        }
    )


@dg.asset(
    key=SEQUENCES,
    group_name="tokenization",
    kinds={"parquet"},
    deps=[VOCABULARY],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb_writer",
    description="One token sequence per subject (with time, age, visit order and segment), "
    "truncated to the most recent tokens of the model's context.",
)
def pretraining_sequences(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, platform: PlatformSettings
) -> dg.MaterializeResult:
    settings = platform.settings()
    vocab = Vocabulary.load(_vocab_path(platform))
    out_dir = settings.artifacts_dir / "sequences"
    with duckdb.get_connection() as con:
        path = write_pretraining_sequences(con, vocab, out_dir, max_len=vocab.config.max_len)
    table = pq.read_table(path, columns=["split", "length"])
    per_split = {}
    for split, length in zip(table["split"].to_pylist(), table["length"].to_pylist(), strict=True):
        rows, tokens = per_split.get(split, (0, 0))
        per_split[split] = (rows + 1, tokens + length)
    context.log.info(f"sequences: {per_split}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path.resolve())),
            "vocabulary_version": vocab.version,
            "sequences": table.num_rows,
            "tokens": sum(t for _, t in per_split.values()),
            "per_split": dg.MetadataValue.json(
                {k: {"sequences": r, "tokens": t} for k, (r, t) in per_split.items()}
            ),
        }
    )


@dg.asset(
    key=["training", "pretrained_model"],
    group_name="training",
    kinds={"pytorch", "mlflow"},
    deps=[SEQUENCES],
    retry_policy=TRAINING_RETRY,
    op_tags=GPU_TRAINING_TAGS,
    description="EHRMamba pretrained by next-token prediction (padding ignored), "
    "logged to MLflow with its vocabulary and tuning perplexity.",
)
def pretrained_model(
    context: dg.AssetExecutionContext, config: PretrainRunConfig, platform: PlatformSettings
) -> dg.MaterializeResult:
    settings = platform.settings()
    vocab = Vocabulary.load(_vocab_path(platform))
    train_config = PretrainConfig(
        preset=config.preset,
        max_epochs=config.max_epochs,
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_ratio=config.warmup_ratio,
        seed=config.seed,
        progress_bar=False,
        model_overrides={"max_seq_length": vocab.config.max_len},
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
    )
    if config.launcher == "torchrun":
        return pretrain_with_torchrun(
            context,
            train_config,
            sequences=settings.artifacts_dir / "sequences" / "pretraining.parquet",
            vocabulary=_vocab_path(platform),
            output_dir=settings.artifacts_dir / "pretraining" / context.run.run_id,
            tracking_uri=settings.mlflow_tracking_uri,
            artifact_location=settings.mlflow_artifact_location,
            run_name=f"dagster-{context.run.run_id[:8]}",
        )
    result = pretrain(
        settings.artifacts_dir / "sequences" / "pretraining.parquet",
        vocab,
        train_config,
        output_dir=settings.artifacts_dir / "pretraining" / context.run.run_id,
        tracking_uri=settings.mlflow_tracking_uri,
        artifact_location=settings.mlflow_artifact_location,
        run_name=f"dagster-{context.run.run_id[:8]}",
        progress_log=context.log.info,
    )
    context.log.info(f"MLflow run {result.run_id}: {json.dumps(result.metrics)}")
    return dg.MaterializeResult(
        metadata={
            "mlflow_run_id": result.run_id,
            "mlflow_tracking_uri": settings.mlflow_tracking_uri,
            "model_dir": dg.MetadataValue.path(str(result.model_dir.resolve())),
            "preset": config.preset,
            **{k: dg.MetadataValue.float(float(v)) for k, v in result.metrics.items()},
        }
    )
