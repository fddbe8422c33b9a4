"""Evaluation stage: EHRMamba (MTF and single-task) against count baselines on ``held_out``,
forecasting and zero-shot risks, then the registry's promotion gate.

The report (markdown), ROC and reliability plots go to MLflow (the MTF run) and into the asset
metadata, so the Dagster UI shows the comparison; the gate's decision and reason are the
metadata of ``evaluation/registered_model``.
"""

import json

import dagster as dg
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource
from sklearn.metrics import roc_auc_score

from ehrmamba.evaluate import (
    BaselineConfig,
    EvaluationConfig,
    evaluate_models,
    finetuning_train_rows,
    join_demographics,
    log_to_mlflow,
    run_matched_baselines,
)
from ehrmamba.forecast import (
    ForecastConfig,
    evaluate_forecasts,
    outcome_codes_for_tasks,
    zero_shot_risks,
)
from ehrmamba.model import EHRMambaForPretraining
from ehrmamba.registry import REGISTERED_MODEL_NAME, register_evaluated_model
from ehrmamba.tokenize import Vocabulary, load_layouts
from ehrmamba.tokenize.sequences import _to_ns
from orchestration.assets.finetuning import (
    FINETUNED,
    MTF_NAME,
    SINGLE_TASK,
    _labels_path,
    finetune_record_path,
)
from orchestration.assets.modeling import _vocab_path
from orchestration.assets.validation import EVENTS
from orchestration.resources import PlatformSettings

EVALUATION = dg.AssetKey(["evaluation", "model_evaluation"])
REGISTERED_MODEL = dg.AssetKey(["evaluation", "registered_model"])
SINGLE_NAME = "ehrmamba-single-task"
XGBOOST_NAME = BaselineConfig().model_names["xgboost"]


class EvaluationRunConfig(dg.Config):
    bootstrap_resamples: int = 1000
    forecast_patients: int = 30
    """held_out patients whose last visit is forecast (recall@k, gap error); 0 skips."""
    forecast_samples: int = 16
    zero_shot_per_task: int = 20
    """held_out label rows per task scored zero-shot from sampled futures; 0 skips."""
    seed: int = 0


def _evaluation_record(platform: PlatformSettings):
    return platform.settings().artifacts_dir / "evaluation" / "current.json"


