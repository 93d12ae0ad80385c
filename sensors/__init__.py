"""Sensors: new crawl data → a language run; dataset growth → retraining."""

from sensors.landing import crawl_landing_sensor
from sensors.retraining import retraining_sensor

__all__ = ["crawl_landing_sensor", "retraining_sensor"]
