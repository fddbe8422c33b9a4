"""The optimiser every training stage uses: AdamW with linear warm-up, then decay.

Norms, biases and the SSM's own ``A_log`` / ``D`` are not weight-decayed (as in mamba_ssm).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn


def adamw_with_warmup(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    warmup_ratio: float,
    total_steps: int,
    decay: Literal["cosine", "linear"] = "cosine",
) -> dict[str, Any]:
    """A Lightning ``configure_optimizers`` answer, stepping the schedule every batch."""
    decayed, not_decayed = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or name.endswith(("A_log", "D", "bias"))
        (not_decayed if skip else decayed).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": not_decayed, "weight_decay": 0.0},
        ],
        lr=learning_rate,
    )
    total = max(1, int(total_steps))
    warmup = max(1, int(total * warmup_ratio))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if decay == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
