"""Admission decisions as AdmissionReview round trips: pods mutated, AssumedRoles validated.

A tiny stand-in for the webhook server turns each decision into the ``admission.k8s.io/v1``
response the API server receives; the test then does what the API server does with it
(base64-decode the JSON patch, apply it, validate the pod against the 1.33 schema).
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Callable
from typing import Any

import jsonpatch
import kopf
import kubernetes_validate
import pytest

from rolecall import constants as c
from rolecall.access import evaluate
from rolecall.admission import (
    AssumedRoleReview,
    InjectionRequest,
    PodReview,
    json_patch_fn,
    native_sidecars_supported,
    review_assumed_role,
    review_pod,
)
from rolecall.index import BindingIndex
from rolecall.inject import SIDECAR_NAME, Result
from rolecall.model import parse_assumed_role, parse_policy

NS = "team-a"
ROLE = "arn:aws:iam::123456789012:role/team-a-s3"
IMAGE = "ghcr.io/rolecall/rolecall:0.1.0"
POLICY = parse_policy(
    "team-a", {"namespaces": ["team-a"], "roleArns": ["arn:aws:iam::123456789012:role/team-a-*"]}
)
CAPPED = parse_policy(
    "capped",
    {"namespaces": ["team-a"], "roleArns": [ROLE], "maxDurationSeconds": 3600},
)


# --- the AdmissionReview plumbing the API server sees -----------------------------------------


def admission_request(obj: dict[str, Any], operation: str = "CREATE", old: Any = None) -> dict[str, Any]:
    kind = obj["kind"]
    group, _, version = obj["apiVersion"].rpartition("/")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
            "namespace": NS,
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }


def pod_webhook(index: BindingIndex, **settings: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def handle(review: dict[str, Any]) -> dict[str, Any]:
        request = review["request"]
        decision = review_pod(
            InjectionRequest(request["object"], request["namespace"], index, sidecar_image=IMAGE, **settings)
        )
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if decision.patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(decision.patch).encode()).decode()
        if decision.warnings:
            response["warnings"] = decision.warnings
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}

    return handle


def ar_webhook(**kwargs: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def handle(review: dict[str, Any]) -> dict[str, Any]:
        request = review["request"]
        decision = review_assumed_role(
            request["object"],
            operation=request["operation"],
            namespace=request["namespace"],
            old=request.get("oldObject"),
            **kwargs,
        )
        response: dict[str, Any] = {"uid": request["uid"], "allowed": decision.allowed}
        if not decision.allowed:
            response["status"] = {"code": 400, "message": decision.message}
        if decision.warnings:
            response["warnings"] = decision.warnings
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}

    return handle


def api_server_applies(obj: dict[str, Any], review: dict[str, Any]) -> dict[str, Any]:
    response = review["response"]
    assert response["allowed"] is True
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    mutated: dict[str, Any] = jsonpatch.apply_patch(obj, ops)
    return mutated


def pod(sa: str = "app", **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "job-", "namespace": NS, "annotations": dict(annotations)},
        "spec": {
            "serviceAccountName": sa,
            "restartPolicy": "Never",
            "initContainers": [{"name": "fetch", "image": "busybox:1.36", "command": ["true"]}],
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.12-slim",
                    "command": ["python", "-m", "job"],
                    "env": [{"name": "AWS_REGION", "value": "us-west-2"}],
                }
            ],
        },
    }


def assumed_role(name: str = "s3", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND_ASSUMED_ROLE,
        "metadata": {"name": name, "namespace": NS},
        "spec": {"roleArn": ROLE, "subjects": [{"kind": "ServiceAccount", "name": "app"}], **spec},
    }


def index_of(*bodies: dict[str, Any]) -> BindingIndex:
    index = BindingIndex()
    for body in bodies:
        assert index.put_body(NS, body["metadata"]["name"], body["spec"]) is not None
    return index


# --- pods ----------------------------------------------------------------------------------------

POD_CASES = [
    ("injected in sidecar mode", pod(), index_of(assumed_role()), "sidecar", Result.INJECTED),
    (
        "injected in file mode",
        pod(),
        index_of(assumed_role(injection={"mode": "file"})),
        "file",
        Result.INJECTED,
    ),
    (
        "injected in env mode by pod annotation",
        pod(**{c.ANN_POD_MODE: "env"}),
        index_of(assumed_role()),
        "env",
        Result.INJECTED,
    ),
    ("skipped: no binding", pod(sa="other"), index_of(assumed_role()), "none", Result.SKIPPED),
    (
        "ambiguous: two bindings",
        pod(),
        index_of(assumed_role("a"), assumed_role("b")),
        "none",
        Result.AMBIGUOUS,
    ),
    (
        "opted out",
        pod(**{c.ANN_POD_INJECT: "false"}),
        index_of(assumed_role()),
        "none",
        Result.OPTED_OUT,
    ),
    (
        "invalid: annotation names an unknown AssumedRole",
        pod(**{c.ANN_POD_ASSUMED_ROLE: "ghost"}),
        index_of(assumed_role()),
        "none",
        Result.INVALID,
    ),
]


@pytest.mark.parametrize(
    ("obj", "index", "mode", "result"), [c[1:] for c in POD_CASES], ids=[c[0] for c in POD_CASES]
)
def test_pod_admission_round_trip(
    obj: dict[str, Any], index: BindingIndex, mode: str, result: Result
) -> None:
    webhook = pod_webhook(index)
    answer = webhook(admission_request(obj))
    assert answer["response"]["allowed"] is True, "a pod is never refused"
    decision = review_pod(InjectionRequest(obj, NS, index, sidecar_image=IMAGE))
    assert (decision.mode, decision.result) == (mode, result)
    assert decision.injected is (result is Result.INJECTED)
    assert ("warnings" in answer["response"]) is (result in (Result.AMBIGUOUS, Result.INVALID))

    mutated = api_server_applies(obj, answer)
    kubernetes_validate.validate(mutated, "1.33", strict=True)
    if result is Result.INJECTED:
        assert mutated["metadata"]["annotations"][c.ANN_POD_INJECTED] == mode
        main = mutated["spec"]["containers"][0]
        assert {"name": "AWS_REGION", "value": "us-west-2"} in main["env"], "never overwritten"
        # the reinvocation (reinvocationPolicy: IfNeeded) or a second webhook call is a no-op
        again = webhook(admission_request(mutated))
        assert "patch" not in again["response"]
        assert api_server_applies(mutated, again) == mutated
    else:
        assert mutated == obj


def test_pod_review_without_native_sidecars_appends_a_container() -> None:
    obj = pod()
    answer = pod_webhook(index_of(assumed_role()), native_sidecars=False)(admission_request(obj))
    mutated = api_server_applies(obj, answer)
    kubernetes_validate.validate(mutated, "1.33", strict=True)
    assert [x["name"] for x in mutated["spec"]["containers"]] == ["main", SIDECAR_NAME]
    assert any("'fetch'" in w for w in answer["response"]["warnings"])


def test_json_patch_fn_gives_kopf_the_same_pod() -> None:
    """The wiring: ``patch.fns.append(json_patch_fn(ops))``; kopf diffs its own ops."""
    obj = pod()
    decision = review_pod(InjectionRequest(obj, NS, index_of(assumed_role()), sidecar_image=IMAGE))
    kopf_patch = kopf.Patch(fns=[json_patch_fn(decision.patch)])
    ops = kopf_patch.as_json_patch(copy.deepcopy(obj))  # type: ignore[arg-type]
    assert jsonpatch.apply_patch(obj, ops) == jsonpatch.apply_patch(obj, decision.patch)
    assert isinstance(decision, PodReview)


@pytest.mark.parametrize(
    ("major", "minor", "supported"),
    [
        ("1", "29", True),
        ("1", "33", True),
        ("1", "28", False),
        ("1", "29+", True),
        ("1", "28+", False),
        ("2", "0", True),
        ("", "", False),
    ],
    ids=["1.29", "1.33", "1.28", "GKE-style 1.29+", "1.28+", "2.0", "unknown"],
)
def test_native_sidecars_supported(major: str, minor: str, supported: bool) -> None:
    assert native_sidecars_supported(major, minor) is supported


# --- AssumedRoles --------------------------------------------------------------------------------


def review(
    obj: dict[str, Any],
    operation: str = "CREATE",
    *,
    enforce: bool = True,
    policies: tuple[Any, ...] = (POLICY,),
    old: Any = None,
) -> AssumedRoleReview:
    return review_assumed_role(
        obj,
        operation=operation,
        namespace=NS,
        policies=policies,
        namespace_labels={"kubernetes.io/metadata.name": NS},
        enforce=enforce,
        old=old,
    )


def test_valid_assumed_role_is_admitted_without_warnings() -> None:
    answer = ar_webhook(policies=[POLICY], namespace_labels={}, enforce=True)(
        admission_request(assumed_role())
    )
    assert answer["response"] == {"uid": answer["response"]["uid"], "allowed": True}


INVALID = [
    ("a role ARN that is no ARN", {"roleArn": "s3-reader"}, "spec.roleArn: invalid value 's3-reader'"),
    ("a duration out of range", {"durationSeconds": 60}, "spec.durationSeconds: invalid value 60"),
    ("an unknown injection mode", {"injection": {"mode": "magic"}}, "spec.injection.mode"),
    (
        "a subject of another namespace",
        {"subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "team-b"}]},
        "spec.subjects[0].namespace",
    ),
]


@pytest.mark.parametrize(("spec", "text"), [i[1:] for i in INVALID], ids=[i[0] for i in INVALID])
def test_invalid_spec_is_rejected_with_the_spec_error(spec: dict[str, Any], text: str) -> None:
    answer = ar_webhook(policies=[POLICY], namespace_labels={}, enforce=True)(
        admission_request(assumed_role(**spec))
    )
    response = answer["response"]
    assert response["allowed"] is False
    assert text in response["status"]["message"]


def test_access_denial_is_rejected_with_the_status_message() -> None:
    other = "arn:aws:iam::123456789012:role/team-b-admin"
    result = review(assumed_role(roleArn=other))
    expected = evaluate(
        namespace=NS,
        namespace_labels={},
        spec=parse_assumed_role(NS, "x", {"roleArn": other}),
        policies=[POLICY],
    )
    assert (result.allowed, result.message) == (False, expected.message)
    assert "not permitted" in result.message and other in result.message


def test_duration_above_a_policy_cap_is_rejected() -> None:
    result = review(assumed_role(durationSeconds=7200), policies=(CAPPED,))
    assert not result.allowed
    assert "3600" in result.message and "spec.durationSeconds" in result.message


def test_enforcement_off_admits_anything_valid() -> None:
    assert review(assumed_role(roleArn="arn:aws:iam::123456789012:role/x"), enforce=False).allowed


def test_update_that_leaves_a_denied_spec_unchanged_is_admitted_with_a_warning() -> None:
    """kopf's own annotations/finalizers must not be blocked after a policy is withdrawn."""
    obj = assumed_role()
    newer = copy.deepcopy(obj)
    newer["metadata"]["annotations"] = {"kopf.zalando.org/last-handled-configuration": "{}"}
    result = review(newer, "UPDATE", policies=(), old=obj)
    assert result.allowed and "not permitted" in result.warnings[0]
    changed = copy.deepcopy(newer)
    changed["spec"]["durationSeconds"] = 1800
    assert not review(changed, "UPDATE", policies=(), old=obj).allowed


