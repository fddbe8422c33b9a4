"""MLflow model registry with a promotion gate: a new model serves only if it is better.

Every evaluated model is registered as a new version of a registered model, its held_out metrics
stored as version tags (so the comparison a later version faces is exactly the one recorded
here, even if the runs are deleted). The version then takes one alias:

- ``champion`` (what serving loads, ``models:/<name>@champion``) when there is no champion yet,
  or when it beats the current champion: its mean AUROC over the champion's tasks is strictly
  higher, AND on no task is it worse beyond the interval, where *worse* means its AUROC lies
  below the lower bound of the champion's bootstrap interval on that task;
- ``challenger`` otherwise: kept and comparable, not served.

The decision carries a sentence saying why, which the orchestration layer shows as asset
metadata. One writer at a time is assumed (the read of the champion and the alias move are not
one transaction), which a single Dagster asset guarantees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ehrmamba.settings import Settings

REGISTERED_MODEL_NAME = "ehrmamba"  # the registered model the platform trains and serves
CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "eval."
_TAGGED_METRICS = ("auroc", "auroc_low", "auroc_high", "auprc", "f1", "ece", "n", "n_positive")


@dataclass(frozen=True)
class TaskScore:
    """A task's held_out AUROC and its bootstrap interval."""

    auroc: float
    low: float
    high: float


@dataclass(frozen=True)
class TaskComparison:
    task: str
    new_auroc: float
    champion_auroc: float
    champion_low: float
    champion_high: float

    @property
    def worse(self) -> bool:
        """Worse beyond the interval: below the lower bound of the champion's interval."""
        return self.new_auroc < self.champion_low


@dataclass(frozen=True)
class GateOutcome:
    """The pure comparison of a new model's task scores with the champion's."""

    promote: bool
    reason: str
    new_mean_auroc: float
    champion_mean_auroc: float | None
    comparisons: tuple[TaskComparison, ...] = ()


@dataclass(frozen=True)
class PromotionDecision:
    """What happened to a newly registered version, and why."""

    model_name: str
    version: str
    alias: str
    promoted: bool
    reason: str
    new_mean_auroc: float
    champion_version: str | None
    champion_mean_auroc: float | None
    comparisons: tuple[TaskComparison, ...] = field(default_factory=tuple)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    def as_metadata(self) -> dict[str, object]:
        """Flat, JSON-friendly fields (e.g. for Dagster asset metadata)."""
        out = {k: v for k, v in asdict(self).items() if k != "comparisons"}
        out["model_uri"] = self.model_uri
        out["comparisons"] = [{**asdict(c), "worse": c.worse} for c in self.comparisons]
        return out


# ------------------------------------------------------------------------------------------------
# Scores in and out of tags
# ------------------------------------------------------------------------------------------------
def task_scores(metrics: pd.DataFrame) -> dict[str, TaskScore]:
    """AUROC and interval per evaluable task, from one model's evaluation metric rows."""
    if "model" in metrics.columns and metrics["model"].nunique() > 1:
        raise ValueError(
            f"metrics hold several models {sorted(metrics['model'].unique())}; pass one "
            "(EvaluationResult.model_metrics(name))"
        )
    rows = metrics[metrics["evaluable"].astype(bool)] if "evaluable" in metrics else metrics
    return {
        str(r.task): TaskScore(float(r.auroc), float(r.auroc_low), float(r.auroc_high))
        for r in rows.itertuples(index=False)
        if math.isfinite(r.auroc)
    }


def _fmt(value: object) -> str:
    return repr(float(value)) if isinstance(value, float | int) else str(value)


