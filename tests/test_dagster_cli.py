"""Dagster's own command lines find the project from pyproject.toml: `dg check defs` and `dg list defs` (the dev
extra's dagster-dg-cli, reading ``[tool.dg]``) and `dagster definitions validate` (``[tool.dagster]``), no flags."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mella_assets.tables import TABLES

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess:
    # VIRTUAL_ENV: dg compares the active environment with the project's .venv and warns when they differ.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VIRTUAL_ENV": str(BIN.parent), "NO_COLOR": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def listed() -> dict:
    result = run(str(BIN / "dg"), "list", "defs", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_dg_check_defs_passes():
    result = run(str(BIN / "dg"), "check", "defs")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_dg_list_defs_shows_every_table_as_an_asset_with_its_stage_group(listed):
    assets = {asset["asset_key"]: asset for asset in listed["assets"]}
    assert set(assets) == set(TABLES)
    for name, table in TABLES.items():
        assert assets[name]["group_name"] == table.stage
    assert {"language_pipeline_job", "training_job", "evaluation_job"} <= {job["name"] for job in listed["jobs"]}
    assert listed["asset_checks"], "the dataset checks are part of the definitions"


def test_dagster_definitions_validate_reads_the_code_location_from_pyproject():
    result = run(str(BIN / "dagster"), "definitions", "validate")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful for code location mella" in result.stdout + result.stderr


def test_dagster_asset_list_runs_with_no_flags_once_the_module_is_in_the_environment():
    """Dagster 1.13's `dagster asset …` subcommands read no project file; their pointer options also come from the
    environment (DAGSTER_MODULE_NAME), which README gives as the flag-free way."""
    result = subprocess.run(
        [str(BIN / "dagster"), "asset", "list"],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "DAGSTER_MODULE_NAME": "mella_assets.definitions"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(result.stdout.split()) == set(TABLES)
