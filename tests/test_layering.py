"""The layering of docs/architecture.md, enforced on the import statements (module- and function-level):

- core modules (every stage's Dagster-free modules, ``lib/``, the registry, languages, settings) never import
  dagster, resources, sensors, assets or the Dagster glue (definitions, jobs, specs, metadata, partitions);
- a stage's assets import only their own stage, the shared core, the glue and resources — never another stage;
- resources never import assets or sensors; sensors never import assets (they name jobs and keys);
- production code never imports the demo's builders or the test support.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "mella_assets"
STAGES = ("crawl", "know", "ling", "dataset", "training", "evaluation")
GLUE = {f"{PACKAGE}.{name}" for name in ("definitions", "jobs", "specs", "metadata", "partitions")}
ENTRY_POINTS = {f"{PACKAGE}.cli"}  # the command line wires everything together


def module_files() -> dict[str, Path]:
    """Every module of the installed package, by dotted name (resources/ and sensors/ install under it)."""
    modules = {}
    roots = [
        (REPO / PACKAGE, PACKAGE),
        (REPO / "resources", f"{PACKAGE}.resources"),
        (REPO / "sensors", f"{PACKAGE}.sensors"),
    ]
    for folder, prefix in roots:
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = path
    return modules


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names a module imports anywhere in its body (relative imports resolved)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def kind_of(name: str) -> str:
    parts = name.split(".")
    if name in GLUE or name in ENTRY_POINTS:
        return "glue"
    if len(parts) > 1 and parts[1] in ("resources", "sensors"):
        return parts[1]
    if len(parts) > 1 and parts[1] in ("commands",):
        return "entry"
    if len(parts) > 1 and parts[1] == "demo":
        return "demo"
    if len(parts) == 3 and parts[1] in STAGES and parts[2] == "assets":
        return "assets"
    return "core"


def stage_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def violations() -> list[str]:
    modules = module_files()
    problems = []
    for name, path in modules.items():
        kind = kind_of(name)
        for imported in sorted(imports_of(name, path)):
            top = imported.split(".")[0]
            target = next((m for m in sorted(modules, key=len, reverse=True) if imported == m), None)
            target_kind = kind_of(target) if target else None
            where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path} imports {imported}"
            if top == "support" or (kind != "demo" and target_kind == "demo" and kind not in ("glue", "entry")):
                problems.append(f"{where}: demo/test support in the production path")
            # (dagster_pipes, the protocol the training script speaks from its own process, is not Dagster.)
            if kind == "core" and (
                top in ("dagster", "dagster_aws", "dagster_k8s") or target_kind not in (None, "core")
            ):
                problems.append(f"{where}: core code imports Dagster or a Dagster layer")
            if (
                kind == "assets"
                and target_kind in ("core", "assets")
                and stage_of(target) not in (None, stage_of(name))
                # another stage's package itself (its __init__) is its public API, not its internals
                and target not in {f"{PACKAGE}.{stage}" for stage in STAGES}
            ):
                problems.append(f"{where}: assets import another stage's internals")
            if kind == "resources" and target_kind in ("assets", "sensors"):
                problems.append(f"{where}: resources import assets or sensors")
            if kind == "sensors" and target_kind == "assets":
                problems.append(f"{where}: sensors import assets (name jobs and keys instead)")
    return problems


def test_the_layers_import_only_downwards():
    assert violations() == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("mella_assets.know.filters", "import dagster as dg\n", "core code imports Dagster"),
        ("mella_assets.lib.text", "def f():\n    from mella_assets.resources.lake import Lake\n", "core code imports"),
        ("mella_assets.ling.assets", "from mella_assets.know.filters import FilterConfig\n", "another stage"),
        ("mella_assets.resources.fetch", "from mella_assets.know.assets import images\n", "resources import assets"),
        ("mella_assets.know.filters", "from support.site import DemoSite\n", "test support"),
    ],
)
def test_the_layering_check_catches_each_kind_of_violation(tmp_path, monkeypatch, module, source, expected):
    files = module_files()
    fake = tmp_path / "fake.py"
    fake.write_text(source)
    monkeypatch.setattr(__import__(__name__), "module_files", lambda: {**files, module: fake})
    assert any(expected in problem for problem in violations())
