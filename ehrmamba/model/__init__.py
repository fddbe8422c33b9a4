"""EHRMamba model: CPU selective scan and the Mamba foundation model."""

from ehrmamba.model.modeling_ehrmamba import (
    EHRMambaConfig,
    EHRMambaEmbeddings,
    EHRMambaForMultitask,
    EHRMambaForPretraining,
    EHRMambaModel,
    MambaBlock,
    MambaMixer,
    PretrainingOutput,
    SequenceClassifierOutput,
    lm_labels,
    mamba_ssm_is_available,
    pool_last,
    repeat_cache,
    selective_scan,
)
from ehrmamba.model.scan_cpu import selective_scan_fn, selective_scan_ref

__all__ = [
    "EHRMambaConfig",
    "EHRMambaEmbeddings",
    "EHRMambaForMultitask",
    "EHRMambaForPretraining",
    "EHRMambaModel",
    "MambaBlock",
    "MambaMixer",
    "PretrainingOutput",
    "SequenceClassifierOutput",
    "lm_labels",
    "mamba_ssm_is_available",
    "pool_last",
    "repeat_cache",
    "selective_scan",
    "selective_scan_fn",
    "selective_scan_ref",
]
