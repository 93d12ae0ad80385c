"""GPU placement: every asset that loads a model (found from the definitions by the resources it asks for) is in
the `gpu` concurrency pool, and with the k8s executor its step pod requests a GPU on a GPU node, from the settings
(the pod Kubernetes gets is rendered by dagster_k8s's own job builder)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster_k8s import k8s_job_executor
from dagster_k8s.job import (
    USER_DEFINED_K8S_JOB_CONFIG_SCHEMA,
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
)

from mella_assets.definitions import (
    MODEL_RESOURCES,
    build_definitions,
    defs,
    gpu_step_k8s_configs,
    model_loading_assets,
    stage_asset_modules,
)
from mella_assets.resources import Captioner, Evaluator, Training, Translator, build_resources
from mella_assets.settings import load_settings
from mella_assets.specs import COMMONCRAWL_POOL, DATASET_SPLITS_POOL, GPU_POOL

ROOT = Path(__file__).resolve().parent.parent
# The model-loading steps as they are today; the test below derives them from the resources, so an asset that
# starts loading a model is found even before it is added here.
MODEL_STEPS = {"mllm_captions", "translations", "evaluation_scores", "finetuned_checkpoint"}


def stage_assets() -> list[dg.AssetsDefinition]:
    return [a for a in dg.load_assets_from_modules(stage_asset_modules()) if isinstance(a, dg.AssetsDefinition)]


def resolved_executor_config(definitions: dg.Definitions) -> dict:
    result = definitions.executor.config_schema.resolve_config({})
    assert result.success, result.errors
    return result.value["config"]


def test_every_model_resource_is_known_and_every_asset_using_one_is_in_the_gpu_pool():
    resources = build_resources()
    model_types = (Captioner, Translator, Evaluator, Training)
    assert {key for key, resource in resources.items() if isinstance(resource, model_types)} == set(MODEL_RESOURCES)
    loading = model_loading_assets(stage_assets())
    assert {asset.node_def.name for asset in loading} == MODEL_STEPS
    for asset in loading:
        assert asset.node_def.pool == GPU_POOL, asset.node_def.name
    # ... and nothing else takes a GPU slot (raw_crawl takes one of the Common Crawl pool's, mella_dataset one of
    # the splits' pool).
    others = [a for a in stage_assets() if a.node_def.name not in MODEL_STEPS]
    assert others and {a.node_def.name: a.node_def.pool for a in others if a.node_def.pool} == {
        "raw_crawl": COMMONCRAWL_POOL,
        "mella_dataset": DATASET_SPLITS_POOL,
    }
    # The code location serves them with the pool too (what the UI and the run queue see).
    graph = defs.resolve_asset_graph()
    for name in MODEL_STEPS:
        assert graph.get(dg.AssetKey(name)).pools == {GPU_POOL}, name


def test_the_default_executor_runs_steps_in_the_run_process_and_an_unknown_one_is_refused(monkeypatch):
    monkeypatch.delenv("MELLA_EXECUTOR", raising=False)
    assert build_definitions(build_resources()).executor is dg.in_process_executor
    monkeypatch.setenv("MELLA_EXECUTOR", "multiprocess")
    assert build_definitions(build_resources()).executor is None  # Dagster's default: a process per step
    monkeypatch.setenv("MELLA_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="MELLA_EXECUTOR must be one of"):
        build_definitions(build_resources())


def test_with_the_k8s_executor_every_model_loading_step_gets_a_gpu_pod(monkeypatch):
    """The settings of deploy/k8s/values.yaml: each model step's pod requests the GPU, CPU and memory of the
    settings on a node of the GPU node selector with its tolerations; training (runner k8s there) starts its own
    GPU pod, so its step pod stays small."""
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    env = {item["name"]: item["value"] for item in values["dagster-user-deployments"]["deployments"][0]["env"]}
    assert env["MELLA_EXECUTOR"] == "k8s"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MELLA_INFERENCE_GPUS", "2")
    monkeypatch.setenv("MELLA_INFERENCE_MEMORY", "48Gi")
    definitions = build_definitions(build_resources())
    assert definitions.executor.name == "k8s"
    config = resolved_executor_config(definitions)
    assert validate_config(k8s_job_executor.config_schema.config_type, config).success
    per_step = config["per_step_k8s_config"]
    assert set(per_step) == MODEL_STEPS - {"finetuned_checkpoint"}
    settings = load_settings()
    for step, step_config in per_step.items():
        assert validate_config(USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, step_config).success
        job = construct_dagster_k8s_job(
            DagsterK8sJobConfig(job_image="registry.example.org/mella-code:latest", dagster_home="/opt/dagster/home"),
            ["dagster", "api", "execute_step"],
            f"dagster-step-{step.replace('_', '-')}",
            UserDefinedDagsterK8sConfig.from_dict(step_config),
        )
        pod = job.spec.template.spec
        (container,) = pod.containers
        assert container.resources.limits == {"nvidia.com/gpu": "2", "memory": "48Gi"}
        assert container.resources.requests == {"cpu": "4", "memory": "48Gi"}
        assert pod.node_selector == settings.training_node_selector == {"nvidia.com/gpu.present": "true"}
        assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]


def test_a_step_gets_a_gpu_only_when_it_loads_its_model_itself(monkeypatch):
    settings = load_settings({})
    assets = stage_assets()
    in_process = {
        "captioner": Captioner(backend="transformers"),
        "translator": Translator(backend="transformers"),
        "evaluator": Evaluator(backend="transformers"),
        "training": Training(runner="subprocess"),
    }
    configs = gpu_step_k8s_configs(assets, in_process, settings)
    assert set(configs) == MODEL_STEPS
    # Training in the step (runner subprocess) gets the training pod's resources (MELLA_TRAINING_*).
    training = configs["finetuned_checkpoint"]["container_config"]["resources"]
    assert training == {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "64Gi", "nvidia.com/gpu": "1"}}
    served = {
        "captioner": Captioner(backend="openai", url="http://vllm:8000/v1"),
        "translator": Translator(backend="openai", url="http://vllm:8000/v1"),
        "evaluator": Evaluator(backend="openai", url="http://vllm:8000/v1"),
        "training": Training(runner="k8s"),
    }
    assert gpu_step_k8s_configs(assets, served, settings) == {}  # the server and the training pod hold the GPUs
