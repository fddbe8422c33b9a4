"""Serving stage: the Bento, built from the registered champion after the promotion gate.

The build runs ``python -m serving.build`` in its own process: BentoML fixes its store
(``BENTOML_HOME``) when it is imported, and the store must be the platform's
(``Settings.bentoml_home``, outside the Bento's build context), whatever this process imported.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from ehrmamba.registry import REGISTERED_MODEL_NAME
from orchestration.assets.evaluation import REGISTERED_MODEL
from orchestration.policies import FOLLOW_UPSTREAM
from orchestration.resources import PlatformSettings

BENTO = dg.AssetKey(["serving", "bento"])
REPO_ROOT = Path(__file__).resolve().parents[2]


class BentoBuildConfig(dg.Config):
    """Which registered version to package (the champion, unless asked otherwise)."""

    registered_model: str = REGISTERED_MODEL_NAME
    alias: str = "champion"


@dg.asset(
    key=BENTO,
    group_name="serving",
    kinds={"bentoml"},
    deps=[REGISTERED_MODEL],
    automation_condition=FOLLOW_UPSTREAM,
    description="The BentoML service (FHIR in, RiskAssessment / CDS Hooks out) built from the "
    "registry's champion, with its model version in the Bento's labels.",
)
def bento(
    context: dg.AssetExecutionContext, config: BentoBuildConfig, platform: PlatformSettings
) -> dg.MaterializeResult:
    settings = platform.settings()
    settings.ensure_dirs()
    env = {
        **os.environ,
        "EHRMAMBA_HOME": str(settings.home.resolve()),
        "BENTOML_HOME": str(settings.bentoml_home.resolve()),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.build",
            "--name",
            config.registered_model,
            "--alias",
            config.alias,
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise dg.Failure(
            description=f"the Bento build failed (exit {proc.returncode})",
            metadata={"stderr": dg.MetadataValue.text(proc.stderr[-5000:])},
        )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    context.log.info(
        f"Bento {result['bento_tag']} from {config.registered_model} version "
        f"{result['model_version']} ({config.alias})"
    )
    return dg.MaterializeResult(
        metadata={
            "bento_tag": result["bento_tag"],
            "bento_path": dg.MetadataValue.path(result["bento_path"]),
            "bentoml_model": result["model_tag"],
            "registered_model": result["registered_model"],
            "model_version": result["model_version"],
            "alias": result["alias"],
            "mlflow_run_id": result["run_id"],
            "event_chain_version": result["event_chain_version"],
            "vocabulary_version": result["vocabulary_version"],
            "reused_model": result["reused_model"],
            "bentoml_home": dg.MetadataValue.path(env["BENTOML_HOME"]),
            "serve": f"BENTOML_HOME={env['BENTOML_HOME']} bentoml serve {result['bento_tag']}",
        }
    )
