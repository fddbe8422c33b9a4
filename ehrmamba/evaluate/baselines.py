"""Count baselines: XGBoost and logistic regression on code counts over the model's own history.

A clinical ML reviewer's first question is whether a sequence model beats a bag of codes. The
features here are the ones MEDS-Tab and the EHRMamba paper use for that comparison: for each label
row, the number of events of each of the top-K codes (by frequency in the ``train`` split) the
subject had up to and including ``prediction_time``, plus age and sex. They are computed in DuckDB
from ``marts.meds_events`` with the same inclusive cut as the tokenizer (``time <=
prediction_time``), so a baseline sees exactly the history EHRMamba sees and no event after it.

Models train on ``train`` and predict ``tuning`` (where the F1 threshold is chosen) and
``held_out`` (where they are reported), in the predictions contract of
:mod:`ehrmamba.evaluate.evaluation`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from xgboost import XGBClassifier

BASELINE_MODELS = ("xgboost", "logreg")
ALL_LABELS_SUFFIX = "_all_labels"  # XGBoost fitted on every train label (run_matched_baselines)
PREDICTED_SPLITS = ("tuning", "held_out")
# age and sex are their own features; these codes would only repeat them
_EXCLUDED_CODES_SQL = "code <> 'MEDS_BIRTH' AND code NOT LIKE 'GENDER/%'"


@dataclass(frozen=True)
class BaselineConfig:
    """What the baselines see and how they are fitted.

    ``top_k`` codes by train frequency become count features. ``max_train_rows`` caps the train
    labels per task (a deterministic hash sample) to bound fitting time on large cohorts.
    ``model_names`` maps each baseline to the ``model`` value of its predictions.
    """

    top_k: int = 256
    seed: int = 0
    models: tuple[str, ...] = BASELINE_MODELS
    model_names: dict[str, str] = field(
        default_factory=lambda: {"xgboost": "xgboost_counts", "logreg": "logreg_counts"}
    )
    max_train_rows: int | None = None
    xgboost_params: dict[str, Any] = field(
        default_factory=lambda: {
            "n_estimators": 200,
            "max_depth": 4,
            "learning_rate": 0.05,
            "subsample": 0.9,
            "colsample_bytree": 0.8,
            "min_child_weight": 1.0,
            "tree_method": "hist",
        }
    )
    logreg_c: float = 0.1
    # one thread: on small matrices XGBoost threads cost more in contention than they save
    n_jobs: int = 1


@dataclass
class CountFeatures:
    """The design matrix of one task: one row per label row, in ``keys`` order."""

    keys: pd.DataFrame  # subject_id, prediction_time, split, label
    matrix: np.ndarray  # float32, (rows, len(feature_names))
    feature_names: list[str]


@dataclass
class BaselineResult:
    """Predictions (the evaluation contract) and, per task, why a baseline could not be fitted."""

    predictions: pd.DataFrame
    skipped: dict[str, str]
    feature_names: list[str]
    train_rows: dict[str, int]


def _connect(database: duckdb.DuckDBPyConnection | Path | str) -> duckdb.DuckDBPyConnection:
    if isinstance(database, duckdb.DuckDBPyConnection):
        return database
    return duckdb.connect(str(database), read_only=True)


def top_codes(con: duckdb.DuckDBPyConnection, k: int, *, schema: str = "marts") -> list[str]:
    """The ``k`` most frequent event codes among ``train`` subjects (ties broken by code)."""
    rows = con.execute(
        f"""
        SELECT e.code, count(*) AS n
        FROM {schema}.meds_events e JOIN {schema}.subject_splits s USING (subject_id)
        WHERE s.split = 'train' AND e.{_EXCLUDED_CODES_SQL}
        GROUP BY e.code ORDER BY n DESC, e.code LIMIT ?
        """,
        [int(k)],
    ).fetchall()
    return [r[0] for r in rows]


def count_features(
    con: duckdb.DuckDBPyConnection,
    task: str,
    codes: Sequence[str],
    *,
    schema: str = "marts",
    splits: Sequence[str] | None = None,
) -> CountFeatures:
    """Code counts up to and including each label's ``prediction_time``, plus age and sex.

    Rows come from ``<schema>.labels__<task>`` joined to the subject's split (only ``splits``
    when given). Features: ``count:<code>`` for each code, ``age_years`` at prediction time
    (NaN without a birth event), ``sex_male``, ``sex_female`` (both 0 when sex is unknown).
    """
    code_frame = pd.DataFrame({"code": list(codes), "feature_index": np.arange(len(codes))})
    where, params = "", []
    if splits is not None:
        where = "WHERE s.split IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(splits))
    con.register("_baseline_codes", code_frame)
    try:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _baseline_labels AS
            SELECT row_number() OVER (
                       ORDER BY l.subject_id, l.prediction_time, l.boolean_value) - 1 AS row_id,
                   l.subject_id, l.prediction_time, s.split, l.boolean_value AS label,
                   date_diff('day', subj.birth_time, l.prediction_time) / 365.25 AS age_years,
                   subj.sex
            FROM {schema}.labels__{task} l
            JOIN {schema}.subject_splits s USING (subject_id)
            LEFT JOIN {schema}.subjects subj USING (subject_id)
            {where}
            """,
            params,
        )
        keys = con.execute(
            "SELECT subject_id, prediction_time, split, label, age_years, sex "
            "FROM _baseline_labels ORDER BY row_id"
        ).df()
        # the inclusive cut: the same `time <= prediction_time` as the tokenizer's label inputs
        counts = con.execute(
            f"""
            SELECT l.row_id, c.feature_index, count(*)::DOUBLE AS n
            FROM _baseline_labels l
            JOIN {schema}.meds_events e
              ON e.subject_id = l.subject_id AND e.time <= l.prediction_time
            JOIN _baseline_codes c ON c.code = e.code
            GROUP BY ALL
            """
        ).fetchnumpy()
    finally:
        con.unregister("_baseline_codes")
        con.execute("DROP TABLE IF EXISTS _baseline_labels")
    n_codes = len(codes)
    matrix = np.zeros((len(keys), n_codes + 3), dtype=np.float32)
    if len(counts["row_id"]):
        matrix[counts["row_id"].astype(np.int64), counts["feature_index"].astype(np.int64)] = (
            counts["n"]
        )
    matrix[:, n_codes] = keys["age_years"].to_numpy(np.float32, na_value=np.nan)
    sex = keys["sex"].fillna("").str.lower()
    matrix[:, n_codes + 1] = (sex == "male").to_numpy(np.float32)
    matrix[:, n_codes + 2] = (sex == "female").to_numpy(np.float32)
    names = [f"count:{c}" for c in codes] + ["age_years", "sex_male", "sex_female"]
    keys = keys[["subject_id", "prediction_time", "split", "label"]].copy()
    keys["label"] = keys["label"].astype(bool)
    return CountFeatures(keys=keys, matrix=matrix, feature_names=names)


