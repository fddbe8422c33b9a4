"""Serving: the BentoML service in-process (its ASGI app) and over real HTTP (``bentoml serve``
of the Bento the Dagster asset built from the registered champion).

One small platform per module: six Synthea patients ingested and normalized by dbt, a vocabulary
fitted on them, a randomly initialised ``tiny`` multitask model with a 256-token context. The
model's own answer (``FinetunedModel.predict_events`` on the warehouse's events) is the
reference every served prediction must equal.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import duckdb
import jsonschema
import orjson
import pytest
import torch
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.riskassessment import RiskAssessment

from ehrmamba.fhir import ingest
from ehrmamba.fhir.event_chain import EventChain, EventEngine, meds_subject_id
from ehrmamba.fhir.request_bundle import read_patient_bundle
from ehrmamba.finetune.bundle import FinetunedModel, FinetuneSettings
from ehrmamba.model import EHRMambaConfig, EHRMambaForMultitask
from ehrmamba.tokenize import TokenizerConfig, fit_vocabulary
from orchestration.dbt_project import run_dbt
from serving.runtime import ModelRuntime

TOKEN = "test-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FHIR = {**AUTH, "Content-Type": "application/fhir+json"}
MAX_LEN = 256
# tokens of a record (its [CLS] included) the model reads; the task prompt takes the rest
ROOM = MAX_LEN - TokenizerConfig().task_token_repeats
MAX_BODY_MB = 4
TASKS = [
    "mortality_1m",
    "los_1w",
    "readmission_1m",
    "hypertension_1y",
    "fluid_electrolyte_1y",
    "lipoid_1y",
]
EVENT_COLUMNS = ["time", "code", "numeric_value", "text_value", "unit", "visit_id", "event_type"]


# ------------------------------------------------------------------------------------------------
# The platform: warehouse, model, servable directory
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, synthea_r4: Path) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("serving")
    fhir = root / "fhir"
    fhir.mkdir()
    patients = sorted(p for p in synthea_r4.glob("*.json.gz") if "Information" not in p.name)
    picks = [patients[i] for i in (3, 70, 140, 210, 280, 350)]
    for path in picks:
        (fhir / path.name).symlink_to(path)
    db = root / "w.duckdb"
    ingest(fhir, db, workers=1)
    proc = run_dbt(
        ["build", "--quiet", "--select", "+subject_splits", "--exclude", "resource_type:test"],
        duckdb_path=db,
        target_path=root / "target",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    chain = EventChain.from_dbt_target(root / "target", db)
    with duckdb.connect(str(db)) as con:
        vocab = fit_vocabulary(con, TokenizerConfig(max_len=MAX_LEN))
        warehouse = con.sql("SELECT * FROM marts.meds_events").df()
    torch.manual_seed(0)
    net = EHRMambaForMultitask(EHRMambaConfig.preset("tiny", vocab_size=len(vocab.tokens))).eval()
    settings = FinetuneSettings(
        tasks=TASKS, max_len=MAX_LEN, thresholds={t: 0.5 for t in TASKS}, version="run-abc"
    )
    model = FinetunedModel(net, vocab, settings)
    model.save(root / "finetuned")
    servable = ModelRuntime.save(
        root / "finetuned",
        chain,
        root / "servable",
        {"model_version": "1", "registered_model": "ehrmamba", "run_id": "run-abc"},
    )
    bodies = {}
    for path in picks:
        body = gzip.decompress(path.read_bytes())
        bodies[read_patient_bundle(body).patient_id] = body
    return SimpleNamespace(
        root=root,
        db=db,
        chain=chain,
        model=model,
        servable=servable,
        warehouse=warehouse,
        bodies=bodies,
    )


def _events(platform: SimpleNamespace, patient_id: str):
    w = platform.warehouse
    return w[w["subject_id"] == meds_subject_id(patient_id)].reset_index(drop=True)


def _expected(platform: SimpleNamespace, patient_id: str, prediction_time=None) -> dict:
    return platform.model.predict_events(
        _events(platform, patient_id), prediction_time=prediction_time
    ).risks


def _bundle(*resources: dict, type_: str = "collection") -> bytes:
    return orjson.dumps(
        {"resourceType": "Bundle", "type": type_, "entry": [{"resource": r} for r in resources]}
    )


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-02-03"}


def _condition(i: int, code: str, subject: str = "Patient/p1") -> dict:
    return {
        "resourceType": "Condition",
        "id": f"c{i}",
        "subject": {"reference": subject},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
        "recordedDate": f"201{i}-05-01",
    }


def _searchset(transaction: bytes) -> bytes:
    """The same record as a server answers Patient/$everything: a searchset, no requests."""
    doc = orjson.loads(transaction)
    for entry in doc["entry"]:
        entry.pop("request", None)
        entry["search"] = {"mode": "match"}
    return orjson.dumps({**doc, "type": "searchset", "total": len(doc["entry"])})


# ------------------------------------------------------------------------------------------------
# The FHIR-to-events path is dbt's: the engine reproduces the warehouse exactly
# ------------------------------------------------------------------------------------------------
def test_engine_events_equal_the_dbt_warehouse(platform) -> None:
    engine = EventEngine(platform.chain)
    records = [read_patient_bundle(b) for b in platform.bodies.values()]
    results = engine.events(records)
    assert len(results) == 6
    for record, result in zip(records, results, strict=True):
        got = result.events[EVENT_COLUMNS].sort_values(EVENT_COLUMNS).reset_index(drop=True)
        want = _events(platform, record.patient_id)[EVENT_COLUMNS]
        want = want.sort_values(EVENT_COLUMNS).reset_index(drop=True)
        assert len(got) == len(want) > 50
        assert got.astype(str).equals(want.astype(str)), record.patient_id
        assert result.events["subject_id"].eq(meds_subject_id(record.patient_id)).all()


def test_a_batch_scores_each_record_as_if_alone(platform) -> None:
    """Two copies of one patient in one batch share every resource id: the engine must run them
    apart, and every record's risks equal its single-record answer."""
    runtime = ModelRuntime.load(platform.servable, engines=1)
    records = [read_patient_bundle(b) for b in list(platform.bodies.values())[:3]]
    batch = [*records, records[0]]
    together = runtime.score(batch, truncate=[True] * len(batch))
    for record, scored in zip(batch, together, strict=True):
        (alone,) = runtime.score([record], truncate=[True])
        assert scored.risks == pytest.approx(alone.risks, abs=1e-6)
        assert scored.risks == pytest.approx(_expected(platform, record.patient_id), abs=1e-6)


