"""The registry and its promotion gate on a real MLflow SQLite store: the first model becomes
champion, a better one replaces it, a worse one (lower mean, or one task below the champion's
interval) stays challenger, and each decision says why in words."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from ehrmamba.evaluate import EvaluationConfig, evaluate_models
from ehrmamba.registry import (
    CHALLENGER,
    CHAMPION,
    TaskScore,
    compare_to_champion,
    download_model,
    register_evaluated_model,
    scores_from_tags,
)

TASKS = ("mortality_1m", "los_1w", "hypertension_1y")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One SQLite store (its schema migration costs seconds) and one logged model directory."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("finetune", artifact_location=(root / "artifacts").as_uri())
    runs = []
    for i in range(3):
        model_dir = root / f"model{i}"
        model_dir.mkdir()
        (model_dir / "config.json").write_text(f'{{"run": {i}}}')
        run_id = client.create_run(exp).info.run_id
        client.log_artifacts(run_id, str(model_dir), "finetuned_model")
        runs.append(run_id)
    return {"uri": uri, "client": client, "runs": runs, "root": root}


@pytest.fixture(scope="module")
def evaluation(store: dict):
    """Three models of known quality on the same rows: noise 0.6 (good) < 1.0 < 2.0 (poor)."""
    rng = np.random.default_rng(0)
    frames = []
    for task in TASKS:
        label = rng.random(600) < 0.3
        split = np.where(np.arange(600) % 3 == 0, "tuning", "held_out")
        for model, noise in (("good", 0.6), ("fair", 1.0), ("poor", 2.0)):
            score = 1 / (1 + np.exp(-(2.0 * label - 1.0 + rng.normal(0, noise, 600))))
            frames.append(
                pd.DataFrame(
                    {
                        "subject_id": np.arange(600),
                        "prediction_time": pd.Timestamp("2022-01-01"),
                        "task": task,
                        "split": split,
                        "label": label,
                        "score": score,
                        "model": model,
                    }
                )
            )
    return evaluate_models(
        pd.concat(frames), store["root"] / "eval", EvaluationConfig(n_resamples=300)
    )


def test_gate_promotes_a_better_model_and_refuses_a_worse_one(store: dict, evaluation) -> None:
    client, runs = store["client"], store["runs"]
    kwargs = {"artifact_path": "finetuned_model", "tracking_uri": store["uri"]}
    mean = evaluation.summary.set_index("model")["mean_auroc"]

    first = register_evaluated_model(
        "ehr_a", runs[0], metrics=evaluation.model_metrics("fair"), **kwargs
    )
    assert (first.version, first.alias, first.promoted) == ("1", CHAMPION, True)
    assert first.reason == (
        f"version 1 becomes champion: there is no champion yet "
        f"(mean AUROC {mean['fair']:.3f} over 3 tasks)."
    )

    better = register_evaluated_model(
        "ehr_a", runs[1], metrics=evaluation.model_metrics("good"), **kwargs
    )
    assert (better.version, better.alias, better.promoted) == ("2", CHAMPION, True)
    assert better.champion_version == "1"
    assert better.reason == (
        f"version 2 becomes champion: mean AUROC {mean['good']:.3f} over 3 tasks beats "
        f"champion version 1's {mean['fair']:.3f}, and no task is below champion version 1's "
        "interval."
    )

    worse = register_evaluated_model(
        "ehr_a", runs[2], metrics=evaluation.model_metrics("poor"), **kwargs
    )
    assert (worse.version, worse.alias, worse.promoted) == ("3", CHALLENGER, False)
    assert worse.reason.startswith(
        f"version 3 stays challenger: mean AUROC {mean['poor']:.3f} over 3 tasks does not beat "
        f"champion version 2's {mean['good']:.3f}, and "
    )
    assert all(c.worse for c in worse.comparisons)  # every task fell below the interval

    # the registry agrees: aliases, source, tags and the decision on the version
    assert str(client.get_model_version_by_alias("ehr_a", CHAMPION).version) == "2"
    assert str(client.get_model_version_by_alias("ehr_a", CHALLENGER).version) == "3"
    v2 = client.get_model_version("ehr_a", "2")
    assert v2.source == f"runs:/{runs[1]}/finetuned_model" and v2.run_id == runs[1]
    good = evaluation.model_metrics("good").set_index("task")
    for task in TASKS:
        assert float(v2.tags[f"eval.auroc.{task}"]) == good.loc[task, "auroc"]
        assert float(v2.tags[f"eval.auroc_low.{task}"]) == good.loc[task, "auroc_low"]
    assert v2.tags["gate.decision"] == CHAMPION and v2.tags["gate.reason"] == better.reason
    assert v2.description == better.reason
    assert client.get_model_version("ehr_a", "1").tags["gate.superseded_by"] == "2"
    assert client.get_model_version("ehr_a", "3").tags["gate.compared_to"] == "2"
    # what serving loads is the champion's artifact directory
    local = download_model("ehr_a", store["root"] / "served", tracking_uri=store["uri"])
    assert (Path(local) / "config.json").read_text() == '{"run": 1}'


def _metrics(values: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": "m",
                "task": t,
                "evaluable": True,
                "auroc": a,
                "auroc_low": lo,
                "auroc_high": hi,
            }
            for t, (a, lo, hi) in values.items()
        ]
    )


def test_higher_mean_with_one_task_below_the_interval_stays_challenger(store: dict) -> None:
    kwargs = {"artifact_path": "finetuned_model", "tracking_uri": store["uri"]}
    champion = _metrics({"mortality_1m": (0.80, 0.75, 0.85), "los_1w": (0.70, 0.66, 0.74)})
    new = _metrics({"mortality_1m": (0.74, 0.70, 0.78), "los_1w": (0.90, 0.86, 0.94)})
    register_evaluated_model("ehr_b", store["runs"][0], metrics=champion, **kwargs)
    decision = register_evaluated_model("ehr_b", store["runs"][1], metrics=new, **kwargs)
    assert decision.alias == CHALLENGER
    assert decision.reason == (
        "version 2 stays challenger: mean AUROC 0.820 over 2 tasks beats champion version 1's "
        "0.750, but mortality_1m AUROC 0.740 is below champion version 1's interval "
        "[0.750, 0.850]."
    )
    # inside the interval (0.76 >= 0.75) is not worse: promoted
    inside = _metrics({"mortality_1m": (0.76, 0.70, 0.80), "los_1w": (0.90, 0.86, 0.94)})
    decision = register_evaluated_model("ehr_b", store["runs"][2], metrics=inside, **kwargs)
    assert decision.alias == CHAMPION and decision.champion_version == "1"


def test_pure_gate_rules() -> None:
    champ = {"a": TaskScore(0.8, 0.75, 0.85), "b": TaskScore(0.7, 0.65, 0.75)}
    same = compare_to_champion(dict(champ), champ)
    assert not same.promote  # equal mean does not beat
    assert same.reason == "mean AUROC 0.750 over 2 tasks does not beat the champion's 0.750"
    missing = compare_to_champion({"a": TaskScore(0.99, 0.98, 1.0)}, champ)
    assert not missing.promote
    assert missing.reason == "it was not evaluated on b, which the champion was"
    extra = compare_to_champion(
        {**champ, "a": TaskScore(0.9, 0.8, 1), "c": TaskScore(1, 1, 1)}, champ
    )
    assert extra.promote and extra.reason.endswith("(not compared: c, which the champion lacks)")
    untagged = compare_to_champion(champ, {})
    assert not untagged.promote and "carries no evaluation tags" in untagged.reason
    nothing = compare_to_champion({}, None)
    assert (
        not nothing.promote
        and nothing.reason == "no task could be evaluated, so it cannot be compared"
    )
    tags = {
        "eval.tasks": "a",
        "eval.auroc.a": "0.8",
        "eval.auroc_low.a": "0.75",
        "eval.auroc_high.a": "0.85",
    }
    assert scores_from_tags(tags) == {"a": TaskScore(0.8, 0.75, 0.85)}