def _in_rows(keys: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Which ``keys`` rows have their ``(subject_id, prediction_time)`` among ``rows``."""
    wanted = pd.MultiIndex.from_arrays(
        [rows["subject_id"].astype(np.int64), pd.to_datetime(rows["prediction_time"])]
    )
    have = pd.MultiIndex.from_arrays(
        [keys["subject_id"].astype(np.int64), pd.to_datetime(keys["prediction_time"])]
    )
    return have.isin(wanted)


def _estimator(kind: str, config: BaselineConfig):
    if kind == "xgboost":
        return XGBClassifier(
            **config.xgboost_params,
            random_state=config.seed,
            n_jobs=config.n_jobs,
            eval_metric="logloss",
        )
    if kind == "logreg":
        return make_pipeline(
            FunctionTransformer(np.log1p),
            StandardScaler(),
            LogisticRegression(C=config.logreg_c, max_iter=2000, random_state=config.seed),
        )
    raise ValueError(f"unknown baseline {kind!r}; known: {BASELINE_MODELS}")


def _train_sample(
    keys: pd.DataFrame, cap: int | None, seed: int, only: np.ndarray | None = None
) -> np.ndarray:
    eligible = (keys["split"] == "train").to_numpy()
    if only is not None:
        eligible = eligible & only
    train = np.flatnonzero(eligible)
    if cap is None or len(train) <= cap:
        return train
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(train, size=cap, replace=False))


def run_baselines(
    database: duckdb.DuckDBPyConnection | Path | str,
    tasks: Sequence[str],
    config: BaselineConfig | None = None,
    *,
    schema: str = "marts",
    eval_rows: pd.DataFrame | None = None,
    train_rows: pd.DataFrame | None = None,
) -> BaselineResult:
    """Fit every baseline of ``config`` per task on ``train``; predict ``tuning`` and ``held_out``.

    ``eval_rows`` (columns ``task, subject_id, prediction_time``) limits the predicted rows to
    the ones another model was evaluated on (e.g. a sampled label set), so the comparison is on
    the same rows. ``train_rows`` (same columns) limits the fitted rows to the ``train`` rows
    another model learned from, so that the comparison is between methods and not between
    amounts of labelled data; without it every ``train`` label is used. A task whose train rows
    hold a single class cannot be fitted: it is listed in ``skipped`` with the reason and has no
    predictions.
    """
    config = config or BaselineConfig()
    features = _task_features(database, tasks, config.top_k, schema)
    fits = [_TaskFit(features[task], task) for task in tasks]
    for fit in fits:
        fit.run(config, eval_rows=eval_rows, train_rows=train_rows)
    return _result(fits)


def _task_features(
    database: duckdb.DuckDBPyConnection | Path | str,
    tasks: Sequence[str],
    top_k: int,
    schema: str = "marts",
) -> dict[str, CountFeatures]:
    con = _connect(database)
    owned = not isinstance(database, duckdb.DuckDBPyConnection)
    try:
        codes = top_codes(con, top_k, schema=schema)
        return {task: count_features(con, task, codes, schema=schema) for task in tasks}
    finally:
        if owned:
            con.close()


@dataclass
class _TaskFit:
    """One task's features and what fitting baselines on them gave (predictions, or why not)."""

    feats: CountFeatures
    task: str
    frames: list[pd.DataFrame] = field(default_factory=list)
    skipped: str | None = None
    fitted_rows: int = 0

    def run(
        self,
        config: BaselineConfig,
        *,
        eval_rows: pd.DataFrame | None,
        train_rows: pd.DataFrame | None,
    ) -> None:
        feats, task = self.feats, self.task
        only = None
        if train_rows is not None:
            only = _in_rows(feats.keys, train_rows.loc[train_rows["task"] == task])
        train_idx = _train_sample(feats.keys, config.max_train_rows, config.seed, only)
        y_train = feats.keys["label"].to_numpy(bool)[train_idx]
        self.fitted_rows = len(train_idx)
        n_pos = int(y_train.sum())
        if n_pos == 0 or n_pos == len(y_train):
            self.skipped = (
                f"train split has {len(y_train)} rows and {n_pos} positives: "
                "a classifier needs both classes"
            )
            return
        age = feats.feature_names.index("age_years")
        x_train = feats.matrix[train_idx]
        fill = np.nanmedian(x_train[:, age]) if np.isfinite(x_train[:, age]).any() else 0.0
        x_all = feats.matrix.copy()
        x_all[np.isnan(x_all[:, age]), age] = fill
        x_train = x_all[train_idx]
        predict = feats.keys["split"].isin(PREDICTED_SPLITS).to_numpy()
        if eval_rows is not None:
            predict = predict & _in_rows(feats.keys, eval_rows.loc[eval_rows["task"] == task])
        for kind in config.models:
            model = _estimator(kind, config)
            model.fit(x_train, y_train)
            part = feats.keys.loc[predict].copy()
            part["score"] = model.predict_proba(x_all[predict])[:, 1].astype(np.float64)
            part["task"] = task
            part["model"] = config.model_names.get(kind, kind)
            self.frames.append(part)


def _result(fits: Sequence[_TaskFit]) -> BaselineResult:
    columns = ["subject_id", "prediction_time", "task", "split", "label", "score", "model"]
    frames = [f for fit in fits for f in fit.frames]
    predictions = (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )
    return BaselineResult(
        predictions=predictions,
        skipped={fit.task: fit.skipped for fit in fits if fit.skipped is not None},
        feature_names=fits[-1].feats.feature_names if fits else [],
        train_rows={fit.task: fit.fitted_rows for fit in fits},
    )


def finetuning_train_rows(label_sequences: Path | str) -> pd.DataFrame:
    """The ``train`` rows of a label-sequences file (``task, subject_id, prediction_time``):
    the labels a finetuning run learned from, for :func:`run_matched_baselines`."""
    rows = pq.read_table(
        label_sequences, columns=["task", "subject_id", "prediction_time", "split"]
    ).to_pandas()
    return rows.loc[rows["split"] == "train", ["task", "subject_id", "prediction_time"]]


def run_matched_baselines(
    database: duckdb.DuckDBPyConnection | Path | str,
    tasks: Sequence[str],
    *,
    eval_rows: pd.DataFrame,
    train_rows: pd.DataFrame,
    config: BaselineConfig | None = None,
) -> BaselineResult:
    """The comparison a reviewer asks for, and its upper reference, in one result.

    Every baseline is fitted on the same ``train`` rows the sequence model learned from (a
    finetuning run samples its labels for a compute budget, and a baseline fitted on ten times
    more labels would compare amounts of data, not methods). XGBoost is also fitted on every
    ``train`` label, as ``<name>_all_labels``, so the report shows what the extra labels buy.
    Both predict the same ``eval_rows``.
    """
    config = config or BaselineConfig()
    names = {k: v + ALL_LABELS_SUFFIX for k, v in config.model_names.items()}
    every_label = dataclasses.replace(config, models=("xgboost",), model_names=names)
    features = _task_features(database, tasks, config.top_k)  # once, for both fits
    matched = [_TaskFit(features[task], task) for task in tasks]
    every = [_TaskFit(features[task], task) for task in tasks]
    for a, b in zip(matched, every, strict=True):
        a.run(config, eval_rows=eval_rows, train_rows=train_rows)
        b.run(every_label, eval_rows=eval_rows, train_rows=None)
    result = _result(matched)
    result.predictions = pd.concat(
        [result.predictions, _result(every).predictions], ignore_index=True
    )
    return result
