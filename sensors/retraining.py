"""retraining_sensor: when the dataset has grown enough since the latest checkpoint, request training."""

import os

import dagster as dg

from mella_assets.lib.checkpoints import train_rows_since_checkpoint
from resources.lake import Lake

TRAINING_JOB = "training_job"


def min_new_train_rows() -> int:
    """Train rows the dataset must gain before retraining (``MELLA_RETRAIN_MIN_NEW_ROWS``, default 100)."""
    return int(os.environ.get("MELLA_RETRAIN_MIN_NEW_ROWS", "100"))


@dg.sensor(
    job_name=TRAINING_JOB,
    minimum_interval_seconds=300,  # also the cool-down between two retraining requests
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests a training run once mella_dataset has gained enough train rows since the latest "
    "checkpoint (MELLA_RETRAIN_MIN_NEW_ROWS).",
)
def retraining_sensor(context: dg.SensorEvaluationContext, lake: Lake) -> dg.SensorResult | dg.SkipReason:
    now, trained_on = train_rows_since_checkpoint(lake.store)
    growth, needed = now - trained_on, min_new_train_rows()
    if growth < needed:
        return dg.SkipReason(f"{growth} new train rows since the latest checkpoint; retraining needs {needed}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"retrain-{now}",
                tags={"mella/trigger": "dataset_growth", "mella/growth": str(growth)},
            )
        ]
    )
