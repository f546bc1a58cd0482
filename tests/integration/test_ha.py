"""High availability with real processes: two `rolecall run` replicas share a Lease.

One acts, the other only watches. After SIGKILL of the active one, the standby takes the
Lease once it expires and performs the work that fell due meanwhile — exactly once.
"""

from __future__ import annotations

import base64
import datetime
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.watch
import pytest

from rolecall import constants as c
from rolecall.schedule import format_time
from tests.harness.k8s import K8s
from tests.harness.operator import OperatorProcess
from tests.harness.operator_fixtures import ROLE_PREFIX, OperatorIdentity, secret_material
from tests.harness.sts import STSFaultProxy
from tests.harness.wait import wait_for

LEASE_SECONDS = 3


def replica_process(
    name: str, identity: OperatorIdentity, namespace: str, env: dict[str, str], log_dir: Path
) -> OperatorProcess:
    """A replica as the chart runs it: the chart's ServiceAccount, its Lease in the release namespace."""
    return OperatorProcess(
        identity.kubeconfig,
        namespace,
        {**env, "POD_NAME": name},
        log_dir / f"{name}.log",
        "--ha",
        "lease",
        "--lease-namespace",
        identity.namespace,
        "--lease-name",
        identity.lease_name,
        "--lease-seconds",
        str(LEASE_SECONDS),
        "--verbose",  # the most talkative setting: still no secret may reach the log
    )


@pytest.fixture
def replicas(
    operator_identity: OperatorIdentity,
    operator_kubeconfig: Path,
    namespace: str,
    aws_env: dict[str, str],
    tmp_path: Path,
    crds: None,
    k8s: K8s,
) -> Iterator[Any]:
    started: list[OperatorProcess] = []
    delete_lease(k8s, operator_identity)  # each test elects from scratch

    def start(name: str) -> OperatorProcess:
        replica = replica_process(name, operator_identity, namespace, aws_env, tmp_path)
        started.append(replica)
        return replica

    yield start
    material = secret_material(k8s, namespace)
    for replica in started:
        replica.stop()
    delete_lease(k8s, operator_identity)
    logs = "\n".join(r.text() for r in started)
    assert "Traceback" not in logs, logs[-3000:]
    assert material and not any(value in logs for value in material), "secret material in the operators' logs"


def lease_holder(k8s: K8s, identity: OperatorIdentity) -> str | None:
    api = kubernetes.client.CoordinationV1Api(k8s.api)
    try:
        return api.read_namespaced_lease(identity.lease_name, identity.namespace).spec.holder_identity  # type: ignore[no-any-return]
    except kubernetes.client.exceptions.ApiException:
        return None


def delete_lease(k8s: K8s, identity: OperatorIdentity) -> None:
    api = kubernetes.client.CoordinationV1Api(k8s.api)
    try:
        api.delete_namespaced_lease(identity.lease_name, identity.namespace)
    except kubernetes.client.exceptions.ApiException as e:
        if e.status != 404:
            raise


def watch_secret_writes(
    k8s: K8s, namespace: str, name: str, events: list[tuple[str, str]], stop: threading.Event
) -> None:
    watch = kubernetes.watch.Watch()
    for event in watch.stream(
        k8s.core.list_namespaced_secret, namespace, field_selector=f"metadata.name={name}", timeout_seconds=60
    ):
        events.append((event["type"], event["object"].metadata.resource_version))
        if stop.is_set():
            watch.stop()


def test_standby_takes_over_after_sigkill_and_writes_once(
    replicas: Any,
    k8s: K8s,
    namespace: str,
    policy: str,
    sts: STSFaultProxy,
    operator_identity: OperatorIdentity,
) -> None:
    a = replicas("replica-a")
    wait_for(
        lambda: lease_holder(k8s, operator_identity) == "replica-a",
        timeout=20,
        message="replica-a never took the lease",
    )
    b = replicas("replica-b")
    role = ROLE_PREFIX + "team-ha"
    k8s.create_ar(namespace, "s3", {"roleArn": role})
    wait_for(lambda: (cnd := k8s.condition(namespace, "s3")) and cnd["status"] == "True", timeout=20)
    time.sleep(1.5)  # give the standby every chance to (wrongly) act too
    assert len(sts.requests(action="AssumeRole", role_arn=role)) == 1, "the standby called STS as well"
    assert lease_holder(k8s, operator_identity) == "replica-a"

    # the active replica dies hard; meanwhile the binding's refresh falls due
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    killed = time.monotonic()
    secret = k8s.secret(namespace, "s3")
    assert secret is not None
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    issued, expiration = now - datetime.timedelta(minutes=40), now + datetime.timedelta(minutes=20)
    doc = json.loads(base64.b64decode(secret["data"][c.KEY_CREDENTIALS_JSON]))
    doc["Expiration"] = format_time(expiration)
    events: list[tuple[str, str]] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_secret_writes, args=(k8s, namespace, "s3", events, stop), daemon=True
    )
    k8s.core.patch_namespaced_secret(
        "s3",
        namespace,
        {
            "metadata": {
                "annotations": {
                    c.ANN_ISSUED_AT: format_time(issued),
                    c.ANN_EXPIRATION: format_time(expiration),
                }
            },
            "data": {c.KEY_CREDENTIALS_JSON: base64.b64encode(json.dumps(doc).encode()).decode()},
        },
    )
    after_edit = k8s.secret(namespace, "s3")
    assert after_edit is not None
    watcher.start()
    sts.clear()

    wait_for(
        lambda: lease_holder(k8s, operator_identity) == "replica-b",
        timeout=20,
        message="the standby never took over",
    )
    wait_for(
        lambda: len(sts.requests(action="AssumeRole", role_arn=role)) >= 1,
        timeout=20,
        message="the due refresh was not performed",
    )
    takeover = time.monotonic() - killed
    wait_for(lambda: any(t == "MODIFIED" for t, _ in events), timeout=10)
    time.sleep(1.5)
    stop.set()
    assert len(sts.requests(action="AssumeRole", role_arn=role)) == 1, "the refresh was done twice"
    writes = [e for e in events if e[0] == "MODIFIED" and e[1] != after_edit["metadata"]["resourceVersion"]]
    assert len(writes) == 1, f"the Secret was written {len(writes)} times for one refresh"
    assert takeover < LEASE_SECONDS * 2 + 6, f"takeover took {takeover:.1f}s"
    assert b.proc.poll() is None
