"""The image built from the Dockerfile, run as a pod would run it.

Every process below starts from the image's own configuration (ENTRYPOINT, USER, WORKDIR,
ENV) in the minimal runtime of tests/image/container.py: root filesystem read-only, an
empty /tmp, uid 65532, no capabilities, the host's network (the API emulator, the STS proxy
and the image's servers all bind 127.0.0.1).

- ``rolecall run`` with the chart's flags against the API emulator and the local STS: a
  binding becomes Ready, the admission webhooks (TLS files mounted read-only, as the chart
  mounts them) mutate a pod and refuse an unadmitted binding, /healthz and /metrics answer,
  SIGTERM stops it.
- ``rolecall sidecar`` exactly as the webhook injected it (command, mount path), with the
  operator's Secret laid out as the kubelet mounts it: the startup probe's command passes,
  the host's boto3 gets credentials from it and calls STS as the assumed role, and its
  memory is measured.
- the image's contents (no pip, no compiler, no tests) and its size and layers.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from rolecall import constants as c
from rolecall.config import Settings
from rolecall.tls import generate_self_signed
from tests.harness.k8s import K8s
from tests.harness.kube_fixtures import create_test_namespace, delete_test_namespace
from tests.harness.operator_fixtures import ROLE_PREFIX, assert_no_secrets_leaked
from tests.harness.sdk import PY_CALLER_IDENTITY
from tests.harness.sts import STSFaultProxy, free_port
from tests.harness.sts_fixtures import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, REGION
from tests.harness.wait import wait_for
from tests.image import buildah
from tests.image.container import Container, ContainerSpec, Mount, in_root, run
from tests.integration.test_kubeapi_contract import _delete_webhook_configs as delete_webhook_configs
from tests.unit.test_sidecar import KubeletDir

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

ROLE = ROLE_PREFIX + "team-image-reader"
DENIED_ROLE = ROLE_PREFIX + "admin"
WEBHOOK_CONFIGURATION = Settings().webhook_configuration_name  # kopf registers the webhooks there
SIDECAR_RSS_GOAL_KIB = 20 * 1024  # as in the bench (docs/benchmarks.md)
SIDECAR_REQUESTS = 200
# Budgets for what the Dockerfile adds to its base (measured 122 MB, 25 MB gzipped: docs/benchmarks.md)
ADDED_BYTES_BUDGET = 140_000_000
ADDED_GZIP_BUDGET = 30_000_000
KUBECONFIG = "/etc/rolecall/kubeconfig"


# --------------------------------------------------------------------------- helpers


def image_env(image: buildah.Built, rootfs: Path, **extra: str) -> dict[str, str]:
    """The image's ENV, HOME from its /etc/passwd (as container runtimes set it), the pod's."""
    env = dict(item.split("=", 1) for item in image.config.get("Env") or [])
    uid = image.config["User"].split(":")[0]
    home = "/"
    for line in (rootfs / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 5 and fields[2] == uid:
            home = fields[5]
    return {**env, "HOME": home, **extra}


def spec(
    image: buildah.Built, rootfs: Path, args: list[str], env: dict[str, str], *mounts: Mount
) -> ContainerSpec:
    return ContainerSpec(
        rootfs=rootfs,
        args=args,
        env=env,
        user=image.config["User"],
        workdir=image.config.get("WorkingDir") or "/",
        mounts=mounts,
    )


def readable_dir(path: Path) -> Path:
    """A directory uid 65532 can enter (pytest's temporary directories are 0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return None


def with_port(text: str, port: int) -> str:
    return re.sub(rf"\b{c.SIDECAR_PORT}\b", str(port), text)


@dataclass
class Operator:
    container: Container
    namespace: str
    health_url: str
    webhook_port: int
    started: float
    healthy_s: float
    metrics_url: str


# --------------------------------------------------------------------------- the image itself


def test_config_runs_rolecall_as_nonroot(image: buildah.Built) -> None:
    cfg = image.config
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["rolecall"] and cfg["Cmd"] == ["run"]
    assert cfg["WorkingDir"] == "/tmp"
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "9443/tcp"}
    assert dict(e.split("=", 1) for e in cfg["Env"])["PATH"].startswith("/opt/rolecall/bin:")


