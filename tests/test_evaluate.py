"""ehrmamba.evaluate: metrics against scikit-learn, bootstrap behaviour, the tuning-chosen F1
threshold, ECE by hand, not-evaluable tasks, report/plots/MLflow artifacts, and the count
baselines on a real warehouse (synthetic FHIR -> ingest -> dbt build) with a planted event that
proves no feature sees past prediction_time."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from ehrmamba.evaluate import (
    BaselineConfig,
    EvaluationConfig,
    count_features,
    evaluate_models,
    join_demographics,
    log_to_mlflow,
    run_baselines,
    run_matched_baselines,
    top_codes,
    validate_predictions,
)
from ehrmamba.evaluate import metrics as m

TASKS = [
    "mortality_1m",
    "los_1w",
    "readmission_1m",
    "hypertension_1y",
    "fluid_electrolyte_1y",
    "lipoid_1y",
]
FAST = EvaluationConfig(n_resamples=200)


def _predictions(
    n: int, noise: float, seed: int, model: str = "m", task: str = "t", prevalence: float = 0.2
) -> pd.DataFrame:
    """Rows of the contract: half tuning, half held_out; scores = sigmoid(label + noise)."""
    rng = np.random.default_rng(seed)
    label = rng.random(n) < prevalence
    score = 1 / (1 + np.exp(-(2.0 * label - 1.0 + rng.normal(0, noise, n))))
    return pd.DataFrame(
        {
            "subject_id": np.arange(n, dtype=np.int64),
            "prediction_time": pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(n), "h"),
            "task": task,
            "split": np.where(np.arange(n) % 2 == 0, "tuning", "held_out"),
            "label": label,
            "score": np.round(score, 2),  # rounded: ties exercise the tie handling
            "model": model,
        }
    )


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------
def test_metrics_equal_scikit_learn_on_fixed_inputs(tmp_path: Path) -> None:
    preds = _predictions(400, 1.5, seed=1)
    result = evaluate_models(preds, tmp_path, FAST)
    row = result.metrics.iloc[0]
    held = preds[preds["split"] == "held_out"]
    y, s = held["label"].to_numpy(), held["score"].to_numpy()
    assert row["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert row["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert row["threshold_source"] == "tuning"
    assert row["f1"] == pytest.approx(f1_score(y, s >= row["threshold"]), abs=1e-12)
    assert (row["n"], row["n_positive"]) == (len(y), int(y.sum()))


def test_vectorized_bootstrap_formulas_equal_scikit_learn_with_weights() -> None:
    """Each resample is scored as sample weights: pin those formulas to sklearn's."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 80))
        y = rng.random(n) < 0.3
        y[:2] = [True, False]
        s = np.round(rng.random(n), 1)  # many ties
        w = rng.integers(1, 4, n).astype(float)
        srt = m._Sorted.of(y, s)
        weights = w[srt.order][None]
        assert m._weighted_auroc(srt, weights)[0] == pytest.approx(
            roc_auc_score(y, s, sample_weight=w)
        )
        assert m._weighted_auprc(srt, weights)[0] == pytest.approx(
            average_precision_score(y, s, sample_weight=w)
        )


def test_bootstrap_interval_contains_estimate_and_narrows_with_more_data() -> None:
    widths = {}
    for n in (150, 3000):
        preds = _predictions(n, 1.5, seed=2)
        y, s = preds["label"].to_numpy(), preds["score"].to_numpy()
        boot = m.bootstrap_metrics(y, s, 0.5, n_resamples=500, seed=0)
        again = m.bootstrap_metrics(y, s, 0.5, n_resamples=500, seed=0)
        assert boot == again  # seeded
        for name, interval in boot.items():
            assert interval.low <= interval.estimate <= interval.high, (n, name, interval)
        widths[n] = {k: v.high - v.low for k, v in boot.items()}
    for name in ("auroc", "auprc", "f1"):
        assert widths[3000][name] < 0.5 * widths[150][name], (name, widths)


