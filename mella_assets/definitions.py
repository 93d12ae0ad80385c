"""The MELLA code location: assets, checks, jobs, sensors and resources.

Assets and checks are discovered: every stage package (``mella_assets/<stage>/``) with an ``assets`` module
contributes what that module defines (docs/architecture.md, "Adding a stage"). Jobs derive from the asset graph
(``mella_assets/jobs.py``).
"""

import importlib
import pkgutil
from types import ModuleType

import dagster as dg

import mella_assets
from mella_assets.jobs import ALL_JOBS
from mella_assets.resources import build_resources
from mella_assets.sensors import ALL_SENSORS


def stage_asset_modules() -> list[ModuleType]:
    """The ``assets`` module of every stage package, in name order."""
    modules = []
    for info in sorted(pkgutil.iter_modules(mella_assets.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        try:
            modules.append(importlib.import_module(f"mella_assets.{info.name}.assets"))
        except ModuleNotFoundError as error:
            if error.name != f"mella_assets.{info.name}.assets":
                raise
    return modules


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    """The code location with the given resources (default: chosen from the environment)."""
    modules = stage_asset_modules()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(modules),
        asset_checks=dg.load_asset_checks_from_modules(modules),
        jobs=ALL_JOBS,
        sensors=ALL_SENSORS,
        resources=resources if resources is not None else build_resources(),
    )


defs = build_definitions()


def language_pipeline_assets(definitions: dg.Definitions | None = None) -> list[dg.AssetsDefinition]:
    """The per-language pipeline's assets in graph order (each after everything it reads; ties by name), as the
    stage modules define them (no resources bound, so a test or harness can materialize them with its own)."""
    definitions = definitions or defs
    graph = definitions.resolve_asset_graph()
    job = definitions.resolve_job_def("language_pipeline_job")
    keys = set(job.asset_layer.selected_asset_keys)
    levels: dict[dg.AssetKey, int] = {}

    def level(key: dg.AssetKey) -> int:
        if key not in levels:
            parents = [p for p in graph.get(key).parent_keys if p in keys]
            levels[key] = 1 + max((level(p) for p in parents), default=-1)
        return levels[key]

    stage_assets = [a for a in dg.load_assets_from_modules(stage_asset_modules()) if isinstance(a, dg.AssetsDefinition)]
    chosen = [a for a in stage_assets if set(a.keys) & keys]
    return sorted(chosen, key=lambda a: (max(level(k) for k in a.keys if k in keys), a.node_def.name))
