"""Evaluation on the held_out split: metrics with bootstrap intervals, calibration, subgroups,
count baselines (XGBoost, logistic regression), plots and a markdown report.

Every model is compared through one predictions DataFrame contract (see
:mod:`ehrmamba.evaluate.evaluation`); the registry's promotion gate reads the metric rows.
"""

from ehrmamba.evaluate.baselines import (
    BaselineConfig,
    BaselineResult,
    CountFeatures,
    count_features,
    finetuning_train_rows,
    run_baselines,
    run_matched_baselines,
    top_codes,
)
from ehrmamba.evaluate.evaluation import (
    REQUIRED_COLUMNS,
    EvaluationConfig,
    EvaluationResult,
    evaluate_models,
    join_demographics,
    log_to_mlflow,
    paired_differences,
    validate_predictions,
)

__all__ = [
    "REQUIRED_COLUMNS",
    "BaselineConfig",
    "BaselineResult",
    "CountFeatures",
    "EvaluationConfig",
    "EvaluationResult",
    "count_features",
    "evaluate_models",
    "finetuning_train_rows",
    "join_demographics",
    "log_to_mlflow",
    "paired_differences",
    "run_baselines",
    "run_matched_baselines",
    "top_codes",
    "validate_predictions",
]
