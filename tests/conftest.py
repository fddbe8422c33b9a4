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
