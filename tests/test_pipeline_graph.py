"""The whole graph through Dagster: FHIR ▶ raw ▶ dbt ▶ blocking checks ▶ MEDS export.

Real DuckDB files, a real ``dbt build``, real Great Expectations suites, in-process runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import pyarrow.parquet as pq
import pytest

from ehrmamba.finetune.train import FinetuneConfig
from ehrmamba.meds_io import import_meds
from ehrmamba.settings import Settings
from ehrmamba.synth import write_cohort
from orchestration.dbt_project import run_dbt
from orchestration.presets import load_preset
from tests import fhir_builders as fb

# the module's fixture runs the whole graph, from FHIR to a built Bento, on the tiny preset
pytestmark = pytest.mark.timeout(1200)

LABEL_TASKS = [
    "fluid_electrolyte_1y",
    "hypertension_1y",
    "lipoid_1y",
    "los_1w",
    "mortality_1m",
    "readmission_1m",
]
SEQUENCE_ASSETS = {
    "tokenization/vocabulary",
    "tokenization/label_sequences",
    "tokenization/pretraining_sequences",
}


def _run(home: Path, source: Path, monkeypatch: pytest.MonkeyPatch, run_config=None):
    monkeypatch.setenv("EHRMAMBA_HOME", str(home))
    monkeypatch.setenv("EHRMAMBA_FHIR_SOURCE", str(source))
    monkeypatch.delenv("EHRMAMBA_MEDS_SOURCE", raising=False)
    from orchestration.definitions import build_definitions

    job = build_definitions().resolve_job_def("ehrmamba_main")
    return job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config=run_config or {},
        raise_on_error=False,
    )


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """The whole graph on 80 synthetic patients: enough for every stage to have data (a
    held_out split with both classes, so the first model can become the champion). MTF trains
    two seeds, so that the model evaluated, registered and served is a multi-seed parent run's."""
    home = tmp_path_factory.mktemp("clean")
    source = tmp_path_factory.mktemp("cohort")
    write_cohort(source, 80, seed=1)
    run_config = load_preset("tiny")
    run_config["ops"]["training__finetuned_model"]["config"]["restarts"] = 2
    run_config["ops"]["training__finetuned_model"]["config"]["task_loss_weights"] = {
        "mortality_1m": 2.0
    }
    with pytest.MonkeyPatch.context() as mp:
        result = _run(home, source, mp, run_config)
    return home, result


