"""A kubelet stand-in: run a Deployment's pod as a local process, as the cluster would.

The emulator schedules nothing, so a test that installs the chart (``helm install``,
``kubectl apply -f deploy/manifests/``) starts the operator with :class:`DeploymentRunner`,
which reads what a kubelet reads from the API server and nothing else:

- the Deployment's pod template: the first container's ``args`` (the image's entrypoint is
  ``rolecall``, run here as ``python -m rolecall.cli``), ``env`` (literal values, the
  ``metadata.name``/``metadata.namespace`` field references, ``secretKeyRef``);
- Secret volumes: written to a directory, and every argument that points into a mount path
  points into that directory instead;
- container ports: each gets a free local port, and every argument equal to ``--flag=<port>``
  is rewritten to it;
- the pod's ServiceAccount: the process authenticates with a token the emulator maps to
  ``system:serviceaccount:<namespace>:<name>`` (its projected token);
- the Services whose selector matches the pod: the emulator routes webhook calls for them
  to the process (DNS and kube-proxy), TLS still checked against ``<service>.<namespace>.svc``.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .emulator import KubeAPIEmulator

Obj = dict[str, Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_account_token(emulator: KubeAPIEmulator, namespace: str, name: str) -> str:
    token = f"sa-{namespace}-{name}-{secrets.token_hex(8)}"
    emulator.add_token(token, f"system:serviceaccount:{namespace}:{name}")
    return token


class DeploymentRunner:
    def __init__(
        self,
        emulator: KubeAPIEmulator,
        namespace: str,
        name: str,
        workdir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.emulator = emulator
        self.namespace = namespace
        self.name = name
        self.workdir = workdir
        self.extra_env = env or {}
        self.pod_name = f"{name}-{secrets.token_hex(4)}-local"
        self.ports: dict[str, int] = {}  # container port name (or number) -> local port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"
        self.args: list[str] = []

    def _get(self, group: str, plural: str, name: str) -> Obj:
        found = self.emulator.call(lambda s: s.store.get((group, plural), self.namespace, name))
        if found is None:
            raise AssertionError(f"kubelet: {plural} {self.namespace}/{name} not found")
        return found  # type: ignore[no-any-return]

    def start(self) -> DeploymentRunner:
        deployment = self._get("apps", "deployments", self.name)
        template = deployment["spec"]["template"]
        spec = template.get("spec") or {}
        container = spec["containers"][0]
        self.workdir.mkdir(parents=True, exist_ok=True)
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
        kubeconfig = self.emulator.write_kubeconfig(self.workdir / "kubeconfig", namespace=self.namespace)
        token = service_account_token(self.emulator, self.namespace, account)
        config = yaml.safe_load(kubeconfig.read_text())
        config["users"][0]["user"]["token"] = token
        kubeconfig.write_text(yaml.safe_dump(config))
        self.args = ["run", "--kubeconfig", str(kubeconfig), *args[1:]]
        env = {**os.environ, **self._env(container), **self.extra_env}
        self._route_services(template.get("metadata", {}).get("labels") or {}, container)
        log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rolecall.cli", *self.args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def _mount_volumes(self, spec: Obj, container: Obj) -> dict[str, Path]:
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"]) or {}
            directory = self.workdir / "volumes" / mount["name"]
            directory.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                secret = self._get("", "secrets", volume["secret"]["secretName"])
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
                env[var["name"]] = self.pod_name
            elif field == "metadata.namespace":
                env[var["name"]] = self.namespace
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = self._get("", "secrets", ref["name"]).get("data") or {}
                env[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env

    def _route_services(self, labels: dict[str, str], container: Obj) -> None:
        services = self.emulator.call(lambda s: list(s.store.iter_objects(("", "services"), self.namespace)))
        for service in services:
            selector = (service.get("spec") or {}).get("selector") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            for port in service["spec"].get("ports") or []:
                target = str(port.get("targetPort", port["port"]))
                local = self.ports.get(target)
                if local is not None:
                    self.emulator.route_service(
                        self.namespace, service["metadata"]["name"], int(port["port"]), "127.0.0.1", local
                    )

    def wait_healthy(self, port_name: str = "http", timeout: float = 60.0) -> None:
        """Until GET /healthz on the named container port answers 200 (the readiness probe)."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.ports[port_name]}/healthz"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"kubelet: the container exited ({self.proc.returncode}):\n{self.text()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"kubelet: {url} not healthy within {timeout}s:\n{self.text()[-3000:]}")

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
