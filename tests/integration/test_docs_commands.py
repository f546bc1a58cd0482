"""Every shell command in the operator docs, extracted from their ```sh blocks and run as a
user types it (in bash, with the real ``kubectl`` 1.33, ``helm`` 4 and the ``rolecall`` CLI on
the PATH) against the Kubernetes API emulator and the local STS.

One test per block, its commands in order, each of which must succeed; a ```json block right
after a ```sh block must be what its command prints. A block whose comment lines say "or"
holds alternatives: each runs on its own, after the block's first lines. The cluster a block
starts from:

- a block that installs rolecall (``helm install``, ``kubectl apply -f deploy/manifests/``,
  ``kubectl create namespace``) starts from a fresh cluster (with the release namespace when it
  runs ``helm install`` without creating it, as the docs' earlier steps did); after the install,
  the kubelet stand-in runs the operator's pods and the block goes on once they are ready;
- any other block that needs a cluster starts where a user following the README stands: the
  chart installed with its defaults, the operator running and ``deploy/samples/`` applied. One
  such cluster serves every block that removes nothing; the blocks that delete or uninstall run
  in the docs' order on a second one, as a user leaving does (``helm uninstall``, then the
  certificate Secret, then the CRDs), except ``kubectl delete -f deploy/manifests/``, which
  gets a cluster installed from those manifests.

The operator's pods get the local STS and an AWS identity from the node (what IRSA or instance
metadata gives on EKS). Commands that cannot run here are in PENDING with the reason; their
local paths are still checked.
"""

from __future__ import annotations

import datetime
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rolecall import tls
from tests.harness.cluster import NAMESPACE, RELEASE, Cluster
from tests.harness.kubeapi import KubeAPIEmulator

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docs/install.md", "docs/troubleshooting.md", "docs/aws-identity.md"]

# command prefix → why it does not run here
PENDING = {
    "aws": "calls AWS itself (EKS Pod Identity)",
    "eksctl": "calls AWS itself",
    "make": "the development targets are run by CI itself",
    "kubectl -n team-a logs whoami": "no container runtime here: the sample pod's AWS CLI never runs "
    "(the kubelet stand-in runs only the operator's pods; tests/sdk runs real SDKs in the webhook's pods)",
}

ALTERNATIVE = re.compile(r"^#\s*(?:…|\.\.\.)?\s*or\b", re.IGNORECASE)
INSTALLS = re.compile(
    r"^(?:helm install\b|kubectl (?:-n \S+ )?apply -f deploy/manifests/(?:\s|$)|kubectl create namespace\b)"
)


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    commands: tuple[str, ...]
    json_after: str | None
    alternative: int = 0

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}" + (f"/or-{self.alternative}" if self.alternative else "")

    @property
    def runnable(self) -> list[str]:
        return [c for c in self.commands if not pending(c)]

    @property
    def setup(self) -> str:
        """none | fresh | installed | own-installed (the second shared cluster) | own-manifests
        (see the module docstring)."""
        cmds = self.runnable
        if not any(c.startswith(("kubectl", "helm install", "helm upgrade", "helm uninstall", "rolecall doctor"))
                   for c in cmds):  # fmt: skip
            return "none"
        if any(INSTALLS.match(c) for c in cmds):
            return "fresh"
        if any(re.search(r"\b(delete|uninstall)\b", c) for c in cmds):
            if any(re.search(r"delete -f deploy/manifests/(\s|$)", c) for c in cmds):
                return "own-manifests"
            return "own-installed"
        return "installed"


def logical_lines(text: str) -> list[str]:
    return [raw.strip() for raw in re.sub(r"\\\n\s*", " ", text).splitlines() if raw.strip()]


def blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for match in re.finditer(r"```sh\n(.*?)```(?:\n\n```json\n(.*?)```)?", text, flags=re.S):
            line = text[: match.start()].count("\n") + 2
            segments: list[list[str]] = [[]]
            alternatives = False
            for raw in logical_lines(match.group(1)):
                if raw.startswith("#"):
                    alternatives = alternatives or bool(ALTERNATIVE.match(raw))
                    segments.append([])
                    continue
                cmd = re.sub(r"\s+#\s.*$", "", raw)  # trailing comment
                segments[-1].extend(part.strip() for part in cmd.split(" && "))
            segments = [s for s in segments if s] or [[]]
            if alternatives and len(segments) > 2:
                first, rest = segments[0], segments[1:]
                for n, alternative in enumerate(rest):
                    found.append(Block(doc, line, (*first, *alternative), match.group(2), n))
            else:
                found.append(Block(doc, line, tuple(c for s in segments for c in s), match.group(2)))
    return found


def pending(cmd: str) -> str | None:
    return next(
        (why for prefix, why in PENDING.items() if cmd == prefix or cmd.startswith(prefix + " ")), None
    )


def local_paths(cmd: str) -> list[str]:
    words = shlex.split(cmd.replace("$(", "( "), posix=True)
    return [w for w in words if re.match(r"^(deploy|docs|scripts|tests)/", w)]


BLOCKS = blocks()


def test_the_docs_have_commands() -> None:
    commands = [c for b in BLOCKS for c in b.commands]
    runnable = [c for b in BLOCKS for c in b.runnable]
    assert len(commands) > 20 and len(runnable) >= len(commands) - 8, commands
    assert any(c.startswith("helm install") for c in runnable) and any(
        c.startswith("kubectl apply -f deploy/samples/") for c in runnable
    )
    assert any(b.json_after for b in BLOCKS if b.commands[-1].startswith("rolecall trust-policy")), (
        "the shown JSON is checked"
    )


