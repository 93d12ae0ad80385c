"""The SFT settings: which base model is fine-tuned, how, where it runs (a local subprocess or a Kubernetes pod),
and when it is retrained; and the launchers that start the training process on a lake job, one per runner."""

import sys
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
from pydantic import Field

from mella_assets.lib.model_paths import LAKE_URI_PREFIX, check_model_reference
from mella_assets.lib.watchdog import stage_timeout_s
from mella_assets.settings import load_settings, variables
from mella_assets.training.lake_job import SCRATCH_ENV, job_prefix
from mella_assets.training.sft import SFTConfig

# SFTConfig settings this resource exposes with SFTConfig's own defaults (one source for the asset and `mella train`).
TUNED_SFT_FIELDS = (
    "grad_accumulation_steps", "lr_scheduler", "warmup_ratio", "min_lr_ratio", "max_grad_norm", "weight_decay",
    "precision", "group_by_length", "lora_r", "lora_alpha", "lora_scope", "max_pixels",
)  # fmt: skip
SFT_DEFAULTS = {field.name: field.default for field in fields(SFTConfig)}
TRAIN_SCRIPT_MODULE = "mella_assets.training.train"
# trainer → the module that trains on a lake job (same job, Pipes protocol and checkpoint layout for each).
TRAINER_MODULES = {"builtin": TRAIN_SCRIPT_MODULE, "trl": "mella_assets.training.trl_train"}
RUNNERS = ("subprocess", "k8s")
SCRATCH_MOUNT = "/scratch"
# Variables a training pod may copy from the orchestrator's environment: where the lake and the hub are, never
# a credential (credentials reach the pod only through the Secret named by `env_secret`).
DEFAULT_FORWARD_ENV = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "HF_HUB_OFFLINE"]
_SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "CREDENTIAL", "SESSION")
# The image's non-root user (deploy/k8s/Dockerfile: USER 10001:10001), which the pod's securityContext enforces.
POD_UID = POD_GID = 10001
# The training pod runs as that user, cannot gain privileges, holds no capability and is under the runtime's
# default seccomp profile (Kubernetes' "restricted" Pod Security Standard). fsGroup lets it write its volumes.
POD_SECURITY_CONTEXT = {
    "run_as_non_root": True,
    "run_as_user": POD_UID,
    "run_as_group": POD_GID,
    "fs_group": POD_GID,
    "seccomp_profile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "allow_privilege_escalation": False,
    "capabilities": {"drop": ["ALL"]},
    "run_as_non_root": True,
}


def _setting(name: str) -> Callable[[], Any]:
    """A default factory: the setting ``name`` of mella_assets/settings.py, read when the resource is made."""
    return lambda: getattr(load_settings(), name)


class TrainingPod(dg.Config):
    """The Kubernetes pod one training run gets when ``runner`` is 'k8s' (``dagster_k8s.PipesK8sClient``).

    The pod holds only lake credentials (from the Secret ``env_secret``) and reads its inputs from the lake; it
    reports progress and the result through Dagster Pipes on its log stream."""

    image: str = Field(
        default_factory=_setting("training_image"),
        description="Image with this package and a CUDA torch (deploy/k8s/Dockerfile).",
    )
    namespace: str = Field(
        default_factory=_setting("training_namespace"),
        description="Namespace of the training pods (empty: the namespace the run itself is in).",
    )
    service_account: str = Field(
        default_factory=_setting("training_service_account"),
        description="Service account of the training pod (it needs no Kubernetes API rights).",
    )
    env_secret: str = Field(
        default_factory=_setting("training_env_secret"),
        description="Secret whose keys become the pod's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).",
    )
    gpus: int = Field(
        default_factory=_setting("training_gpus"),
        description="nvidia.com/gpu limit of the pod (0: CPU only).",
    )
    cpu: str = Field(default_factory=_setting("training_cpu"), description="CPU request.")
    memory: str = Field(
        default_factory=_setting("training_memory"),
        description="Memory request and limit.",
    )
    scratch_size: str = Field(
        "200Gi", description=f"Size limit of the pod's emptyDir at {SCRATCH_MOUNT} (lake cache, model, work)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=_setting("training_node_selector"),
        description="Node selector of the pod (JSON in MELLA_TRAINING_NODE_SELECTOR).",
    )
    tolerations: list[dict[str, str]] = Field(
        default_factory=_setting("training_tolerations"),
        description="Tolerations of the pod (JSON in MELLA_TRAINING_TOLERATIONS).",
    )
    forward_env: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FORWARD_ENV),
        description="Variables copied from the orchestrator's environment when set there (no credentials).",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Further plain variables for the pod.")
    python: str = Field("python", description="Interpreter in the image.")
    image_pull_policy: str = Field("IfNotPresent", description="imagePullPolicy of the training container.")


