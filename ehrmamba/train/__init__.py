"""Training: next-token pretraining (and, later, multitask prompted finetuning)."""

from ehrmamba.train.pretrain import (
    PretrainConfig,
    PretrainingModule,
    PretrainResult,
    load_pretrained_from_mlflow,
    pretrain,
    unigram_perplexity,
)

__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "PretrainingModule",
    "load_pretrained_from_mlflow",
    "pretrain",
    "unigram_perplexity",
]
