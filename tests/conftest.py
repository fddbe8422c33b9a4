"""Shared fixtures: the outside reference data (read in place) and isolated platform homes."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SYNTHEA_R4 = SHARED_DATA / "synthea-r4"
BULK_NDJSON_10 = SHARED_DATA / "bulk-ndjson-10"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"reference data {path} is missing: tests read ../shared/data in place")
    return path


@pytest.fixture(scope="session")
def synthea_r4() -> Path:
    return _require(SYNTHEA_R4)


@pytest.fixture(scope="session")
def bulk_ndjson_10() -> Path:
    return _require(BULK_NDJSON_10)


@pytest.fixture
def platform_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh EHRMAMBA_HOME for one test, so no test sees another's warehouse."""
    home = tmp_path / "home"
    monkeypatch.setenv("EHRMAMBA_HOME", str(home))
    monkeypatch.delenv("EHRMAMBA_FHIR_SOURCE", raising=False)
    monkeypatch.delenv("EHRMAMBA_MEDS_SOURCE", raising=False)
    return home


@pytest.fixture(scope="session")
def synthetic_warehouse(tmp_path_factory: pytest.TempPathFactory):
    """``build(n_patients, seed) -> Path``: the DuckDB file of a synthetic cohort after ingestion
    and dbt's models (its tests run in their own modules), built once per session and shared.

    Modules that need the same cohort share one file, so they must only read it.
    """
    from ehrmamba.fhir import ingest
    from ehrmamba.synth import write_cohort
    from orchestration.dbt_project import run_dbt

    built: dict[tuple[int, int], Path] = {}

    def build(n_patients: int, seed: int) -> Path:
        if (n_patients, seed) not in built:
            root = tmp_path_factory.mktemp(f"warehouse-{n_patients}-{seed}")
            write_cohort(root / "fhir", n_patients, seed=seed)
            db = root / "w.duckdb"
            ingest(root / "fhir", db)
            proc = run_dbt(
                ["build", "--quiet", "--exclude-resource-type", "test"],
                duckdb_path=db,
                target_path=root / "target",
            )
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            built[n_patients, seed] = db
        return built[n_patients, seed]

    return build
