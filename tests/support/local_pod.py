"""Run the pod ``PipesK8sClient`` would submit as a local process, for tests without a cluster.

``LocalPodPipesClient.run`` takes the same arguments as ``dagster_k8s.PipesK8sClient.run``, opens the same Pipes
session (``PipesEnvContextInjector`` + ``PipesK8sPodLogsMessageReader``: context in the pod's environment,
messages on its stderr) and builds the pod body with dagster_k8s's own ``build_pod_body``. Instead of creating
the pod through the Kubernetes API it does what a kubelet would with that body: starts the first container's
command with exactly the container's environment, ``envFrom`` secrets resolved from ``secrets``, each volume
mount backed by a fresh empty folder, in an empty working folder and with an empty HOME, and feeds every line
the process writes to the Pipes message handler as the pod-log reader does. The Kubernetes API calls (create,
wait, log streaming, delete) are what this does not exercise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import PipesClient
from dagster._core.errors import DagsterPipesExecutionError
from dagster._core.pipes.client import PipesClientCompletedInvocation
from dagster._core.pipes.utils import PipesEnvContextInjector, extract_message_or_forward_to_stdout, open_pipes_session
from dagster_k8s.pipes import PipesK8sPodLogsMessageReader, build_pod_body, get_pod_name


class LocalPodPipesClient(PipesClient):
    """A stand-in for ``PipesK8sClient`` that runs the pod body here; ``pods`` keeps every body it ran."""

    def __init__(self, secrets: Mapping[str, Mapping[str, str]], root: str | os.PathLike[str]) -> None:
        self.secrets = {name: dict(values) for name, values in secrets.items()}
        self.root = Path(root)
        self.pods: list[Any] = []  # kubernetes.client.V1Pod, as build_pod_body returns it
        self.namespaces: list[str] = []

    def run(  # the keyword arguments of PipesK8sClient.run
        self,
        *,
        context,
        extras: Mapping[str, Any] | None = None,
        image: str | None = None,
        command: str | Sequence[str] | None = None,
        namespace: str | None = None,
        env: Mapping[str, str] | None = None,
        base_pod_meta: Mapping[str, Any] | None = None,
        base_pod_spec: Mapping[str, Any] | None = None,
    ) -> PipesClientCompletedInvocation:
        op_context = getattr(context, "op_execution_context", context)
        with open_pipes_session(
            context=context,
            extras=extras,
            context_injector=PipesEnvContextInjector(),
            message_reader=PipesK8sPodLogsMessageReader(),
        ) as session:
            pod = build_pod_body(
                pod_name=get_pod_name(op_context.run_id, op_context.op.name),
                image=image,
                command=command,
                env_vars={**session.get_bootstrap_env_vars(), **(env or {})},
                base_pod_meta=base_pod_meta,
                base_pod_spec=base_pod_spec,
            )
            self.pods.append(pod)
            self.namespaces.append(namespace or "default")
            container = pod.spec.containers[0]
            process_env = self._container_env(pod, container)
            workdir = Path(tempfile.mkdtemp(prefix="workdir-", dir=self.root))
            process = subprocess.Popen(
                container.command, env=process_env, cwd=workdir,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            assert process.stdout is not None
            for line in process.stdout:  # the pod's log: Pipes messages are extracted, the rest is forwarded
                extract_message_or_forward_to_stdout(session.message_handler, line.rstrip("\n"))
            if process.wait() != 0:
                raise DagsterPipesExecutionError(f"training pod exited with {process.returncode}")
        return PipesClientCompletedInvocation(session)

    def _container_env(self, pod, container) -> dict[str, str]:
        """The process environment a kubelet gives the container: its env, its secrets, mounted volumes."""
        mounts = {}
        for mount in container.volume_mounts or []:
            if mount.mount_path == "/dev/shm":
                continue  # the host's own shared memory serves
            mounts[mount.mount_path] = tempfile.mkdtemp(prefix=f"volume-{mount.name}-", dir=self.root)
        env: dict[str, str] = {}
        for source in container.env_from or []:
            env.update(self.secrets[source.secret_ref.name])  # a missing Secret fails the pod, as in a cluster
        for variable in container.env or []:
            value = variable.value
            for mount_path, local in mounts.items():
                if value.startswith(mount_path + "/") or value == mount_path:
                    value = local + value[len(mount_path) :]
            env[variable.name] = value
        home = tempfile.mkdtemp(prefix="home-", dir=self.root)
        # The image's PATH (its python) and nothing else of this machine's environment.
        return {**env, "HOME": home, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
