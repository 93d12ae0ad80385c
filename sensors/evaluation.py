"""After training: the automation condition sensor that evaluates every language with data on the new checkpoint,
then the report once all are done; and a clear log line for every failed training run."""

import dagster as dg

from mella_assets.jobs import training_job
from mella_assets.resources.lake import Lake
from mella_assets.training.lake_job import resumable_jobs

# Evaluation after training and the report after the evaluations are declarative: the automation conditions on
# evaluation_scores and evaluation_report (mella_assets/evaluation/assets.py) say when, and this sensor evaluates
# them on every tick and requests the runs (one per language partition, then the report).
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=60,
    description="Evaluates the assets' automation conditions: a new checkpoint → evaluation_scores for every "
    "language with a dataset; new scores, none pending → evaluation_report.",
)


def training_failure_message(run_id: str, error: str, resumable_steps: dict[str, int]) -> str:
    """The log line of a failed training run: what failed, and whether a rerun resumes."""
    resume = (
        "; a rematerialization resumes from "
        + ", ".join(f"step {step} ({ident})" for ident, step in sorted(resumable_steps.items()))
        if resumable_steps
        else "; no resume state saved, a rerun starts from step 0"
    )
    return f"training run {run_id} failed: {error.strip() or 'no error message'}{resume}"


@dg.run_failure_sensor(
    monitored_jobs=[training_job],
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Logs every failed training run with its error and the step a rerun would resume from.",
)
def training_failure_sensor(context: dg.RunFailureSensorContext, lake: Lake) -> None:
    # Resume state lives in each training job's folder of the lake, local or S3, whichever runner trained.
    resumable = resumable_jobs(lake.store)
    error = context.failure_event.message or ""
    step_errors = [event.message or "" for event in context.get_step_failure_events()]
    message = training_failure_message(context.dagster_run.run_id, " | ".join([error, *step_errors]), resumable)
    context.log.error(message)
