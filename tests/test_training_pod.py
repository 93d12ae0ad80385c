"""Training on Kubernetes without a cluster: the lake job a pod trains on, and the pod PipesK8sClient submits.

The end-to-end test materializes ``finetuned_checkpoint`` with runner 'k8s' on an S3 lake served by moto_server.
The pod body is built by dagster_k8s's ``build_pod_body`` from the arguments the asset passes to
``PipesK8sClient.run``, inside the same Pipes session types (context in the pod's environment, messages on its
stderr / log); ``LocalPodPipesClient`` then runs that body as a local process the way a kubelet would (only the
container's environment and its Secret, empty volumes, empty HOME), in place of the Kubernetes API calls. The
tiny base model exists only in the lake: no local path is shared between the orchestrator and the pod.

The subprocess runner trains on the same lake job (here on a local lake, under torchrun): only the launcher
differs.
"""

import json
import os
import shutil
import subprocess
import sys

import dagster as dg
import polars as pl
import pytest
from dagster_pipes import PipesDefaultContextLoader, decode_param
from dataset_helpers import CZECH_ALTS, CZECH_CAPTIONS, know_frame, ling_frame, picture, store_image
from PIL import Image

from mella_assets.dataset.build import build_sft_records
from mella_assets.demo.tiny_models import SAMPLE_TEXTS, build_tiny_models
from mella_assets.languages import LANGUAGES
from mella_assets.lib.checkpoints import read_latest_checkpoint
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.vlm import VisionLanguageModel
from mella_assets.resources import Lake, Training
from mella_assets.resources.training import K8sLauncher, SubprocessLauncher, TrainingPod
from mella_assets.tables import FINETUNED_CHECKPOINT
from mella_assets.training.assets import finetuned_checkpoint
from mella_assets.training.lake_job import build_job, resumable_jobs, resume_step, write_job
from mella_assets.training.sft import RESUME_INFO
from support.local_pod import LocalPodPipesClient
from support.s3 import TEST_CREDENTIALS, MotoServer, apply_env, restore_env

LAKE_ROOT = "s3://mella/lake"
BASE_MODEL = "lake://models/tiny/captioner"
SECRET = "mella-lake-credentials"
IMAGE = "registry.example.org/mella-train:test"


@pytest.fixture(scope="module")
def s3_lake(tmp_path_factory):
    """An S3 lake on moto holding a Czech mella_dataset (images included) and the tiny base model, nothing local."""
    with MotoServer() as server:
        previous = apply_env(server.env)
        server.create_bucket("mella")
        root = tmp_path_factory.mktemp("orchestrator")
        store = LakeStore(LAKE_ROOT, cache_dir=root / "cache")
        images = [store_image(store, picture(seed)) for seed in range(len(CZECH_ALTS))]
        build = build_sft_records(
            know_frame("cs", images, CZECH_ALTS), ling_frame("cs", images, CZECH_CAPTIONS), LANGUAGES["cs"]
        )
        store.write_table("mella_dataset", "cs", build.records)
        tiny = build_tiny_models(root / "tiny", SAMPLE_TEXTS, seed=0)
        store.put_dir("models/tiny/captioner", tiny.captioner)
        shutil.rmtree(root / "tiny")  # the pod can only find the base model in the lake
        yield server, store, build.records
        restore_env(previous)


def pod_training(client: LocalPodPipesClient, **settings) -> Training:
    """The training resource with runner 'k8s' whose Pipes client runs the pod body locally."""

    class LocalPodTraining(Training):
        def pipes_k8s_client(self):
            return client

    pod = TrainingPod(image=IMAGE, namespace="mella-test", service_account="mella-training", env_secret=SECRET)
    return LocalPodTraining(**{"base_model": BASE_MODEL, "runner": "k8s", "pod": pod, **settings})


def pipes_extras(value: str) -> dict:
    """The extras in a DAGSTER_PIPES_CONTEXT value (PipesEnvContextInjector: the context data inline)."""
    return decode_param(value)[PipesDefaultContextLoader.DIRECT_KEY]["extras"]


