"""Build the Bento from the registered champion: registry -> BentoML model -> Bento.

1. The MLflow model version holding the alias (``champion``) of the registered model
   ``ehrmamba``; its artifacts are a :class:`ehrmamba.finetune.bundle.FinetunedModel` directory.
2. The dbt FHIR-to-MEDS models compiled into an event chain (:mod:`serving.chain`).
3. Both, with their provenance, imported as ONE BentoML model (labels: registry version, run,
   vocabulary and chain versions); a model already imported from the same version and chain is
   reused.
4. The Bento built from ``serving/bentofile.yaml`` pinned to that model, the version in labels.

BentoML reads ``BENTOML_HOME`` when it is imported, so this runs as its own process
(``python -m serving.build``) with ``BENTOML_HOME`` set to ``Settings.bentoml_home``; the
Dagster asset ``serving/bento`` does exactly that.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ehrmamba.registry import CHAMPION, REGISTERED_MODEL_NAME
from ehrmamba.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
BENTOFILE = REPO_ROOT / "serving" / "bentofile.yaml"


@dataclass
class BuildResult:
    bento_tag: str
    bento_path: str
    model_tag: str
    registered_model: str
    model_version: str
    alias: str
    run_id: str
    event_chain_version: str
    vocabulary_version: str
    reused_model: bool


def _labels(info: dict[str, str]) -> dict[str, str]:
    return {k: str(v) for k, v in info.items() if v is not None}


def fetch_model(tracking_uri: str, name: str, alias: str, dst: Path) -> tuple[object, Path]:
    """The version holding ``alias`` and its artifacts downloaded under ``dst``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise LookupError(
            f"registered model {name!r} has no version with alias {alias!r} in {tracking_uri}"
        ) from exc
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=version.source, dst_path=str(dst), tracking_uri=tracking_uri
    )
    return version, Path(path)


def build(
    settings: Settings | None = None,
    *,
    name: str = REGISTERED_MODEL_NAME,
    alias: str = CHAMPION,
) -> BuildResult:
    """Registry -> BentoML model -> Bento, in the BentoML store of this process."""
    import bentoml

    from ehrmamba.finetune.bundle import FinetunedModel
    from serving.chain import compile_event_chain
    from serving.runtime import BENTO_MODEL_NAME, MODEL_TAG_ENV, ModelRuntime

    settings = settings or Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="ehrmamba-build-") as tmp:
        tmp = Path(tmp)
        version, finetuned = fetch_model(settings.mlflow_tracking_uri, name, alias, tmp / "dl")
        model = FinetunedModel.load(finetuned)
        chain = compile_event_chain()
        info = {
            "registered_model": name,
            "model_version": str(version.version),
            "alias": alias,
            "run_id": str(version.run_id or model.settings.version),
            "vocabulary_version": model.vocab.version,
            "event_chain_version": chain.version,
        }
        reused = None
        try:
            existing_models = bentoml.models.list(BENTO_MODEL_NAME)
        except bentoml.exceptions.NotFound:
            existing_models = []
        for existing in existing_models:
            labels = existing.info.labels
            if all(
                labels.get(k) == info[k]
                for k in ("registered_model", "model_version", "event_chain_version")
            ):
                reused = existing
                break
        if reused is None:
            servable = ModelRuntime.save(finetuned, chain, tmp / "servable", info)
            with bentoml.models.create(
                BENTO_MODEL_NAME, labels=_labels(info), metadata={"source": version.source}
            ) as stored:
                shutil.copytree(servable, stored.path, dirs_exist_ok=True)
            model_tag = str(stored.tag)
        else:
            model_tag = str(reused.tag)
    os.environ[MODEL_TAG_ENV] = model_tag  # the service pins exactly this model
    bento = bentoml.bentos.build_bentofile(
        str(BENTOFILE),
        build_ctx=str(REPO_ROOT),
        labels={**_labels(info), "bentoml_model": model_tag.replace(":", "-")},
    )
    return BuildResult(
        bento_tag=str(bento.tag),
        bento_path=str(bento.path),
        model_tag=model_tag,
        reused_model=reused is not None,
        **{k: info[k] for k in info if k != "registered_model"},
        registered_model=name,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=REGISTERED_MODEL_NAME, help="registered model")
    parser.add_argument("--alias", default=CHAMPION, help="alias of the version to serve")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    home = os.environ.get("BENTOML_HOME")
    if not home or Path(home).resolve() != settings.bentoml_home.resolve():
        print(
            f"BENTOML_HOME must be {settings.bentoml_home.resolve()} (Settings.bentoml_home)",
            file=sys.stderr,
        )
        return 2
    result = build(settings, name=args.name, alias=args.alias)
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
