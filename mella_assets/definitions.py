"""The MELLA code location: assets, checks, jobs, sensors and resources.

Assets and checks are discovered: every stage package (``mella_assets/<stage>/``) with an ``assets`` module
contributes what that module defines (docs/architecture.md, "Adding a stage"). Jobs derive from the asset graph
(``mella_assets/jobs.py``). The executor follows ``MELLA_EXECUTOR``: locally every step of a run in the run's own
process (models and language detectors load once per run, not once per step), or Dagster's process per step, or on
Kubernetes one pod per step, where every step that loads a model in-process gets a GPU pod
(:func:`gpu_step_k8s_configs`).
"""

import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import dagster as dg

import mella_assets
from mella_assets.jobs import ALL_JOBS, LANGUAGE_PHASES, PER_LANGUAGE_SELECTION, phase_partition_keys
from mella_assets.resources import build_resources
from mella_assets.sensors import ALL_SENSORS
from mella_assets.settings import Settings, load_settings
from mella_assets.tables import CRAWL_SOURCES

# The resources that hold a model: an asset that asks for one loads a model (or asks a server for one), so it is
# in the GPU pool (tests/test_gpu_placement.py keeps them so).
MODEL_RESOURCES = ("captioner", "translator", "evaluator", "training")
EXECUTORS = ("in_process", "multiprocess", "k8s")


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


def model_loading_assets(assets: Iterable[object]) -> list[dg.AssetsDefinition]:
    """The assets that ask for a model resource (:data:`MODEL_RESOURCES`)."""
    return [
        asset
        for asset in assets
        if isinstance(asset, dg.AssetsDefinition) and asset.required_resource_keys & set(MODEL_RESOURCES)
    ]


