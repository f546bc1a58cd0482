"""Multi-tenant basics over HTTP: default deny, withdrawal, selectors, duration caps, source
credentials, and the cross-namespace escalation attempts a namespace admin might try — each
must fail. (Moved here from the integration tier; the attacks of issue 11 have their own files.)"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from rolecall import constants as c
from tests.harness.k8s import K8s
from tests.harness.kube_fixtures import create_test_namespace, delete_test_namespace
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import STSFaultProxy
from tests.harness.wait import wait_for
from tests.security.helpers import ROLE, ar_spec, cond, keys_secret


def test_unadmitted_namespace_gets_not_permitted_no_secret_and_no_sts_call(
    k8s: K8s, namespace: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    start_operator()
    k8s.create_ar(namespace, "s3", ar_spec())
    got = wait_for(lambda: cond(k8s, namespace, "s3", "False", "NotPermitted"), timeout=10)
    assert f"namespace '{namespace}' is not permitted to assume role '{ROLE}'" in got["message"]
    assert "A cluster admin can admit it" in got["message"]
    assert k8s.secret(namespace, "s3") is None
    assert sts.requests(action="AssumeRole") == []


def test_policy_admits_and_withdrawal_deletes_the_secret(
    k8s: K8s, namespace: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    start_operator()
    k8s.create_ar(namespace, "s3", ar_spec())
    wait_for(lambda: cond(k8s, namespace, "s3", "False", "NotPermitted"), timeout=10)
    name = f"grant-{namespace}"
    k8s.create_policy(name, {"namespaces": [namespace], "roleArns": [ROLE_PREFIX + "team-a-*"]})
    try:
        wait_for(
            lambda: cond(k8s, namespace, "s3", "True", "CredentialsIssued"),
            timeout=10,
            message="a new policy did not admit the binding at once",
        )
        assert k8s.secret(namespace, "s3") is not None
    finally:
        k8s.delete_policy(name)
    wait_for(lambda: cond(k8s, namespace, "s3", "False", "NotPermitted"), timeout=10)
    wait_for(
        lambda: k8s.secret(namespace, "s3") is None, timeout=10, message="withdrawn access kept its Secret"
    )


def test_label_selector_policy_and_namespace_relabel(
    k8s: K8s, kube_api: Any, start_operator: Any, sts: STSFaultProxy, request: Any
) -> None:
    ns = create_test_namespace(kube_api, request.node.name, labels={"team": "blue"})
    name = f"labels-{ns}"
    k8s.create_policy(name, {"namespaceSelector": {"matchLabels": {"team": "blue"}}, "roleArns": [ROLE]})
    try:
        start_operator(namespaces=(ns,))
        k8s.create_ar(ns, "s3", ar_spec())
        wait_for(lambda: cond(k8s, ns, "s3", "True", "CredentialsIssued"), timeout=10)
        k8s.core.patch_namespace(ns, {"metadata": {"labels": {"team": "red"}}})
        wait_for(
            lambda: cond(k8s, ns, "s3", "False", "NotPermitted"),
            timeout=10,
            message="relabelling the namespace did not withdraw access",
        )
        wait_for(lambda: k8s.secret(ns, "s3") is None, timeout=10)
    finally:
        k8s.delete_policy(name)
        delete_test_namespace(kube_api, ns)


def test_max_duration_is_enforced(k8s: K8s, namespace: str, start_operator: Any, sts: STSFaultProxy) -> None:
    name = f"cap-{namespace}"
    k8s.create_policy(name, {"namespaces": [namespace], "roleArns": [ROLE], "maxDurationSeconds": 3600})
    try:
        start_operator()
        k8s.create_ar(namespace, "long", ar_spec(durationSeconds=7200))
        got = wait_for(lambda: cond(k8s, namespace, "long", "False", "NotPermitted"), timeout=10)
        assert (
            "only for up to 3600 seconds" in got["message"]
            and "spec.durationSeconds is 7200" in got["message"]
        )
        assert sts.requests(action="AssumeRole") == []
    finally:
        k8s.delete_policy(name)


def test_role_outside_the_globs_is_denied(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    start_operator()
    k8s.create_ar(namespace, "admin", ar_spec(roleArn=ROLE_PREFIX + "admin"))
    wait_for(lambda: cond(k8s, namespace, "admin", "False", "NotPermitted"), timeout=10)
    assert sts.requests(action="AssumeRole") == []


def test_session_name_and_tags_reach_sts_and_the_opt_out_works(
    k8s: K8s, namespace: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    name = f"attribution-{namespace}"
    k8s.create_policy(
        name,
        {
            "namespaces": [namespace],
            "roleArns": [ROLE],
            "allowAutomaticTagOptOut": True,
            "sessionTagKeys": ["cost-center"],
            "sourceIdentities": ["alice"],
        },
    )
    try:
        start_operator(cluster_name="prod-eu")
        k8s.create_ar(namespace, "tagged", ar_spec(sessionTags={"cost-center": "42"}, sourceIdentity="alice"))
        k8s.create_ar(namespace, "plain", ar_spec(automaticSessionTags=False))
        wait_for(lambda: len(sts.requests(action="AssumeRole")) == 2, timeout=10)
    finally:
        k8s.delete_policy(name)
    by_session = {r.session_name: r for r in sts.requests(action="AssumeRole")}
    tagged = by_session[f"{namespace}.tagged"]
    assert tagged.tags == {
        "kubernetes-namespace": namespace,
        "kubernetes-cluster-name": "prod-eu",
        "rolecall-assumed-role": "tagged",
        "cost-center": "42",
    }
    assert set(tagged.transitive_tag_keys) == {
        "kubernetes-namespace",
        "kubernetes-cluster-name",
        "rolecall-assumed-role",
    }
    assert tagged.source_identity == "alice"
    assert tagged.access_key_id == "AKIAFAKEROLECALLTEST", "the default source is the operator's own identity"
    assert by_session[f"{namespace}.plain"].tags == {}


def test_source_secret_ref_uses_the_namespace_keys(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    keys_secret(k8s, namespace, "base-keys", "AKIATEAMAKEYS0000001", "team-a-secret")
    sts.register_keys("AKIATEAMAKEYS0000001", "team-a-secret")  # the keys AWS would know
    start_operator()
    k8s.create_ar(namespace, "s3", ar_spec(source={"secretRef": {"name": "base-keys"}}))
    wait_for(lambda: cond(k8s, namespace, "s3", "True", "CredentialsIssued"), timeout=10)
    assert sts.requests(action="AssumeRole")[-1].access_key_id == "AKIATEAMAKEYS0000001"


def test_chained_role_uses_the_source_session(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    start_operator()
    k8s.create_ar(namespace, "hop", ar_spec())
    k8s.create_ar(
        namespace,
        "chained",
        ar_spec(roleArn=ROLE_PREFIX + "team-a-next", source={"assumedRoleRef": {"name": "hop"}}),
    )
    wait_for(lambda: cond(k8s, namespace, "chained", "True", "CredentialsIssued"), timeout=15)
    hop_key = (k8s.secret_data(namespace, "hop") or {})[c.KEY_ACCESS_KEY_ID]
    chained_call = [
        r
        for r in sts.requests(action="AssumeRole")
        if r.role_arn == ROLE_PREFIX + "team-a-next" and r.status == 200
    ][-1]
    assert chained_call.access_key_id == hop_key


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"secretRef": {"name": "victim-keys", "namespace": "OTHER"}},
            "spec.source.secretRef.namespace: invalid value 'OTHER'",
        ),
        (
            {"assumedRoleRef": {"name": "victim", "namespace": "OTHER"}},
            "spec.source.assumedRoleRef.namespace: invalid value 'OTHER'",
        ),
    ],
    ids=["another namespace's Secret as secretRef", "another namespace's AssumedRole as assumedRoleRef"],
)
def test_cross_namespace_sources_are_refused(
    k8s: K8s,
    kube_api: Any,
    namespace: str,
    policy: str,
    start_operator: Any,
    sts: STSFaultProxy,
    request: Any,
    source: dict[str, Any],
    expected: str,
) -> None:
    victim = create_test_namespace(kube_api, "victim-" + request.node.name)
    try:
        k8s.core.create_namespaced_secret(
            victim,
            {
                "metadata": {"name": "victim-keys"},
                "stringData": {c.KEY_ACCESS_KEY_ID: "AKIAVICTIM0000000001", c.KEY_SECRET_ACCESS_KEY: "v"},
            },
        )
        for ref in source.values():
            if ref.get("namespace") == "OTHER":
                ref["namespace"] = victim
        start_operator()
        k8s.create_ar(namespace, "steal", ar_spec(source=source))
        got = wait_for(lambda: cond(k8s, namespace, "steal", "False", "InvalidSpec"), timeout=10)
        assert expected.replace("OTHER", victim) in got["message"]
        assert all(r.access_key_id != "AKIAVICTIM0000000001" for r in sts.requests())
        assert sts.requests(action="AssumeRole") == []
    finally:
        delete_test_namespace(kube_api, victim)


def test_same_namespace_source_secret_missing_is_source_unavailable(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    start_operator()
    k8s.create_ar(namespace, "s3", ar_spec(source={"secretRef": {"name": "nope"}}))
    got = wait_for(lambda: cond(k8s, namespace, "s3", "False", "SourceUnavailable"), timeout=10)
    assert "Secret 'nope'" in got["message"] and "does not exist" in got["message"]
    assert sts.requests(action="AssumeRole") == []


def test_secret_values_never_reach_status_events_or_logs(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy, log_capture: Any
) -> None:
    start_operator(verbose=True)
    k8s.create_ar(namespace, "s3", ar_spec())
    wait_for(lambda: cond(k8s, namespace, "s3", "True", "CredentialsIssued"), timeout=10)
    data = k8s.secret_data(namespace, "s3") or {}
    material = {data[c.KEY_SECRET_ACCESS_KEY], data[c.KEY_SESSION_TOKEN], data[c.KEY_TOKEN]}
    text = log_capture.text() + str(k8s.events(namespace)) + str(k8s.get_ar(namespace, "s3"))
    for value in material:
        assert value not in text
        assert base64.b64encode(value.encode()).decode() not in text


def test_policy_status_says_whether_it_is_in_force(k8s: K8s, namespace: str, start_operator: Any) -> None:
    start_operator()
    good, bad = f"good-{namespace}", f"bad-{namespace}"
    k8s.create_policy(good, {"namespaces": [namespace], "roleArns": [ROLE]})
    k8s.create_policy(
        bad,
        {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In"}]}, "roleArns": [ROLE]},
    )
    try:

        def valid(name: str) -> dict[str, Any] | None:
            body = k8s.custom.get_cluster_custom_object(
                "rolecall.dev", "v1alpha1", "assumedrolepolicies", name
            )
            conds = (body.get("status") or {}).get("conditions") or []
            return conds[0] if conds else None

        assert wait_for(lambda: valid(good), timeout=10)["status"] == "True"
        got = wait_for(lambda: valid(bad), timeout=10)
        assert got["status"] == "False"
        assert (
            "spec.namespaceSelector.matchExpressions[0].values" in got["message"]
            and "must be non-empty for operator In" in got["message"]
        )
    finally:
        k8s.delete_policy(good)
        k8s.delete_policy(bad)
