"""Multitask prompted finetuning: balancing, one model for all tasks, the bundle, and parity
between the batch scoring path and the one-patient path that serving uses."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ehrmamba.finetune import FinetunedModel
from ehrmamba.finetune.sampling import StratifiedCyclingSampler, balance_strata
from ehrmamba.finetune.selection import BestWeights, mean_task_auroc, task_aurocs
from ehrmamba.finetune.train import (
    FinetuneConfig,
    FinetuningModule,
    best_f1_threshold,
    finetune,
    load_finetuned_from_mlflow,
    predict_sequences,
)
from ehrmamba.model import EHRMambaConfig, EHRMambaForMultitask, EHRMambaForPretraining
from ehrmamba.tokenize import (
    LabelSample,
    SequenceDataset,
    TokenizerConfig,
    collate_sequences,
    fit_vocabulary,
    write_label_sequences,
)
from ehrmamba.train.pretrain import MODEL_INPUTS

TASKS = ["mortality_1m", "readmission_1m", "hypertension_1y"]
MAX_LEN = 96


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, synthetic_warehouse):
    root = tmp_path_factory.mktemp("finetune")
    db = synthetic_warehouse(60, seed=5)
    with duckdb.connect(str(db), read_only=True) as con:
        vocab = fit_vocabulary(con, TokenizerConfig(max_len=MAX_LEN))
        labels = write_label_sequences(
            con,
            vocab,
            root / "seq",
            TASKS,
            max_len=MAX_LEN,
            sample=LabelSample({"train": 60, "tuning": 30, "held_out": 30}, 0.5),
        )
    torch.manual_seed(0)
    pretrained = EHRMambaForPretraining(
        EHRMambaConfig.preset("tiny", vocab_size=len(vocab.tokens), dropout=0.0)
    )
    pretrained_dir = pretrained.save_pretrained(root / "pretrained")
    return db, vocab, labels, pretrained_dir


def _tracking(tmp_path: Path) -> dict[str, str]:
    return {
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "artifact_location": (tmp_path / "artifacts").as_uri(),
    }


def test_balancing_draws_strata_equally_and_every_row_before_any_repeat() -> None:
    tasks = ["a"] * 6 + ["b"] * 2
    labels = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]

    def epochs(balance: str, n: int, count: int = 1) -> list[list[int]]:
        sampler = StratifiedCyclingSampler(
            balance_strata(tasks, labels, balance), n, torch.Generator().manual_seed(0)
        )
        return [list(sampler) for _ in range(count)]

    # without balancing an epoch is one pass over the rows, in a new order each time
    first, second = epochs("none", 8, count=2)
    assert sorted(first) == sorted(second) == list(range(8)) and first != second
    # by task: each task about half of 4,000 draws, and task a's six rows each drawn once in
    # every round of six of its draws
    (drawn,) = epochs("tasks", 4000)
    of_a = [i for i in drawn if i < 6]
    assert abs(len(of_a) - 2000) < 150
    assert all(sorted(of_a[k : k + 6]) == list(range(6)) for k in range(0, len(of_a) - 5, 6))
    # by task and label: four strata, row 4 or 5 (task a's positives) in about a quarter
    (drawn,) = epochs("tasks_and_labels", 4000)
    assert abs(sum(i in (4, 5) for i in drawn) - 1000) < 120
    with pytest.raises(ValueError, match="balance must be"):
        balance_strata(tasks, labels, "labels")
    with pytest.raises(ValueError, match="balance must be"):
        FinetuneConfig(balance="labels")  # type: ignore[arg-type]


def test_best_f1_threshold_on_a_hand_built_case() -> None:
    y = np.array([0, 0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.9])
    # >= 0.35 gives TP 3, FP 1 -> F1 .857; >= 0.4: TP 2 FP 1 -> .667; >= 0.9: .5
    assert best_f1_threshold(y, s) == pytest.approx(0.35)
    assert best_f1_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3])) == 0.5


def test_best_weights_keeps_the_best_earliest_on_ties_latest_without_a_score() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    best = BestWeights()
    for epoch, score in enumerate([0.70, 0.80, 0.75, 0.80]):
        model.weight.data.fill_(float(epoch))
        best.offer(epoch, score, model, payload=f"scores of {epoch}")
    assert (best.index, best.score, best.payload) == (1, 0.80, "scores of 1")
    assert best.history == [(0, 0.70), (1, 0.80), (2, 0.75), (3, 0.80)]
    best.restore(model)
    assert model.weight.item() == 1.0  # a copy was kept, not a view of the live weights

    unranked = BestWeights()
    for epoch in range(3):
        unranked.offer(epoch, float("nan"), model)
    assert unranked.index == 2
    with pytest.raises(RuntimeError, match="nothing to restore"):
        BestWeights().restore(model)


def test_mean_task_auroc_leaves_out_tasks_with_one_class() -> None:
    tasks = ["a", "a", "a", "a", "b", "b", "c", "c"]
    labels = [0, 1, 0, 1, 0, 1, 0, 0]
    scores = np.array([0.1, 0.9, 0.8, 0.7, 0.4, 0.6, 0.2, 0.3])
    # a: pairs (0.9>0.1, 0.9>0.8, 0.7>0.1, 0.7<0.8) -> 0.75; b: 1.0; c has no positive
    assert mean_task_auroc(tasks, labels, scores) == pytest.approx(0.875)
    assert np.isnan(mean_task_auroc(["c", "c"], [0, 0], np.array([0.1, 0.2])))


def test_mtf_trains_one_model_for_all_tasks_and_serves_the_same_scores(
    corpus, tmp_path, monkeypatch
) -> None:
    db, vocab, labels, pretrained_dir = corpus
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = FinetuneConfig(max_epochs=3, batch_size=8, learning_rate=1e-3, progress_bar=False)
    lines: list[str] = []
    result = finetune(
        labels,
        vocab,
        pretrained_dir,
        config,
        output_dir=tmp_path / "out",
        progress_log=lines.append,
        **_tracking(tmp_path),
    )
    # the run's own store does not become the process's default (Settings reads the variable)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    table = pq.read_table(labels).to_pandas()
    preds = result.predictions
    evaluated = table[table.split.isin(["tuning", "held_out"])]
    assert len(preds) == len(evaluated)
    assert set(preds.task) == set(TASKS) and set(preds.split) == {"tuning", "held_out"}
    assert preds.score.between(0, 1).all() and preds.model.eq("ehrmamba-mtf").all()
    assert set(result.thresholds) == set(TASKS)

    bundle = FinetunedModel.load(result.bundle_dir)
    assert bundle.settings.version == result.run_id and bundle.tasks == sorted(TASKS)

    # this corpus's tuning rows hold no positive, so no epoch can be ranked: the last is kept
    assert result.metrics["kept_epoch"] == 2
    assert [line.split(": ", 1)[1].split(" tuning")[0] for line in lines if "AUROC" in line] == [
        "epoch 0",
        "epoch 1",
        "epoch 2",
    ]
    logged = load_finetuned_from_mlflow(result.run_id, _tracking(tmp_path)["tracking_uri"])
    assert logged.vocab.version == vocab.version

    # the one-patient path (serving) scores a record exactly as the batch path did
    with duckdb.connect(str(db), read_only=True) as con:
        for row in preds[preds.split == "held_out"].head(6).itertuples():
            events = con.execute(
                "SELECT * FROM marts.meds_events WHERE subject_id = ?", [int(row.subject_id)]
            ).df()
            got = bundle.predict_events(
                events, prediction_time=row.prediction_time, tasks=[row.task]
            )
            assert got.risks[row.task] == pytest.approx(row.score, rel=1e-4, abs=1e-6)

    run = mlflow.MlflowClient(_tracking(tmp_path)["tracking_uri"]).get_run(result.run_id)
    assert run.data.params["finetune.balance"] == "tasks"
    assert "held_out.auroc.mean" in run.data.metrics or not any(
        k.startswith("held_out.auroc.") for k in result.metrics
    )


def _train_and_flipped_tuning(labels: Path, path: Path) -> Path:
    """Label sequences whose tuning rows are the train rows with every label flipped: the
    better a model fits train, the worse it ranks tuning, so tuning can rank epochs and seeds."""
    table = pq.read_table(labels)
    train = table.filter(pc.equal(table["split"], "train"))
    flipped = train.set_column(
        table.schema.get_field_index("label"), "label", pc.invert(train["label"])
    ).set_column(table.schema.get_field_index("split"), "split", pa.array(["tuning"] * len(train)))
    pq.write_table(pa.concat_tables([train, flipped]), path)
    return path


def test_the_run_keeps_the_epoch_best_on_tuning_and_saves_its_weights(corpus, tmp_path) -> None:
    # with tuning the flipped train rows, an early epoch is the best and the last one is not
    _, vocab, labels, pretrained_dir = corpus
    path = _train_and_flipped_tuning(labels, tmp_path / "labels.parquet")
    lines: list[str] = []
    config = FinetuneConfig(max_epochs=3, batch_size=8, learning_rate=3e-3, progress_bar=False)
    result = finetune(
        path,
        vocab,
        pretrained_dir,
        config,
        output_dir=tmp_path / "out",
        progress_log=lines.append,
        **_tracking(tmp_path),
    )

    client = mlflow.MlflowClient(_tracking(tmp_path)["tracking_uri"])
    history = client.get_metric_history(result.run_id, "epoch_tuning_auroc_mean")
    per_epoch = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert len(per_epoch) == 3 and sum("tuning mean AUROC" in line for line in lines) == 3
    kept = int(result.metrics["kept_epoch"])
    assert kept == int(np.argmax(per_epoch)) and kept < 2

    # the saved weights are that epoch's: scoring tuning again with the bundle gives the
    # tuning predictions of the result, and their AUROC is the kept epoch's
    bundle = FinetunedModel.load(result.bundle_dir)
    tuning = SequenceDataset(path, splits=["tuning"], tasks=bundle.tasks)
    rescored = predict_sequences(bundle.model, tuning)
    saved = result.predictions.query("split == 'tuning'").score.to_numpy()
    np.testing.assert_allclose(rescored, saved, rtol=1e-5, atol=1e-6)
    assert mean_task_auroc(tuning.tasks, tuning.labels, saved) == pytest.approx(per_epoch[kept])

    # each task's tuning AUROC is logged beside the mean, per epoch, and the mean is theirs
    per_task = {
        task: [
            m.value
            for m in sorted(
                client.get_metric_history(result.run_id, f"epoch_tuning_auroc.{task}"),
                key=lambda m: m.step,
            )
        ]
        for task in task_aurocs(tuning.tasks, tuning.labels, saved)
    }
    assert len(per_task) >= 2 and all(len(values) == 3 for values in per_task.values())
    for epoch in range(3):
        assert np.mean([v[epoch] for v in per_task.values()]) == pytest.approx(per_epoch[epoch])
    task = sorted(per_task)[0]
    rows = tuning.table["task"].to_numpy() == task
    assert per_task[task][kept] == pytest.approx(
        roc_auc_score(np.asarray(tuning.labels)[rows], saved[rows])
    )
    assert sum(f"({task} " in line for line in lines) == 3


def test_restarts_keep_the_seed_best_on_tuning_in_a_parent_run(corpus, tmp_path) -> None:
    _, vocab, labels, pretrained_dir = corpus
    path = _train_and_flipped_tuning(labels, tmp_path / "labels.parquet")
    table = pq.read_table(path)
    train = table.filter(pc.equal(table["split"], "train"))
    held_out = train.set_column(
        table.schema.get_field_index("split"), "split", pa.array(["held_out"] * len(train))
    )
    pq.write_table(pa.concat_tables([table, held_out]), path)
    tracking = _tracking(tmp_path)
    settings = dict(max_epochs=2, batch_size=8, learning_rate=3e-3, progress_bar=False)
    lines: list[str] = []
    result = finetune(
        path,
        vocab,
        pretrained_dir,
        FinetuneConfig(restarts=3, **settings),
        output_dir=tmp_path / "restarts",
        progress_log=lines.append,
        **tracking,
    )

    client = mlflow.MlflowClient(tracking["tracking_uri"])
    parent = client.get_run(result.run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'",
    )
    by_seed = {int(c.data.params["finetune.seed"]): c for c in children}
    assert sorted(by_seed) == [0, 1, 2]
    # each seed's score is the best of its epochs on tuning, and the seeds do differ
    per_seed = {
        seed: max(
            m.value for m in client.get_metric_history(c.info.run_id, "epoch_tuning_auroc_mean")
        )
        for seed, c in by_seed.items()
    }
    assert len(set(per_seed.values())) > 1
    best_seed = max(per_seed, key=lambda s: (per_seed[s], -s))
    assert result.metrics["kept_seed"] == best_seed
    assert parent.data.metrics["kept_seed"] == best_seed
    history = client.get_metric_history(result.run_id, "restart_tuning_auroc_mean")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [per_seed[0], per_seed[1], per_seed[2]]
    )
    # each seed's per-task tuning AUROCs are logged on the parent, and their mean is its score
    task_keys = [k for k in parent.data.metrics if k.startswith("restart_tuning_auroc.")]
    assert len(task_keys) >= 2
    by_task = {
        k: sorted(client.get_metric_history(result.run_id, k), key=lambda m: m.step)
        for k in task_keys
    }
    for seed in range(3):
        assert np.mean([h[seed].value for h in by_task.values()]) == pytest.approx(per_seed[seed])
    assert parent.data.params["finetune.restarts"] == "3"
    assert parent.data.params[f"restart.seed{best_seed}.run_id"] == by_seed[best_seed].info.run_id
    assert sum("tuning mean AUROC" in line and ": seed " in line for line in lines) == 3

    # the result is that seed's model: the bundle, logged to the parent run, scores tuning as
    # the kept predictions do, and a plain run with that seed gives the same scores
    bundle = load_finetuned_from_mlflow(result.run_id, tracking["tracking_uri"])
    assert bundle.settings.version == result.run_id
    tuning = SequenceDataset(path, splits=["tuning"], tasks=bundle.tasks)
    kept = result.predictions.query("split == 'tuning'").score.to_numpy()
    np.testing.assert_allclose(predict_sequences(bundle.model, tuning), kept, rtol=1e-5, atol=1e-6)
    assert mean_task_auroc(tuning.tasks, tuning.labels, kept) == pytest.approx(per_seed[best_seed])
    # every seed's predictions are kept for judging the recipe over seeds: each seed's tuning
    # rows give its logged score, and the kept seed's rows are the result's predictions
    seeds = result.seed_predictions
    assert sorted(seeds["seed"].unique()) == [0, 1, 2]
    for seed, rows in seeds.groupby("seed"):
        assert len(rows) == len(result.predictions)
        tuned = rows[rows["split"] == "tuning"]
        assert mean_task_auroc(
            tuned["task"].tolist(), tuned["label"].to_numpy(), tuned["score"].to_numpy()
        ) == pytest.approx(per_seed[seed])
    mine = seeds[seeds["seed"] == best_seed].drop(columns="seed").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, result.predictions.reset_index(drop=True))
    held = seeds[seeds["split"] == "held_out"].pivot_table(
        index=["subject_id", "prediction_time", "task"], columns="seed", values="score"
    )
    assert len(held) == len(held_out) and (held[0] != held[1]).any()
    logged = {a.path for a in client.list_artifacts(result.run_id)}
    assert "seed_predictions.parquet" in logged
    alone = finetune(
        path,
        vocab,
        pretrained_dir,
        FinetuneConfig(seed=best_seed, **settings),
        output_dir=tmp_path / "alone",
        **tracking,
    )
    np.testing.assert_allclose(
        alone.predictions.query("split == 'tuning'").score.to_numpy(), kept, rtol=1e-5, atol=1e-6
    )


def test_restarts_need_a_tuning_split_to_choose_on(corpus, tmp_path) -> None:
    _, vocab, labels, pretrained_dir = corpus
    table = pq.read_table(labels)
    no_tuning = tmp_path / "labels.parquet"
    pq.write_table(table.filter(pc.not_equal(table["split"], "tuning")), no_tuning)
    with pytest.raises(ValueError, match="restarts=2 picks the seed best on the tuning split"):
        finetune(
            no_tuning,
            vocab,
            pretrained_dir,
            FinetuneConfig(restarts=2, progress_bar=False),
            output_dir=tmp_path / "out",
            **_tracking(tmp_path),
        )
    with pytest.raises(ValueError, match="restarts must be at least 1, not 0"):
        FinetuneConfig(restarts=0)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_task_loss_weights_scale_each_rows_loss_by_its_task(corpus) -> None:
    _, _, labels, pretrained_dir = corpus
    train = SequenceDataset(labels, splits=["train"], tasks=TASKS)
    rows = [next(i for i in range(len(train)) if train.tasks[i] == t) for t in TASKS]
    batch = collate_sequences([train[i] for i in rows])
    assert batch["task"] == TASKS
    torch.manual_seed(1)
    model = EHRMambaForMultitask.from_pretraining(
        EHRMambaForPretraining.from_pretrained(pretrained_dir)
    ).eval()
    inputs = {k: batch[k] for k in MODEL_INPUTS}
    with torch.no_grad():
        logits = model(**inputs).logits.float()
        per_row = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, batch["labels"].float(), reduction="none"
        )

        def step_loss(weights: dict[str, float]) -> float:
            module = FinetuningModule(model, FinetuneConfig(task_loss_weights=weights))
            return float(module.training_step(batch, 0))

        # unweighted: the model's own loss; hypertension at 3: its row counts three times
        assert step_loss({}) == pytest.approx(float(model(**inputs, labels=batch["labels"]).loss))
        weighted = (per_row[0] + per_row[1] + 3 * per_row[2]) / 3
        assert step_loss({"hypertension_1y": 3.0}) == pytest.approx(float(weighted))
        assert float(weighted) != pytest.approx(float(per_row.mean()))

    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="task_loss_weights must be positive and finite"):
            FinetuneConfig(task_loss_weights={"hypertension_1y": bad})


def test_task_loss_weights_must_name_tasks_the_run_trains(corpus, tmp_path) -> None:
    _, vocab, labels, pretrained_dir = corpus
    with pytest.raises(ValueError, match=r"names task\(s\) \['mortality_1y'\] not trained here"):
        finetune(
            labels,
            vocab,
            pretrained_dir,
            FinetuneConfig(task_loss_weights={"mortality_1y": 2.0}, progress_bar=False),
            output_dir=tmp_path / "out",
            **_tracking(tmp_path),
        )


def test_a_failed_restart_marks_the_parent_run_failed(corpus, tmp_path) -> None:
    _, vocab, labels, _ = corpus
    tracking = _tracking(tmp_path)
    with pytest.raises(OSError):
        finetune(
            labels,
            vocab,
            tmp_path / "no-pretrained-model",
            FinetuneConfig(restarts=2, progress_bar=False),
            output_dir=tmp_path / "out",
            **tracking,
        )
    client = mlflow.MlflowClient(tracking["tracking_uri"])
    experiment = client.get_experiment_by_name(FinetuneConfig().experiment)
    (parent,) = client.search_runs([experiment.experiment_id])
    assert parent.info.status == "FAILED"


def test_shared_state_scoring_equals_one_scan_per_task(corpus) -> None:
    _, vocab, _, pretrained_dir = corpus
    torch.manual_seed(1)
    model = EHRMambaForMultitask.from_pretraining(
        EHRMambaForPretraining.from_pretrained(pretrained_dir)
    ).eval()
    from ehrmamba.finetune import FinetuneSettings

    events = pd.DataFrame(
        {
            "subject_id": 1,
            "time": pd.to_datetime(
                ["1960-01-01", "2020-01-01", "2020-01-01", "2020-01-03", "2020-02-01"]
            ),
            "code": [
                "MEDS_BIRTH",
                "VISIT/inpatient",
                "SNOMED/38341003",
                "VISIT_END/inpatient",
                "LOINC/2160-0",
            ],
            "numeric_value": [None, None, None, None, 1.1],
            "unit": [None, None, None, None, "mg/dL"],
            "visit_id": [None, "v1", "v1", "v1", None],
            "event_type": ["birth", "visit_start", "condition", "visit_end", "lab"],
        }
    )
    end = FinetunedModel(model, vocab, FinetuneSettings(tasks=TASKS, max_len=MAX_LEN))
    start = FinetunedModel(
        model, vocab, FinetuneSettings(tasks=TASKS, max_len=MAX_LEN, task_token_position="start")
    )
    shared = end.predict_events(events).risks
    # a full forward per task with the task token appended gives the same risks
    from ehrmamba.tokenize import tokenize_events

    for task in TASKS:
        seq = tokenize_events(events, vocab, task=task, max_len=MAX_LEN)
        batch = {
            k: torch.as_tensor(v)
            .unsqueeze(0)
            .to(torch.float32 if v.dtype.kind == "f" else torch.long)
            for k, v in seq.items()
        }
        want = torch.sigmoid(model(**batch).logits).item()
        assert shared[task] == pytest.approx(want, rel=1e-5)
    assert set(start.predict_events(events).risks) == set(TASKS)
    with pytest.raises(ValueError, match="unknown task"):
        end.predict_events(events, tasks=["nope"])