class Training(dg.ConfigurableResource):
    """Supervised fine-tuning of the base MLLM on the train split (run outside Dagster through Pipes), and the
    retraining policy the ``retraining_sensor`` applies."""

    base_model: str = Field(
        default_factory=_setting("base_model"),
        description="Hub id, local path or lake:// folder of the MLLM to fine-tune and evaluate.",
    )
    method: str = Field(
        default_factory=_setting("training_method"),
        description="'lora' (PEFT adapter) or 'full'.",
    )
    max_steps: int = Field(default_factory=_setting("training_steps"), description="Optimizer steps.")
    learning_rate: float = Field(default_factory=_setting("training_lr"), description="AdamW learning rate.")
    batch_size: int = Field(8, description="Examples per step on each process.")
    seed: int = Field(0, description="Seed for data order and initialisation.")
    grad_accumulation_steps: int = Field(
        SFT_DEFAULTS["grad_accumulation_steps"],
        description="Micro-batches per optimizer step (effective batch = batch_size × this × processes).",
    )
    lr_scheduler: str = Field(
        SFT_DEFAULTS["lr_scheduler"], description="After warmup: 'cosine', 'linear' or 'constant' down to min_lr_ratio."
    )
    warmup_ratio: float = Field(SFT_DEFAULTS["warmup_ratio"], description="Linear warmup as a share of max_steps.")
    min_lr_ratio: float = Field(SFT_DEFAULTS["min_lr_ratio"], description="Floor of the decay, × learning_rate.")
    max_grad_norm: float = Field(SFT_DEFAULTS["max_grad_norm"], description="Gradient clipping (0: off).")
    weight_decay: float = Field(SFT_DEFAULTS["weight_decay"], description="AdamW weight decay on weight matrices.")
    precision: str = Field(
        SFT_DEFAULTS["precision"],
        description="'auto' (bf16 mixed precision with fp32 master weights on a GPU, fp32 on CPU), 'bf16-mixed' or "
        "'fp32'.",
    )
    group_by_length: bool = Field(
        SFT_DEFAULTS["group_by_length"], description="Batch examples of similar length together (less padding)."
    )
    lora_r: int = Field(SFT_DEFAULTS["lora_r"], description="LoRA rank.")
    lora_alpha: int = Field(SFT_DEFAULTS["lora_alpha"], description="LoRA alpha.")
    lora_scope: str = Field(
        SFT_DEFAULTS["lora_scope"],
        description="What LoRA adapts: 'language' (the language model's attention and MLP), 'language+projector' "
        "or 'all' (the vision tower too).",
    )
    max_pixels: int = Field(SFT_DEFAULTS["max_pixels"], description="Training images are downscaled to this.")
    log_every: int = Field(5, description="Steps between progress reports (loss, tokens/s, peak memory).")
    save_every: int = Field(10, description="Steps between saves of the resume state (in the lake job).")
    trainer: str = Field(
        default_factory=_setting("training_trainer"),
        description="What trains on the lake job: 'builtin' (mella_assets.training.train, the project's own loop) "
        "or 'trl' (mella_assets.training.trl_train: TRL's SFTTrainer, needs the `trl` extra where it runs). Part "
        "of a checkpoint's identity.",
    )
    python: str = Field(sys.executable, description="Interpreter that runs the trainer module.")
    nproc_per_node: int = Field(
        default_factory=_setting("training_nproc"),
        description="Processes (GPUs) per node. Above 1, or with launcher 'torchrun', the script runs under "
        "`torchrun --standalone --nproc_per_node N` with DDP.",
    )
    launcher: str = Field(
        default_factory=_setting("training_launcher"),
        description="'python' (one process) or 'torchrun'.",
    )
    runner: str = Field(
        default_factory=_setting("training_runner"),
        description="Where the training process runs on the lake job (inputs, resume state and checkpoint in the "
        "lake either way): 'subprocess' (this machine, PipesSubprocessClient) or 'k8s' (a pod per run through "
        "dagster_k8s.PipesK8sClient).",
    )
    pod: TrainingPod = Field(default_factory=TrainingPod, description="The training pod (runner 'k8s').")
    scratch_root: str = Field(
        "",
        description="Runner 'subprocess': local folder for the trainer's scratch (its copy of the train records, the "
        "checkpoint before it is published), one sub-folder per checkpoint id and rank, removed when the run "
        "succeeds (default: <temp folder>/mella-training). Resume state is kept in the lake job, not here.",
    )
    retrain_min_new_rows: int = Field(
        default_factory=_setting("retrain_min_new_rows"),
        description="Train rows mella_dataset must gain since the latest checkpoint before the retraining sensor "
        "requests a run.",
    )
    retrain_min_growth_share: float = Field(
        default_factory=_setting("retrain_min_growth_share"),
        description="Alternatively, growth as a share of the rows the latest checkpoint saw (0 = off; either "
        "threshold suffices).",
    )
    retrain_cooldown_seconds: int = Field(
        default_factory=_setting("retrain_cooldown_seconds"),
        description="Least time between two retraining requests (kept in the sensor's cursor).",
    )
    retrain_max_concurrent_runs: int = Field(
        default_factory=_setting("retrain_max_concurrent"),
        description="No new request while this many training_job runs are queued or in progress.",
    )

    def uses_torchrun(self) -> bool:
        return self.launcher == "torchrun" or self.nproc_per_node > 1

    def trainer_module(self) -> str:
        """The module ``trainer`` names (run with ``-m``)."""
        if self.trainer not in TRAINER_MODULES:
            raise ValueError(f"trainer must be one of {sorted(TRAINER_MODULES)}, not {self.trainer!r}")
        return TRAINER_MODULES[self.trainer]

    def launch_command(self, config_path: str | Path, python: str | None = None) -> list[str]:
        """The command that runs the trainer's module on ``config_path`` (plain Python or torchrun)."""
        if self.launcher not in ("python", "torchrun"):
            raise ValueError(f"launcher must be 'python' or 'torchrun', not {self.launcher!r}")
        if self.nproc_per_node < 1:
            raise ValueError("nproc_per_node must be at least 1")
        python = python or self.python
        script = ["-m", self.trainer_module(), "--config", str(config_path)]
        if not self.uses_torchrun():
            return [python, *script]
        # `python -m torch.distributed.run` is torchrun without relying on the console script being on PATH.
        launcher = [python, "-m", "torch.distributed.run", "--standalone"]
        return [*launcher, f"--nproc_per_node={self.nproc_per_node}", *script]

    def _training_settings(self) -> dict[str, Any]:
        """What is trained and how: the settings both a checkpoint's identity and its job carry."""
        return {
            "base_model": self.base_model,
            "method": self.method,
            "max_steps": self.max_steps,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "seed": self.seed,
            **{name: getattr(self, name) for name in TUNED_SFT_FIELDS},
        }

    def checkpoint_settings(self) -> dict[str, Any]:
        """The settings a checkpoint's identity hashes (with the data version): other values, another checkpoint.
        They include the trainer, so the checkpoint's record says which one made it."""
        return {**self._training_settings(), "nproc_per_node": self.nproc_per_node, "trainer": self.trainer}

    def job_settings(self) -> dict[str, Any]:
        """The SFTConfig fields of a lake job this resource sets (every other field keeps its SFTConfig default)."""
        return {
            **self._training_settings(),
            "log_every": self.log_every,
            "save_every": self.save_every,
            # The stage watchdog's budget (lib/watchdog.py), enforced inside the training loop of the other process.
            "max_seconds": stage_timeout_s("finetuned_checkpoint")[0],
        }

    def runner_launcher(self, pipes_subprocess_client: dg.PipesSubprocessClient) -> "TrainingLauncher":
        """The launcher of ``runner``: 'subprocess' runs the trainer here through ``pipes_subprocess_client``,
        'k8s' in a pod through :meth:`pipes_k8s_client`."""
        self.check_runner()
        if self.runner == "k8s":
            return K8sLauncher(self)
        return SubprocessLauncher(self, pipes_subprocess_client)

    def check_runner(self) -> None:
        self.trainer_module()  # an unknown trainer fails before any job is written
        if self.runner not in RUNNERS:
            raise ValueError(f"runner must be one of {RUNNERS}, not {self.runner!r}")
        if self.runner == "k8s":
            if not self.pod.image:
                raise ValueError("runner 'k8s' needs an image (MELLA_TRAINING_IMAGE or training.pod.image)")
            if self.pod.gpus and self.nproc_per_node > self.pod.gpus:
                raise ValueError(f"nproc_per_node {self.nproc_per_node} exceeds the pod's {self.pod.gpus} GPUs")

    def pod_env(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """Plain variables of the training pod: forwarded lake / hub settings, the scratch folders, ``pod.env``."""
        refused = [name for name in [*self.pod.forward_env, *self.pod.env] if any(w in name for w in _SECRET_WORDS)]
        if refused:
            raise ValueError(f"credentials reach the pod only through the Secret {self.pod.env_secret!r}: {refused}")
        forwarded = variables(self.pod.forward_env, environ)
        scratch = {
            "MELLA_TRAINING_SCRATCH": f"{SCRATCH_MOUNT}/work",
            "MELLA_LAKE_CACHE": f"{SCRATCH_MOUNT}/lake-cache",
            "HF_HOME": f"{SCRATCH_MOUNT}/hf",
        }
        return {**forwarded, **scratch, **self.pod.env}

    def k8s_run_arguments(
        self, command: Sequence[str], checkpoint_id: str, environ: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Keyword arguments of ``PipesK8sClient.run`` (besides context and extras) for one training run: image,
        command, namespace, env, pod metadata and the pod spec (GPU, service account, secret, scratch)."""
        self.check_runner()
        pod = self.pod
        limits = {"memory": pod.memory, **({"nvidia.com/gpu": str(pod.gpus)} if pod.gpus else {})}
        container = {
            "name": "train",
            "image_pull_policy": pod.image_pull_policy,
            "env_from": [{"secret_ref": {"name": pod.env_secret}}],
            "resources": {"requests": {"cpu": pod.cpu, "memory": pod.memory}, "limits": limits},
            "security_context": deepcopy(CONTAINER_SECURITY_CONTEXT),
            "volume_mounts": [
                {"name": "scratch", "mount_path": SCRATCH_MOUNT},
                {"name": "dshm", "mount_path": "/dev/shm"},
            ],
        }
        spec = {
            "service_account_name": pod.service_account,
            "restart_policy": "Never",
            "security_context": deepcopy(POD_SECURITY_CONTEXT),
            "node_selector": dict(pod.node_selector),
            "tolerations": [dict(t) for t in pod.tolerations],
            "containers": [container],
            "volumes": [
                {"name": "scratch", "empty_dir": {"size_limit": pod.scratch_size}},
                # NCCL and torchrun workers share memory through /dev/shm, which is 64 MiB in a container.
                {"name": "dshm", "empty_dir": {"medium": "Memory"}},
            ],
        }
        labels = {"app.kubernetes.io/part-of": "mella", "app.kubernetes.io/component": "training"}
        return {
            "image": pod.image,
            "command": list(command),
            "namespace": pod.namespace or None,
            "env": self.pod_env(environ),
            "base_pod_meta": {"labels": {**labels, "mella/checkpoint-id": checkpoint_id}},
            "base_pod_spec": spec,
        }

    def pod_manifest(
        self,
        command: Sequence[str],
        checkpoint_id: str,
        pipes_env: dict[str, str],
        environ: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The pod ``PipesK8sClient.run`` submits for these arguments (dagster_k8s's ``build_pod_body``, which
        checks every field against the Kubernetes models), as the camelCase manifest ``kubectl`` shows;
        ``pipes_env`` stands for the Pipes bootstrap variables of the session. The pod name is an example:
        ``PipesK8sClient`` names it ``dagster-<run id>-finetuned-checkpoint-<digits>``."""
        from dagster_k8s.pipes import build_pod_body
        from kubernetes.client import ApiClient

        arguments = self.k8s_run_arguments(command, checkpoint_id, environ)
        pod = build_pod_body(
            pod_name=f"dagster-training-{checkpoint_id}",
            image=arguments["image"],
            command=arguments["command"],
            env_vars={**pipes_env, **arguments["env"]},
            base_pod_meta=arguments["base_pod_meta"],
            base_pod_spec=arguments["base_pod_spec"],
        )
        manifest = {"apiVersion": "v1", "kind": "Pod", **ApiClient().sanitize_for_serialization(pod)}
        if arguments["namespace"]:
            manifest["metadata"]["namespace"] = arguments["namespace"]
        return manifest

    def pipes_k8s_client(self):
        """The Pipes client of runner 'k8s': environment context, messages read back from the pod's log."""
        from dagster_k8s import PipesK8sClient

        return PipesK8sClient()

    def work_dir(self, lake_root: Path, checkpoint_id: str) -> Path:
        """The folder of one training run's lake job in the local lake at ``lake_root`` (its resume state in
        ``resume/``, where a killed run relaunched with the same data and settings resumes from)."""
        return Path(lake_root) / job_prefix(checkpoint_id)


class TrainingLauncher(Protocol):
    """Starts the training process on a lake job and waits for it: the only part of a training run that differs
    between runners. Both run ``python -m <trainer module> --config <job>`` (``mella_assets.training.train``, or
    ``mella_assets.training.trl_train`` for trainer 'trl'; torchrun when configured) and hand back the Pipes
    invocation (the reported materialization and progress messages)."""

    runner: str

    def command(self, job_location: str) -> list[str]:
        """The command the trainer is started with."""
        ...

    def check_base_model(self, base_model: str) -> None:
        """Refuse, before launching, a base model the trainer could not load (a ``lake://`` model is the lake's
        to check)."""
        ...

    def launch(
        self, context: dg.AssetExecutionContext, job: Mapping[str, Any], job_location: str, checkpoint_id: str
    ) -> dg.PipesClientCompletedInvocation:
        """Run the trainer on the job at ``job_location`` (``job`` also travels as the Pipes extras)."""
        ...


@dataclass(frozen=True)
class SubprocessLauncher:
    """Runner 'subprocess': the trainer runs on this machine through ``dg.PipesSubprocessClient``, its scratch
    under ``scratch_root`` when set."""

    training: Training
    client: dg.PipesSubprocessClient
    runner: str = "subprocess"

    def command(self, job_location: str) -> list[str]:
        return self.training.launch_command(job_location)

    def check_base_model(self, base_model: str) -> None:
        if not base_model.startswith(LAKE_URI_PREFIX):
            check_model_reference(base_model)  # the trainer runs here: a local folder must exist here

    def launch(
        self, context: dg.AssetExecutionContext, job: Mapping[str, Any], job_location: str, checkpoint_id: str
    ) -> dg.PipesClientCompletedInvocation:
        env = {SCRATCH_ENV: self.training.scratch_root} if self.training.scratch_root else None
        return self.client.run(context=context, command=self.command(job_location), extras=dict(job), env=env)


@dataclass(frozen=True)
class K8sLauncher:
    """Runner 'k8s': a pod that holds only lake credentials trains on the job and reports through Pipes on its log
    stream (``dagster_k8s.PipesK8sClient``)."""

    training: Training
    runner: str = "k8s"

    def command(self, job_location: str) -> list[str]:
        return self.training.launch_command(job_location, python=self.training.pod.python)

    def check_base_model(self, base_model: str) -> None:
        """Nothing to check here: a local path names a folder in the image, a hub id is fetched in the pod."""

    def launch(
        self, context: dg.AssetExecutionContext, job: Mapping[str, Any], job_location: str, checkpoint_id: str
    ) -> dg.PipesClientCompletedInvocation:
        arguments = self.training.k8s_run_arguments(self.command(job_location), checkpoint_id)
        context.log.info(
            f"training pod: image {arguments['image']}, {self.training.pod.gpus} GPU(s), job {job_location}"
        )
        return self.training.pipes_k8s_client().run(context=context, extras=dict(job), **arguments)