def test_build_context_is_what_dockerignore_lets_through() -> None:
    """The cache key (tests/image/buildah.py CONTEXT) hashes exactly the files the build sees."""
    lines = [ln.strip() for ln in buildah.DOCKERIGNORE.read_text().splitlines()]
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == set(buildah.CONTEXT)


def test_contents_no_pip_no_compiler_no_tests(rootfs: Path) -> None:
    found = []
    for top in ("usr", "opt"):
        for path in (rootfs / top).rglob("*"):
            if path.name in ("pip", "setuptools", "wheel") and (path / "__init__.py").is_file():
                found.append(str(path.relative_to(rootfs)))
    assert found == [], f"installers left in the image: {found}"
    for directory in ("opt/rolecall/bin", "usr/local/bin", "usr/bin"):
        names = {p.name for p in (rootfs / directory).iterdir()} if (rootfs / directory).is_dir() else set()
        tools = {n for n in names if re.fullmatch(r"pip[\d.]*|gcc.*|cc|c\+\+|g\+\+.*|make|cpp.*", n)}
        assert not tools, f"/{directory} has {sorted(tools)}"
    assert not (rootfs / "src").exists(), "the build stage's source tree reached the image"
    site = next((rootfs / "opt" / "rolecall" / "lib").glob("python3*/site-packages"))
    assert not (site / "tests").exists(), "the test suite reached the image"
    assert (site / "rolecall" / "cli.py").is_file()
    assert not (site / "kubernetes" / "aio").exists()
    assert {p.name for p in (site / "botocore" / "data").iterdir() if p.is_dir()} == {
        "sts",
        "sso",
        "sso-oidc",
    }


def test_tag_follows_the_chart(image: buildah.Built, rootfs: Path, logs: Path) -> None:
    """The chart pulls <image.repository>:<appVersion>: that tag must hold this version."""
    chart = yaml.safe_load((buildah.ROOT / "deploy" / "helm" / "rolecall" / "Chart.yaml").read_text())
    values = yaml.safe_load((buildah.ROOT / "deploy" / "helm" / "rolecall" / "values.yaml").read_text())
    code, out = run(
        spec(image, rootfs, ["rolecall", "--version"], image_env(image, rootfs)), logs / "version.log"
    )
    assert (code, out.strip()) == (0, f"rolecall {chart['appVersion']}")
    assert Settings().sidecar_image == f"{values['image']['repository']}:{chart['appVersion']}"


def test_mount_targets_resolve_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("/run")
    (tmp_path / "etc").symlink_to("var/../run")
    assert in_root(tmp_path, "/var/run/secrets/x") == tmp_path / "run" / "secrets" / "x"
    assert in_root(tmp_path, "/etc/../../tls") == tmp_path / "tls"
    assert in_root(tmp_path, "etc/x") == tmp_path / "run" / "x"


def test_runs_as_65532_with_a_read_only_root(image: buildah.Built, rootfs: Path, logs: Path) -> None:
    probe = (
        "import getpass, json, os\n"
        "def writable(path):\n"
        "    try:\n"
        "        open(path, 'w').close()\n"
        "    except OSError as exc:\n"
        "        return exc.strerror\n"
        "    return True\n"
        "status = open('/proc/self/status').read()\n"
        "caps = [ln.split()[1] for ln in status.splitlines() if ln.startswith('CapEff')]\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),\n"
        "    'user': getpass.getuser(), 'home': os.environ['HOME'],\n"
        "    'pid': os.getpid(), 'cwd': os.getcwd(), 'caps': caps[0],\n"
        "    'root': writable('/opt/rolecall/x'), 'tmp': writable('/tmp/x')}))\n"
    )
    code, out = run(
        spec(image, rootfs, ["python3", "-c", probe], image_env(image, rootfs)), logs / "whoami.log"
    )
    assert code == 0, out
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {
        "uid": 65532,
        "gid": 65532,
        "groups": [],
        "user": "nonroot",  # kopf needs a name for the uid (getpass.getuser)
        "home": "/nonexistent",
        "pid": 1,
        "cwd": "/tmp",
        "caps": "0000000000000000",
        "root": "Read-only file system",
        "tmp": True,
    }