# ------------------------------------------------------------------------------------------------
# In-process: the service's ASGI app (BentoML middleware, routes, the model service locally)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(platform):
    from starlette.testclient import TestClient

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EHRMAMBA_MODEL_DIR", str(platform.servable))
        mp.setenv("EHRMAMBA_SERVE_TOKENS", f"old-token,{TOKEN}")
        mp.setenv("EHRMAMBA_SERVE_MAX_BODY_MB", str(MAX_BODY_MB))
        from serving.service import EHRMambaService

        with TestClient(EHRMambaService.to_asgi()) as test_client:
            yield test_client


def _outcome(response) -> OperationOutcome:
    assert response.headers["content-type"].startswith("application/fhir+json")
    return OperationOutcome.model_validate(response.json())


def test_predict_equals_the_models_own_output(platform, client) -> None:
    for patient_id, body in platform.bodies.items():
        response = client.post("/predict?truncate=true", content=body, headers=FHIR)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["patient"] == patient_id
        assert answer["model"]["version"] == "1"
        got = {t: r["probability"] for t, r in answer["risks"].items()}
        assert got == pytest.approx(_expected(platform, patient_id), abs=1e-6)
        last = _events(platform, patient_id)["time"].max()
        assert answer["prediction_time"] == last.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert answer["record"]["events"] == len(_events(platform, patient_id))