def gpu_pod_config(
    gpus: int, cpu: str, memory: str, node_selector: Mapping[str, str], tolerations: Iterable[Mapping[str, str]]
) -> dict[str, Any]:
    """A ``dagster-k8s/config`` value (``USER_DEFINED_K8S_JOB_CONFIG_SCHEMA``) for a pod with ``gpus`` GPUs."""
    limits = {"memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {
        "container_config": {"resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}},
        "pod_spec_config": {"node_selector": dict(node_selector), "tolerations": [dict(t) for t in tolerations]},
    }


def _step_gpu_config(key: str, resource: Any, settings: Settings) -> dict[str, Any] | None:
    """The pod of a step using the model resource ``resource`` (at ``key``), or None when the step needs no GPU:
    a model served elsewhere (backend 'openai'), training in its own pod (runner 'k8s')."""
    if key == "training":
        if getattr(resource, "runner", "subprocess") != "subprocess":
            return None
        pod = resource.pod  # the trainer runs in the step's pod: it gets the training pod's resources
        return gpu_pod_config(pod.gpus, pod.cpu, pod.memory, pod.node_selector, pod.tolerations)
    if getattr(resource, "backend", "transformers") != "transformers":
        return None
    return gpu_pod_config(
        settings.inference_gpus,
        settings.inference_cpu,
        settings.inference_memory,
        settings.training_node_selector,
        settings.training_tolerations,
    )


def gpu_step_k8s_configs(
    assets: Iterable[object], resources: Mapping[str, object], settings: Settings
) -> dict[str, dict[str, Any]]:
    """``per_step_k8s_config`` of the k8s executor, keyed by op: a GPU pod for every step that loads its model
    in-process (captioning, translation and evaluation with the transformers backend, training with the
    subprocess runner), from the settings (``MELLA_INFERENCE_*``; training: ``MELLA_TRAINING_*``)."""
    configs = {}
    for asset in model_loading_assets(assets):
        for key in MODEL_RESOURCES:
            if key in asset.required_resource_keys and key in resources:
                config = _step_gpu_config(key, resources[key], settings)
                if config is not None:
                    configs[asset.node_def.name] = config
                    break
    return configs


def build_executor(
    assets: Iterable[object], resources: Mapping[str, object], settings: Settings
) -> dg.ExecutorDefinition | None:
    """The executor of ``MELLA_EXECUTOR``: Dagster's ``in_process_executor``, None (Dagster's default, a process
    per step) or dagster_k8s's ``k8s_job_executor`` with a GPU pod for each model-loading step (the other steps
    get the run launcher's pod settings)."""
    if settings.executor not in EXECUTORS:
        raise ValueError(f"MELLA_EXECUTOR must be one of {EXECUTORS}, not {settings.executor!r}")
    if settings.executor == "in_process":
        # A process per step imports torch and transformers and loads lingua again in each of ~16 steps: a
        # one-language run took ~180 s that way against ~35 s of step work.
        return dg.in_process_executor
    if settings.executor == "multiprocess":
        return None
    from dagster_k8s import k8s_job_executor  # the k8s extra (deploy/k8s/Dockerfile)

    return k8s_job_executor.configured(
        {"per_step_k8s_config": gpu_step_k8s_configs(assets, resources, settings)}, name="k8s"
    )


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    """The code location with the given resources (default: chosen from the environment)."""
    modules = stage_asset_modules()
    resources = resources if resources is not None else build_resources()
    assets = dg.load_assets_from_modules(modules)
    return dg.Definitions(
        assets=assets,
        asset_checks=dg.load_asset_checks_from_modules(modules),
        jobs=ALL_JOBS,
        sensors=ALL_SENSORS,
        resources=resources,
        executor=build_executor(assets, resources, load_settings()),
    )


defs = build_definitions()


def language_pipeline_assets(definitions: dg.Definitions | None = None) -> list[dg.AssetsDefinition]:
    """The per-language pipeline's assets (its phases' jobs: sources, shards, language) in graph order (each
    after everything it reads; ties by name), as the stage modules define them (no resources bound, so a test or
    harness can materialize them with its own)."""
    definitions = definitions or defs
    graph = definitions.resolve_asset_graph()
    keys = set(PER_LANGUAGE_SELECTION.resolve(graph))
    levels: dict[dg.AssetKey, int] = {}

    def level(key: dg.AssetKey) -> int:
        if key not in levels:
            parents = [p for p in graph.get(key).parent_keys if p in keys]
            levels[key] = 1 + max((level(p) for p in parents), default=-1)
        return levels[key]

    stage_assets = [a for a in dg.load_assets_from_modules(stage_asset_modules()) if isinstance(a, dg.AssetsDefinition)]
    chosen = [a for a in stage_assets if set(a.keys) & keys]
    return sorted(chosen, key=lambda a: (max(level(k) for k in a.keys if k in keys), a.node_def.name))


@dataclass
class LanguageRuns:
    """The in-process runs that took one language through its phases (:data:`~mella_assets.jobs.LANGUAGE_PHASES`),
    in order; it stops at the first phase with a failed run."""

    results: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return bool(self.results) and all(result.success for result in self.results)

    @property
    def all_events(self) -> list[dg.DagsterEvent]:
        return [event for result in self.results for event in result.all_events]

    def asset_materializations_for_node(self, node: str) -> list[dg.AssetMaterialization]:
        """Every materialization the runs recorded for the asset (op) ``node``: one per shard for a sharded one."""
        return [
            event
            for result in self.results
            if node in {n.name for n in result.job_def.nodes}
            for event in result.asset_materializations_for_node(node)
        ]

    def get_asset_materialization_events(self) -> list[dg.DagsterEvent]:
        return [event for result in self.results for event in result.get_asset_materialization_events()]


def materialize_language(
    language: str, assets: Iterable[dg.AssetsDefinition] | None = None, **materialize_kwargs: Any
) -> LanguageRuns:
    """Materialize ``assets`` (default: :func:`language_pipeline_assets`) for one language the way its jobs do:
    each phase's assets in a run per partition (the language, or each of its shards), in phase order, stopping at
    the first failed run. ``materialize_kwargs`` go to ``dg.materialize`` (resources, instance, run_config,
    raise_on_error…)."""
    assets = list(assets if assets is not None else language_pipeline_assets())
    runs = LanguageRuns()
    for _job, sharded in LANGUAGE_PHASES:
        phase = [a for a in assets if _is_sharded(a) == sharded and _in_phase(a, _job)]
        if not phase:
            continue
        kwargs = dict(materialize_kwargs)
        if isinstance(kwargs.get("run_config"), Mapping) and "ops" in kwargs["run_config"]:
            # Each run is given only its own ops' config (Dagster refuses config for ops not in the run).
            names = {asset.node_def.name for asset in phase}
            ops = {op: value for op, value in kwargs["run_config"]["ops"].items() if op in names}
            kwargs["run_config"] = {**kwargs["run_config"], "ops": ops}
        for key in phase_partition_keys(sharded, language):
            result = dg.materialize(phase, partition_key=key, **kwargs)
            runs.results.append(result)
            if not result.success:
                return runs
    return runs


def _is_sharded(asset: dg.AssetsDefinition) -> bool:
    return isinstance(asset.partitions_def, dg.MultiPartitionsDefinition)


def _in_phase(asset: dg.AssetsDefinition, job: str) -> bool:
    """Whether the asset is written by the phase ``job`` (sources_job holds crawl_sources alone)."""
    is_sources = any(key.to_user_string() == CRAWL_SOURCES.name for key in asset.keys)
    return is_sources == (job == "sources_job")
