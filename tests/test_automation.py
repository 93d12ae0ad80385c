"""Declarative automation instead of hand-written chaining sensors: a new fine-tuned checkpoint → one evaluation
per language that has a dataset; the report once every such language has its new scores, not after each; a
language whose data lands later is evaluated then, and reported again.

The conditions are evaluated by Dagster itself (``dg.evaluate_automation_conditions``, what the automation
condition sensor runs on each tick) on the production definitions, with the upstream materializations recorded in a
real instance."""

import dagster as dg
import pytest

from mella_assets.definitions import defs
from mella_assets.sensors import ALL_SENSORS, automation_sensor

EVALUATION = ("evaluation_scores", "evaluation_samples")


class Ticks:
    """Successive automation ticks over one instance, carrying the cursor as the sensor does."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance, self.cursor = instance, None

    def materialized(self, name: str, *partitions: str | None) -> None:
        for partition in partitions or (None,):
            self.instance.report_runless_asset_event(dg.AssetMaterialization(name, partition=partition))

    def tick(self) -> dict[str, set[str | None]]:
        result = dg.evaluate_automation_conditions(defs=defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        names = (*EVALUATION, "evaluation_report", "finetuned_checkpoint", "mella_dataset")
        requested = {name: result.get_requested_partitions(dg.AssetKey(name)) for name in names}
        return {name: set(partitions) for name, partitions in requested.items() if partitions}


@pytest.fixture()
def ticks():
    with dg.instance_for_test() as instance:
        yield Ticks(instance)


def test_the_automation_sensor_serves_every_asset_and_the_chaining_sensors_are_gone():
    assert automation_sensor in ALL_SENSORS
    assert isinstance(automation_sensor, dg.AutomationConditionSensorDefinition)
    assert automation_sensor.default_status == dg.DefaultSensorStatus.STOPPED  # like every sensor: on in the UI
    names = {sensor.name for sensor in ALL_SENSORS}
    assert not names & {"evaluation_after_training_sensor", "report_after_evaluation_sensor"}
    graph = defs.resolve_asset_graph()
    automated = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).automation_condition}
    assert automated == {*EVALUATION, "evaluation_report"}  # the product's sensors keep crawl and retraining


def test_a_new_checkpoint_evaluates_each_language_with_data_then_reports_once(ticks):
    ticks.materialized("mella_dataset", "cs", "vi")
    assert ticks.tick() == {}  # data alone does not evaluate: only a new checkpoint does
    ticks.materialized("finetuned_checkpoint")
    assert ticks.tick() == {name: {"cs", "vi"} for name in EVALUATION}  # not ko, th...: no dataset
    assert ticks.tick() == {}  # requested once per checkpoint

    ticks.materialized("evaluation_scores", "cs")
    ticks.materialized("evaluation_samples", "cs")
    assert ticks.tick() == {}  # Vietnamese still owes its evaluation: no report yet
    ticks.materialized("evaluation_scores", "vi")
    ticks.materialized("evaluation_samples", "vi")
    assert ticks.tick() == {"evaluation_report": {None}}
    assert ticks.tick() == {}

    # Korean data lands after the checkpoint: Korean is evaluated on it, and the report follows its scores.
    ticks.materialized("mella_dataset", "ko")
    assert ticks.tick() == {name: {"ko"} for name in EVALUATION}
    ticks.materialized("evaluation_scores", "ko")
    ticks.materialized("evaluation_samples", "ko")
    assert ticks.tick() == {"evaluation_report": {None}}


def test_every_new_checkpoint_is_evaluated_and_reported_again(ticks):
    ticks.materialized("mella_dataset", "cs", "vi")
    ticks.tick()
    for _ in range(2):  # the first checkpoint, then a retrained one
        ticks.materialized("finetuned_checkpoint")
        assert ticks.tick() == {name: {"cs", "vi"} for name in EVALUATION}
        for name in EVALUATION:
            ticks.materialized(name, "cs", "vi")
        assert ticks.tick() == {"evaluation_report": {None}}
        ticks.materialized("evaluation_report")
        assert ticks.tick() == {}