def test_patient_bootstrap_is_wider_than_row_bootstrap_for_repeated_rows() -> None:
    """Ten rows per patient are not ten independent patients: drawing patients says so."""
    rng = np.random.default_rng(3)
    patient_label = rng.random(60) < 0.3
    patient_risk = patient_label + rng.normal(0, 1.0, 60)
    y = np.repeat(patient_label, 10)
    s = 1 / (1 + np.exp(-(np.repeat(patient_risk, 10) + rng.normal(0, 0.1, 600))))
    rows = m.bootstrap_metrics(y, s, 0.5, n_resamples=500)["auroc"]
    patients = m.bootstrap_metrics(y, s, 0.5, groups=np.repeat(np.arange(60), 10))["auroc"]
    assert rows.estimate == patients.estimate
    assert patients.high - patients.low > 2 * (rows.high - rows.low)


def test_paired_difference_sees_a_gap_that_separate_intervals_hide() -> None:
    """Two models sharing most of their error: B is A plus a little extra noise. Each model's own
    interval overlaps the other's, the paired interval of the gap excludes zero."""
    rng = np.random.default_rng(6)
    y = rng.random(400) < 0.25
    shared = rng.normal(0, 1.2, 400)
    a = 1 / (1 + np.exp(-(2.0 * y + shared)))
    b = 1 / (1 + np.exp(-(2.0 * y + shared + rng.normal(0, 0.6, 400))))
    gap = m.paired_auroc_difference(y, a, b, n_resamples=1000, seed=0)
    assert gap.estimate == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    assert 0 < gap.low <= gap.estimate <= gap.high
    own_a = m.bootstrap_metrics(y, a, 0.5, n_resamples=1000)["auroc"]
    own_b = m.bootstrap_metrics(y, b, 0.5, n_resamples=1000)["auroc"]
    assert own_a.low < own_b.high  # unpaired, the gap looks like noise
    assert m.paired_auroc_difference(y, a, a) == m.Interval(0.0, 0.0, 0.0)
    one_class = m.paired_auroc_difference(np.zeros(5, bool), a[:5], b[:5])
    assert np.isnan(one_class.estimate) and np.isnan(one_class.low)


def _cells(row: pd.Series, prefix: str) -> tuple:
    """A paired-table row's estimate and interval under one column prefix."""
    return row[prefix], row[f"{prefix}_low"], row[f"{prefix}_high"]


def _approx(interval: m.Interval) -> tuple:
    return (
        pytest.approx(interval.estimate),
        pytest.approx(interval.low),
        pytest.approx(interval.high),
    )


def test_recipe_difference_holds_the_seeds_noise_that_a_paired_interval_leaves_out() -> None:
    """Recipe A trained twice lands once above reference B and once below it, each beyond its
    paired interval; judged over A's seeds, the gap's interval spans both."""
    rng = np.random.default_rng(3)
    n = 800
    y = rng.random(n) < 0.25
    shared = rng.normal(0, 1.0, n)

    def seed_of(signal: float) -> np.ndarray:
        return 1 / (1 + np.exp(-(signal * y + shared + rng.normal(0, 0.5, n))))

    good, poor, reference = seed_of(2.6), seed_of(1.4), seed_of(2.0)
    above = m.paired_auroc_difference(y, good, reference)
    below = m.paired_auroc_difference(y, poor, reference)
    assert above.low > 0 and below.high < 0
    recipe = m.recipe_auroc_difference(y, [good, poor], [reference])
    expected = (roc_auc_score(y, good) + roc_auc_score(y, poor)) / 2 - roc_auc_score(y, reference)
    assert recipe.estimate == pytest.approx(expected, abs=1e-12)
    assert recipe.low < below.high and recipe.high > above.low
    assert recipe.high - recipe.low > 2 * max(above.high - above.low, below.high - below.low)
    # one seed a side is the paired interval, resample for resample
    groups = np.arange(n) // 4
    assert m.recipe_auroc_difference(y, [good], [reference], groups=groups) == pytest.approx(
        m.paired_auroc_difference(y, good, reference, groups=groups), abs=1e-12
    )
    with pytest.raises(ValueError, match="each recipe needs the scores of at least one seed"):
        m.recipe_auroc_difference(y, [], [reference])