# --- clusters ----------------------------------------------------------------------------------


class Clusters:
    """Fresh emulators with the operator as a user would have it, stopped at the end."""

    def __init__(self, tmp: pytest.TempPathFactory, aws_env: dict[str, str]) -> None:
        self.tmp = tmp
        self.aws_env = aws_env
        self.started: list[tuple[Cluster, KubeAPIEmulator]] = []
        self.shared: Cluster | None = None
        self.plain: Cluster | None = None
        self.scratch: Cluster | None = None

    @property
    def node_env(self) -> dict[str, str]:
        keys = (
            "AWS_ENDPOINT_URL_STS",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_EC2_METADATA_DISABLED",
        )
        return {k: self.aws_env[k] for k in keys}

    def fresh(self) -> Cluster:
        emulator = KubeAPIEmulator().start()
        cluster = Cluster(emulator, self.tmp.mktemp("docs-cluster"))
        self.started.append((cluster, emulator))
        return cluster

    def release(self, cluster: Cluster) -> None:
        """Stop a block's own cluster (the shared ones live until the module ends)."""
        if cluster in (self.shared, self.plain, self.scratch):
            return
        for entry in [e for e in self.started if e[0] is cluster]:
            self.started.remove(entry)
            entry[0].stop_all()
            entry[1].stop()

    def run_operator(self, cluster: Cluster) -> None:
        cluster.run_deployment(NAMESPACE, RELEASE, self.node_env)
        cluster.webhooks_serving()

    def installed(self, *, manifests: bool = False) -> Cluster:
        cluster = self.fresh()
        if manifests:
            cluster.kubectl("apply", "-f", "deploy/manifests/crds/")
            cluster.kubectl("apply", "-f", "deploy/manifests/", timeout=120)
        else:
            cluster.helm("install", RELEASE, "deploy/helm/rolecall", "-n", NAMESPACE, "--create-namespace")
        self.run_operator(cluster)
        cluster.kubectl("apply", "-f", "deploy/samples/")
        cluster.kubectl(
            "wait", "--for=condition=Ready", "ar/s3-reader", "-n", "team-a", "--timeout=60s", timeout=90
        )
        return cluster

    def for_block(self, block: Block) -> Cluster:
        kind = block.setup
        if kind == "none":  # rolecall assume, trust-policy, helm lint/template: a shell only
            if self.plain is None:
                self.plain = self.fresh()
            return self.plain
        if kind == "fresh":
            cluster = self.fresh()
            cmds = " ; ".join(block.runnable)
            if "helm install" in cmds and "--create-namespace" not in cmds and "create namespace" not in cmds:
                cluster.kubectl("create", "namespace", NAMESPACE)
            return cluster
        if kind == "own-manifests":
            return self.installed(manifests=True)
        if kind == "own-installed":
            if self.scratch is None:
                self.scratch = self.installed()
            return self.scratch
        if self.shared is None:
            self.shared = self.installed()
        return self.shared

    def stop(self) -> None:
        for cluster, emulator in self.started:
            cluster.stop_all()
            emulator.stop()


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory, aws_env: dict[str, str]) -> Iterator[Clusters]:
    made = Clusters(tmp_path_factory, aws_env)
    try:
        yield made
    finally:
        made.stop()


def user_files(directory: Path) -> Path:
    """A user's working directory: the repository's deploy/ and the files the docs assume the
    user has (a webhook serving certificate, its key and CA)."""
    directory.mkdir(parents=True)
    (directory / "deploy").symlink_to(ROOT / "deploy")
    now = datetime.datetime.now(datetime.UTC)
    ca = tls.issue_ca(now)
    serving = tls.issue_serving(
        ca, [f"{RELEASE}.{NAMESPACE}.svc", f"{RELEASE}.{NAMESPACE}.svc.cluster.local"], now
    )
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    (directory / "tls.crt").write_bytes(serving.cert_pem)
    (directory / "tls.key").write_bytes(serving.key_pem)
    return directory


# --- the test ----------------------------------------------------------------------------------


def run_block(block: Block, cluster: Cluster, clusters: Clusters, cwd: Path, aws_env: dict[str, str]) -> Any:
    last: Any = None
    for cmd in block.commands:
        if pending(cmd):
            continue
        done = cluster.shell(cmd, cwd, aws_env)
        output = f"{done.stdout}\n{done.stderr}".strip()
        assert done.returncode == 0, f"{block.id}: `{cmd}` failed (exit {done.returncode}):\n{output}"
        if "rolecall doctor" in cmd:
            assert "[fail" not in done.stdout, f"{block.id}: `{cmd}` found problems:\n{output}"
        if INSTALLS.match(cmd) and re.search(r"helm install|deploy/manifests/(\s|$)", cmd):
            clusters.run_operator(cluster)  # the kubelet's part, then the next command
        last = done
    return last


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(
    block: Block, request: pytest.FixtureRequest, tmp_path: Path, aws_env: dict[str, str]
) -> None:
    for cmd in block.commands:
        for path in local_paths(cmd):
            assert (ROOT / path).exists(), f"{block.id}: `{cmd}` names {path}, which does not exist"
    if not block.runnable:
        pytest.skip("; ".join(sorted({pending(c) or "" for c in block.commands})))
    clusters: Clusters = request.getfixturevalue("clusters")
    cluster = clusters.for_block(block)
    try:
        last = run_block(block, cluster, clusters, user_files(tmp_path / "work"), aws_env)
    finally:
        clusters.release(cluster)
    if block.json_after is not None:
        shown: Any = json.loads(block.json_after)
        assert json.loads(last.stdout) == shown, f"{block.id}: the JSON shown differs from what it prints"
