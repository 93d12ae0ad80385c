"""What `pip install .` ships: the project package only — resources/ and sensors/ under it, no top-level packages
with generic names, no tests or test support."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = config["package-dir"]
    found = {
        ".".join(path.parent.relative_to(REPO).parts)
        for path in (REPO / "mella_assets").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    found |= set(mapped)
    assert listed == found
    assert mapped == {"mella_assets.resources": "resources", "mella_assets.sensors": "sensors"}


def test_the_wheel_holds_only_the_project_package(tmp_path):
    # Built from a copy: setuptools builds in the source tree (build/), which must stay clean.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns(".git", ".venv", ".mella", "build", "*.egg-info", "__pycache__", ".ruff_cache")
    shutil.copytree(REPO, source, ignore=ignore)
    wheel_command = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)]
    subprocess.run([sys.executable, "-m", *wheel_command], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("mella-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"mella_assets"}
    assert "mella_assets/resources/lake.py" in names
    assert "mella_assets/sensors/landing.py" in names
    assert "mella_assets/demo/corpus/cs.json" in names
    assert "mella_assets/crawl/html/whatwg_encodings.json" in names  # the charset label table is data
    assert "mella_assets/know/lexicons/shared.txt" in names  # the boilerplate lexicons are data
    assert not [name for name in names if "/testing/" in name or name.startswith("tests/") or "/support/" in name]


def test_resources_is_not_a_top_level_import_outside_the_repository(tmp_path):
    probe = "import importlib.util as u; print(u.find_spec('resources'), u.find_spec('sensors'))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "None None"
    ok = subprocess.run(
        [sys.executable, "-c", "import mella_assets.resources, mella_assets.sensors"], cwd=tmp_path, capture_output=True
    )
    assert ok.returncode == 0, ok.stderr