# --------------------------------------------------------------------------- rolecall run in the image


@pytest.fixture(scope="module")
def k8s(kube_api: Any, crds: None) -> K8s:
    return K8s(kube_api)


@pytest.fixture(scope="module")
def image_namespace(kube_api: Any, k8s: K8s) -> Iterator[str]:
    name = create_test_namespace(kube_api, "image")
    k8s.create_policy(
        f"p-{name}", {"namespaces": [name], "roleArns": [ROLE_PREFIX + "team-*"], "maxDurationSeconds": 43200}
    )
    k8s.core.create_namespaced_service_account(name, {"metadata": {"name": "app"}})
    yield name
    k8s.delete_policy(f"p-{name}")
    delete_test_namespace(kube_api, name)


@pytest.fixture(scope="module")
def operator(
    image: buildah.Built,
    rootfs: Path,
    kubeconfig_path: Path,
    sts_proxy: STSFaultProxy,
    image_namespace: str,
    k8s: K8s,
    tmp_path_factory: pytest.TempPathFactory,
    logs: Path,
    results: dict[str, Any],
) -> Iterator[Operator]:
    """``rolecall run`` in the image, with the flags the chart's Deployment passes."""
    work = tmp_path_factory.mktemp("operator")
    config_dir = readable_dir(work / "kubeconfig")
    shutil.copyfile(kubeconfig_path, config_dir / "kubeconfig")
    (config_dir / "kubeconfig").chmod(0o644)
    tls = readable_dir(work / "tls")
    cert, key = generate_self_signed(["127.0.0.1", "localhost"])
    (tls / "tls.crt").write_bytes(cert)
    (tls / "tls.key").write_bytes(key)
    for name in ("tls.crt", "tls.key"):
        (tls / name).chmod(0o644)  # a Secret volume's default mode
    health_port, webhook_port, metrics_port = free_port(), free_port(), free_port()
    args = [
        *image.config["Entrypoint"],
        "run",
        "--ha=lease",
        f"--lease-namespace={image_namespace}",
        "--lease-name=rolecall-leader",
        f"--region={REGION}",
        "--enforce-access=true",
        f"--sidecar-image={image.ref}",
        f"--namespace={image_namespace}",
        "--health-host=127.0.0.1",
        f"--health-port={health_port}",
        "--metrics-host=127.0.0.1",
        f"--metrics-port={metrics_port}",  # /metrics apart from /healthz, as in the chart
        "--webhook",
        "--webhook-host=127.0.0.1",
        f"--webhook-port={webhook_port}",
        "--webhook-cert=/tls/tls.crt",
        "--webhook-key=/tls/tls.key",
        "--webhook-url-host=127.0.0.1",
        f"--kubeconfig={KUBECONFIG}",
    ]
    env = image_env(
        image,
        rootfs,
        POD_NAME="rolecall-image-test",
        POD_NAMESPACE=image_namespace,
        AWS_REGION=REGION,
        AWS_ENDPOINT_URL_STS=sts_proxy.url,
        AWS_ACCESS_KEY_ID=FAKE_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET_ACCESS_KEY,
        AWS_EC2_METADATA_DISABLED="true",
    )
    mounts = (Mount(config_dir / "kubeconfig", KUBECONFIG), Mount(tls, "/tls"))
    started = time.monotonic()
    container = Container(spec(image, rootfs, args, env, *mounts), logs / "operator.log")
    health_url = f"http://127.0.0.1:{health_port}/healthz"
    try:

        def healthy() -> bool:
            assert container.running(), f"the operator exited:\n{container.text()[-4000:]}"
            answer = http_get(health_url)
            return answer is not None and answer[0] == 200

        wait_for(healthy, timeout=180, interval=0.2, message="the operator in the image never became healthy")
        op = Operator(
            container,
            image_namespace,
            health_url,
            webhook_port,
            started,
            time.monotonic() - started,
            f"http://127.0.0.1:{metrics_port}/metrics",
        )
        results.setdefault("operator", {})["healthy_s"] = round(op.healthy_s, 1)
        yield op
    finally:
        container.stop()
        delete_webhook_configs(k8s.api, WEBHOOK_CONFIGURATION)