def metric_tags(metrics: pd.DataFrame) -> dict[str, str]:
    """Version tags holding one model's evaluation: ``eval.<metric>.<task>`` per evaluable
    task, ``eval.tasks`` and ``eval.mean_auroc``."""
    scores = task_scores(metrics)
    tags: dict[str, str] = {f"{TAG_PREFIX}tasks": ",".join(sorted(scores))}
    for r in metrics.itertuples(index=False):
        if str(r.task) not in scores:
            continue
        for name in _TAGGED_METRICS:
            value = getattr(r, name, None)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                tags[f"{TAG_PREFIX}{name}.{r.task}"] = _fmt(value)
    if scores:
        mean = sum(s.auroc for s in scores.values()) / len(scores)
        tags[f"{TAG_PREFIX}mean_auroc"] = _fmt(mean)
    if "model" in metrics.columns and len(metrics):
        tags[f"{TAG_PREFIX}model"] = str(metrics["model"].iloc[0])
    return tags


def scores_from_tags(tags: Mapping[str, str]) -> dict[str, TaskScore]:
    """The task scores a registered version carries (empty when it was never evaluated)."""
    listed = tags.get(f"{TAG_PREFIX}tasks", "")
    out = {}
    for task in filter(None, listed.split(",")):
        try:
            out[task] = TaskScore(
                float(tags[f"{TAG_PREFIX}auroc.{task}"]),
                float(tags[f"{TAG_PREFIX}auroc_low.{task}"]),
                float(tags[f"{TAG_PREFIX}auroc_high.{task}"]),
            )
        except KeyError:
            continue
    return out


# ------------------------------------------------------------------------------------------------
# The gate
# ------------------------------------------------------------------------------------------------
def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def compare_to_champion(
    new: Mapping[str, TaskScore],
    champion: Mapping[str, TaskScore] | None,
    *,
    champion_label: str = "the champion",
) -> GateOutcome:
    """Decide promotion from task scores alone (no registry access).

    The comparison runs over the champion's tasks: the new model must have been evaluated on
    each of them. Tasks only the new model has are not part of the means.
    """
    new_mean_all = _mean([s.auroc for s in new.values()])
    if not new:
        return GateOutcome(
            False, "no task could be evaluated, so it cannot be compared", new_mean_all, None
        )
    if champion is None:
        return GateOutcome(
            True,
            f"there is no champion yet (mean AUROC {new_mean_all:.3f} over {len(new)} tasks)",
            new_mean_all,
            None,
        )
    if not champion:
        return GateOutcome(
            False,
            f"{champion_label} carries no evaluation tags ({TAG_PREFIX}auroc.<task>), so there "
            "is nothing to compare with; evaluate it or move the alias by hand",
            new_mean_all,
            None,
        )
    missing = sorted(set(champion) - set(new))
    if missing:
        return GateOutcome(
            False,
            f"it was not evaluated on {', '.join(missing)}, which {champion_label} was",
            new_mean_all,
            _mean([s.auroc for s in champion.values()]),
        )
    tasks = sorted(champion)
    comparisons = tuple(
        TaskComparison(
            task, new[task].auroc, champion[task].auroc, champion[task].low, champion[task].high
        )
        for task in tasks
    )
    new_mean = _mean([c.new_auroc for c in comparisons])
    champ_mean = _mean([c.champion_auroc for c in comparisons])
    beats = new_mean > champ_mean
    worse = [c for c in comparisons if c.worse]
    means = (
        f"mean AUROC {new_mean:.3f} over {len(tasks)} tasks "
        f"{'beats' if beats else 'does not beat'} {champion_label}'s {champ_mean:.3f}"
    )
    worse_text = "; ".join(
        f"{c.task} AUROC {c.new_auroc:.3f} is below {champion_label}'s interval "
        f"[{c.champion_low:.3f}, {c.champion_high:.3f}]"
        for c in worse
    )
    if beats and not worse:
        reason = f"{means}, and no task is below {champion_label}'s interval"
    elif beats:
        reason = f"{means}, but {worse_text}"
    elif worse:
        reason = f"{means}, and {worse_text}"
    else:
        reason = means
    extra = sorted(set(new) - set(champion))
    if extra:
        reason += f" (not compared: {', '.join(extra)}, which {champion_label} lacks)"
    return GateOutcome(beats and not worse, reason, new_mean, champ_mean, comparisons)


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------
def _client(tracking_uri: str | None, registry_uri: str | None) -> mlflow.MlflowClient:
    uri = tracking_uri or Settings.from_env().mlflow_tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=registry_uri or uri)


