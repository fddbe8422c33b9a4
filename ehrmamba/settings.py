"""One settings object for every path the platform touches.

Every stage (CLI, Dagster assets, tests, the Bento build) resolves its paths here so that pointing
the platform at another dataset or another home is a change of environment, never of code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_HOME = Path(".ehrmamba")
DEFAULT_SYNTH_PATIENTS = 2000
DEFAULT_SYNTH_SEED = 0


def _env_path(name: str, env: dict[str, str]) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class Settings:
    """Where the platform keeps its state, and where its FHIR comes from.

    Everything lives under ``home`` unless overridden: the DuckDB file, the MLflow store, model
    artifacts and the BentoML store. ``fhir_source`` is ``None`` for the embedded default, the
    synthetic cohort, which is generated into ``home`` on first use.
    """

    home: Path = DEFAULT_HOME
    fhir_source: Path | None = None
    meds_source: Path | None = None
    synth_patients: int = DEFAULT_SYNTH_PATIENTS
    synth_seed: int = DEFAULT_SYNTH_SEED
    duckdb_threads: int | None = None
    duckdb_memory_limit: str = "4GB"
    # A FHIR server to pull from with Bulk Data $export (replaces fhir_source when set); auth is
    # a static bearer token, or SMART Backend Services (client id + private key PEM).
    fhir_server_url: str | None = None
    fhir_server_token: str | None = field(default=None, repr=False)
    fhir_server_client_id: str | None = None
    fhir_server_private_key: Path | None = None
    fhir_server_token_url: str | None = None
    fhir_server_scope: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read ``EHRMAMBA_*`` variables; unset or empty variables keep the defaults."""
        env = dict(os.environ if env is None else env)
        threads = env.get("EHRMAMBA_DUCKDB_THREADS", "").strip()
        return cls(
            home=_env_path("EHRMAMBA_HOME", env) or DEFAULT_HOME,
            fhir_source=_env_path("EHRMAMBA_FHIR_SOURCE", env),
            meds_source=_env_path("EHRMAMBA_MEDS_SOURCE", env),
            synth_patients=int(env.get("EHRMAMBA_SYNTH_PATIENTS") or DEFAULT_SYNTH_PATIENTS),
            synth_seed=int(env.get("EHRMAMBA_SYNTH_SEED") or DEFAULT_SYNTH_SEED),
            duckdb_threads=int(threads) if threads else None,
            duckdb_memory_limit=env.get("EHRMAMBA_DUCKDB_MEMORY_LIMIT") or "4GB",
            fhir_server_url=env.get("EHRMAMBA_FHIR_SERVER_URL", "").strip() or None,
            fhir_server_token=env.get("EHRMAMBA_FHIR_SERVER_TOKEN", "").strip() or None,
            fhir_server_client_id=env.get("EHRMAMBA_FHIR_SERVER_CLIENT_ID", "").strip() or None,
            fhir_server_private_key=_env_path("EHRMAMBA_FHIR_SERVER_PRIVATE_KEY", env),
            fhir_server_token_url=env.get("EHRMAMBA_FHIR_SERVER_TOKEN_URL", "").strip() or None,
            fhir_server_scope=env.get("EHRMAMBA_FHIR_SERVER_SCOPE", "").strip() or None,
        )

    def with_home(self, home: Path) -> Settings:
        return replace(self, home=Path(home))

    @property
    def duckdb_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def fhir_landing_dir(self) -> Path:
        """Where pulls from the FHIR server land, one directory per export."""
        return self.home / "landing" / "fhir-server"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        """Any tracking server by ``MLFLOW_TRACKING_URI``; else a SQLite store under the home."""
        default = f"sqlite:///{(self.mlflow_dir / 'mlflow.db').resolve()}"
        return os.environ.get("MLFLOW_TRACKING_URI") or default

    @property
    def mlflow_artifact_location(self) -> str:
        """Where new experiments keep artifacts (MLflow would otherwise use the cwd)."""
        return (self.mlflow_dir / "artifacts").resolve().as_uri()

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def synth_dir(self) -> Path:
        """Where the default synthetic cohort is generated (keyed by size and seed)."""
        return self.home / "synthetic" / f"n{self.synth_patients}-seed{self.synth_seed}"

    def ensure_dirs(self) -> None:
        for path in (self.home, self.artifacts_dir, self.mlflow_dir, self.bentoml_home):
            path.mkdir(parents=True, exist_ok=True)