@pytest.fixture(scope="module")
def bound(operator: Operator, k8s: K8s, results: dict[str, Any]) -> dict[str, Any]:
    """An AssumedRole for ServiceAccount ``app``, Ready."""
    created = time.monotonic()
    k8s.create_ar(
        operator.namespace,
        "reader",
        {"roleArn": ROLE, "subjects": [{"kind": "ServiceAccount", "name": "app"}], "region": REGION},
    )

    def ready() -> dict[str, Any] | None:
        assert operator.container.running(), f"the operator exited:\n{operator.container.text()[-4000:]}"
        cond = k8s.condition(operator.namespace, "reader")
        return k8s.get_ar(operator.namespace, "reader") if cond and cond["status"] == "True" else None

    body = wait_for(ready, timeout=120, interval=0.2, message="the AssumedRole never became Ready")
    results.setdefault("operator", {}).update(
        {
            "apply_to_ready_s": round(time.monotonic() - created, 2),
            "start_to_ready_s": round(time.monotonic() - operator.started, 1),
        }
    )
    return body


def webhooks_registered(k8s: K8s, port: int) -> bool:
    """kopf registers the configurations first and fills in their rules a moment later."""
    adm = kubernetes.client.AdmissionregistrationV1Api(k8s.api)
    resources: set[str] = set()
    for configs in (adm.list_mutating_webhook_configuration(), adm.list_validating_webhook_configuration()):
        for config in configs.items:
            for hook in config.webhooks or []:
                if (hook.client_config.url or "").startswith(f"https://127.0.0.1:{port}/"):
                    for rule in hook.rules or []:
                        resources.update(rule.resources or [])
    return {"pods", "assumedroles"} <= resources


@pytest.fixture(scope="module")
def injected_pod(operator: Operator, bound: dict[str, Any], k8s: K8s) -> dict[str, Any]:
    """A pod of ServiceAccount ``app`` as the API server stored it, after the webhook."""
    wait_for(
        lambda: webhooks_registered(k8s, operator.webhook_port),
        timeout=60,
        interval=0.2,
        message="the operator in the image never registered its webhooks",
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {
            "serviceAccountName": "app",
            "containers": [{"name": "app", "image": "python:3.11-slim"}],
        },
    }
    stored: dict[str, Any] = k8s.api.sanitize_for_serialization(
        k8s.core.create_namespaced_pod(operator.namespace, pod)
    )
    return stored


def test_binding_becomes_ready(
    operator: Operator, bound: dict[str, Any], k8s: K8s, sts_proxy: STSFaultProxy
) -> None:
    status = bound["status"]
    assert status["assumedRoleArn"].startswith(f"arn:aws:sts::{ROLE.split(':')[4]}:assumed-role/")
    data = k8s.secret_data(operator.namespace, status["secretName"]) or {}
    assert {c.KEY_CREDENTIALS_JSON, c.KEY_TOKEN, c.KEY_ACCESS_KEY_ID, c.KEY_CONFIG} <= set(data)
    assert len(sts_proxy.requests(action="AssumeRole", role_arn=ROLE)) == 1
    assert json.loads(data[c.KEY_CREDENTIALS_JSON])["AccessKeyId"] == data[c.KEY_ACCESS_KEY_ID]


def test_webhooks_answer(
    operator: Operator, injected_pod: dict[str, Any], k8s: K8s, image: buildah.Built
) -> None:
    spec_ = injected_pod["spec"]
    sidecars = [ct for ct in spec_.get("initContainers") or [] if ct["name"] == "rolecall-sidecar"]
    assert len(sidecars) == 1, f"the pod was not injected: {json.dumps(spec_)[:2000]}"
    assert sidecars[0]["image"] == image.ref
    assert sidecars[0]["command"][:2] == ["rolecall", "sidecar"]
    assert injected_pod["metadata"]["annotations"][c.ANN_POD_INJECTED] == "sidecar"
    # the validating webhook refuses, with the rule named, what no policy admits
    with pytest.raises(ApiException) as info:
        k8s.create_ar(operator.namespace, "denied", {"roleArn": DENIED_ROLE})
    assert info.value.status == 422
    assert f"is not permitted to assume role '{DENIED_ROLE}'" in info.value.body