def test_evaluation_judges_recipes_over_their_seeds(tmp_path: Path) -> None:
    """Three seeds of "mtf" against a deterministic baseline: the gap over seeds is computed on
    the rows every seed scored, and the report shows it beside the paired gap."""
    baseline = _predictions(600, 1.0, seed=7, model="xgb")
    rng = np.random.default_rng(9)
    seeds = [
        baseline.assign(
            model="mtf",
            seed=k,
            score=np.clip(baseline["score"] + rng.normal(0, 0.1 + 0.2 * k, 600), 0, 1),
        )
        for k in range(3)
    ]
    seeds[2] = seeds[2].iloc[40:]  # 20 held_out rows the third seed did not score
    seed_frame = pd.concat(seeds, ignore_index=True)
    kept = seeds[0].drop(columns="seed")
    result = evaluate_models(
        pd.concat([baseline, kept]),
        tmp_path,
        FAST,
        comparisons=[("mtf", "xgb")],
        seed_predictions=seed_frame,
    )
    row = result.paired.iloc[0]
    assert (row["seeds_model"], row["seeds_reference"]) == (3, 1)
    assert (row["n"], row["n_over_seeds"]) == (300, 280)
    held = [s[(s["split"] == "held_out")].iloc[-280:] for s in seeds]
    base = baseline[baseline["split"] == "held_out"].iloc[-280:]
    expected = m.recipe_auroc_difference(
        base["label"],
        [s["score"].to_numpy() for s in held],
        [base["score"].to_numpy()],
        groups=base["subject_id"],
        n_resamples=FAST.n_resamples,
    )
    assert _cells(row, "recipe_diff") == _approx(expected)
    assert row["recipe_diff_low"] < row["recipe_diff"] < row["recipe_diff_high"]
    report = result.report_path.read_text()
    assert "| seeds | gap over seeds | reading over seeds |" in report
    gap = f"{expected.estimate:.4f} [{expected.low:.4f}, {expected.high:.4f}]"
    assert f"| 3 v 1 | {gap} |" in report
    # without seeds the report keeps the paired columns alone
    plain = evaluate_models(
        pd.concat([baseline, kept]), tmp_path / "plain", FAST, comparisons=[("mtf", "xgb")]
    )
    assert "gap over seeds" not in plain.report_path.read_text()
    assert plain.paired.iloc[0]["seeds_model"] == 1 and np.isnan(
        plain.paired.iloc[0]["recipe_diff"]
    )
    with pytest.raises(ValueError, match="seed_predictions need a 'seed' column"):
        evaluate_models(
            kept, tmp_path / "bad", FAST, comparisons=[("mtf", "mtf")], seed_predictions=kept
        )


def test_evaluation_pairs_models_on_the_rows_both_scored(tmp_path: Path) -> None:
    good = _predictions(600, 1.0, seed=7, model="good")
    worse = good.assign(
        model="worse",
        score=np.clip(good["score"] + np.random.default_rng(8).normal(0, 0.3, 600), 0, 1),
    )
    worse = worse.iloc[20:]  # 10 held_out rows scored by "good" only
    result = evaluate_models(
        pd.concat([good, worse]), tmp_path, FAST, comparisons=[("worse", "good")]
    )
    row = result.paired.iloc[0]
    held = good[good["split"] == "held_out"].merge(
        worse[worse["split"] == "held_out"], on=["subject_id", "prediction_time"]
    )
    assert (
        (row["model"], row["reference"], row["n"])
        == ("worse", "good", 290)
        == (
            "worse",
            "good",
            len(held),
        )
    )
    expected = m.paired_auroc_difference(
        held["label_x"],
        held["score_y"],
        held["score_x"],
        groups=held["subject_id"],
        n_resamples=FAST.n_resamples,
    )
    assert _cells(row, "auroc_diff") == _approx(expected)
    assert row["auroc_diff_high"] < 0
    report = result.report_path.read_text()
    assert "## Paired AUROC differences" in report
    assert "| worse − good | t | 290 |" in report and "below, beyond the interval" in report
    assert (tmp_path / "paired_differences.csv").exists()
    with pytest.raises(ValueError, match=r"comparisons name models without predictions: \['mtf'\]"):
        evaluate_models(good, tmp_path, FAST, comparisons=[("mtf", "good")])


