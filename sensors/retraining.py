"""retraining_sensor: when the dataset has grown enough since the latest checkpoint, request training (with a
cool-down kept in the cursor and a cap on concurrent training runs)."""

import json
import time

import dagster as dg

from mella_assets.lib.checkpoints import RetrainingPolicy, decide_retraining, train_rows_since_checkpoint
from mella_assets.resources.lake import Lake
from mella_assets.resources.training import Training

TRAINING_JOB = "training_job"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def retraining_policy(training: Training) -> RetrainingPolicy:
    return RetrainingPolicy(
        min_new_rows=training.retrain_min_new_rows,
        min_growth_share=training.retrain_min_growth_share,
        cooldown_seconds=training.retrain_cooldown_seconds,
        max_concurrent_runs=training.retrain_max_concurrent_runs,
    )


@dg.sensor(
    job_name=TRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests a training run once mella_dataset has gained enough train rows since the latest "
    "checkpoint (MELLA_RETRAIN_MIN_NEW_ROWS / _MIN_GROWTH_SHARE), no more often than the cool-down "
    "(MELLA_RETRAIN_COOLDOWN_SECONDS) and not while MELLA_RETRAIN_MAX_CONCURRENT training runs are active.",
)
def retraining_sensor(context: dg.SensorEvaluationContext, lake: Lake, training: Training) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    last = cursor.get("last_request_at")
    rows_now, trained_on = train_rows_since_checkpoint(lake.store)
    active = context.instance.get_runs_count(dg.RunsFilter(job_name=TRAINING_JOB, statuses=ACTIVE_STATUSES))
    decision = decide_retraining(
        train_rows_now=rows_now,
        trained_on_rows=trained_on,
        seconds_since_last_request=None if last is None else now - last,
        training_runs_in_progress=active,
        policy=retraining_policy(training),
    )
    if not decision.request:
        return dg.SensorResult(skip_reason=decision.reason, cursor=context.cursor)
    requests = int(cursor.get("requests", 0)) + 1
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"retrain-{rows_now}-{requests}",
                tags={"mella/trigger": "dataset_growth", "mella/growth": str(decision.growth)},
            )
        ],
        cursor=json.dumps({"last_request_at": now, "requests": requests, "train_rows": rows_now}),
    )
