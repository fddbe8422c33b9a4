"""Multitask prompted finetuning (MTF) and the finetuned-model bundle used downstream."""

from ehrmamba.finetune.bundle import (
    FinetunedModel,
    FinetuneSettings,
    PatientPrediction,
)

__all__ = ["FinetuneSettings", "FinetunedModel", "PatientPrediction"]