def test_f1_threshold_is_chosen_on_tuning_and_applied_to_held_out(tmp_path: Path) -> None:
    # tuning: threshold 0.35 gives P=2/3, R=1, F1=0.8 (0.4: F1 0.5; 0.8: F1 2/3) -> 0.35
    # held_out at 0.35: predicted [0, 1, 1, 0] vs labels [1, 1, 0, 0] -> F1 = 0.5
    # (held_out's own best threshold, 0.3, would give 0.8; the default 0.5 would give 0)
    preds = pd.DataFrame(
        {
            "subject_id": [1, 2, 3, 4, 5, 6, 7, 8],
            "prediction_time": pd.Timestamp("2021-03-01"),
            "task": "t",
            "split": ["tuning"] * 4 + ["held_out"] * 4,
            "label": [False, False, True, True, True, True, False, False],
            "score": [0.1, 0.4, 0.35, 0.8, 0.3, 0.36, 0.5, 0.2],
            "model": "m",
        }
    )
    assert m.choose_f1_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == (0.35, "tuning")
    row = evaluate_models(preds, tmp_path, FAST).metrics.iloc[0]
    assert row["threshold"] == 0.35 and row["threshold_source"] == "tuning"
    assert row["f1"] == pytest.approx(0.5)
    assert (row["precision"], row["recall"]) == (0.5, 0.5)
    assert m.choose_f1_threshold([0, 0], [0.2, 0.9]) == (
        0.5,
        "default 0.5 (no positives in tuning)",
    )


def test_ece_and_reliability_bins_by_hand() -> None:
    y = [0, 1, 0, 0, 1, 1]
    s = [0.05, 0.05, 0.15, 0.15, 0.95, 1.0]
    bins = m.reliability_bins(y, s, n_bins=10)
    assert bins["count"].tolist() == [2, 2, 0, 0, 0, 0, 0, 0, 0, 2]  # 1.0 falls in the last bin
    assert bins.loc[9, "mean_score"] == pytest.approx(0.975)
    assert bins.loc[0, "fraction_positive"] == 0.5 and np.isnan(bins.loc[5, "mean_score"])
    # |0.5-0.05|*2 + |0-0.15|*2 + |1-0.975|*2, over 6
    assert m.expected_calibration_error(y, s, 10) == pytest.approx((0.9 + 0.3 + 0.05) / 6)
    # equal mass, 3 bins: {.05,.05}, {.15,.15}, {.95,1.0}
    q = m.reliability_bins(y, s, n_bins=3, strategy="quantile")
    assert q["count"].tolist() == [2, 2, 2]
    assert m.expected_calibration_error(y, s, 3, "quantile") == pytest.approx(
        (0.9 + 0.3 + 0.05) / 6
    )


def test_subgroup_auroc_by_sex_and_age_band(tmp_path: Path) -> None:
    preds = _predictions(800, 1.0, seed=4)
    rng = np.random.default_rng(5)
    preds["sex"] = rng.choice(["female", "male"], len(preds))
    preds["age_years"] = rng.uniform(0, 90, len(preds))
    result = evaluate_models(preds, tmp_path, FAST)
    sub = result.subgroups.set_index(["attribute", "group"])
    held = preds[preds["split"] == "held_out"]
    for sex in ("female", "male"):
        part = held[held["sex"] == sex]
        assert sub.loc[("sex", sex), "auroc"] == pytest.approx(
            roc_auc_score(part["label"], part["score"])
        )
        assert sub.loc[("sex", sex), "n"] == len(part)
    old = held[held["age_years"] >= 65]
    assert sub.loc[("age_band", "65+"), "auroc"] == pytest.approx(
        roc_auc_score(old["label"], old["score"])
    )
    assert list(result.subgroups["group"][result.subgroups["attribute"] == "age_band"]) == [
        "<18",
        "18-39",
        "40-64",
        "65+",
    ]


def test_contract_violations_are_named() -> None:
    preds = _predictions(10, 1.0, seed=0)
    with pytest.raises(ValueError, match=r"lack columns \['score'\]"):
        validate_predictions(preds.drop(columns=["score"]))
    with pytest.raises(ValueError, match="split must be one of"):
        validate_predictions(preds.assign(split="train"))
    with pytest.raises(ValueError, match="2 scores lie outside"):
        validate_predictions(preds.assign(score=[1.5, -0.1, *[0.5] * 8]))


