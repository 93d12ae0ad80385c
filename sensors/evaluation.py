"""After training: evaluate every language with data on the new checkpoint, then the report once all are done;
and a clear log line for every failed training run."""

import dagster as dg

from mella_assets.jobs import evaluation_job, report_job, training_job
from mella_assets.languages import LANGUAGES
from mella_assets.lib.checkpoints import checkpoint_id, dataset_languages, read_latest_checkpoint
from mella_assets.resources.lake import Lake
from mella_assets.tables import EVALUATION_SCORES
from mella_assets.training.lake_job import resumable_jobs


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[training_job],
    request_job=evaluation_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="A successful training run → one evaluation_job run per language that has a dataset.",
)
def evaluation_after_training_sensor(context: dg.RunStatusSensorContext, lake: Lake):
    latest = read_latest_checkpoint(lake.store)
    if latest is None:
        return dg.SkipReason("training succeeded but no checkpoints/LATEST.json exists")
    ident = checkpoint_id(latest["checkpoint_key"])
    return [
        dg.RunRequest(
            run_key=f"evaluate-{ident}-{code}",
            partition_key=code,
            tags={"mella/trigger": "new_checkpoint", "mella/checkpoint": ident},
        )
        for code in dataset_languages(lake.store, list(LANGUAGES))
    ]


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[evaluation_job],
    request_job=report_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Once every language is evaluated on the latest checkpoint → one report_job run.",
)
def report_after_evaluation_sensor(context: dg.RunStatusSensorContext, lake: Lake):
    latest = read_latest_checkpoint(lake.store)
    if latest is None:
        return dg.SkipReason("no checkpoint yet")
    languages = dataset_languages(lake.store, list(LANGUAGES))
    scores = lake.read_all_languages(EVALUATION_SCORES)
    done = set()
    if not scores.is_empty() and "checkpoint_key" in scores.columns:
        done = set(scores.filter(scores["checkpoint_key"] == latest["checkpoint_key"])["language"].to_list())
    missing = [code for code in languages if code not in done]
    if missing:
        return dg.SkipReason(f"waiting for the evaluation of {', '.join(missing)}")
    ident = checkpoint_id(latest["checkpoint_key"])
    return dg.RunRequest(run_key=f"report-{ident}", tags={"mella/trigger": "evaluated", "mella/checkpoint": ident})


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
