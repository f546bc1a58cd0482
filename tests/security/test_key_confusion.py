"""Client cache key confusion (issue 11, item 1).

A tenant's ``source.secretRef`` Secret may hold someone else's access key *id* — ids are no
secret, CloudTrail shows them — with a garbage secret. Before the fix the STS client cache was
keyed on region + key id (+ token): the tenant's client could serve the victim (every victim
call then failed ``SignatureDoesNotMatch``) or the victim's cached client could serve the
tenant (its AssumeRole signed with the victim's real secret); 260 bindings with fake key ids
evicted the operator's client so the order could be forced without a restart. The STS front
checks signatures per key as AWS does, so a call signed with the wrong secret fails here too.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.k8s import K8s
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import STSFaultProxy
from tests.harness.wait import wait_for
from tests.security.helpers import ar_spec, cond, keys_secret

OPERATOR_KEY = "AKIAOPERATORKEYS0001"
OPERATOR_SECRET = "the-operator-s-real-secret"
VICTIM_KEY = "AKIAVICTIMTEAMKEYS01"
VICTIM_SECRET = "the-victim-team-s-real-secret"
REGION = "us-east-1"


def start_with_operator_keys(k8s: K8s, namespace: str, sts: STSFaultProxy, start_operator: Any) -> Any:
    """The operator with static keys of its own (``--operator-keys-secret``), known to AWS."""
    keys_secret(k8s, namespace, "operator-keys", OPERATOR_KEY, OPERATOR_SECRET)
    sts.register_keys(OPERATOR_KEY, OPERATOR_SECRET)
    sts.register_keys(VICTIM_KEY, VICTIM_SECRET)  # another team's keys: AWS knows them too
    return start_operator(operator_keys_secret=f"{namespace}/operator-keys")


def ready(k8s: K8s, namespace: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = wait_for(
        lambda: cond(k8s, namespace, name, "True", "CredentialsIssued"),
        timeout=15,
        message=f"{name} did not become Ready",
    )
    return got


def refused(k8s: K8s, namespace: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = wait_for(
        lambda: cond(k8s, namespace, name, "False", "SourceUnavailable"),
        timeout=15,
        message=f"{name} was not refused with SourceUnavailable",
    )
    return got


def victim_binding(k8s: K8s, namespace: str, victim: str) -> tuple[str, dict[str, Any]]:
    """The victim's key id and binding spec: the operator's own identity or a team's keys."""
    if victim == "operator":
        return OPERATOR_KEY, ar_spec()
    keys_secret(k8s, namespace, "victim-keys", VICTIM_KEY, VICTIM_SECRET)
    return VICTIM_KEY, ar_spec(source={"secretRef": {"name": "victim-keys"}})


def attack(k8s: K8s, namespace: str, key: str) -> None:
    """A binding whose Secret holds the victim's key id with a garbage secret."""
    keys_secret(k8s, namespace, "stolen-id", key, "garbage-secret")
    k8s.create_ar(namespace, "attacker", ar_spec(source={"secretRef": {"name": "stolen-id"}}))


def calls_by(sts: STSFaultProxy, key: str, session: str) -> list[Any]:
    return [
        r for r in sts.requests(action="AssumeRole") if r.access_key_id == key and r.session_name == session
    ]


@pytest.mark.parametrize("victim", ["operator", "tenant"])
def test_a_borrowed_key_id_cannot_break_the_victim(
    k8s: K8s, namespace: str, grant: Any, start_operator: Any, sts: STSFaultProxy, victim: str
) -> None:
    """The attacker's client is built first; the victim's calls must not use it."""
    grant()
    start_with_operator_keys(k8s, namespace, sts, start_operator)
    key, spec = victim_binding(k8s, namespace, victim)
    attack(k8s, namespace, key)
    got = refused(k8s, namespace, "attacker")
    assert "SignatureDoesNotMatch" in got["message"]
    k8s.create_ar(namespace, "victim", spec)
    ready(k8s, namespace, "victim")
    [call] = calls_by(sts, key, f"{namespace}.victim")
    assert call.status == 200 and call.fault is None


@pytest.mark.parametrize("victim", ["operator", "tenant"])
def test_a_borrowed_key_id_cannot_borrow_the_victims_secret(
    k8s: K8s, namespace: str, grant: Any, start_operator: Any, sts: STSFaultProxy, victim: str
) -> None:
    """The victim's client is cached first; the attacker's call must not be signed with it."""
    grant()
    start_with_operator_keys(k8s, namespace, sts, start_operator)
    key, spec = victim_binding(k8s, namespace, victim)
    k8s.create_ar(namespace, "victim", spec)
    ready(k8s, namespace, "victim")
    attack(k8s, namespace, key)
    refused(k8s, namespace, "attacker")
    assert k8s.secret(namespace, "attacker") is None, "the attacker got credentials"
    attempts = calls_by(sts, key, f"{namespace}.attacker")
    assert attempts and all(r.status == 403 and r.fault == "SignatureDoesNotMatch" for r in attempts)


@pytest.mark.timeout(300)
def test_fake_key_ids_do_not_evict_the_operator_client(
    k8s: K8s, namespace: str, grant: Any, start_operator: Any, sts: STSFaultProxy
) -> None:
    grant()
    op = start_with_operator_keys(k8s, namespace, sts, start_operator)
    k8s.create_ar(namespace, "victim", ar_spec())
    ready(k8s, namespace, "victim")
    flood = 260  # more than the 256 tenant clients the cache holds
    for i in range(flood):
        keys_secret(k8s, namespace, f"keys-{i}", f"AKIAFAKE{i:012d}", "x")
        k8s.create_ar(
            namespace,
            f"fake-{i}",
            {"roleArn": ROLE_PREFIX + "team-a-s3-reader", "source": {"secretRef": {"name": f"keys-{i}"}}},
        )
    wait_for(
        lambda: len({r.access_key_id for r in sts.requests(action="AssumeRole") if r.fault}) >= flood,
        timeout=120,
        message="the fake-key bindings were not all tried",
    )
    assert op.call(lambda: op.app.sts.holds_operator_client(REGION)), "the operator's client was evicted"
    assert op.call(lambda: len(op.app.sts.clients)) <= 256 + 64, "the client cache is not bounded"
    # and the operator identity still signs correctly after the flood plus a confusing key
    attack(k8s, namespace, OPERATOR_KEY)
    refused(k8s, namespace, "attacker")
    k8s.create_ar(namespace, "victim-2", ar_spec())
    ready(k8s, namespace, "victim-2")