def test_report_plots_not_evaluable_task_and_mlflow(tmp_path: Path) -> None:
    good = pd.concat(
        [_predictions(300, 1.0, 6, model=name) for name in ("ehrmamba_mtf", "xgboost_counts")]
    )
    no_positive = _predictions(40, 1.0, 7, task="rare").assign(label=False, model="ehrmamba_mtf")
    result = evaluate_models(
        pd.concat([good, no_positive]),
        tmp_path / "eval",
        FAST,
        notes=["xgboost_counts: rare not fitted"],
    )
    rare = result.metrics.set_index(["model", "task"]).loc[("ehrmamba_mtf", "rare")]
    assert not rare["evaluable"] and np.isnan(rare["auroc"])
    assert rare["note"] == "not evaluable: no positive labels in held_out (n=20)"
    report = result.report_path.read_text()
    assert "| ehrmamba_mtf | 20 | 0 | n/a | n/a | n/a | n/a |" in report
    assert "`rare` / `ehrmamba_mtf`: not evaluable: no positive labels in held_out (n=20)" in report
    assert "- xgboost_counts: rare not fitted" in report
    assert "![ROC t](plots/roc_t.png)" in report
    assert sorted(p.name for p in result.plot_paths) == ["reliability_t.png", "roc_t.png"]
    assert all(p.stat().st_size > 5000 for p in result.plot_paths)
    summary = result.summary.set_index("model")
    assert summary.loc["ehrmamba_mtf", "n_tasks_evaluable"] == 1
    assert summary.loc["ehrmamba_mtf", "n_tasks"] == 2

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("eval", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(exp).info.run_id
    log_to_mlflow(result, run_id, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = client.get_run(run_id).data.metrics
    t = result.metrics.set_index(["model", "task"]).loc[("xgboost_counts", "t")]
    assert logged["eval.xgboost_counts.t.auroc"] == pytest.approx(t["auroc"])
    assert logged["eval.ehrmamba_mtf.mean_auroc"] == pytest.approx(
        summary.loc["ehrmamba_mtf", "mean_auroc"]
    )
    assert not any(k.startswith("eval.ehrmamba_mtf.rare.") for k in logged)  # NaN not logged
    files = {f.path for f in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/report.md", "evaluation/metrics.csv", "evaluation/plots"} <= files


# ------------------------------------------------------------------------------------------------
# Baselines on a real warehouse
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def warehouse(synthetic_warehouse) -> Path:
    return synthetic_warehouse(60, seed=5)


def test_baselines_predict_tuning_and_held_out_rows_only(warehouse: Path, tmp_path: Path) -> None:
    result = run_baselines(warehouse, TASKS, BaselineConfig(top_k=64))
    preds = result.predictions
    assert set(preds["model"]) == {"xgboost_counts", "logreg_counts"}
    assert set(preds["split"]) <= {"tuning", "held_out"}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        splits = dict(con.execute("SELECT subject_id, split FROM marts.subject_splits").fetchall())
        for task in TASKS:
            n_train, n_pos = con.execute(
                f"SELECT count(*), count(*) FILTER (boolean_value) FROM marts.labels__{task} "
                "JOIN marts.subject_splits USING (subject_id) WHERE split = 'train'"
            ).fetchone()
            if n_pos in (0, n_train):
                assert "needs both classes" in result.skipped[task]
                continue
            assert result.train_rows[task] == n_train
            held = con.execute(
                f"SELECT subject_id, prediction_time, boolean_value FROM marts.labels__{task} "
                "JOIN marts.subject_splits USING (subject_id) WHERE split = 'held_out' "
                "ORDER BY ALL"
            ).fetchall()
            for model in ("xgboost_counts", "logreg_counts"):
                mine = preds[(preds["task"] == task) & (preds["model"] == model)]
                got = mine[mine["split"] == "held_out"].sort_values(
                    ["subject_id", "prediction_time", "label"]
                )
                assert list(
                    zip(got["subject_id"], got["prediction_time"], got["label"], strict=True)
                ) == [(s, pd.Timestamp(t), b) for s, t, b in held]
                assert mine["score"].between(0, 1).all()
    assert {splits[s] for s in preds["subject_id"]} <= {"tuning", "held_out"}
    # the same contract feeds the evaluation, with demographics from the warehouse
    with_demo = join_demographics(preds, warehouse)
    assert with_demo["sex"].isin(["female", "male"]).all()
    assert (with_demo["age_years"] >= 0).all()
    report = evaluate_models(with_demo, tmp_path, FAST).report_path.read_text()
    assert "| xgboost_counts |" in report and "| logreg_counts |" in report


def test_baselines_can_fit_on_the_rows_another_model_learned_from(warehouse: Path) -> None:
    """``train_rows`` limits fitting to the given rows of the train split, per task."""
    task = "fluid_electrolyte_1y"
    config = BaselineConfig(top_k=32, models=("logreg",))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        keys = count_features(con, task, top_codes(con, 32)).keys
    train = keys[keys["split"] == "train"]
    chosen = pd.concat([train[train["label"]].head(5), train[~train["label"]].head(15)]).assign(
        task=task
    )
    # a held_out row passed as a train row must not be fitted on
    rows = pd.concat([chosen, keys[keys["split"] == "held_out"].head(3).assign(task=task)])
    limited = run_baselines(warehouse, [task], config, train_rows=rows)
    assert limited.train_rows == {task: 20}
    full = run_baselines(warehouse, [task], config)
    assert full.train_rows[task] == len(train) > 20
    merged = limited.predictions.merge(
        full.predictions, on=["subject_id", "prediction_time", "split"], suffixes=("", "_full")
    )
    assert len(merged) == len(limited.predictions) and not np.allclose(
        merged["score"], merged["score_full"]
    )
    # the evaluation's pair: every baseline on those rows, XGBoost also on every train label
    both = run_matched_baselines(
        warehouse, [task], eval_rows=limited.predictions.assign(task=task), train_rows=rows
    )
    assert both.train_rows == {task: 20}
    assert both.predictions.groupby("model").size().to_dict() == {
        name: len(limited.predictions)
        for name in ("xgboost_counts", "logreg_counts", "xgboost_counts_all_labels")
    }
    # a task none of the rows names has nothing to fit, as the other model had nothing to learn
    other = run_baselines(warehouse, ["mortality_1m"], config, train_rows=rows)
    assert other.train_rows == {"mortality_1m": 0}
    assert "needs both classes" in other.skipped["mortality_1m"]


def test_count_features_never_see_an_event_after_prediction_time(
    warehouse: Path, tmp_path: Path
) -> None:
    """Plant, for one label row, an event at prediction_time + 1 s (must not count) and one at
    exactly prediction_time (must count: the cut is inclusive); a later label row of the same
    subject must see both."""
    db = tmp_path / "planted.duckdb"
    shutil.copy(warehouse, db)
    task = "fluid_electrolyte_1y"
    with duckdb.connect(str(db)) as con:
        codes = top_codes(con, 32)
        late, exact = codes[0], codes[1]
        before = count_features(con, task, codes)
        keys = before.keys
        # a held_out row whose subject has a later label row
        later = keys.groupby("subject_id")["prediction_time"].transform("max")
        pick = keys.index[(keys["split"] == "held_out") & (keys["prediction_time"] < later)][0]
        sid, pt = int(keys.at[pick, "subject_id"]), keys.at[pick, "prediction_time"]
        nxt = keys.index[(keys["subject_id"] == sid) & (keys["prediction_time"] > pt)][0]
        con.execute(
            "INSERT INTO marts.meds_events (subject_id, time, code, event_type) VALUES "
            "(?, ?::TIMESTAMP + INTERVAL 1 SECOND, ?, 'planted'), (?, ?, ?, 'planted')",
            [sid, pt, late, sid, pt, exact],
        )
        after = count_features(con, task, codes)
    assert after.keys.equals(before.keys)
    col = {name: i for i, name in enumerate(before.feature_names)}
    diff = after.matrix - before.matrix
    assert diff[pick, col[f"count:{late}"]] == 0
    assert diff[pick, col[f"count:{exact}"]] == 1
    assert diff[nxt, col[f"count:{late}"]] == 1 and diff[nxt, col[f"count:{exact}"]] == 1
    # nothing else moved: only rows of this subject at or after the planted time
    moved = np.flatnonzero(np.abs(diff).sum(axis=1))
    assert set(moved) <= set(
        keys.index[(keys["subject_id"] == sid) & (keys["prediction_time"] >= pt)]
    )