def test_predict_at_a_prediction_time_cuts_the_record(platform, client) -> None:
    patient_id, body = next(iter(platform.bodies.items()))
    times = _events(platform, patient_id)["time"].sort_values()
    cut = times.iloc[len(times) // 2]
    response = client.post(
        f"/predict?prediction_time={cut.isoformat()}Z&tasks=mortality_1m,lipoid_1y",
        content=body,
        headers=FHIR,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer["risks"]) == {"mortality_1m", "lipoid_1y"}
    want = _expected(platform, patient_id, prediction_time=cut.to_pydatetime())
    for task in ("mortality_1m", "lipoid_1y"):
        assert answer["risks"][task]["probability"] == pytest.approx(want[task], abs=1e-6)
    assert answer["prediction_time"] == cut.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert answer["record"]["tokens"] < MAX_LEN  # the cut record fits the context


def test_fhir_answer_is_a_valid_r4_bundle_of_risk_assessments(platform, client) -> None:
    patient_id, body = next(iter(platform.bodies.items()))
    response = client.post(
        "/predict?truncate=true", content=body, headers={**FHIR, "Accept": "application/fhir+json"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    Bundle.model_validate(bundle)
    assessments = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "RiskAssessment"
    ]
    assert len(assessments) == len(TASKS)
    want = _expected(platform, patient_id)
    for resource in assessments:
        RiskAssessment.model_validate(resource)
        task = resource["prediction"][0]["outcome"]["coding"][0]["code"]
        assert resource["subject"]["reference"] == f"Patient/{patient_id}"
        assert resource["method"]["coding"][0]["version"] == "1"
        assert resource["prediction"][0]["probabilityDecimal"] == pytest.approx(
            want[task], abs=1e-6
        )
    # the record is longer than the context: the cut is said, as a warning
    outcomes = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "OperationOutcome"
    ]
    assert any(f"most recent {ROOM} of" in i["diagnostics"] for o in outcomes for i in o["issue"])


def test_the_readme_example_bundle_is_scored(client) -> None:
    example = Path(__file__).resolve().parents[1] / "serving" / "examples" / "patient_bundle.json"
    response = client.post("/predict", content=example.read_bytes(), headers=FHIR)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["patient"] == "example-1"
    assert set(answer["risks"]) == set(TASKS)
    assert answer["prediction_time"] == "2020-03-02T09:30:00Z"  # the encounter's end


def test_a_searchset_from_patient_everything_gives_the_same_risks(platform, client) -> None:
    patient_id, body = next(iter(platform.bodies.items()))
    response = client.post("/predict?truncate=true", content=_searchset(body), headers=FHIR)
    assert response.status_code == 200, response.text
    got = {t: r["probability"] for t, r in response.json()["risks"].items()}
    assert got == pytest.approx(_expected(platform, patient_id), abs=1e-6)


def _bad_inputs(platform) -> list[tuple[str, bytes, dict, int, str, str]]:
    long_body = next(iter(platform.bodies.values()))
    return [
        (
            "invalid JSON",
            b'{"resourceType": "Bundle",',
            FHIR,
            400,
            "structure",
            "invalid JSON at line 1",
        ),
        ("a JSON array", b"[]", FHIR, 400, "invalid", "the body is an array"),
        ("not a Bundle", orjson.dumps(PATIENT), FHIR, 400, "invalid", "is a Patient, not a Bundle"),
        (
            "a message Bundle",
            _bundle(PATIENT, type_="message"),
            FHIR,
            422,
            "not-supported",
            "'message' Bundle",
        ),
        (
            "no Patient",
            _bundle(_condition(1, "38341003")),
            FHIR,
            422,
            "required",
            "no Patient resource",
        ),
        (
            "several patients",
            _bundle(PATIENT, {**PATIENT, "id": "p2"}),
            FHIR,
            422,
            "invalid",
            "holds 2 patients",
        ),
        (
            "another patient's resources",
            _bundle(PATIENT, _condition(1, "38341003", subject="Patient/p9")),
            FHIR,
            422,
            "invalid",
            "resources of 2 patients",
        ),
        (
            "unknown codes only",
            _bundle(PATIENT, *(_condition(i, f"99999900{i}") for i in range(3))),
            FHIR,
            422,
            "code-invalid",
            "none of the record's 3 coded events",
        ),
        (
            "longer than the context",
            long_body,
            FHIR,
            422,
            "too-long",
            f"the model reads at most {ROOM}",
        ),
        ("empty body", b"", FHIR, 400, "required", "no body"),
        (
            "a number beyond 64 bits",
            b'{"resourceType": "Bundle", "type": "collection", "total": 123456789012345678901}',
            FHIR,
            400,
            "structure",
            "64 bits",
        ),
        (
            "not JSON at all",
            b"hello",
            {**AUTH, "Content-Type": "text/plain"},
            415,
            "not-supported",
            "text/plain",
        ),
    ]


def test_each_bad_input_gets_its_4xx_and_an_operation_outcome(platform, client) -> None:
    for name, body, headers, status, code, words in _bad_inputs(platform):
        response = client.post("/predict", content=body, headers=headers)
        assert response.status_code == status, (name, response.text)
        issue = _outcome(response).issue[0]
        assert issue.severity == "error"
        assert issue.code == code, name
        assert words in issue.diagnostics, (name, issue.diagnostics)


def test_oversize_bodies_and_bad_parameters_get_4xx(platform, client) -> None:
    big = b" " * (MAX_BODY_MB * 2**20 + 1)
    response = client.post("/predict", content=big, headers=FHIR)
    assert response.status_code == 413
    assert _outcome(response).issue[0].code == "too-long"
    body = next(iter(platform.bodies.values()))
    for query, words in [
        ("prediction_time=yesterday", "not an ISO 8601 date-time"),
        ("truncate=maybe", "truncate"),
        ("tasks=mortality_1m,flu_1y", "unknown task(s) ['flu_1y']"),
    ]:
        response = client.post(f"/predict?{query}", content=body, headers=FHIR)
        assert response.status_code == 400, query
        assert words in _outcome(response).issue[0].diagnostics


def test_requests_need_a_bearer_token(platform, client) -> None:
    body = next(iter(platform.bodies.values()))
    for headers in (
        {"Content-Type": "application/fhir+json"},
        {"Authorization": "Bearer nope"},
        {"Authorization": TOKEN},
    ):
        response = client.post("/predict", content=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert _outcome(response).issue[0].code == "login"
    assert client.get("/cds-services").status_code == 401
    assert client.get("/readyz").status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz", headers=AUTH).status_code == 200
    old = {"Authorization": "Bearer old-token", "Content-Type": "application/fhir+json"}
    assert client.post("/predict?truncate=true", content=body, headers=old).status_code == 200


# CDS Hooks 2.0 response shapes (https://cds-hooks.org/specification/current/)
CDS_DISCOVERY = {
    "type": "object",
    "required": ["services"],
    "properties": {
        "services": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["hook", "description", "id"],
                "properties": {
                    "hook": {"type": "string"},
                    "title": {"type": "string"},
                    "description": {"type": "string"},
                    "id": {"type": "string", "pattern": "^[A-Za-z0-9._~-]+$"},
                    "prefetch": {"type": "object", "additionalProperties": {"type": "string"}},
                    "usageRequirements": {"type": "string"},
                },
            },
        }
    },
}
CDS_CARDS = {
    "type": "object",
    "required": ["cards"],
    "properties": {
        "cards": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["summary", "indicator", "source"],
                "properties": {
                    "uuid": {"type": "string"},
                    "summary": {"type": "string", "maxLength": 140},
                    "detail": {"type": "string"},
                    "indicator": {"enum": ["info", "warning", "critical"]},
                    "source": {
                        "type": "object",
                        "required": ["label"],
                        "properties": {"label": {"type": "string"}, "url": {"type": "string"}},
                    },
                    "suggestions": {"type": "array"},
                    "links": {"type": "array"},
                },
            },
        },
        "systemActions": {"type": "array"},
    },
}