def test_a_pod_with_only_lake_credentials_trains_and_publishes_the_checkpoint_to_the_lake(s3_lake, tmp_path):
    server, store, records = s3_lake
    client = LocalPodPipesClient(secrets={SECRET: TEST_CREDENTIALS}, root=tmp_path / "node")
    (tmp_path / "node").mkdir()
    training = pod_training(client, method="lora", max_steps=4, log_every=2, save_every=2, batch_size=4)
    resources = {
        "lake": Lake(root=LAKE_ROOT),
        "training": training,
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
    result = dg.materialize([finetuned_checkpoint], resources=resources)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("finetuned_checkpoint")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    train_rows = records.filter(pl.col("split") == "train").height
    checkpoint_key = metadata["checkpoint_key"]
    # Reported by the pod through Pipes (its stderr), merged with the asset's own metadata.
    assert metadata["steps"] == 4 and metadata["train_examples"] == train_rows
    assert [step for step, _ in metadata["loss_curve"]] == [2, 4]
    assert metadata["first_loss"] > 0 and metadata["final_loss"] > 0
    assert metadata["progress_reports"] == 2 and metadata["runner"] == "k8s"
    assert metadata["output_dir"] == f"{LAKE_ROOT}/{checkpoint_key}" == metadata["checkpoint_uri"]

    # The pod that ran: the image, the command on the lake job, the Secret by reference, a GPU limit.
    (pod,) = client.pods
    assert client.namespaces == ["mella-test"]
    container = pod.spec.containers[0]
    assert container.image == IMAGE
    job_uri = f"{LAKE_ROOT}/work/training/{checkpoint_key.split('/')[1]}/job.json"
    assert container.command == ["python", "-m", "mella_assets.training.train", "--config", job_uri]
    assert [source.secret_ref.name for source in container.env_from] == [SECRET]
    env = {variable.name: variable.value for variable in container.env}
    assert env["AWS_ENDPOINT_URL"] == server.endpoint
    assert not set(TEST_CREDENTIALS) & set(env)
    assert not any(secret in json.dumps(env) for secret in TEST_CREDENTIALS.values())
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    # ... as the image's non-root user, with no capability and no way to gain privileges.
    security = pod.spec.security_context
    assert (security.run_as_non_root, security.run_as_user, security.run_as_group) == (True, 10001, 10001)
    assert security.seccomp_profile.type == "RuntimeDefault"
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    # Nothing in the pod names a path of the orchestrator's machine: the job is lake keys only.
    job = pipes_extras(env["DAGSTER_PIPES_CONTEXT"])
    assert {job["train_key"], job["output_key"], job["base_model"]} == {
        job_uri.removeprefix(f"{LAKE_ROOT}/").replace("job.json", "train.jsonl"),
        checkpoint_key,
        BASE_MODEL,
    }
    assert not {"train_file", "output_dir", "work_dir"} & set(job)
    assert str(tmp_path.parent) not in json.dumps(env) + " ".join(container.command)

    # The checkpoint is in the lake with its record; the job's inputs and resume state are gone.
    assert store.exists(f"{checkpoint_key}/adapter_model.safetensors")
    record = json.loads(store.get_bytes(f"{checkpoint_key}/mella_checkpoint.json"))
    assert record["sft_config"]["output_key"] == checkpoint_key and record["result"]["steps"] == 4
    assert read_latest_checkpoint(store)["checkpoint_key"] == checkpoint_key
    assert list(store.list("work/training")) == []

    # A reader with its own cache loads base + adapter from the lake with from_pretrained and generates.
    reader = LakeStore(LAKE_ROOT, cache_dir=tmp_path / "reader")
    vlm = VisionLanguageModel.from_pretrained(
        str(reader.local_dir("models/tiny/captioner")), adapter=str(reader.local_dir(checkpoint_key))
    )
    assert "+" in vlm.version
    assert len(vlm.generate([Image.new("RGB", (40, 32), (200, 30, 30))], ["Popiš obrázek."], max_new_tokens=4)) == 1


def test_a_pod_killed_after_a_save_resumes_from_the_lake_in_a_fresh_scratch_folder(s3_lake, tmp_path):
    """The trainer's resume state is mirrored to the lake at each save; a new pod (empty scratch) pulls it."""
    server, store, records = s3_lake
    train = records.filter(pl.col("split") == "train").iter_rows(named=True)
    settings = {"base_model": BASE_MODEL, "method": "full", "max_steps": 6, "log_every": 2, "save_every": 2}
    job = build_job(store, "resume-test", "checkpoints/resume-test", {**settings, "learning_rate": 1e-3})
    location = write_job(store, "resume-test", job, list(train))
    env = {**server.env, "HF_HUB_OFFLINE": "1", "PATH": os.environ["PATH"], "OMP_NUM_THREADS": "1"}

    def pod(name: str) -> dict:
        home = tmp_path / name
        home.mkdir()
        pod_env = {**env, "HOME": str(home), "MELLA_TRAINING_SCRATCH": str(home / "scratch")}
        pod_env["MELLA_LAKE_CACHE"] = str(home / "cache")
        command = [sys.executable, "-m", "mella_assets.training.train", "--config", location]
        done = subprocess.run(command, env=pod_env, cwd=home, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        return {"events": lines[:-1], **lines[-1]["result"]}

    first = pod("pod-1")
    assert [e["step"] for e in first["events"] if e["event"] == "checkpoint_saved"] == [2, 4]
    assert json.loads(store.get_bytes(f"{job['resume_key']}/{RESUME_INFO}"))["step"] == 4
    assert first["output_dir"] == f"{LAKE_ROOT}/checkpoints/resume-test"
    assert store.exists("checkpoints/resume-test/model.safetensors")
    # A pod killed after its save at step 4 leaves exactly this lake state; its replacement starts empty.
    second = pod("pod-2")
    assert second["resumed_from_step"] == 4
    assert second["events"][0] == {"event": "resumed", "step": 4}
    assert second["first_loss"] == first["first_loss"]
    assert second["final_loss"] == pytest.approx(first["final_loss"], rel=1e-4)


def test_a_base_model_missing_from_the_lake_fails_before_any_pod_is_submitted(s3_lake, tmp_path):
    client = LocalPodPipesClient(secrets={SECRET: TEST_CREDENTIALS}, root=tmp_path)
    training = pod_training(client, max_steps=2, base_model="lake://models/not-built")
    resources = {
        "lake": Lake(root=LAKE_ROOT),
        "training": training,
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
    result = dg.materialize([finetuned_checkpoint], resources=resources, raise_on_error=False)
    assert not result.success
    (failure,) = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "lake://models/not-built is not in the lake" in failure.step_failure_data.error.message
    assert client.pods == []


def test_a_job_on_a_local_lake_root_is_a_path_on_the_shared_volume_and_is_deleted_whole(tmp_path):
    store = LakeStore(tmp_path / "lake")
    job = build_job(store, "abc", "checkpoints/abc", {"base_model": BASE_MODEL, "max_steps": 3})
    records = [{"image_key": "images/ab/abcd.jpg", "prompt": "Popiš obrázek.", "text": "Karlův most"}]
    location = write_job(store, "abc", job, records)
    assert location == str(tmp_path / "lake" / "work" / "training" / "abc" / "job.json")
    assert json.loads(store.get_bytes(job["train_key"])) == {
        "image": "images/ab/abcd.jpg", "prompt": "Popiš obrázek.", "answer": "Karlův most"
    }  # fmt: skip
    assert json.loads((tmp_path / "lake" / "work" / "training" / "abc" / "job.json").read_text()) == {
        "base_model": BASE_MODEL, "max_steps": 3, "lake_root": str(tmp_path / "lake"),
        "train_key": "work/training/abc/train.jsonl", "output_key": "checkpoints/abc",
        "resume_key": "work/training/abc/resume",
    }  # fmt: skip
    assert store.delete("work/training/abc") == 2
    assert not (tmp_path / "lake" / "work" / "training" / "abc").exists()


def test_the_lake_lists_the_jobs_a_rerun_resumes_and_their_steps(tmp_path):
    store = LakeStore(tmp_path / "lake")
    for checkpoint_id, step in (("abc", 4), ("def", None)):
        job = build_job(store, checkpoint_id, f"checkpoints/{checkpoint_id}", {"base_model": BASE_MODEL})
        write_job(store, checkpoint_id, job, [])
        if step is not None:
            store.put_bytes(f"{job['resume_key']}/{RESUME_INFO}", json.dumps({"step": step}).encode())
        assert resume_step(store, job) == step
    assert resumable_jobs(store) == {"abc": 4}


def test_a_job_refuses_local_paths(tmp_path):
    store = LakeStore(tmp_path)
    with pytest.raises(ValueError, match="train_file"):
        build_job(store, "x", "checkpoints/x", {"base_model": BASE_MODEL, "train_file": "/home/me/train.jsonl"})
    with pytest.raises(ValueError, match="not_a_field"):
        build_job(store, "x", "checkpoints/x", {"base_model": BASE_MODEL, "not_a_field": 1})


def test_the_pod_spec_carries_image_command_gpus_service_account_and_the_secret_by_reference():
    training = Training(
        runner="k8s",
        nproc_per_node=2,
        pod=TrainingPod(
            image="registry.example.org/mella-train:1.0", namespace="ml", service_account="trainer",
            env_secret="lake-creds", gpus=2, cpu="16", memory="120Gi", env={"NCCL_DEBUG": "WARN"},
        ),
    )  # fmt: skip
    command = training.launch_command("s3://mella/lake/work/training/abc/job.json", python=training.pod.python)
    environ = {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_SECRET_ACCESS_KEY": "not-for-the-pod", "HOME": "/h"}
    pipes_env = {"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"}
    manifest = training.pod_manifest(command, "abc", pipes_env, environ)
    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["metadata"]["labels"]["mella/checkpoint-id"] == "abc"
    spec = manifest["spec"]
    assert spec["serviceAccountName"] == "trainer" and spec["restartPolicy"] == "Never"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    (container,) = spec["containers"]
    assert container["image"] == "registry.example.org/mella-train:1.0"
    assert container["command"] == [
        "python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "mella_assets.training.train", "--config", "s3://mella/lake/work/training/abc/job.json",
    ]  # fmt: skip
    assert container["resources"] == {
        "limits": {"memory": "120Gi", "nvidia.com/gpu": "2"},
        "requests": {"cpu": "16", "memory": "120Gi"},
    }
    assert container["envFrom"] == [{"secretRef": {"name": "lake-creds"}}]
    assert container["env"] == [
        {"name": "DAGSTER_PIPES_CONTEXT", "value": "ctx"},
        {"name": "DAGSTER_PIPES_MESSAGES", "value": "msg"},
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"},
        {"name": "MELLA_TRAINING_SCRATCH", "value": "/scratch/work"},
        {"name": "MELLA_LAKE_CACHE", "value": "/scratch/lake-cache"},
        {"name": "HF_HOME", "value": "/scratch/hf"},
        {"name": "NCCL_DEBUG", "value": "WARN"},
    ]
    assert "not-for-the-pod" not in json.dumps(manifest)
    assert spec["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
    }  # fmt: skip
    assert {v["name"]: v["emptyDir"] for v in spec["volumes"]} == {
        "scratch": {"sizeLimit": "200Gi"},
        "dshm": {"medium": "Memory"},
    }


def test_the_k8s_runner_refuses_credentials_in_plain_env_a_missing_image_and_too_few_gpus():
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        Training(runner="k8s", pod=TrainingPod(image="i", forward_env=["AWS_SECRET_ACCESS_KEY"])).pod_env({})
    with pytest.raises(ValueError, match="image"):
        Training(runner="k8s", pod=TrainingPod(image="")).check_runner()
    with pytest.raises(ValueError, match="exceeds"):
        Training(runner="k8s", nproc_per_node=4, pod=TrainingPod(image="i", gpus=2)).check_runner()
    with pytest.raises(ValueError, match="runner"):
        Training(runner="slurm").check_runner()


@pytest.fixture
def local_lake(tmp_path):
    """A local lake holding a Czech mella_dataset and the tiny base model."""
    store = LakeStore(tmp_path / "lake")
    images = [store_image(store, picture(seed)) for seed in range(len(CZECH_ALTS))]
    build = build_sft_records(
        know_frame("cs", images, CZECH_ALTS), ling_frame("cs", images, CZECH_CAPTIONS), LANGUAGES["cs"]
    )
    store.write_table("mella_dataset", "cs", build.records)
    tiny = build_tiny_models(tmp_path / "tiny", SAMPLE_TEXTS, seed=0)
    store.put_dir("models/tiny/captioner", tiny.captioner)
    return store


def test_the_subprocess_runner_trains_on_the_same_lake_job_under_torchrun(local_lake, tmp_path):
    store = local_lake
    scratch = tmp_path / "scratch"
    training = Training(
        base_model=BASE_MODEL, launcher="torchrun", nproc_per_node=1, max_steps=2, log_every=1, save_every=1,
        batch_size=4, scratch_root=str(scratch),
    )  # fmt: skip
    client = dg.PipesSubprocessClient(env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    resources = {"lake": Lake(root=str(store.root_uri)), "training": training, "pipes_subprocess_client": client}
    result = dg.materialize([finetuned_checkpoint], resources=resources)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("finetuned_checkpoint")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    checkpoint_key = metadata["checkpoint_key"]
    job_path = store.path(f"work/training/{checkpoint_key.split('/')[1]}/job.json")
    # The pod's command on the same job, with this interpreter, under torchrun.
    assert metadata["launch_command"] == " ".join([
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "-m", "mella_assets.training.train", "--config", str(job_path),
    ])  # fmt: skip
    assert metadata["runner"] == "subprocess" and metadata["world_size"] == 1 and metadata["steps"] == 2
    assert metadata["progress_reports"] == 2
    assert metadata["output_dir"] == store.uri(checkpoint_key) == metadata["checkpoint_uri"]

    # The trainer published the checkpoint; the record beside it names the lake job, no local path.
    assert store.exists(f"{checkpoint_key}/adapter_model.safetensors")
    record = json.loads(store.get_bytes(f"{checkpoint_key}/mella_checkpoint.json"))
    assert record["sft_config"]["output_key"] == checkpoint_key and record["result"]["steps"] == 2
    assert record["sft_config"]["base_model"] == BASE_MODEL
    assert not {"train_file", "output_dir", "work_dir"} & set(record["sft_config"])
    assert read_latest_checkpoint(store)["checkpoint_key"] == checkpoint_key
    history = store.read_table("finetuned_checkpoint")
    assert history.columns == list(FINETUNED_CHECKPOINT.columns)
    assert history["checkpoint_key"].to_list() == [checkpoint_key]
    # The job (with the resume state saved at step 1) and the trainer's scratch folder are gone.
    assert list(store.list("work/training")) == []
    assert list(scratch.iterdir()) == []


def test_the_runner_chooses_the_launcher_and_both_launch_the_training_script_on_the_job():
    client = dg.PipesSubprocessClient()
    job = "s3://mella/lake/work/training/abc/job.json"
    local = Training(python="/py").runner_launcher(client)
    assert isinstance(local, SubprocessLauncher) and local.client is client and local.runner == "subprocess"
    assert local.command(job) == ["/py", "-m", "mella_assets.training.train", "--config", job]
    pod = Training(runner="k8s", python="/py", pod=TrainingPod(image="i")).runner_launcher(client)
    assert isinstance(pod, K8sLauncher) and pod.runner == "k8s"
    assert pod.command(job) == ["python", "-m", "mella_assets.training.train", "--config", job]
    with pytest.raises(ValueError, match="image"):
        Training(runner="k8s", pod=TrainingPod(image="")).runner_launcher(client)
    with pytest.raises(ValueError, match="does not exist"):
        local.check_base_model("/nonexistent/model")  # the trainer runs here: refused before it is launched
    pod.check_base_model("/models/in-the-image")  # a path in the pod's image is the pod's to find
