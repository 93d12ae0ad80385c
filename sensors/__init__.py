"""Sensors: new crawl data → a language's sources, shard and language runs; dataset growth → retraining; new
checkpoint → evaluation → report; failed training → a clear log line."""

from mella_assets.sensors.evaluation import (
    evaluation_after_training_sensor,
    report_after_evaluation_sensor,
    training_failure_sensor,
)
from mella_assets.sensors.landing import crawl_landing_sensor
from mella_assets.sensors.phases import language_phases_sensor
from mella_assets.sensors.retraining import retraining_sensor

ALL_SENSORS = [
    crawl_landing_sensor,
    language_phases_sensor,
    retraining_sensor,
    evaluation_after_training_sensor,
    report_after_evaluation_sensor,
    training_failure_sensor,
]

__all__ = [
    "ALL_SENSORS",
    "crawl_landing_sensor",
    "evaluation_after_training_sensor",
    "language_phases_sensor",
    "report_after_evaluation_sensor",
    "retraining_sensor",
    "training_failure_sensor",
]