def get_alias_version(
    client: mlflow.MlflowClient, name: str, alias: str = CHAMPION
) -> ModelVersion | None:
    """The version holding ``alias``, or None (also when the registered model does not exist)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise


def register_evaluated_model(
    name: str,
    run_id: str,
    artifact_path: str,
    metrics: pd.DataFrame,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> PromotionDecision:
    """Register ``runs:/<run_id>/<artifact_path>`` as a new version of ``name`` with its
    evaluation as tags, then apply the gate and move ``champion`` or ``challenger`` to it.

    ``metrics`` are one model's rows of :class:`ehrmamba.evaluate.EvaluationResult.metrics`
    (``result.model_metrics("<model>")``). ``tracking_uri`` defaults to the settings' store
    (``Settings.from_env().mlflow_tracking_uri``). The decision is also written to the version
    (tags ``gate.*`` and its description).
    """
    client = _client(tracking_uri, registry_uri)
    scores = task_scores(metrics)
    try:
        client.create_registered_model(
            name, description="EHRMamba models; alias champion is served, challenger is not."
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    champion = get_alias_version(client, name, CHAMPION)
    version = client.create_model_version(
        name,
        source=f"runs:/{run_id}/{artifact_path}",
        run_id=run_id,
        tags={**metric_tags(metrics), **dict(extra_tags or {})},
    )
    label = f"champion version {champion.version}" if champion else "the champion"
    outcome = compare_to_champion(
        scores, scores_from_tags(champion.tags) if champion else None, champion_label=label
    )
    alias = CHAMPION if outcome.promote else CHALLENGER
    verdict = "becomes champion" if outcome.promote else "stays challenger"
    reason = f"version {version.version} {verdict}: {outcome.reason}."
    client.set_registered_model_alias(name, alias, version.version)
    for key, value in {
        "gate.decision": alias,
        "gate.reason": reason,
        "gate.compared_to": str(champion.version) if champion else "",
    }.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.update_model_version(name, version.version, description=reason)
    if outcome.promote and champion is not None:
        client.set_model_version_tag(
            name, champion.version, "gate.superseded_by", str(version.version)
        )
    return PromotionDecision(
        model_name=name,
        version=str(version.version),
        alias=alias,
        promoted=outcome.promote,
        reason=reason,
        new_mean_auroc=outcome.new_mean_auroc,
        champion_version=str(champion.version) if champion else None,
        champion_mean_auroc=outcome.champion_mean_auroc,
        comparisons=outcome.comparisons,
    )


def download_model(
    name: str,
    dst_path: Path | str,
    *,
    alias: str = CHAMPION,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
) -> Path:
    """Download the artifact directory of the version holding ``alias`` (what serving loads).

    Resolved through this client's own URIs, so it never depends on MLflow's global registry
    URI (``mlflow.artifacts.download_artifacts("models:/...")`` does).
    """
    client = _client(tracking_uri, registry_uri)
    version = get_alias_version(client, name, alias)
    if version is None:
        raise LookupError(f"registered model {name!r} has no version with alias {alias!r}")
    prefix = f"runs:/{version.run_id}/"
    if not str(version.source).startswith(prefix):
        raise ValueError(f"version {version.version} of {name!r} has source {version.source!r}")
    dst = Path(dst_path)
    dst.mkdir(parents=True, exist_ok=True)
    artifact = str(version.source)[len(prefix) :]
    return Path(client.download_artifacts(version.run_id, artifact, str(dst)))