def test_health_and_metrics(operator: Operator, bound: dict[str, Any]) -> None:
    health = http_get(operator.health_url)
    assert health is not None and health[0] == 200, health
    assert (http_get(operator.health_url.replace("/healthz", "/metrics")) or (0,))[0] == 404, (
        "/metrics must not be served on the health port"
    )
    answer = http_get(operator.metrics_url)
    assert answer is not None and answer[0] == 200
    assert re.search(r'^rolecall_assumed_roles\{ready="true"\} 1(\.0)?$', answer[1], re.M), answer[1][:3000]


# --------------------------------------------------------------------------- rolecall sidecar in the image


@pytest.fixture(scope="module")
def sidecar(
    image: buildah.Built,
    rootfs: Path,
    operator: Operator,
    bound: dict[str, Any],
    injected_pod: dict[str, Any],
    k8s: K8s,
    tmp_path_factory: pytest.TempPathFactory,
    logs: Path,
) -> Iterator[dict[str, Any]]:
    """The injected sidecar container, run from the image with the Secret mounted read-only."""
    work = tmp_path_factory.mktemp("sidecar")
    container_spec = next(
        ct for ct in injected_pod["spec"]["initContainers"] if ct["name"] == "rolecall-sidecar"
    )
    security = container_spec["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"] and "runAsUser" not in security
    mount_path = container_spec["volumeMounts"][0]["mountPath"]
    assert container_spec["volumeMounts"][0]["readOnly"] is True
    secret = k8s.secret(operator.namespace, bound["status"]["secretName"]) or {}
    volume = KubeletDir(readable_dir(work / "secret"))
    volume.publish({k: base64.b64decode(v) for k, v in secret["data"].items()})
    for path in (work / "secret").iterdir():
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    port = free_port()
    command = [with_port(arg, port) for arg in container_spec["command"]]
    probe = [with_port(arg, port) for arg in container_spec["startupProbe"]["exec"]["command"]]
    mounts = (Mount(work / "secret", mount_path),)
    # securityContext has no runAsUser: the image's USER applies (runAsNonRoot holds: 65532)
    env = image_env(image, rootfs)
    started = time.monotonic()
    container = Container(spec(image, rootfs, command, env, *mounts), logs / "sidecar.log")
    try:
        probes = 0

        def started_up() -> bool:
            nonlocal probes
            assert container.running(), f"the sidecar exited:\n{container.text()[-3000:]}"
            probes += 1
            code, _ = run(
                spec(image, rootfs, probe, env, *mounts), logs / f"sidecar-probe-{probes}.log", timeout=30
            )
            return code == 0

        wait_for(started_up, timeout=60, interval=0.2, message="the sidecar's startup probe never passed")
        yield {
            "container": container,
            "port": port,
            "mount": work / "secret",
            "mount_path": mount_path,
            "token": (work / "secret" / c.KEY_TOKEN).read_text(),
            "started_s": time.monotonic() - started,
            "probes": probes,
        }
    finally:
        container.stop()


