"""`mella demo`'s own pieces: the local Dagster instance it and `mella ui` write (a run queue and the GPU pool,
added to an existing dagster.yaml without touching what the user wrote) and the note under its summary."""

import dagster as dg
import polars as pl

from mella_assets.demo.run import _write_instance_config, identical_scores_note


def limits(home) -> tuple[int, list[dict], int | None]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        config = instance.get_concurrency_config()
        queue = config.run_queue_config
        return queue.max_concurrent_runs, queue.tag_concurrency_limits, config.pool_config.default_pool_limit


def test_a_new_home_gets_a_run_limit_one_training_run_and_one_gpu_step_at_a_time(tmp_path):
    assert _write_instance_config(str(tmp_path)) == ["concurrency", "telemetry", "nux"]
    assert limits(tmp_path) == (2, [{"key": "mella/pool", "value": "training", "limit": 1}], 1)
    text = (tmp_path / "dagster.yaml").read_text()
    assert _write_instance_config(str(tmp_path)) == []  # a second call changes nothing
    assert (tmp_path / "dagster.yaml").read_text() == text


def test_an_existing_dagster_yaml_keeps_the_users_text_and_gains_the_missing_limits(tmp_path):
    users = "# my instance\ntelemetry:\n  enabled: true\n"
    (tmp_path / "dagster.yaml").write_text(users)
    assert _write_instance_config(str(tmp_path)) == ["concurrency", "nux"]
    text = (tmp_path / "dagster.yaml").read_text()
    assert text.startswith(users)
    assert limits(tmp_path)[0] == 2
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.telemetry_enabled


def test_a_users_own_run_queue_is_left_alone(tmp_path):
    """Dagster refuses `concurrency` beside run limits in `run_queue`: the user's queue wins."""
    users = "run_queue:\n  max_concurrent_runs: 5\n"
    (tmp_path / "dagster.yaml").write_text(users)
    assert _write_instance_config(str(tmp_path)) == ["telemetry", "nux"]
    assert (tmp_path / "dagster.yaml").read_text().startswith(users)
    assert limits(tmp_path)[0] == 5


def test_scores_equal_in_every_language_get_a_one_line_explanation_under_the_summary():
    summary = pl.DataFrame(
        {
            "language": ["cs", "vi"],
            "kw_acc_base": [0.0, 0.0],
            "kw_acc_tuned": [0.0, 0.0],
            "meteor_base": [0.0, 0.0],
            "meteor_tuned": [0.439, 0.445],
        }
    )
    note = identical_scores_note(summary)
    assert note.startswith("Same in every language (kw_acc_base = 0.0, kw_acc_tuned = 0.0, meteor_base = 0.0):")
    assert "\n" not in note and "meteor_tuned" not in note
    assert identical_scores_note(summary.with_columns(kw_acc_base=pl.Series([0.0, 0.5]))).count("=") == 2
    assert identical_scores_note(summary.head(1)) is None  # one language: nothing to compare