def _forecasting(
    context, config: EvaluationRunConfig, con, vocab, pretrained_dir, mtf: pd.DataFrame
) -> tuple[dict, list[str]]:
    """Forecast metrics and zero-shot AUROC beside the finetuned AUROC on the same rows."""
    if config.forecast_patients <= 0 and config.zero_shot_per_task <= 0:
        return {}, []
    model = EHRMambaForPretraining.from_pretrained(pretrained_dir)
    forecast = ForecastConfig(
        n_samples=config.forecast_samples,
        max_new_tokens=64,
        seed=config.seed,
        max_len=vocab.config.max_len,
    )
    held = mtf[mtf["split"] == "held_out"]
    rng = np.random.default_rng(config.seed)
    out: dict = {}
    notes: list[str] = []
    if config.forecast_patients > 0:
        subjects = sorted(set(held["subject_id"].astype(int)))
        chosen = rng.choice(
            subjects, size=min(len(subjects), config.forecast_patients), replace=False
        )
        layouts = load_layouts(con, vocab, chosen.tolist())
        result = evaluate_forecasts(model, vocab, list(layouts.values()), config=forecast)
        out["forecast"] = result.summary
        context.log.info(f"forecasting on held_out: {result.summary}")
    if config.zero_shot_per_task > 0:
        value_sets = con.execute(
            "SELECT task, code_prefix || '/' || code AS code FROM reference.condition_value_sets"
        ).df()
        condition_codes = {t: set(g["code"]) for t, g in value_sets.groupby("task")}
        outcomes = outcome_codes_for_tasks(vocab, sorted(set(held["task"])), condition_codes)
        zero_shot = {}
        for task, codes in outcomes.items():
            rows = held[held["task"] == task]
            if rows["label"].nunique() < 2:
                continue
            # keep every positive up to half the rows, so the AUROC has both classes
            pos = rows[rows["label"]].head(config.zero_shot_per_task // 2)
            neg = rows[~rows["label"]].head(config.zero_shot_per_task - len(pos))
            rows = pd.concat([pos, neg])
            layouts = load_layouts(con, vocab, rows["subject_id"].astype(int).unique().tolist())
            risks = [
                zero_shot_risks(
                    model,
                    vocab,
                    layouts[int(r.subject_id)],
                    _to_ns(r.prediction_time),
                    {task: codes},
                    config=forecast,
                )[task]
                for r in rows.itertuples()
            ]
            zs = float(roc_auc_score(rows["label"], risks))
            ft = float(roc_auc_score(rows["label"], rows["score"]))
            zero_shot[task] = {"rows": len(rows), "zero_shot_auroc": zs, "finetuned_auroc": ft}
            context.log.info(f"zero-shot {task}: AUROC {zs:.3f} (finetuned {ft:.3f})")
            notes.append(
                f"Zero-shot {task} (share of {config.forecast_samples} sampled futures with the "
                f"outcome, {len(rows)} held_out rows): AUROC {zs:.3f} vs finetuned {ft:.3f} "
                "on the same rows."
            )
        out["zero_shot"] = zero_shot
    return out, notes


@dg.asset(
    key=EVALUATION,
    group_name="evaluation",
    kinds={"python", "mlflow"},
    deps=[FINETUNED, SINGLE_TASK, EVENTS],
    pool="duckdb_writer",  # opens the warehouse (baseline features): one DuckDB process at a time
    description="held_out comparison of EHRMamba MTF, single-task EHRMamba, XGBoost and "
    "logistic regression on code counts (fitted on the train labels EHRMamba learned from; "
    "XGBoost also on every train label): AUROC/AUPRC/F1 with bootstrap intervals, "
    "calibration, subgroups; forecasting and zero-shot risks.",
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationRunConfig,
    duckdb: DuckDBResource,
    platform: PlatformSettings,
) -> dg.MaterializeResult:
    settings = platform.settings()
    vocab = Vocabulary.load(_vocab_path(platform))
    mtf_record = json.loads(finetune_record_path(platform, "mtf").read_text())
    mtf = pd.read_parquet(mtf_record["predictions"])
    frames = [mtf]
    seed_frames = [pd.read_parquet(mtf_record["seed_predictions"])]
    single_index = finetune_record_path(platform, "single")
    if single_index.exists():
        entries = json.loads(single_index.read_text()).values()
        if entries:
            frames.append(
                pd.concat(pd.read_parquet(e["predictions"]) for e in entries).assign(
                    model=SINGLE_NAME
                )
            )
            seed_frames += [
                pd.read_parquet(e["seed_predictions"]).assign(model=SINGLE_NAME) for e in entries
            ]
    tasks = sorted(set(mtf["task"]))
    with duckdb.get_connection() as con:
        baselines = run_matched_baselines(
            con,
            tasks,
            eval_rows=mtf[["task", "subject_id", "prediction_time"]],
            train_rows=finetuning_train_rows(_labels_path(platform)),
        )
        frames.append(baselines.predictions)
        context.log.info(f"baselines scored: {sorted(set(baselines.predictions['model']))}")
        predictions = join_demographics(pd.concat(frames, ignore_index=True), con)
        forecasting, notes = _forecasting(
            context, config, con, vocab, mtf_record["pretrained_model_dir"], mtf
        )
    notes += [f"{task}: baselines skipped ({why})" for task, why in baselines.skipped.items()]
    out_dir = settings.artifacts_dir / "evaluation" / context.run.run_id
    context.log.info(f"metrics with {config.bootstrap_resamples} bootstrap resamples")
    present = set(predictions["model"])
    result = evaluate_models(
        predictions,
        out_dir,
        EvaluationConfig(n_resamples=config.bootstrap_resamples, seed=config.seed),
        notes=notes,
        # what the comparison is for: is MTF below single-task, is it above the count baseline
        comparisons=[(MTF_NAME, ref) for ref in (SINGLE_NAME, XGBOOST_NAME) if ref in present],
        # every restart of the EHRMamba runs: the same gaps judged over training seeds
        seed_predictions=pd.concat(seed_frames, ignore_index=True),
    )
    if forecasting:
        (out_dir / "forecasting.json").write_text(json.dumps(forecasting, indent=2))
    log_to_mlflow(result, mtf_record["run_id"], tracking_uri=settings.mlflow_tracking_uri)
    mtf_metrics = out_dir / "mtf_metrics.parquet"
    result.model_metrics(MTF_NAME).to_parquet(mtf_metrics, index=False)
    record = {
        "run_id": mtf_record["run_id"],
        "report": str(result.report_path.resolve()),
        "mtf_metrics": str(mtf_metrics.resolve()),
    }
    _evaluation_record(platform).write_text(json.dumps(record, indent=2))
    summary = result.summary
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(result.report_path.read_text()),
            "report_path": dg.MetadataValue.path(str(result.report_path.resolve())),
            "plots": dg.MetadataValue.json([str(p.resolve()) for p in result.plot_paths]),
            "mean_auroc": dg.MetadataValue.json(
                {str(r["model"]): float(r["mean_auroc"]) for _, r in summary.iterrows()}
                if "mean_auroc" in summary
                else {}
            ),
            "forecasting": dg.MetadataValue.json(forecasting),
            "mlflow_run_id": mtf_record["run_id"],
        }
    )


@dg.asset(
    key=REGISTERED_MODEL,
    group_name="evaluation",
    kinds={"mlflow"},
    deps=[EVALUATION],
    description="The evaluated MTF model registered in MLflow; it takes the `champion` alias "
    "only if it beats the current champion (mean AUROC, no task worse beyond its interval), "
    "else `challenger`. The metadata says why.",
)
def registered_model(
    context: dg.AssetExecutionContext, platform: PlatformSettings
) -> dg.MaterializeResult:
    settings = platform.settings()
    record = json.loads(_evaluation_record(platform).read_text())
    decision = register_evaluated_model(
        REGISTERED_MODEL_NAME,
        record["run_id"],
        "finetuned_model",
        pd.read_parquet(record["mtf_metrics"]),
        tracking_uri=settings.mlflow_tracking_uri,
    )
    log = context.log.info if decision.promoted else context.log.warning
    log(f"{decision.model_uri} -> {decision.alias}: {decision.reason}")
    meta = decision.as_metadata()
    return dg.MaterializeResult(
        metadata={
            "alias": decision.alias,
            "promoted": decision.promoted,
            "reason": dg.MetadataValue.md(decision.reason),
            "model_uri": decision.model_uri,
            "version": str(decision.version),
            "mean_auroc": float(decision.new_mean_auroc),
            "champion_version": str(decision.champion_version or ""),
            "comparisons": dg.MetadataValue.json(meta["comparisons"]),
        }
    )
