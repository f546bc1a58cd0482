"""``make demo``: the whole product on one machine, no cluster and no AWS account needed.

1. starts the local STS (moto behind the recording proxy) and the Kubernetes API emulator;
2. applies the CRDs and the samples (an AssumedRolePolicy and an AssumedRole);
3. runs the real operator (``rolecall run``) as a separate process against both;
4. prints the AssumedRole's status and the Secret's keys (values redacted);
5. writes the Secret's files as a kubelet would mount them and runs the real AWS CLI with
   the rendered ``config`` file (``credential_process``): ``aws sts get-caller-identity``
   answers with the assumed role.

``DEMO_KUBECONFIG=~/.kube/config make demo`` runs the same against a real cluster instead of
the emulator (the operator still runs on this machine and uses the local STS).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import yaml
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / ".demo"
NAMESPACE = "team-a"


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


def api_client(kubeconfig: str) -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return kubernetes.client.ApiClient(cfg)


def apply(api: kubernetes.client.ApiClient, doc: dict[str, Any]) -> None:
    """Create or update one object (the little of `kubectl apply` the demo needs)."""
    custom = kubernetes.client.CustomObjectsApi(api)
    kind = doc["kind"]
    try:
        if kind == "CustomResourceDefinition":
            ext = kubernetes.client.ApiextensionsV1Api(api)
            try:
                ext.create_custom_resource_definition(doc)
            except ApiException as exc:
                if exc.status != 409:
                    raise
        elif kind == "AssumedRolePolicy":
            custom.create_cluster_custom_object("rolecall.dev", "v1alpha1", "assumedrolepolicies", doc)
        elif kind == "AssumedRole":
            custom.create_namespaced_custom_object(
                "rolecall.dev", "v1alpha1", doc["metadata"]["namespace"], "assumedroles", doc
            )
    except ApiException as exc:
        if exc.status != 409:
            raise
    print(f"  applied {kind}/{doc['metadata']['name']}")


def redacted(value: str) -> str:
    return f"<{len(value)} bytes>"


def write_mount(directory: Path, data: dict[str, str]) -> None:
    """Lay the Secret's keys out as the kubelet does: ..data → timestamped dir, key links."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{os.getpid()}"
    stamp.mkdir()
    for key, value in data.items():
        (stamp / key).write_text(value)
    tmp = directory / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(stamp.name)
    os.replace(tmp, directory / "..data")
    for key in data:
        link = directory / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")


def aws_cli() -> list[str]:
    from tests.harness.sdk import aws_cli as ensure_awscli

    return [str(ensure_awscli())]


def keep_running(kubeconfig: str, sts_url: str, operator: subprocess.Popen[bytes]) -> None:
    """``make playground``: leave everything running for the README's commands, until Ctrl-C."""
    from tests.harness.tools import ensure_helm, ensure_kubectl

    kubectl, helm = ensure_kubectl(), ensure_helm()
    say("Playground: the emulator, the local STS and the operator keep running (Ctrl-C stops them)")
    print(f"  export KUBECONFIG={kubeconfig}")
    print(f"  export PATH={kubectl.parent}:$PATH   # kubectl 1.33 and helm 4 ({helm.name})")
    print(f"  export AWS_ENDPOINT_URL_STS={sts_url}")
    print(f"  kubectl get assumedroles -n {NAMESPACE}")

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # `kill` stops it as cleanly as Ctrl-C
    signal.signal(signal.SIGINT, interrupted)  # also when started in the background
    try:
        while operator.poll() is None:
            time.sleep(1)
        print(f"demo: the operator exited ({operator.returncode}); see {DEMO_DIR / 'operator.log'}")
    except KeyboardInterrupt:
        print()