def test_suspending_a_denied_binding_is_admitted() -> None:
    assert review(assumed_role(suspend=True), "UPDATE", policies=(), old=assumed_role()).allowed


def test_delete_is_always_admitted() -> None:
    assert review(assumed_role(roleArn="junk"), "DELETE").allowed


def test_generate_name_is_enough() -> None:
    obj = assumed_role()
    obj["metadata"] = {"generateName": "s3-", "namespace": NS}
    assert review(obj).allowed


WARNINGS = [
    ("a short session", {"durationSeconds": 900}, ["spec.durationSeconds is 900", "15 min", "3600"]),
    ("no subjects", {"subjects": []}, ["spec.subjects is empty"]),
    ("env mode", {"injection": {"mode": "env"}}, ["never refreshed", "Jobs"]),
]


@pytest.mark.parametrize(("spec", "texts"), [w[1:] for w in WARNINGS], ids=[w[0] for w in WARNINGS])
def test_unwise_settings_are_admitted_with_a_warning(spec: dict[str, Any], texts: list[str]) -> None:
    answer = ar_webhook(policies=[POLICY], namespace_labels={}, enforce=True)(
        admission_request(assumed_role(**spec))
    )
    response = answer["response"]
    assert response["allowed"] is True
    [warning] = response["warnings"]
    for text in texts:
        assert text in warning


def test_an_hour_is_not_short() -> None:
    assert review(assumed_role(durationSeconds=3600)).warnings == []
