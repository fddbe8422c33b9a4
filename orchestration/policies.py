"""How steps run, declared once: retries for flaky steps, automation, deployment tags.

- Retries: training (a preempted GPU node, a locked MLflow SQLite store) and dbt (a DuckDB file
  lock held by another process) fail for reasons that pass; data that fails a test does not, so
  those failures are raised with ``allow_retries=False`` where they are detected.
- Automation: derived data (dbt models, the MEDS export, tokenization) follows its upstream as
  soon as it changes (``eager``); training is expensive and follows the weekly retraining
  schedule (``orchestration/schedules.py``) or a run the FHIR landing sensor starts.
- Deployment: training steps carry Kubernetes resource tags asking for a GPU node. They are
  ignored by the local executors and read by ``dagster-k8s``'s ``k8s_job_executor``
  (``docs/scale-out.md``).
"""

import dagster as dg

TRAINING_RETRY = dg.RetryPolicy(
    max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
DBT_RETRY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL)

FOLLOW_UPSTREAM = dg.AutomationCondition.eager()
"""Materialize when any upstream asset was updated (and none is missing or in progress)."""

GPU_TRAINING_TAGS: dict[str, object] = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"},
                "limits": {"memory": "64Gi", "nvidia.com/gpu": "1"},
            }
        },
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    },
}
"""Op tags of training steps: one GPU, on a GPU node, under Dagster's Kubernetes executor."""