def main() -> int:
    DEMO_DIR.mkdir(exist_ok=True)
    external = os.environ.get("DEMO_KUBECONFIG")
    from tests.harness.sts import MotoSTS, STSFaultProxy

    started = time.monotonic()
    say("Starting the local STS (moto) behind the recording proxy")
    moto = MotoSTS().start()
    proxy = STSFaultProxy(moto.url).start()
    print(f"  STS endpoint: {proxy.url}")
    emulator = None
    if external:
        kubeconfig = external
        say(f"Using the cluster of {kubeconfig}")
    else:
        from tests.harness.kubeapi import KubeAPIEmulator

        say("Starting the Kubernetes API emulator")
        emulator = KubeAPIEmulator()
        emulator.start()
        kubeconfig = str(emulator.write_kubeconfig(DEMO_DIR / "kubeconfig"))
        print(f"  API server: {emulator.url}  (kubeconfig: {kubeconfig})")
    api = api_client(kubeconfig)
    core = kubernetes.client.CoreV1Api(api)
    operator = None
    try:
        say("Applying the CRDs and the samples")
        for path in sorted((ROOT / "deploy" / "crds").glob("*.yaml")):
            apply(api, yaml.safe_load(path.read_text()))
        time.sleep(0.5)
        try:
            core.create_namespace({"metadata": {"name": NAMESPACE}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        mount = DEMO_DIR / "aws"
        for name in ("team-a.yaml",):
            for doc in yaml.safe_load_all((ROOT / "deploy" / "samples" / name).read_text()):
                if doc.get("kind") in ("Namespace", "Pod"):
                    continue  # created above; no pod runs here: the AWS CLI reads the files
                if doc.get("kind") == "AssumedRole":
                    # the AWS CLI below reads the files here instead of inside a pod
                    doc["spec"]["mountPath"] = str(mount)
                apply(api, doc)

        say("Running the operator: rolecall run")
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL_STS": proxy.url,
            "AWS_ACCESS_KEY_ID": "AKIADEMOOPERATOR0001",
            "AWS_SECRET_ACCESS_KEY": "demo-operator-secret",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        log = open(DEMO_DIR / "operator.log", "w")  # noqa: SIM115
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rolecall.cli",
                "run",
                "--kubeconfig",
                kubeconfig,
                "--ha",
                "none",
                "--health-port",
                "0",
                "--health-host",
                "127.0.0.1",
                "--metrics-port",
                "-1",
                "--namespace",
                NAMESPACE,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        custom = kubernetes.client.CustomObjectsApi(api)

        def ready() -> dict[str, Any] | None:
            if operator.poll() is not None:
                raise SystemExit(
                    f"demo: the operator exited ({operator.returncode}); see {DEMO_DIR / 'operator.log'}"
                )
            body = custom.get_namespaced_custom_object(
                "rolecall.dev", "v1alpha1", NAMESPACE, "assumedroles", "s3-reader"
            )
            for cond in (body.get("status") or {}).get("conditions") or []:
                if cond["type"] == "Ready" and cond["status"] == "True":
                    return body  # type: ignore[no-any-return]
            return None

        body = wait(ready, 30, "the AssumedRole to become Ready")
        say("kubectl get assumedrole s3-reader -n team-a -o yaml  (status)")
        print(yaml.safe_dump({"status": body["status"]}, sort_keys=False).rstrip())

        secret = core.read_namespaced_secret("s3-reader", NAMESPACE)
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        say("kubectl get secret s3-reader -n team-a  (keys; values redacted)")
        print(f"  annotations: {json.dumps(secret.metadata.annotations)}")
        for key in sorted(data):
            print(f"  {key:28} {redacted(data[key])}")

        say("The pod's view: the Secret mounted as files, and the real AWS CLI using config")
        write_mount(mount, data)
        print(f"  {mount}/config:")
        print("    " + data["config"].replace("\n", "\n    ").rstrip())
        cli_env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
        cli_env.update(
            {
                "AWS_CONFIG_FILE": str(mount / "config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(DEMO_DIR / "none"),
                "AWS_ENDPOINT_URL_STS": proxy.url,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        cmd = [*aws_cli(), "sts", "get-caller-identity", "--output", "json"]
        print("  $ AWS_CONFIG_FILE=" + str(mount / "config") + " aws sts get-caller-identity")
        done = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        ident = json.loads(done.stdout)
        print("    " + json.dumps(ident, indent=2).replace("\n", "\n    "))
        expected = body["status"]["assumedRoleArn"]
        if ident["Arn"] != expected:
            print(f"demo: expected {expected}, got {ident['Arn']}", file=sys.stderr)
            return 1
        say(f"Done in {time.monotonic() - started:.1f}s: the AWS CLI acted as {ident['Arn']}")
        print(f"  operator log: {DEMO_DIR / 'operator.log'}")
        if os.environ.get("KEEP") or "--keep" in sys.argv[1:]:
            keep_running(kubeconfig, proxy.url, operator)
        return 0
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(15)
            except subprocess.TimeoutExpired:
                operator.kill()
        if emulator is not None:
            emulator.stop()
        proxy.stop()
        moto.stop()


if __name__ == "__main__":
    sys.exit(main())
