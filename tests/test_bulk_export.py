"""Pulling from a live FHIR server: Bulk Data ``$export`` against a real ``sekmet`` server.

Every test talks HTTP to a ``sekmet serve`` process on a free localhost port, loaded with the
shared reference data by transaction POSTs; nothing on the client side is replaced.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from ehrmamba.fhir import LANDED_TYPES
from ehrmamba.fhir.bulk_export import (
    BulkAuthError,
    BulkExportClient,
    BulkExportError,
    ExportRequest,
    PollPolicy,
    RetryPolicy,
)
from ehrmamba.fhir.smart_auth import BearerToken, SmartBackendAuth
from orchestration.assets.ingestion import raw_fhir_resources_contract
from orchestration.assets.ingestion_fhir_server import (
    TRANSACTION_TIME_KEY,
    raw_fhir_resources_from_server,
)
from orchestration.fhir_server import FhirServerResource
from orchestration.resources import PlatformSettings
from orchestration.sensors_fhir_server import fhir_server_incremental, since_run_config
from tests.fhir_builders import condition, encounter, immunization, patient
from tests.fhir_server_fixture import (
    SMART_CLIENT_ID,
    SekmetServer,
    make_private_key,
    running_server,
    synthea_files,
)

pytestmark = pytest.mark.slow


def _landed(loaded: Counter[str]) -> dict[str, int]:
    return {t: n for t, n in sorted(loaded.items()) if t in LANDED_TYPES}


@pytest.fixture(scope="module")
def smart_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_private_key(tmp_path_factory.mktemp("keys") / "client.pem")


@pytest.fixture(scope="module")
def loaded_server(tmp_path_factory, bulk_ndjson_10: Path, synthea_r4: Path, smart_key: Path):
    """bulk-ndjson-10 and five Synthea patients on one server; SMART tokens live 2 s."""
    with running_server(
        tmp_path_factory.mktemp("sekmet"), token_lifetime=2, smart_key=smart_key
    ) as server:
        loaded = server.load_ndjson_dir(bulk_ndjson_10)
        loaded += server.load_bundles(synthea_files(synthea_r4, 5))
        yield server, _landed(loaded)


def test_pull_and_ingest_lands_every_resource_the_server_holds(loaded_server, tmp_path):
    server, expected = loaded_server
    out, db = tmp_path / "export", tmp_path / "warehouse.duckdb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ehrmamba.cli",
            "pull",
            server.base_url,
            "--token",
            server.token,
            "--out",
            str(out),
            "--ingest",
            "--db",
            str(db),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "EHRMAMBA_HOME": str(tmp_path / "home")},
    )
    assert proc.returncode == 0, proc.stderr
    assert expected["Patient"] == 18 and expected["Procedure"] == 2200  # 13 + 5 patients
    # one file per exported type, counted against the manifest, nothing half-written left over
    record = json.loads((out / ".export.json").read_text())
    assert {f["resource_type"]: f["resources"] for f in record["files"]} == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".export.json", *(f"{t}.000.ndjson" for t in expected)]
    )
    assert not list(tmp_path.glob(".*partial"))
    assert f"transactionTime: {record['transactionTime']}" in proc.stdout
    assert f"{sum(expected.values()):,} resources" in proc.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        landed = dict(
            con.execute(
                "SELECT resource_type, count(*) FROM raw.fhir_resources GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        quarantined = con.execute("SELECT count(*) FROM raw.fhir_quarantine").fetchone()[0]
        no_subject = con.execute(
            "SELECT count(*) FROM raw.fhir_resources "
            "WHERE subject_id IS NULL AND resource_type <> 'Patient'"
        ).fetchone()[0]
    assert landed == expected
    assert quarantined == 0 and no_subject == 0


def test_incremental_since_pulls_only_what_changed_through_the_sensor(
    tmp_path, synthea_r4: Path, platform_home: Path
):
    with running_server(tmp_path / "sekmet") as server:
        expected = _landed(server.load_bundles(synthea_files(synthea_r4, 2)))
        platform_home.mkdir(parents=True)
        db = platform_home / "warehouse.duckdb"
        fhir_server = FhirServerResource(url=server.base_url, token=server.token)
        resources = {
            "platform": PlatformSettings(home=str(platform_home)),
            "duckdb": DuckDBResource(database=str(db)),
            "fhir_server": fhir_server,
        }
        instance = dg.DagsterInstance.ephemeral()

        def tick(cursor: str | None) -> dg.SensorResult:
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"fhir_server": fhir_server}
            )
            return fhir_server_incremental(context)

        def materialize(run_config: dict) -> dict:
            result = dg.materialize(
                [raw_fhir_resources_from_server, raw_fhir_resources_contract],
                resources=resources,
                instance=instance,
                run_config=run_config,
            )
            assert result.success
            assert all(c.passed for c in result.get_asset_check_evaluations())
            [mat] = result.asset_materializations_for_node("raw__fhir_resources")
            return {k: v.value for k, v in mat.metadata.items()}

        # no export yet: the first tick asks for everything
        first = tick(None)
        [request] = first.run_requests
        assert request.run_config == since_run_config("")
        full = materialize(request.run_config)
        assert full["rows_new"] == full["export_resources"] == sum(expected.values())
        first_time = full[TRANSACTION_TIME_KEY]

        # the cursor moves to that export's transactionTime; nothing changed, so no run
        quiet = tick(first.cursor)
        assert quiet.cursor == first_time
        assert not quiet.run_requests
        assert quiet.skip_reason.skip_message == f"nothing changed since {first_time}"

        # one new patient with three resources arrives on the server
        pid = "incremental-patient-1"
        new = [
            patient(pid),
            encounter("incremental-encounter-1", f"Patient/{pid}"),
            condition("incremental-condition-1", f"Patient/{pid}"),
            immunization("incremental-immunization-1", f"Patient/{pid}"),
        ]
        server.put_resources(new)
        with duckdb.connect(str(db), read_only=True) as con:
            before = con.execute("SELECT count(*) FROM raw.fhir_resources").fetchone()[0]

        changed = tick(quiet.cursor)
        [request] = changed.run_requests
        assert request.run_config == since_run_config(first_time)
        delta = materialize(request.run_config)
        assert delta["since"] == first_time
        assert delta["export_resources"] == 4
        assert (delta["rows_new"], delta["rows_updated"], delta["rows_skipped"]) == (4, 0, 0)
        assert delta["per_type"] == {
            t: {"exported": 1, "new": 1, "updated": 0, "quarantined": 0, "skipped": 0}
            for t in ("Condition", "Encounter", "Immunization", "Patient")
        }
        landing = Path(delta["landing_dir"])
        exported_ids = {
            json.loads(line)["id"] for f in landing.glob("*.ndjson") for line in f.open()
        }
        assert exported_ids == {r["id"] for r in new}
        with duckdb.connect(str(db), read_only=True) as con:
            after = con.execute("SELECT count(*) FROM raw.fhir_resources").fetchone()[0]
            newest = con.execute(
                "SELECT id FROM raw.fhir_resources WHERE subject_id = ? ORDER BY id", [pid]
            ).fetchall()
        assert after == before + 4
        assert [r[0] for r in newest] == sorted(r["id"] for r in new)

        settled = tick(changed.cursor)
        assert settled.cursor == delta[TRANSACTION_TIME_KEY] > first_time
        assert not settled.run_requests


def test_server_stopped_mid_poll_fails_clearly_and_lands_nothing(tmp_path):
    server = SekmetServer(tmp_path / "sekmet").start()
    try:
        client = BulkExportClient(
            server.base_url,
            BearerToken(server.token),
            retry=RetryPolicy(attempts=3, backoff_s=0.2),
            poll=PollPolicy(initial_wait_s=0.2),
        )

        def stop_server_while_polling(progress) -> None:
            if progress.phase == "in-progress":
                server.stop()

        landing = tmp_path / "landing"
        target = landing / "export-1"
        started = time.monotonic()
        with client, pytest.raises(BulkExportError) as err:
            client.export(target, progress=stop_server_while_polling)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    message = str(err.value)
    assert message.startswith("export status: GET ")
    assert "/bulk-status/" in message
    assert "failed after 3 attempts" in message
    assert "ConnectError" in message
    assert err.value.__notes__ == [
        f"export could not be cancelled on the server (DELETE {err.value.url}); "
        f"nothing was kept in {target}"
    ]
    assert elapsed < 10  # three tries, 0.2 s then 0.4 s apart, not an endless wait
    assert not target.exists()
    assert not landing.exists() or list(landing.iterdir()) == []


def test_kickoff_refused_with_an_operation_outcome_says_why(loaded_server, tmp_path):
    server, _ = loaded_server
    with (
        BulkExportClient(server.base_url, BearerToken(server.token)) as client,
        pytest.raises(BulkExportError) as err,
    ):
        client.export(tmp_path / "out", ExportRequest(level="group", group_id="no-such-group"))
    assert err.value.status == 404
    assert str(err.value) == (
        f"export kick-off: HTTP 404 from {server.base_url}/Group/no-such-group/$export"
        f"?_type={','.join(sorted(LANDED_TYPES))}: error (not-found): Group/no-such-group not found"
    )
    assert not (tmp_path / "out").exists()


def test_bad_token_is_an_auth_error(loaded_server, tmp_path):
    server, _ = loaded_server
    with (
        BulkExportClient(server.base_url, BearerToken("not-the-token")) as client,
        pytest.raises(BulkAuthError) as err,
    ):
        client.export(tmp_path / "out")
    assert err.value.status == 401
    message = str(err.value)
    assert message == (
        f"export kick-off: not authorized (HTTP 401) by {server.base_url}/$export"
        f"?_type={','.join(sorted(LANDED_TYPES))}: "
        "error (login): Invalid access token: Not enough segments"
    )


def test_smart_backend_services_renews_tokens_and_reports_server_warnings(
    loaded_server, smart_key: Path, tmp_path
):
    server, expected = loaded_server
    auth = SmartBackendAuth(server.base_url, SMART_CLIENT_ID, smart_key.read_bytes())
    request = ExportRequest(types=("Patient", "Immunization"), extra_params=(("_elements", "id"),))
    with BulkExportClient(server.base_url, auth) as client:
        first = client.export(tmp_path / "a", request)
        time.sleep(2.1)  # the server's tokens live 2 s: the next export needs a new one
        second = client.export(tmp_path / "b", request)
    assert (
        first.counts
        == second.counts
        == {
            "Immunization": expected["Immunization"],
            "Patient": expected["Patient"],
        }
    )
    assert auth.tokens_issued >= 2
    # the manifest's error[] OperationOutcome, in words
    assert first.messages == [
        "warning (not-supported): Ignored unsupported parameters: ['_elements']"
    ]

    wrong_key = make_private_key(tmp_path / "other.pem")
    impostor = SmartBackendAuth(server.base_url, SMART_CLIENT_ID, wrong_key.read_bytes())
    with (
        BulkExportClient(server.base_url, impostor) as client,
        pytest.raises(BulkAuthError) as err,
    ):
        client.export(tmp_path / "c", request)
    assert err.value.status == 401
    assert "refused client 'ehrmamba-tests' (HTTP 401)" in str(err.value)
    assert "client_assertion verification failed" in str(err.value)