def test_sidecar_serves_boto3(
    sidecar: dict[str, Any],
    injected_pod: dict[str, Any],
    bound: dict[str, Any],
    operator: Operator,
    k8s: K8s,
    sts_proxy: STSFaultProxy,
) -> None:
    app_env = {e["name"]: e.get("value") for e in injected_pod["spec"]["containers"][0]["env"]}
    token_file = app_env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]
    assert token_file.startswith(sidecar["mount_path"] + "/")
    # the app container's environment as the webhook wrote it; the sidecar's port and the
    # token file's host path stand in for what the pod would see
    env = {
        **{k: v for k, v in app_env.items() if v is not None},
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": with_port(
            app_env["AWS_CONTAINER_CREDENTIALS_FULL_URI"], sidecar["port"]
        ),
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(sidecar["mount"] / Path(token_file).name),
        "AWS_ENDPOINT_URL_STS": sts_proxy.url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    done = subprocess.run(
        [sys.executable, str(PY_CALLER_IDENTITY), "--count", "2", "--interval", "0.1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr + sidecar["container"].text()[-3000:]
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    for answer in answers:
        assert answer.pop("sdk", None), "the client reports its SDK version"
    data = k8s.secret_data(operator.namespace, bound["status"]["secretName"]) or {}
    assert (
        answers
        == [{"ok": True, "arn": bound["status"]["assumedRoleArn"], "accessKeyId": data[c.KEY_ACCESS_KEY_ID]}]
        * 2
    )


def test_sidecar_memory(sidecar: dict[str, Any], results: dict[str, Any]) -> None:
    container: Container = sidecar["container"]
    idle = container.memory_kib()
    latencies = []
    for _ in range(SIDECAR_REQUESTS):
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", sidecar["port"], timeout=10)
        conn.request("GET", "/v1/credentials", headers={"Authorization": sidecar["token"]})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        latencies.append(time.monotonic() - t0)
        assert response.status == 200 and b"AccessKeyId" in body
    memory = container.memory_kib()
    latencies.sort()
    results["sidecar"] = {
        "started_s": round(sidecar["started_s"], 2),
        "rss_idle_mib": round(idle["VmRSS"] / 1024, 1),
        "rss_mib": round(memory["VmRSS"] / 1024, 1),
        "peak_rss_mib": round(memory["VmHWM"] / 1024, 1),
        "requests": SIDECAR_REQUESTS,
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }
    assert memory["VmHWM"] <= SIDECAR_RSS_GOAL_KIB, results["sidecar"]


# --------------------------------------------------------------------------- the operator's end


def test_operator_memory_and_logs(
    operator: Operator, bound: dict[str, Any], k8s: K8s, results: dict[str, Any]
) -> None:
    memory = operator.container.memory_kib()
    tmp = Path(f"/proc/{operator.container.pid()}/root/tmp")  # the container's /tmp, seen from here
    results.setdefault("operator", {}).update(
        {
            "rss_mib": round(memory["VmRSS"] / 1024, 1),
            "peak_rss_mib": round(memory["VmHWM"] / 1024, 1),
            "wrote_to_tmp": sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")),
        }
    )
    assert_no_secrets_leaked(k8s, operator.namespace, operator.container.text())


def test_operator_stops_on_sigterm(operator: Operator, results: dict[str, Any]) -> None:
    t0 = time.monotonic()
    code = operator.container.stop(timeout=30)
    seconds = time.monotonic() - t0
    results.setdefault("operator", {})["sigterm_exit_s"] = round(seconds, 2)
    assert code == 0, operator.container.text()[-3000:]
    assert seconds < 10, f"{seconds:.1f}s to stop (the chart's grace period is 30s)"
    assert "Traceback" not in operator.container.text()


# --------------------------------------------------------------------------- size and layers


def test_size_and_layers(image: buildah.Built, results: dict[str, Any]) -> None:
    base = buildah.inspect(image.base)
    base_layers = {layer["digest"] for layer in json.loads(base["Manifest"])["layers"]}
    gzipped = buildah.compressed_layer_sizes(image.ref)
    layers = [
        {
            "digest": layer["digest"][7:19],
            "bytes": int(layer["size"]),
            "gzip_bytes": packed,
            "from_base": layer["digest"] in base_layers,
        }
        for layer, packed in zip(image.layers, gzipped, strict=True)
    ]
    added = [layer for layer in layers if not layer["from_base"]]
    results["size"] = {
        "bytes": image.size,
        "gzip_bytes": sum(gzipped),
        "added_bytes": sum(layer["bytes"] for layer in added),
        "added_gzip_bytes": sum(layer["gzip_bytes"] for layer in added),
        "layers": layers,
        "history": [h.get("created_by", "") for h in image.info["OCIv1"]["history"]],
    }
    assert added, "the Dockerfile added no layer to its base"
    assert results["size"]["added_bytes"] <= ADDED_BYTES_BUDGET, results["size"]
    assert results["size"]["added_gzip_bytes"] <= ADDED_GZIP_BUDGET, results["size"]
