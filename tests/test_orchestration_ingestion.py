"""The raw ingestion asset materializes through Dagster and reports its accounting."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from orchestration.assets.ingestion import raw_fhir_resources, raw_fhir_resources_contract
from orchestration.resources import PlatformSettings


def test_raw_asset_materializes_with_metadata_and_passing_check(
    platform_home: Path, bulk_ndjson_10: Path
) -> None:
    db = platform_home / "warehouse.duckdb"
    platform_home.mkdir(parents=True)
    resources = {
        "platform": PlatformSettings(home=str(platform_home), fhir_source=str(bulk_ndjson_10)),
        "duckdb": DuckDBResource(database=str(db)),
    }
    result = dg.materialize([raw_fhir_resources, raw_fhir_resources_contract], resources=resources)
    assert result.success
    [mat] = result.asset_materializations_for_node("raw__fhir_resources")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["rows_read"] == 7160
    assert meta["rows_landed"] == 5745
    assert meta["rows_quarantined"] == 0
    assert meta["rows_skipped"] == 1415
    assert meta["patients"] == 13
    assert meta["accounting_balanced"] is True
    assert meta["per_type"]["Procedure"]["landed"] == 2056
    [check] = result.get_asset_check_evaluations()
    assert check.passed

    # a second materialization reads nothing new and changes nothing
    again = dg.materialize([raw_fhir_resources], resources=resources)
    [mat2] = again.asset_materializations_for_node("raw__fhir_resources")
    assert mat2.metadata["files_unchanged"].value == 13
    assert mat2.metadata["rows_new"].value == 0
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.fhir_resources").fetchone()[0] == 5745


def test_contract_check_fails_on_a_resource_without_subject(
    platform_home: Path, bulk_ndjson_10: Path
) -> None:
    db = platform_home / "warehouse.duckdb"
    platform_home.mkdir(parents=True)
    resources = {
        "platform": PlatformSettings(home=str(platform_home), fhir_source=str(bulk_ndjson_10)),
        "duckdb": DuckDBResource(database=str(db)),
    }
    assert dg.materialize([raw_fhir_resources], resources=resources).success
    with duckdb.connect(str(db)) as con:
        con.execute(
            "UPDATE raw.fhir_resources SET subject_id = NULL WHERE resource_type = 'Condition'"
        )
    result = dg.materialize(
        [raw_fhir_resources, raw_fhir_resources_contract],
        resources=resources,
        raise_on_error=False,
    )
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["resources_without_subject"].value == 555
