"""Tokenization: vocabulary (fitted on train), patient sequences, label inputs, torch reader."""

from ehrmamba.tokenize.dataset import (
    TORCH_DTYPES,
    SequenceDataset,
    collate_sequences,
    sequence_tensors,
)
from ehrmamba.tokenize.sequences import (
    FEATURES,
    LabelSample,
    SubjectLayout,
    encode_events,
    load_layouts,
    tokenize_events,
    write_label_sequences,
    write_pretraining_sequences,
)
from ehrmamba.tokenize.vocab import (
    DEFAULT_TASK_TOKENS,
    GAP_TOKENS,
    SPECIAL_TOKENS,
    TokenizerConfig,
    TokenType,
    Vocabulary,
    fit_vocabulary,
    gap_token,
)

__all__ = [
    "DEFAULT_TASK_TOKENS",
    "FEATURES",
    "GAP_TOKENS",
    "SPECIAL_TOKENS",
    "TORCH_DTYPES",
    "LabelSample",
    "SequenceDataset",
    "SubjectLayout",
    "TokenType",
    "TokenizerConfig",
    "Vocabulary",
    "collate_sequences",
    "encode_events",
    "fit_vocabulary",
    "gap_token",
    "load_layouts",
    "sequence_tensors",
    "tokenize_events",
    "write_label_sequences",
    "write_pretraining_sequences",
]