def test_full_graph_materializes_and_exports_a_valid_meds_dataset(clean_run) -> None:
    home, result = clean_run
    assert result.success
    done = _materialized(result)
    assert {
        "raw/fhir_resources",
        "marts/meds_events",
        "meds/dataset",
        "tokenization/vocabulary",
        "tokenization/pretraining_sequences",
        "training/pretrained_model",
        "tokenization/label_sequences",
        "training/finetuned_model",
        "training/single_task_models",
        "evaluation/model_evaluation",
        "evaluation/registered_model",
        "serving/bento",
    } <= done
    assert {f"marts/labels__{t}" for t in LABEL_TASKS} <= done
    # the first evaluated model has no champion to beat: it becomes the champion
    gate = result.asset_materializations_for_node("evaluation__registered_model")[0].metadata
    assert gate["alias"].value == "champion" and gate["promoted"].value is True
    # the evaluated and registered model is the MTF parent run's, which names the seed it kept
    mtf = result.asset_materializations_for_node("training__finetuned_model")[0].metadata
    assert mtf["kept_seed"].value in (0, 1)
    # the launchpad's task_loss_weights reached the MTF runs (parent and both seeds), and no
    # single-task run
    client = mlflow.MlflowClient(Settings.from_env().with_home(home).mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(FinetuneConfig().experiment)
    weights: dict[str, list[str]] = {}
    for run in client.search_runs([experiment.experiment_id]):
        params = run.data.params
        weights.setdefault(params["finetune.name"], []).append(params["finetune.task_loss_weights"])
    assert weights.pop("ehrmamba-mtf") == ['{"mortality_1m": 2.0}'] * 3
    assert weights and all(w == ["{}"] for w in weights.values())
    report = result.asset_materializations_for_node("evaluation__model_evaluation")[0].metadata
    for model in ("ehrmamba-mtf", "ehrmamba-single-task", "xgboost_counts", "logreg_counts"):
        assert model in report["report"].value
    assert "| ehrmamba-mtf − ehrmamba-single-task | mortality_1m |" in report["report"].value
    assert "| ehrmamba-mtf − xgboost_counts | mortality_1m |" in report["report"].value
    # MTF trained two seeds and single-task one: the report judges the recipes over seeds too
    assert "| seeds | gap over seeds | reading over seeds |" in report["report"].value
    assert re.search(
        r"\| ehrmamba-mtf − ehrmamba-single-task \| \w+ \|.*\| 2 v 1 \| -?\d\.\d{4} \[",
        report["report"].value,
    )
    assert report["mlflow_run_id"].value == mtf["mlflow_run_id"].value
    checks = _checks(result)
    assert checks["meds_events_expectations"].passed
    assert checks["subject_splits_expectations"].passed
    # a small cohort may leave a task without positives: reported as unsupported, never blocking
    for task in LABEL_TASKS:
        check = checks[f"labels__{task}_expectations"]
        assert check.passed or (
            check.severity == dg.AssetCheckSeverity.WARN
            and "cannot support the task" in check.description
        ), task

    meds_root = home / "meds"
    assert sorted(p.name for p in (meds_root / "metadata").iterdir()) == [
        "codes.parquet",
        "dataset.json",
        "subject_splits.parquet",
    ]
    data_files = sorted((meds_root / "data").glob("*.parquet"))
    assert data_files, "no data shards"
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        events = con.execute("SELECT count(*) FROM marts.meds_events").fetchone()[0]
        codes = con.execute("SELECT count(*) FROM marts.meds_codes").fetchone()[0]
    assert sum(pq.read_metadata(p).num_rows for p in data_files) == events
    assert pq.read_metadata(meds_root / "metadata" / "codes.parquet").num_rows == codes
    assert json.loads((meds_root / "metadata" / "dataset.json").read_text())["etl_name"] == (
        "ehrmamba-platform"
    )
    assert sorted(p.name for p in (meds_root / "labels").iterdir()) == LABEL_TASKS


def test_meds_export_round_trips_through_import(clean_run, tmp_path: Path) -> None:
    """Export, import into a fresh warehouse, rebuild from MEDS: same events, same labels."""
    home, _ = clean_run
    db = tmp_path / "from_meds.duckdb"
    with duckdb.connect(str(db)) as con:
        counts = import_meds(con, home / "meds")
    assert counts["events"] > 0
    proc = run_dbt(
        ["build", "--quiet"],
        duckdb_path=db,
        target_path=tmp_path / "target",
        dbt_vars={"events_source": "meds"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    tables = ["meds_events", "subject_splits", *[f"labels__{t}" for t in LABEL_TASKS]]
    with duckdb.connect(str(db)) as con:
        con.execute(f"ATTACH '{home / 'warehouse.duckdb'}' AS orig (READ_ONLY)")
        for table in tables:
            cols = "subject_id, time, code, numeric_value, text_value, unit, visit_id, event_type"
            if table.startswith("labels__"):
                cols = "subject_id, prediction_time, boolean_value"
            elif table == "subject_splits":
                cols = "subject_id, split"
            only_orig, only_new, n = con.execute(
                f"""
                SELECT
                    (SELECT count(*) FROM (SELECT {cols} FROM orig.marts.{table}
                                           EXCEPT ALL SELECT {cols} FROM marts.{table})),
                    (SELECT count(*) FROM (SELECT {cols} FROM marts.{table}
                                           EXCEPT ALL SELECT {cols} FROM orig.marts.{table})),
                    (SELECT count(*) FROM marts.{table})
                """
            ).fetchone()
            assert (only_orig, only_new) == (0, 0), table
            assert n > 0, table


def _corrupted_cohort(root: Path) -> Path:
    """40 plain patients, plus the three faults the blocking checks must catch."""
    root.mkdir()
    resources: list[dict] = []
    for i in range(40):
        pid = f"p{i:03d}"
        resources += [
            fb.patient(pid),
            fb.encounter(f"e{i:03d}", f"Patient/{pid}"),
            _creatinine(f"o{i:03d}", pid, 1.1, "2010-05-02T08:00:00Z"),
        ]
    # a lab value far outside what a body can hold
    resources.append(_creatinine("bad-lab", "p001", 500.0, "2010-05-02T09:00:00Z"))
    # an encounter a month after the patient's death
    resources[resources.index(fb.patient("p002"))]["deceasedDateTime"] = "2011-01-01T00:00:00Z"
    late = fb.encounter("e-late", "Patient/p002")
    late["period"] = {"start": "2011-02-01T10:00:00Z", "end": "2011-02-01T11:00:00Z"}
    resources.append(late)
    fb.write_ndjson(root / "cohort.ndjson", resources)
    return root


def _creatinine(oid: str, pid: str, value: float, when: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/e{pid[1:]}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "mg/dL",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
    }


def test_corrupted_data_fails_the_right_blocking_checks_and_stops_downstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _corrupted_cohort(tmp_path / "fhir")
    # a bad split: only a fifth of the subjects in train instead of 80%
    run_config = {"ops": {"dbt_models": {"config": {"vars": {"split_train_percent": "20"}}}}}
    result = _run(tmp_path / "home", source, monkeypatch, run_config)

    assert not result.success
    checks = _checks(result)
    events = checks["meds_events_expectations"]
    assert not events.passed and events.severity == dg.AssetCheckSeverity.ERROR
    failures = events.metadata["failures"].value
    assert failures["LOINC/2160-0 [mg/dL] within 0.05..30"]["failing_rows"] == 1
    assert failures["LOINC/2160-0 [mg/dL] within 0.05..30"]["rows_checked"] == 41
    after_death = failures["no event after death (tolerance 7 d)"]
    assert after_death["failing_rows"] == 2  # the visit start and end events
    assert "VISIT/inpatient" in after_death["examples"]
    assert set(failures) == {
        "LOINC/2160-0 [mg/dL] within 0.05..30",
        "no event after death (tolerance 7 d)",
    }

    splits = checks["subject_splits_expectations"]
    assert not splits.passed
    assert set(splits.metadata["failures"].value) == {
        "train share 80% ± 25.3%",
        "tuning share 10% ± 19.0%",
        "held_out share 10% ± 19.0%",
    } & set(splits.metadata["failures"].value)
    assert "train share 80% ± 25.3%" in splits.metadata["failures"].value

    # the blocking failures stopped everything downstream: no export, no tokens, no training
    done = _materialized(result)
    assert "marts/meds_events" in done
    assert not {"meds/dataset", "tokenization/vocabulary", "training/pretrained_model"} & done


def test_a_meds_dataset_can_replace_fhir_as_the_source(
    clean_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EHRMAMBA_MEDS_SOURCE swaps FHIR ingestion for a MEDS import; the rest of the graph holds.

    The run stops at the token sequences: everything after them reads only those files, and
    the FHIR run already took them through training, evaluation and the Bento. Equal sequence
    files and vocabulary versions show that the MEDS source feeds the model the same data.
    """
    home, _ = clean_run
    meds_copy = tmp_path / "meds-input"
    import shutil

    shutil.copytree(home / "meds", meds_copy)
    new_home = tmp_path / "home"
    monkeypatch.setenv("EHRMAMBA_HOME", str(new_home))
    monkeypatch.setenv("EHRMAMBA_MEDS_SOURCE", str(meds_copy))
    monkeypatch.delenv("EHRMAMBA_FHIR_SOURCE", raising=False)
    from orchestration.definitions import build_definitions

    defs = build_definitions()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "raw/meds_events_import" in keys
    assert "raw/fhir_resources" not in keys
    assert not any(k.startswith("staging/") for k in keys)
    # every asset up to the token sequences, the dbt models as one whole
    model_and_after = dg.AssetSelection.assets(dg.AssetKey(["training", "pretrained_model"]))
    upto_sequences = (dg.AssetSelection.all() - model_and_after.downstream()).resolve(
        defs.resolve_asset_graph()
    )
    job = defs.resolve_job_def("ehrmamba_main")
    tiny = load_preset("tiny")
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config={
            "ops": {k: v for k, v in tiny["ops"].items() if k.startswith("tokenization__")}
        },
        asset_selection=sorted(upto_sequences),
        raise_on_error=False,
    )
    assert result.success
    done = _materialized(result)
    assert {"raw/meds_events_import", "marts/meds_events", *SEQUENCE_ASSETS} <= done
    assert not {"training/pretrained_model", "serving/bento"} & done
    for name in ("labels.parquet", "pretraining.parquet"):
        ours = pq.read_table(new_home / "artifacts" / "sequences" / name)
        theirs = pq.read_table(home / "artifacts" / "sequences" / name)
        assert ours.num_rows > 0 and ours.equals(theirs), name
    vocab = (new_home / "artifacts" / "vocabulary" / "current.json").read_text()
    assert (
        json.loads(vocab)["version"]
        == json.loads((home / "artifacts" / "vocabulary" / "current.json").read_text())["version"]
    )
    with duckdb.connect(str(new_home / "warehouse.duckdb"), read_only=True) as con:
        con.execute(f"ATTACH '{home / 'warehouse.duckdb'}' AS orig (READ_ONLY)")
        same = con.execute(
            "SELECT (SELECT count(*) FROM marts.meds_events) = "
            "(SELECT count(*) FROM orig.marts.meds_events), "
            "(SELECT count(*) FROM (SELECT * FROM orig.marts.labels__readmission_1m "
            "EXCEPT ALL SELECT * FROM marts.labels__readmission_1m))"
        ).fetchone()
    assert same == (True, 0)
