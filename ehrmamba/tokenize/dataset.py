"""Torch-ready reading of the sequence parquet files: a Dataset and a padding collate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from ehrmamba.tokenize.sequences import FEATURES

PAD_ID = 0
TORCH_DTYPES = {
    "input_ids": torch.long,
    "token_type_ids": torch.long,
    "time_weeks": torch.float32,
    "age_years": torch.float32,
    "visit_order": torch.long,
    "visit_segment": torch.long,
}


class SequenceDataset(Dataset):
    """Rows of a pretraining or label parquet file, optionally filtered by split and task."""

    def __init__(
        self,
        path: Path | str,
        *,
        splits: Sequence[str] | None = None,
        tasks: Sequence[str] | None = None,
    ) -> None:
        table = pq.read_table(path)
        if splits is not None:
            table = table.filter(pc.is_in(table["split"], value_set=_arr(splits)))
        if tasks is not None and "task" in table.column_names:
            table = table.filter(pc.is_in(table["task"], value_set=_arr(tasks)))
        self.table = table
        self._cols = {k: table[k].to_pylist() for k in FEATURES}
        self.labels = table["label"].to_pylist() if "label" in table.column_names else None
        self.tasks = table["task"].to_pylist() if "task" in table.column_names else None
        self.subject_ids = table["subject_id"].to_pylist()

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            k: torch.tensor(self._cols[k][i], dtype=TORCH_DTYPES[k]) for k in FEATURES
        }
        item["subject_id"] = self.subject_ids[i]
        if self.labels is not None:
            item["labels"] = torch.tensor(float(self.labels[i]))
            item["task"] = self.tasks[i]
        return item


def sequence_tensors(
    seq: dict[str, np.ndarray], rows: slice | None = None
) -> dict[str, torch.Tensor]:
    """One sequence's features (optionally a slice of positions) as a batch of one."""
    rows = rows or slice(None)
    return {k: torch.as_tensor(seq[k][rows], dtype=TORCH_DTYPES[k]).unsqueeze(0) for k in FEATURES}


def _arr(values: Sequence[str]):
    import pyarrow as pa

    return pa.array(list(values), type=pa.string())


def collate_sequences(items: list[dict[str, Any]], pad_id: int = PAD_ID) -> dict[str, Any]:
    """Right-pad every token feature to the longest row ([PAD]=0, features 0) and add
    ``attention_mask`` (1 for real tokens)."""
    n = max(len(it["input_ids"]) for it in items)
    out: dict[str, Any] = {}
    for k in FEATURES:
        fill = pad_id if k == "input_ids" else 0
        batch = torch.full((len(items), n), fill, dtype=TORCH_DTYPES[k])
        for r, it in enumerate(items):
            batch[r, : len(it[k])] = it[k]
        out[k] = batch
    mask = torch.zeros((len(items), n), dtype=torch.long)
    for r, it in enumerate(items):
        mask[r, : len(it["input_ids"])] = 1
    out["attention_mask"] = mask
    out["subject_id"] = torch.tensor(np.asarray([it["subject_id"] for it in items]))
    if "labels" in items[0]:
        out["labels"] = torch.stack([it["labels"] for it in items])
        out["task"] = [it["task"] for it in items]
    return out
