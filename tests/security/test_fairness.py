"""Attack: a noisy neighbour. One namespace floods the operator with bindings (or with
bindings that fail forever) to starve every other namespace of STS calls and workers.

Found in review: with one token bucket and one worker pool served first come first served,
120 bindings in one namespace at 2 calls/s delayed another namespace's new binding from
0.3 s to 56 s and the deletion of a withdrawn role's Secret from 0.25 s to 52 s.

Defence (scheduler.py): per-namespace fair queues for workers and for STS turns; the STS
token is taken before a binding is picked; withdrawals never wait for STS; failures a retry
cannot fix back off to 30 minutes. Here the real operator runs against the emulator and the
local STS at 2 calls/s with 300 flooding bindings (a backlog of 150 s, like 2 000 bindings at
the default 10/s; the benchmark measures that case).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rolecall.clock import FakeClock
from tests.harness.k8s import K8s
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import Fault, STSFaultProxy
from tests.harness.wait import wait_for

pytestmark = pytest.mark.slow

FLOOD = 300
RATE = 2.0
FLOOD_ROLE = ROLE_PREFIX + "team-flood"
QUIET_ROLE = ROLE_PREFIX + "team-quiet"


@pytest.fixture
def two_policies(k8s: K8s, namespace: str, other_namespace: str) -> Iterator[None]:
    names = [f"p-{namespace}", f"p-{other_namespace}"]
    for name, ns in zip(names, (namespace, other_namespace), strict=True):
        k8s.create_policy(name, {"namespaces": [ns], "roleArns": [ROLE_PREFIX + "team-*"]})
    yield
    for name in names:
        k8s.delete_policy(name)


def flood(k8s: K8s, namespace: str) -> None:
    spec = {"roleArn": FLOOD_ROLE, "subjects": [{"kind": "ServiceAccount", "name": "app"}]}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: k8s.create_ar(namespace, f"flood-{i}", spec), range(FLOOD)))


def parked_flood(op: Any, minimum: int) -> bool:
    return bool(op.call(lambda: op.app.scheduler.waiting_for_sts()) >= minimum)


def time_to_ready(k8s: K8s, namespace: str, name: str) -> float:
    started = time.monotonic()
    k8s.create_ar(namespace, name, {"roleArn": QUIET_ROLE})
    wait_for(
        lambda: (cond := k8s.condition(namespace, name)) and cond["status"] == "True",
        timeout=30,
        message=f"{namespace}/{name} never became Ready behind the flood",
    )
    return time.monotonic() - started


@pytest.mark.parametrize(
    "failing", [False, True], ids=["flood of working bindings", "flood of bindings that fail forever"]
)
def test_a_flood_in_one_namespace_does_not_starve_another(
    k8s: K8s,
    namespace: str,
    other_namespace: str,
    two_policies: None,
    start_operator: Any,
    sts: STSFaultProxy,
    clock: FakeClock,
    failing: bool,
) -> None:
    if failing:
        sts.add_fault(Fault(error="AccessDenied", action="AssumeRole", role_arn=FLOOD_ROLE, times=None))
    op = start_operator(namespaces=(namespace, other_namespace), sts_rate=RATE, sts_burst=1, workers=16)
    # a binding that already holds credentials, to be withdrawn under the flood
    k8s.create_ar(other_namespace, "withdrawn", {"roleArn": QUIET_ROLE})
    wait_for(lambda: k8s.secret(other_namespace, "withdrawn"), timeout=20)

    flood(k8s, namespace)
    wait_for(lambda: parked_flood(op, FLOOD // 2), timeout=60, message="the flood never queued for STS")

    waited = time_to_ready(k8s, other_namespace, "new")
    assert waited < 5, f"a new binding in another namespace waited {waited:.1f}s behind the flood"

    k8s.delete_policy(f"p-{other_namespace}")
    k8s.create_policy(
        f"p-{other_namespace}", {"namespaces": [other_namespace], "roleArns": [ROLE_PREFIX + "other-*"]}
    )
    started = time.monotonic()
    wait_for(
        lambda: k8s.secret(other_namespace, "withdrawn") is None, timeout=10, message="Secret not withdrawn"
    )
    withdrawn_in = time.monotonic() - started
    assert withdrawn_in < 2, f"the withdrawn binding's Secret lived {withdrawn_in:.1f}s behind the flood"
    # the flood is still being served, at the configured rate, and was not dropped
    assert op.call(lambda: op.app.scheduler.waiting_for_sts()) > 0
