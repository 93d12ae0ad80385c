"""Sensors: new crawl data → a language's sources, shard and language runs; dataset growth → retraining; the
assets' automation conditions (new checkpoint → evaluation → report); failed training → a clear log line."""

from mella_assets.sensors.evaluation import automation_sensor, training_failure_sensor
from mella_assets.sensors.landing import crawl_landing_sensor
from mella_assets.sensors.phases import language_phases_sensor
from mella_assets.sensors.retraining import retraining_sensor

ALL_SENSORS = [
    crawl_landing_sensor,
    language_phases_sensor,
    retraining_sensor,
    automation_sensor,
    training_failure_sensor,
]

__all__ = [
    "ALL_SENSORS",
    "automation_sensor",
    "crawl_landing_sensor",
    "language_phases_sensor",
    "retraining_sensor",
    "training_failure_sensor",
]