def _patient_view(patient_id: str, body: bytes, **overrides) -> bytes:
    everything = orjson.loads(_searchset(body))
    patient = next(
        e["resource"] for e in everything["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    request = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": "https://ehr.example.org/fhir",
        "context": {"userId": "Practitioner/1", "patientId": patient_id},
        "prefetch": {"patient": patient, "everything": everything},
        **overrides,
    }
    return orjson.dumps(request)


def test_cds_hooks_discovery_and_patient_view_validate(platform, client) -> None:
    discovery = client.get("/cds-services", headers=AUTH)
    assert discovery.status_code == 200
    jsonschema.validate(discovery.json(), CDS_DISCOVERY)
    service = discovery.json()["services"][0]
    assert service["hook"] == "patient-view"
    assert set(service["prefetch"]) == {"patient", "everything"}

    patient_id, body = next(iter(platform.bodies.items()))
    response = client.post(
        f"/cds-services/{service['id']}", content=_patient_view(patient_id, body), headers=AUTH
    )
    assert response.status_code == 200, response.text
    cards = response.json()
    jsonschema.validate(cards, CDS_CARDS)
    (card,) = cards["cards"]
    want = _expected(platform, patient_id)
    top = max(want, key=want.get)
    assert f"{want[top]:.0%}" in card["summary"]
    assert "Events raising the risk of" in card["detail"]
    assert "model version 1" in card["source"]["label"]

    no_prefetch = client.post(
        f"/cds-services/{service['id']}",
        content=_patient_view(patient_id, body, prefetch={}),
        headers=AUTH,
    )
    assert no_prefetch.status_code == 412
    assert "prefetch.everything" in _outcome(no_prefetch).issue[0].diagnostics
    wrong_hook = client.post(
        f"/cds-services/{service['id']}",
        content=_patient_view(patient_id, body, hook="order-sign"),
        headers=AUTH,
    )
    assert wrong_hook.status_code == 400
    unknown = client.post("/cds-services/nope", content=b"{}", headers=AUTH)
    assert unknown.status_code == 404
    _outcome(unknown)


def test_forecast_and_explain_answer_for_a_synthea_patient(platform, client) -> None:
    patient_id, body = next(iter(platform.bodies.items()))
    query = "/forecast?truncate=true&samples=3&max_tokens=24&seed=3"
    forecast = client.post(query, content=body, headers=FHIR)
    assert forecast.status_code == 200, forecast.text
    answer = forecast.json()
    assert answer["patient"] == patient_id
    assert answer["samples"] == len(answer["futures"]) == 3
    events = [e for future in answer["futures"] for e in future]
    assert events and all(e["time"] >= answer["prediction_time"] for e in events)
    assert all(e["code"] in platform.model.vocab.token_to_id for e in events)
    assert client.post(query, content=body, headers=FHIR).json()["futures"] == answer["futures"]

    explain = client.post(
        "/explain?truncate=true&tasks=mortality_1m&top=4&steps=4", content=body, headers=FHIR
    )
    assert explain.status_code == 200, explain.text
    answer = explain.json()
    assert answer["risks"]["mortality_1m"] == pytest.approx(
        _expected(platform, patient_id)["mortality_1m"], abs=1e-6
    )
    drivers = answer["drivers"]["mortality_1m"]
    assert 0 < len(drivers) <= 4
    attributions = [d["attribution"] for d in drivers]
    assert attributions == sorted(attributions, reverse=True) and attributions[-1] > 0
    codes = set(_events(platform, patient_id)["code"])
    assert {d["code"] for d in drivers} <= codes


# ------------------------------------------------------------------------------------------------
# Built by the pipeline, served over real HTTP
# ------------------------------------------------------------------------------------------------
def _register_champion(platform, home: Path) -> str:
    import mlflow

    uri = f"sqlite:///{(home / 'mlflow' / 'mlflow.db').resolve()}"
    (home / "mlflow").mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment(
        "finetune", artifact_location=(home / "mlflow" / "artifacts").resolve().as_uri()
    )
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(platform.root / "finetuned"), "finetuned_model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("ehrmamba")
    version = client.create_model_version(
        "ehrmamba", source=f"runs:/{run.info.run_id}/finetuned_model", run_id=run.info.run_id
    )
    client.set_registered_model_alias("ehrmamba", "champion", version.version)
    return run.info.run_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(platform, tmp_path_factory):
    """Register the model as champion, materialize ``serving/bento``, ``bentoml serve`` it."""
    import dagster as dg

    from orchestration.assets.serving import bento
    from orchestration.resources import PlatformSettings

    home = tmp_path_factory.mktemp("home")
    run_id = _register_champion(platform, home)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = dg.materialize([bento], resources={"platform": PlatformSettings(home=str(home))})
    assert result.success
    (materialization,) = result.asset_materializations_for_node("serving__bento")
    metadata = {k: v.value for k, v in materialization.metadata.items()}

    port = _free_port()
    log = home / "serve.log"
    env = {
        **os.environ,
        "BENTOML_HOME": str(home / "bentoml"),
        "EHRMAMBA_SERVE_TOKENS": TOKEN,
        "EHRMAMBA_SERVE_MAX_BODY_MB": str(MAX_BODY_MB),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    env.pop("EHRMAMBA_MODEL_DIR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("bentoml")),
                "serve",
                metadata["bento_tag"],
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    import httpx

    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/readyz", headers=AUTH, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield SimpleNamespace(base=base, log=log, metadata=metadata, run_id=run_id, home=home)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_the_bento_is_built_from_the_champion(served) -> None:
    meta = served.metadata
    assert meta["model_version"] == "1"
    assert meta["alias"] == "champion"
    assert meta["mlflow_run_id"] == served.run_id
    bento_yaml = (Path(meta["bento_path"]) / "bento.yaml").read_text()
    assert re.search(r"model_version: ['\"]?1['\"]?$", bento_yaml, re.M)
    assert f"run_id: {served.run_id}" in bento_yaml.replace("'", "").replace('"', "")
    assert (served.home / "bentoml" / "bentos").is_dir()  # the platform's store, not the repo
    assert (Path(meta["bento_path"]) / "src" / "serving" / "service.py").is_file()


@pytest.mark.slow
def test_synthea_bundles_round_trip_over_http_in_batches(platform, served) -> None:
    import httpx

    def post(item):
        patient_id, body = item
        response = httpx.post(
            f"{served.base}/predict?truncate=true", content=body, headers=FHIR, timeout=120
        )
        return patient_id, response

    items = list(platform.bodies.items()) * 2
    with ThreadPoolExecutor(len(items)) as pool:
        results = list(pool.map(post, items))
    for patient_id, response in results:
        assert response.status_code == 200, response.text
        answer = response.json()
        got = {t: r["probability"] for t, r in answer["risks"].items()}
        assert got == pytest.approx(_expected(platform, patient_id), abs=1e-6)
        Bundle.model_validate(answer["bundle"])
    metrics = httpx.get(f"{served.base}/metrics", headers=AUTH, timeout=30).text
    sizes = re.findall(
        r'adaptive_batch_size_sum\{[^}]*method_name="score"[^}]*\} ([0-9.e+]+)', metrics
    )
    counts = re.findall(
        r'adaptive_batch_size_count\{[^}]*method_name="score"[^}]*\} ([0-9.e+]+)', metrics
    )
    # BentoML's metrics (all the server's processes): the model's score API ran in batches,
    # the 12 concurrent requests in fewer batches than requests
    assert sizes and counts, metrics[:2000]
    requests, batches = sum(map(float, sizes)), sum(map(float, counts))  # over the workers
    assert requests >= 12 and batches < requests


@pytest.mark.slow
def test_errors_and_security_over_http(platform, served) -> None:
    import httpx

    body = next(iter(platform.bodies.values()))
    assert httpx.get(f"{served.base}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{served.base}/metrics", timeout=10).status_code == 401
    response = httpx.post(f"{served.base}/predict", content=body, timeout=30)
    assert response.status_code == 401
    _outcome(response)
    for name, bad, headers, status, _code, words in _bad_inputs(platform):
        response = httpx.post(f"{served.base}/predict", content=bad, headers=headers, timeout=60)
        assert response.status_code == status, (name, response.text)
        assert words in _outcome(response).issue[0].diagnostics
    big = b" " * (MAX_BODY_MB * 2**20 + 10)
    response = httpx.post(f"{served.base}/predict", content=big, headers=FHIR, timeout=30)
    assert response.status_code == 413

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(MAX_BODY_MB + 1):
            yield b" " * 2**20

    response = httpx.post(f"{served.base}/predict", content=chunks(), headers=FHIR, timeout=30)
    assert response.status_code == 413


@pytest.mark.slow
def test_fuzzing_the_openapi_finds_no_server_error(served) -> None:
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, given

    schemathesis.serializer.alias("application/fhir+json", "application/json")
    schema = schemathesis.openapi.from_url(f"{served.base}/openapi.json", headers=AUTH)
    failures = []
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {o.path for o in operations} >= {"/predict", "/forecast", "/explain", "/cds-services"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case) -> None:
            response = case.call(base_url=served.base, headers=AUTH, timeout=120)
            if response.status_code >= 500:
                failures.append((case.method, case.path, response.status_code, response.text[:300]))

        fuzz()
    assert not failures, failures


@pytest.mark.slow
def test_server_logs_hold_no_patient_data(platform, served) -> None:
    """Run after the HTTP tests: the whole server log holds no patient id, name or code."""
    text = served.log.read_text(errors="replace")
    assert "POST" in text or "/predict" in text  # the access log was written
    for patient_id, body in platform.bodies.items():
        assert patient_id not in text
        doc = json.loads(body)
        patient = next(
            e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient"
        )
        for name in patient.get("name", []):
            assert name["family"] not in text
        assert f'"{patient["birthDate"]}"' not in text
    assert '"resourceType"' not in text  # no FHIR content at all
