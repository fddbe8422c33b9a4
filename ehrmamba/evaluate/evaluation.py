"""Evaluate any set of models side by side from their predictions, one contract for all.

EHRMamba (single-task and multitask), the count baselines and any future model hand over the
same predictions DataFrame; everything here works from it alone, so a comparison cannot differ
in anything but the scores:

===================  ==========================================================
``subject_id``       int64
``prediction_time``  timestamp (the label's inclusive end of visible history)
``task``             str, e.g. ``mortality_1m``
``split``            ``"tuning"`` (threshold choice) or ``"held_out"`` (reported)
``label``            bool
``score``            float, predicted probability in [0, 1]
``model``            str, the name shown in tables and plots
``sex``, ``age_years``  optional (see :func:`join_demographics`), for subgroup AUROC
===================  ==========================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric

from ehrmamba.evaluate import metrics as m
from ehrmamba.evaluate.plots import plot_name, plot_reliability, plot_roc
from ehrmamba.evaluate.report import write_report
from ehrmamba.settings import Settings

PAIRED_COLUMNS = [
    "task",
    "model",
    "reference",
    "n",
    "n_positive",
    "auroc_diff",
    "auroc_diff_low",
    "auroc_diff_high",
    "note",
    # the same gap between the recipes, over their seeds (see :func:`paired_differences`)
    "seeds_model",
    "seeds_reference",
    "n_over_seeds",
    "recipe_diff",
    "recipe_diff_low",
    "recipe_diff_high",
]
REQUIRED_COLUMNS = ("subject_id", "prediction_time", "task", "split", "label", "score", "model")
SPLITS = ("tuning", "held_out")
METRIC_COLUMNS = [
    "model",
    "task",
    "evaluable",
    "note",
    "n",
    "n_positive",
    "prevalence",
    "auroc",
    "auroc_low",
    "auroc_high",
    "auprc",
    "auprc_low",
    "auprc_high",
    "threshold",
    "threshold_source",
    "f1",
    "f1_low",
    "f1_high",
    "precision",
    "recall",
    "ece",
    "n_tuning",
    "n_tuning_positive",
]


@dataclass(frozen=True)
class EvaluationConfig:
    """How uncertainty, calibration and subgroups are computed (all recorded in the report)."""

    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    # "subject": draw patients (a patient's label rows are not independent); "row": draw rows
    bootstrap_unit: str = "subject"
    stratified_bootstrap: bool = True
    n_bins: int = 10
    bin_strategy: str = "uniform"  # or "quantile" (equal mass)
    age_edges: tuple[float, ...] = m.DEFAULT_AGE_BANDS

    def bootstrap_options(self, subject_ids: pd.Series) -> dict:
        """Keyword arguments of the bootstrap functions in :mod:`ehrmamba.evaluate.metrics`."""
        return {
            "groups": subject_ids.to_numpy() if self.bootstrap_unit == "subject" else None,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "confidence": self.confidence,
            "stratified": self.stratified_bootstrap,
        }


@dataclass
class EvaluationResult:
    """Per (model, task) metric rows, subgroup AUROCs, reliability bins, and written files."""

    metrics: pd.DataFrame
    subgroups: pd.DataFrame
    calibration: pd.DataFrame
    summary: pd.DataFrame
    out_dir: Path
    report_path: Path
    plot_paths: list[Path] = field(default_factory=list)
    table_paths: list[Path] = field(default_factory=list)
    # per task and (model, reference) pair: AUROC(model) - AUROC(reference), paired interval
    paired: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIRED_COLUMNS))

    def model_metrics(self, model: str) -> pd.DataFrame:
        """The metric rows of one model (the input of the registry's promotion gate)."""
        rows = self.metrics[self.metrics["model"] == model]
        if rows.empty:
            raise KeyError(f"model {model!r} was not evaluated; have {self.models}")
        return rows.reset_index(drop=True)

    @property
    def models(self) -> list[str]:
        return sorted(self.metrics["model"].unique())


def validate_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """Check the contract and return a normalized copy (types coerced, rows sorted).

    Rows are sorted by task, subject and time so that two models scored on the same rows see
    the same bootstrap resamples (the intervals are paired).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}; the contract is {REQUIRED_COLUMNS}")
    frame = predictions.copy()
    bad_splits = sorted(set(frame["split"].unique()) - set(SPLITS))
    if bad_splits:
        raise ValueError(f"split must be one of {SPLITS}; found {bad_splits}")
    frame["score"] = pd.to_numeric(frame["score"], errors="raise").astype(np.float64)
    if frame["score"].isna().any():
        raise ValueError(f"{int(frame['score'].isna().sum())} predictions have no score")
    outside = (frame["score"] < 0) | (frame["score"] > 1)
    if outside.any():
        raise ValueError(f"{int(outside.sum())} scores lie outside [0, 1]; scores are risks")
    if frame["label"].isna().any():
        raise ValueError(f"{int(frame['label'].isna().sum())} predictions have no label")
    frame["label"] = frame["label"].astype(bool)
    frame["prediction_time"] = pd.to_datetime(frame["prediction_time"])
    frame["model"] = frame["model"].astype(str)
    frame["task"] = frame["task"].astype(str)
    return frame.sort_values(
        ["model", "task", "split", "subject_id", "prediction_time"], kind="stable"
    ).reset_index(drop=True)


def join_demographics(
    predictions: pd.DataFrame,
    database: duckdb.DuckDBPyConnection | Path | str,
    *,
    schema: str = "marts",
) -> pd.DataFrame:
    """Add ``sex`` and ``age_years`` (at ``prediction_time``) from ``<schema>.subjects``.

    ``marts.subjects`` has ``sex`` (from the ``GENDER/<sex>`` event) and ``birth_time``; a
    subject missing there gets NaN for both.
    """
    con = (
        database
        if isinstance(database, duckdb.DuckDBPyConnection)
        else duckdb.connect(str(database), read_only=True)
    )
    try:
        ids = sorted({int(x) for x in predictions["subject_id"]})
        subjects = con.execute(
            f"SELECT subject_id, sex, birth_time FROM {schema}.subjects "
            "WHERE subject_id IN (SELECT unnest(?::BIGINT[]))",
            [ids],
        ).df()
    finally:
        if con is not database:
            con.close()
    out = predictions.drop(columns=["sex", "age_years"], errors="ignore").merge(
        subjects, on="subject_id", how="left"
    )
    delta = pd.to_datetime(out["prediction_time"]) - pd.to_datetime(out["birth_time"])
    out["age_years"] = delta.dt.total_seconds() / (365.25 * 86400)
    return out.drop(columns=["birth_time"])


def _task_metrics(
    model: str, task: str, tuning: pd.DataFrame, held: pd.DataFrame, config: EvaluationConfig
) -> dict:
    y_tune, s_tune = tuning["label"].to_numpy(bool), tuning["score"].to_numpy(float)
    y, s = held["label"].to_numpy(bool), held["score"].to_numpy(float)
    threshold, source = m.choose_f1_threshold(y_tune, s_tune)
    row = {name: np.nan for name in METRIC_COLUMNS}
    row.update(
        model=model,
        task=task,
        n=len(y),
        n_positive=int(y.sum()),
        prevalence=float(y.mean()) if len(y) else np.nan,
        threshold=threshold,
        threshold_source=source,
        n_tuning=len(y_tune),
        n_tuning_positive=int(y_tune.sum()),
        note="",
    )
    if not len(y):
        row.update(evaluable=False, note="no held_out predictions")
        return row
    if not m.has_both_classes(y):
        which = "positive" if not y.any() else "negative"
        row.update(
            evaluable=False,
            note=f"not evaluable: no {which} labels in held_out (n={len(y)})",
        )
        return row
    boot = m.bootstrap_metrics(
        y,
        s,
        threshold,
        **config.bootstrap_options(held["subject_id"]),
    )
    for name, interval in boot.items():
        row[name], row[f"{name}_low"], row[f"{name}_high"] = (
            interval.estimate,
            interval.low,
            interval.high,
        )
    f1 = m.f1_at(y, s, threshold)
    row.update(
        evaluable=True,
        precision=f1["precision"],
        recall=f1["recall"],
        ece=m.expected_calibration_error(y, s, config.n_bins, config.bin_strategy),
    )
    return row


def _subgroups(model: str, task: str, held: pd.DataFrame, config: EvaluationConfig) -> list:
    frames = []
    if "sex" in held.columns:
        part = m.subgroup_auroc(held, "sex")
        part.insert(0, "attribute", "sex")
        frames.append(part)
    if "age_years" in held.columns:
        banded = held.assign(age_band=m.age_bands(held["age_years"], config.age_edges))
        part = m.subgroup_auroc(banded, "age_band")
        order = {b: i for i, b in enumerate(m.age_band_labels(config.age_edges))}
        part = part.sort_values("group", key=lambda g: g.map(order)).reset_index(drop=True)
        part.insert(0, "attribute", "age_band")
        frames.append(part)
    for part in frames:
        part.insert(0, "task", task)
        part.insert(0, "model", model)
    return frames


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def evaluate_models(
    predictions: pd.DataFrame,
    out_dir: Path | str,
    config: EvaluationConfig | None = None,
    *,
    notes: Iterable[str] = (),
    title: str = "Evaluation on held_out",
    comparisons: Sequence[tuple[str, str]] = (),
    seed_predictions: pd.DataFrame | None = None,
) -> EvaluationResult:
    """Metrics per model and task on ``held_out`` (threshold from ``tuning``), plots, report.

    Writes ``report.md``, ``plots/roc_<task>.png``, ``plots/reliability_<task>.png``,
    ``metrics.csv``, ``subgroups.csv``, ``calibration.csv`` and ``paired_differences.csv``
    under ``out_dir``. A task whose held_out rows hold one class only is reported as not
    evaluable (NaN metrics and a note), never an error. ``notes`` are added to the report (e.g.
    tasks a baseline could not be fitted on). ``comparisons`` are ``(model, reference)`` pairs
    whose AUROC gap gets a paired interval per task (see :func:`paired_differences`).
    ``seed_predictions`` (the same contract plus a ``seed`` column; ``model`` names the model
    of ``predictions`` that the seed is a run of) add the gap between the recipes over their
    seeds to those comparisons.
    """
    config = config or EvaluationConfig()
    if config.bootstrap_unit not in ("subject", "row"):
        raise ValueError(
            f"bootstrap_unit must be 'subject' or 'row', not {config.bootstrap_unit!r}"
        )
    frame = validate_predictions(predictions)
    unknown = sorted({name for pair in comparisons for name in pair} - set(frame["model"]))
    if unknown:
        raise ValueError(
            f"comparisons name models without predictions: {unknown}; "
            f"have {sorted(frame['model'].unique())}"
        )
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)

    rows, subgroup_frames, calibration_frames = [], [], []
    plot_paths: list[Path] = []
    for task in sorted(frame["task"].unique()):
        task_frame = frame[frame["task"] == task]
        curves, bins = {}, {}
        for model in sorted(task_frame["model"].unique()):
            mine = task_frame[task_frame["model"] == model]
            tuning = mine[mine["split"] == "tuning"]
            held = mine[mine["split"] == "held_out"]
            row = _task_metrics(model, task, tuning, held, config)
            rows.append(row)
            if not row["evaluable"]:
                continue
            y, s = held["label"].to_numpy(bool), held["score"].to_numpy(float)
            curves[model] = (y, s)
            rel = m.reliability_bins(y, s, config.n_bins, config.bin_strategy)
            bins[model] = rel
            calibration_frames.append(rel.assign(model=model, task=task))
            subgroup_frames.extend(_subgroups(model, task, held, config))
        for path in (
            plot_roc(task, curves, plots_dir / plot_name("roc", task)),
            plot_reliability(task, bins, plots_dir / plot_name("reliability", task)),
        ):
            if path is not None:
                plot_paths.append(path)

    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    metrics["evaluable"] = metrics["evaluable"].astype(bool)
    subgroups = (
        pd.concat(subgroup_frames, ignore_index=True)
        if subgroup_frames
        else pd.DataFrame(
            columns=["model", "task", "attribute", "group", "n", "n_positive", "auroc"]
        )
    )
    calibration = (
        pd.concat(calibration_frames, ignore_index=True) if calibration_frames else pd.DataFrame()
    )
    summary = summarize(metrics)
    paired = paired_differences(frame, comparisons, config, seed_predictions=seed_predictions)

    tables = []
    for name, table in (
        ("metrics.csv", metrics),
        ("subgroups.csv", subgroups),
        ("calibration.csv", calibration),
        ("paired_differences.csv", paired),
    ):
        path = out_dir / name
        table.to_csv(path, index=False)
        tables.append(path)
    report_path = write_report(
        out_dir / "report.md",
        metrics=metrics,
        subgroups=subgroups,
        summary=summary,
        paired=paired,
        plot_paths=plot_paths,
        config=config,
        notes=list(notes),
        title=title,
    )
    return EvaluationResult(
        metrics=metrics,
        subgroups=subgroups,
        calibration=calibration,
        summary=summary,
        out_dir=out_dir,
        report_path=report_path,
        plot_paths=plot_paths,
        table_paths=tables,
        paired=paired,
    )


def paired_differences(
    predictions: pd.DataFrame,
    comparisons: Sequence[tuple[str, str]],
    config: EvaluationConfig | None = None,
    *,
    seed_predictions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per task and ``(model, reference)`` pair: the held_out AUROC gap with a paired interval,
    and, where ``seed_predictions`` give either side several seeds, the gap between the recipes.

    "Is model A below B beyond the interval" is a question about the gap, and the two models'
    separate intervals answer it badly: they share the patients. The rows both models scored
    (same subject and prediction time) are resampled together, by patient when
    ``config.bootstrap_unit`` is ``subject``. A task where the pair shares no rows, or the shared
    rows hold one class, gets NaN and a note.

    That interval holds the patients' noise and none of the training seed's: another seed of
    either model may land outside it. ``recipe_diff`` is the mean AUROC over one side's seeds
    minus the other's, on the rows every seed of both scored, with an interval that draws the
    seeds as well (:func:`ehrmamba.evaluate.metrics.recipe_auroc_difference`). A model without
    seed predictions counts as its one seed (a deterministic baseline); a pair with one seed on
    each side has no recipe columns, since they would repeat the paired ones.
    """
    config = config or EvaluationConfig()
    held = predictions[predictions["split"] == "held_out"]
    seeds = _held_out_seeds(seed_predictions)
    keys = ["subject_id", "prediction_time"]
    rows = []
    for model, reference in comparisons:
        for task in sorted(held["task"].unique()):
            part = held[held["task"] == task]
            a = part.loc[part["model"] == model, [*keys, "label", "score"]]
            b = part.loc[part["model"] == reference, [*keys, "score"]]
            both = a.merge(b, on=keys, suffixes=("_model", "_reference"))
            y = both["label"].to_numpy(bool)
            row = dict.fromkeys(PAIRED_COLUMNS, np.nan)
            row.update(
                task=task,
                model=model,
                reference=reference,
                n=len(both),
                n_positive=int(y.sum()),
                note="",
            )
            if not len(both):
                row["note"] = "no held_out rows scored by both"
            elif not m.has_both_classes(y):
                row["note"] = "the shared held_out rows hold one class"
            else:
                gap = m.paired_auroc_difference(
                    y,
                    both["score_model"].to_numpy(float),
                    both["score_reference"].to_numpy(float),
                    **config.bootstrap_options(both["subject_id"]),
                )
                row.update(
                    auroc_diff=gap.estimate, auroc_diff_low=gap.low, auroc_diff_high=gap.high
                )
                row.update(_recipe_gap(seeds, task, (model, a), (reference, b), config))
            rows.append(row)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _held_out_seeds(seed_predictions: pd.DataFrame | None) -> pd.DataFrame:
    if seed_predictions is None or seed_predictions.empty:
        return pd.DataFrame(columns=[*REQUIRED_COLUMNS, "seed"])
    if "seed" not in seed_predictions.columns:
        raise ValueError("seed_predictions need a 'seed' column: which run of the model each is")
    frame = validate_predictions(seed_predictions)
    return frame[frame["split"] == "held_out"]


def _seed_scores(
    seeds: pd.DataFrame, task: str, model: str, own: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """Each seed's held_out rows of one model and task; the model's own rows if it has none."""
    mine = seeds[(seeds["task"] == task) & (seeds["model"] == model)]
    if mine.empty:
        return {"": own}
    columns = ["subject_id", "prediction_time", "label", "score"]
    return {str(seed): part[columns] for seed, part in mine.groupby("seed", sort=True)}


def _recipe_gap(
    seeds: pd.DataFrame,
    task: str,
    model: tuple[str, pd.DataFrame],
    reference: tuple[str, pd.DataFrame],
    config: EvaluationConfig,
) -> dict:
    keys = ["subject_id", "prediction_time"]
    sides = [_seed_scores(seeds, task, name, own) for name, own in (model, reference)]
    counts = {"seeds_model": len(sides[0]), "seeds_reference": len(sides[1])}
    if max(counts.values()) < 2:
        return counts
    # one row per label row every seed of both sides scored, one score column per seed
    parts = [part for side in sides for part in side.values()]
    shared = parts[0][[*keys, "label"]]
    for i, part in enumerate(parts):
        shared = shared.merge(part[[*keys, "score"]].rename(columns={"score": i}), on=keys)
    shared = shared.sort_values(keys, kind="stable").reset_index(drop=True)
    y = shared["label"].to_numpy(bool)
    counts["n_over_seeds"] = len(shared)
    if not m.has_both_classes(y):
        return counts
    columns = [shared[i].to_numpy(float) for i in range(len(parts))]
    scores = [columns[: len(sides[0])], columns[len(sides[0]) :]]
    gap = m.recipe_auroc_difference(
        y, scores[0], scores[1], **config.bootstrap_options(shared["subject_id"])
    )
    return {
        **counts,
        "recipe_diff": gap.estimate,
        "recipe_diff_low": gap.low,
        "recipe_diff_high": gap.high,
    }


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean AUROC over its evaluable tasks, and how many tasks that is."""
    rows = []
    for model, part in metrics.groupby("model", sort=True):
        ok = part[part["evaluable"]]
        rows.append(
            {
                "model": model,
                "mean_auroc": float(ok["auroc"].mean()) if len(ok) else np.nan,
                "mean_auprc": float(ok["auprc"].mean()) if len(ok) else np.nan,
                "n_tasks_evaluable": len(ok),
                "n_tasks": len(part),
            }
        )
    return pd.DataFrame(
        rows, columns=["model", "mean_auroc", "mean_auprc", "n_tasks_evaluable", "n_tasks"]
    )


def _metric_key(*parts: str) -> str:
    return ".".join(_slug(p) for p in parts)


def log_to_mlflow(
    result: EvaluationResult,
    run_id: str | None = None,
    *,
    tracking_uri: str | None = None,
    artifact_path: str = "evaluation",
    models: Sequence[str] | None = None,
) -> str:
    """Log the metrics (``eval.<model>.<task>.<metric>``, ``eval.<model>.mean_auroc``) and the
    written report, plots and tables (under ``artifact_path``) to a run.

    ``run_id`` None means the active run (``mlflow.start_run`` in the caller) and its tracking
    URI; with a ``run_id`` and no ``tracking_uri`` the settings' store is used (never MLflow's
    default, a database in the working directory). ``models`` limits the logged metrics (all
    models by default; the artifacts always show the whole comparison).
    Returns the run id.
    """
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise ValueError("no run_id given and no active MLflow run")
        run_id = active.info.run_id
        tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    tracking_uri = tracking_uri or Settings.from_env().mlflow_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    wanted = set(models) if models is not None else None
    now = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    batch: list[Metric] = []
    names = ("auroc", "auroc_low", "auroc_high", "auprc", "auprc_low", "auprc_high", "f1", "ece")
    for row in result.metrics.itertuples(index=False):
        if wanted is not None and row.model not in wanted:
            continue
        for name in names:
            value = getattr(row, name)
            if value is not None and np.isfinite(value):
                batch.append(Metric(_metric_key("eval", row.model, row.task, name), value, now, 0))
    for row in result.summary.itertuples(index=False):
        if (wanted is None or row.model in wanted) and np.isfinite(row.mean_auroc):
            batch.append(
                Metric(_metric_key("eval", row.model, "mean_auroc"), row.mean_auroc, now, 0)
            )
    for start in range(0, len(batch), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=batch[start : start + 1000])
    client.log_artifacts(run_id, str(result.out_dir), artifact_path)
    return run_id
