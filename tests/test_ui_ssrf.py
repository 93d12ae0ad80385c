"""`mella ui` / `make ui` keep the SSRF guard on (issue #16): the demo's code location, whose fetcher may reach its
loopback site, is served for a demo lake only; any other lake gets the production location, and even the demo's
fetcher reaches no private address but the site's own."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mella_assets.cli import main
from mella_assets.demo.resources import DemoImageFetcher
from mella_assets.demo.run import (
    DEMO_CODE_LOCATION,
    DEMO_LOCATION_NAME,
    PRODUCTION_CODE_LOCATION,
    PRODUCTION_LOCATION_NAME,
    configure_ui_environment,
)
from mella_assets.demo.site import HOST, is_demo_lake
from mella_assets.resources.fetch import ImageFetcher
from support.scripted_site import Route, ScriptedSite

DEMO_VARIABLES = ("MELLA_DEMO_SITE_PORT", "MELLA_TRAINING_METHOD", "MELLA_TRAINING_STEPS")


@pytest.fixture
def clean_env(monkeypatch):
    """The variables `mella ui` sets, absent now and as they were after the test (set first, so that monkeypatch
    records them and undoes what the command sets)."""
    for name in ("MELLA_LAKE", "DAGSTER_HOME", "HF_HUB_DISABLE_PROGRESS_BARS", *DEMO_VARIABLES):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def served_location(command: list[str]) -> tuple[str, str]:
    """(module, location name) of the one code location in the workspace file `dagster dev -w` is given."""
    (entry,) = yaml.safe_load(Path(command[command.index("-w") + 1]).read_text())["load_from"]
    return entry["python_module"]["module_name"], entry["python_module"]["location_name"]


def demo_lake(root):
    (root / "demo" / "site").mkdir(parents=True)
    return root


@pytest.mark.parametrize("kind", ["empty", "tables only", "s3"])
def test_ui_serves_the_production_location_for_any_lake_that_is_not_the_demos(tmp_path, clean_env, kind):
    lake = {"empty": tmp_path / "lake", "tables only": tmp_path / "real", "s3": "s3://bucket/lake"}[kind]
    if kind == "tables only":
        (lake / "tables" / "d_know").mkdir(parents=True)
    calls = []
    clean_env.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert main(["ui", "--lake", str(lake), "--dagster-home", str(tmp_path / "home")]) == 0
    (command,) = calls
    assert served_location(command) == (PRODUCTION_CODE_LOCATION, PRODUCTION_LOCATION_NAME)
    assert not any(name in os.environ for name in DEMO_VARIABLES)


def test_ui_serves_the_demo_location_for_the_demo_lake(tmp_path, clean_env):
    lake = demo_lake(tmp_path / "lake")
    calls = []
    clean_env.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert main(["ui", "--lake", str(lake), "--dagster-home", str(tmp_path / "home")]) == 0
    assert served_location(calls[0]) == (DEMO_CODE_LOCATION, DEMO_LOCATION_NAME)
    assert os.environ["MELLA_DEMO_SITE_PORT"]


def test_the_demo_location_itself_gives_a_non_demo_lake_the_guarded_fetcher(tmp_path, clean_env):
    for lake, expected in ((tmp_path / "real", ImageFetcher), (demo_lake(tmp_path / "demo"), DemoImageFetcher)):
        clean_env.setenv("MELLA_LAKE", str(lake))
        # A fresh import each time (restored as it was after the test): the location reads the lake on import.
        clean_env.delitem(sys.modules, DEMO_CODE_LOCATION, raising=False)
        fetcher = importlib.import_module(DEMO_CODE_LOCATION).defs.resources["fetcher"]
        assert type(fetcher) is expected
        assert fetcher.allow_private_addresses is False
    assert configure_ui_environment(str(tmp_path / "real"), str(tmp_path / "home"), 1) == PRODUCTION_CODE_LOCATION
    assert is_demo_lake(str(tmp_path / "demo")) and not is_demo_lake("s3://bucket/demo")


def test_the_demo_fetcher_reaches_its_site_address_and_no_other_private_one(tmp_path):
    fetcher = DemoImageFetcher(site_dir=str(tmp_path), delay_s=0.0, respect_robots=False).http()
    with ScriptedSite({"/a.jpg": Route(b"image", content_type="image/jpeg")}, host=HOST) as site:
        assert fetcher.fetch(f"{site.base_url}/a.jpg").body == b"image"
        port = site.base_url.rsplit(":", 1)[1]
        for private in ("127.0.0.2", "10.0.0.1", "169.254.169.254", "192.168.1.1", "[::1]", "0.0.0.0"):
            result = fetcher.fetch(f"http://{private}:{port}/a.jpg")
            assert result.error_reason == "blocked_address", private
