"""A kubelet stand-in: run a Deployment's pods as local processes, as a cluster would.

The emulator schedules nothing, so a test that installs the chart (``helm install``,
``kubectl apply -f deploy/manifests/``) starts the operator with :class:`DeploymentRunner`,
which reads what the deployment controller and the kubelet read from the API server and
nothing else:

- the Deployment's ``spec.replicas`` (one local process per replica) and its pod template:
  the first container's ``args`` (the image's entrypoint is ``rolecall``, run here as
  ``python -m rolecall.cli``), ``env`` (literal values, the ``metadata.name``/
  ``metadata.namespace`` field references, ``secretKeyRef``); the process gets only that
  environment, plus what the node gives every pod (``node_env``: here the local STS and the
  operator's AWS identity, as IRSA or instance metadata would) and a ``PATH``;
- Secret volumes: written to a directory per pod, and every argument that points into a mount
  path points into that directory instead;
- container ports: each gets a free local port, and every argument equal to ``--flag=<port>``
  is rewritten to it;
- the pod's ServiceAccount: the process authenticates with a token of that ServiceAccount from
  the TokenRequest API (user ``system:serviceaccount:<namespace>:<name>`` and its groups);
- the Services whose selector matches the pods: once a pod is ready (its ``/healthz``, the
  readiness probe, answers) it becomes one of the Service's endpoints, and the emulator sends
  webhook calls and service-proxy requests for the Service to its endpoints in turn (DNS and
  kube-proxy); TLS is still checked against ``<service>.<namespace>.svc``.

It also writes back what a cluster shows: a Pod object per replica (labels of the template,
``Running`` and ``Ready`` once healthy, its log served at ``pods/<name>/log`` from the
process's output, so ``kubectl logs deployment/<name>`` works) and the Deployment's status
(``kubectl rollout status``). Stopping the runner stops the processes and deletes the Pods.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .emulator import KubeAPIEmulator

Obj = dict[str, Any]

# What every container gets besides its spec's env: a PATH, and no developer's ~/.aws.
BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kubelet:
    """The admin's HTTP calls the stand-in makes (what the kubelet and controllers write)."""

    def __init__(self, emulator: KubeAPIEmulator) -> None:
        self.emulator = emulator

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.emulator.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.emulator.token}", "Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            if e.code == 404 and method in ("GET", "DELETE"):
                return None
            raise AssertionError(f"kubelet: {method} {path}: {e.code} {e.read()[:300]!r}") from None

    def get(self, group: str, plural: str, namespace: str, name: str) -> Obj:
        prefix = "/api/v1" if not group else f"/apis/{group}/v1"
        found = self.request("GET", f"{prefix}/namespaces/{namespace}/{plural}/{name}")
        if found is None:
            raise AssertionError(f"kubelet: {plural} {namespace}/{name} not found")
        return found  # type: ignore[no-any-return]


