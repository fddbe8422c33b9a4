"""Weekly retraining: the training assets and everything downstream of them, on a cron.

Data changes reach the model through the FHIR landing sensor (``orchestration/sensors.py``);
this schedule retrains on the data already materialized, so a model follows a new code version,
a new preset or simply more optimisation steps without anyone clicking. Every run carries its
run config (the same one the launchpad edits), so what a scheduled run did is in its record.
"""

import dagster as dg

RETRAINING_JOB = "ehrmamba_retraining"
RETRAINING_CRON = "0 3 * * 0"  # Sundays 03:00 UTC, when the hospital's data loads are done
TRAINING_OP = "training__pretrained_model"

RETRAINING_SELECTION = dg.AssetSelection.groups("training").downstream()
"""The training group (pretraining, finetuning) and everything that depends on it
(evaluation, the Bento): a retrained model never ships without being evaluated."""

RETRAINING_RUN_CONFIG: dict = {
    "ops": {
        TRAINING_OP: {
            "config": {
                "preset": "small",
                "max_epochs": 1,
                "max_steps": 100,
                "learning_rate": 1e-3,
            }
        }
    }
}
"""The scheduled run's config; a manual run of the job starts from it in the launchpad."""

retraining_job = dg.define_asset_job(
    RETRAINING_JOB,
    selection=RETRAINING_SELECTION,
    config=RETRAINING_RUN_CONFIG,
    description="Retrain on the materialized sequences, then evaluate and package downstream.",
    executor_def=dg.in_process_executor,  # one DuckDB writer at a time
)


@dg.schedule(
    job=retraining_job,
    cron_schedule=RETRAINING_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly retraining of the model and everything downstream of it.",
)
def weekly_retraining(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    week = context.scheduled_execution_time.strftime("%G-W%V")
    return dg.RunRequest(
        run_key=f"retraining-{week}",
        run_config=RETRAINING_RUN_CONFIG,
        tags={"ehrmamba/trigger": "weekly_retraining", "ehrmamba/week": week},
    )


def schedule_definitions() -> dg.Definitions:
    """The retraining job and its schedule, merged into the platform's definitions."""
    return dg.Definitions(jobs=[retraining_job], schedules=[weekly_retraining])