class PodProcess:
    """One replica: a Pod object in the API and the operator process behind it."""

    def __init__(self, runner: DeploymentRunner, index: int) -> None:
        self.runner = runner
        self.name = f"{runner.name}-{runner.template_hash}-{secrets.token_hex(3)[:5]}"
        self.workdir = runner.workdir / self.name
        self.log_path = self.workdir / "container.log"
        self.ports: dict[str, int] = {}  # container port name (and number) -> local port
        self.proc: subprocess.Popen[bytes] | None = None
        self.args: list[str] = []
        self.ready = False
        self.index = index

    @property
    def api(self) -> Kubelet:
        return self.runner.api

    def start(self, template: Obj) -> None:
        runner = self.runner
        spec = template.get("spec") or {}
        container = spec["containers"][0]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._create_pod_object(template)
        mounts = self._mount_volumes(spec, container)
        ports: dict[int, int] = {}
        for port in container.get("ports") or []:
            local = free_port()
            ports[int(port["containerPort"])] = local
            self.ports[str(port.get("name") or port["containerPort"])] = local
            self.ports[str(port["containerPort"])] = local
        args = [self._rewrite(a, mounts, ports) for a in container.get("args") or []]
        if not args or args[0] != "run":
            raise AssertionError(f"kubelet: expected `rolecall run ...`, got {args}")
        account = spec.get("serviceAccountName") or "default"
        token = runner.emulator.service_account_token(runner.namespace, account)
        kubeconfig = runner.emulator.write_kubeconfig(
            self.workdir / "kubeconfig", namespace=runner.namespace, token=token, user=account
        )
        self.args = ["run", "--kubeconfig", str(kubeconfig), *args[1:]]
        base = {k: v for k, v in os.environ.items() if k in BASE_ENV_KEYS}
        env = {**base, "HOME": str(self.workdir), **runner.node_env, **self._env(container)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rolecall.cli", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        log_path = self.log_path
        runner.emulator.call(lambda s: s.pod_logs.__setitem__((runner.namespace, self.name), log_path))

    def _create_pod_object(self, template: Obj) -> None:
        runner = self.runner
        meta = template.get("metadata") or {}
        labels = {**(meta.get("labels") or {}), "pod-template-hash": runner.template_hash}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": runner.namespace,
                "labels": labels,
                "annotations": meta.get("annotations") or {},
            },
            "spec": {**(template.get("spec") or {}), "nodeName": "local"},
        }
        self.api.request("POST", f"/api/v1/namespaces/{runner.namespace}/pods", pod)

    def _mount_volumes(self, spec: Obj, container: Obj) -> dict[str, Path]:
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"]) or {}
            directory = self.workdir / "volumes" / mount["name"]
            directory.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                secret = self.api.get("", "secrets", self.runner.namespace, volume["secret"]["secretName"])
                for key, value in (secret.get("data") or {}).items():
                    (directory / key).write_bytes(base64.b64decode(value))
            mounts[mount["mountPath"].rstrip("/")] = directory
        return mounts

    @staticmethod
    def _rewrite(arg: str, mounts: dict[str, Path], ports: dict[int, int]) -> str:
        flag, sep, value = arg.partition("=")
        if not sep:
            return arg
        for path, directory in mounts.items():
            if value == path or value.startswith(path + "/"):
                return f"{flag}={directory}{value[len(path) :]}"
        if value.isdigit() and int(value) in ports:
            return f"{flag}={ports[int(value)]}"
        return arg

    def _env(self, container: Obj) -> dict[str, str]:
        env: dict[str, str] = {}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            source = var.get("valueFrom") or {}
            field = (source.get("fieldRef") or {}).get("fieldPath")
            if field == "metadata.name":
                env[var["name"]] = self.name
            elif field == "metadata.namespace":
                env[var["name"]] = self.runner.namespace
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = self.api.get("", "secrets", self.runner.namespace, ref["name"]).get("data") or {}
                env[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env

    def poll_ready(self, port_name: str) -> bool:
        """One readiness probe: GET /healthz on the named port. Raises when the process exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"kubelet: {self.name} exited ({self.proc.returncode}):\n{self.text()[-3000:]}"
            )
        try:
            url = f"http://127.0.0.1:{self.ports[port_name]}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def mark_ready(self) -> None:
        self.ready = True
        path = f"/api/v1/namespaces/{self.runner.namespace}/pods/{self.name}"
        pod = self.api.request("GET", path)
        now = _now()
        pod["status"] = {
            **(pod.get("status") or {}),
            "phase": "Running",
            "podIP": "127.0.0.1",
            "hostIP": "127.0.0.1",
            "startTime": now,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        self.api.request("PUT", f"{path}/status", pod)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class DeploymentRunner:
    """The deployment controller's and the kubelet's part for one Deployment, in a thread.

    Every few hundred milliseconds it reads the Deployment: a new ``generation`` (``helm
    upgrade``, ``kubectl rollout restart``) rolls the pods (the new ones start, and the old
    ones stop once every new one is ready, as ``maxUnavailable: 0`` does); a deleted
    Deployment (``helm uninstall``, ``kubectl delete -f``) stops them. Readiness probes mark
    pods Ready and make them Service endpoints. The status is written back on each change.
    """

    def __init__(
        self,
        emulator: KubeAPIEmulator,
        namespace: str,
        name: str,
        workdir: Path,
        node_env: dict[str, str] | None = None,
        *,
        port_name: str = "http",
    ) -> None:
        self.emulator = emulator
        self.api = Kubelet(emulator)
        self.namespace = namespace
        self.name = name
        self.workdir = workdir
        self.node_env = node_env or {}
        self.port_name = port_name
        self.template_hash = ""
        self.pods: list[PodProcess] = []  # serving (the current generation once rolled)
        self.next_pods: list[PodProcess] = []  # starting, of a newer generation
        self.generation = 0
        self.routes: dict[str, list[tuple[str, int, int]]] = {}  # pod -> (service, port, local port)
        self.error: BaseException | None = None
        self.deleted = False
        self._status: tuple[int, int, int] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DeploymentRunner:
        deployment = self.api.get("apps", "deployments", self.namespace, self.name)
        self.pods = self._start_pods(deployment)
        self._thread = threading.Thread(target=self._loop, name=f"kubelet-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _start_pods(self, deployment: Obj) -> list[PodProcess]:
        self.generation = int(deployment["metadata"].get("generation") or 1)
        self.template_hash = secrets.token_hex(5)[:10]
        template = deployment["spec"]["template"]
        pods = [PodProcess(self, i) for i in range(int(deployment["spec"].get("replicas", 1)))]
        for pod in pods:
            pod.start(template)
        return pods

    def _loop(self) -> None:
        while not self._stopping.wait(0.3):
            try:
                self._reconcile()
            except BaseException as e:  # reported by wait_healthy, and at stop()
                self.error = e
                return

    def _reconcile(self) -> None:
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.name}"
        deployment = self.api.request("GET", path)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            self._stop_pods(self.pods + self.next_pods)
            self.pods, self.next_pods, self.deleted = [], [], True
            return
        self.deleted = False
        if not self.pods and not self.next_pods:
            self.pods = self._start_pods(deployment)  # created again after a delete
        elif int(deployment["metadata"].get("generation") or 1) != self.generation:
            self._stop_pods(self.next_pods)  # a newer one supersedes a rollout in progress
            self.next_pods = self._start_pods(deployment)
        for pod in self.pods + self.next_pods:
            if not pod.ready and pod.poll_ready(self.port_name):
                pod.mark_ready()
                self._route(pod, deployment)
        if self.next_pods and all(p.ready for p in self.next_pods):
            self._stop_pods(self.pods)
            self.pods, self.next_pods = self.next_pods, []
        self._write_status(deployment)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every replica of the current generation is ready (a Service endpoint)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise AssertionError(f"kubelet: {self.error}") from self.error
            if self.pods and not self.next_pods and all(p.ready for p in self.pods):
                return
            time.sleep(0.1)
        raise AssertionError(
            f"kubelet: deployment {self.namespace}/{self.name} not ready within {timeout}s:\n"
            + "\n".join(p.text()[-2000:] for p in self.pods + self.next_pods if not p.ready)
        )

    def wait_rolled(self, generation: int, timeout: float = 90.0) -> None:
        """Until the pods of ``generation`` (or newer) replaced the older ones and are ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.generation < generation:
            time.sleep(0.1)
        self.wait_healthy(max(1.0, deadline - time.monotonic()))

    def _route(self, pod: PodProcess, deployment: Obj) -> None:
        labels = deployment["spec"]["template"].get("metadata", {}).get("labels") or {}
        services = self.api.request("GET", f"/api/v1/namespaces/{self.namespace}/services")["items"]
        for service in services:
            selector = (service.get("spec") or {}).get("selector") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            for port in service["spec"].get("ports") or []:
                target = str(port.get("targetPort", port["port"]))
                local = pod.ports.get(target)
                if local is not None:
                    route = (service["metadata"]["name"], int(port["port"]), local)
                    self.routes.setdefault(pod.name, []).append(route)
                    self.emulator.route_service(self.namespace, route[0], route[1], "127.0.0.1", local)

    def _write_status(self, deployment: Obj) -> None:
        replicas = int(deployment["spec"].get("replicas", 1))
        updated = self.next_pods or self.pods
        ready = sum(p.ready for p in self.pods + self.next_pods)
        available = sum(p.ready for p in updated)
        state = (self.generation, available, len(self.pods) + len(self.next_pods))
        if state == self._status:
            return
        self._status = state
        complete = not self.next_pods and available >= replicas
        now = _now()
        rs = f"{self.name}-{self.template_hash}"
        deployment["status"] = {
            "observedGeneration": self.generation,
            "replicas": state[2],
            "updatedReplicas": len(updated),
            "readyReplicas": ready,
            "availableReplicas": ready,
            **({"unavailableReplicas": state[2] - ready} if ready < state[2] else {}),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if ready else "False",
                    "reason": "MinimumReplicasAvailable" if ready else "MinimumReplicasUnavailable",
                    "message": "Deployment has minimum availability."
                    if ready
                    else "Deployment does not have minimum availability.",
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                    "message": f'ReplicaSet "{rs}" has successfully progressed.'
                    if complete
                    else f'ReplicaSet "{rs}" is progressing.',
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                },
            ],
        }
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.name}/status"
        try:
            self.api.request("PUT", path, deployment)
        except AssertionError:
            self._status = None  # a conflict with a newer write: again on the next round

    @property
    def args(self) -> list[str]:
        return self.pods[0].args if self.pods else []

    @property
    def ports(self) -> dict[str, int]:
        return self.pods[0].ports if self.pods else {}

    def _stop_pods(self, pods: list[PodProcess]) -> None:
        """The pods go away: their Service endpoints, processes and Pod objects."""
        for pod in pods:
            pod.terminate()  # all at once: each may take its grace period
        for pod in pods:
            for service, port, local in self.routes.pop(pod.name, []):
                self.emulator.unroute_service(self.namespace, service, port, "127.0.0.1", local)
            pod.stop()
            key = (self.namespace, pod.name)
            self.emulator.call(lambda s, k=key: s.pod_logs.pop(k, None))  # type: ignore[misc]
            self.api.request("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{pod.name}")

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(30)
        self._stop_pods(self.pods + self.next_pods)
        self.pods, self.next_pods = [], []

    def text(self) -> str:
        return "\n".join(p.text() for p in self.pods + self.next_pods)
