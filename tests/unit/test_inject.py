"""Pod injection: which pods, which containers, each mode's patch, idempotency (no I/O).

Every patch is applied with ``jsonpatch`` to a pod as the API server hands it to a mutating
webhook (defaults filled in), and the result is validated against the Kubernetes 1.33 Pod
schema (strict: no unknown fields).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from rolecall import constants as c
from rolecall.index import BindingIndex
from rolecall.inject import (
    SIDECAR_NAME,
    VOLUME_NAME,
    InjectionPlan,
    InjectionRequest,
    Result,
    escape_pointer,
    plan_injection,
    pod_is_injected,
)
from rolecall.model import parse_assumed_role

NS = "team-a"
IMAGE = "ghcr.io/rolecall/rolecall:0.1.0"
PORT = 9911
ROLE = "arn:aws:iam::123456789012:role/team-a-s3"
MOUNT = c.DEFAULT_MOUNT_PATH
FULL_URI = f"http://127.0.0.1:{PORT}/v1/credentials"


# --- fixtures as plain data ------------------------------------------------------------------


def container(name: str, **extra: Any) -> dict[str, Any]:
    """A container as the API server has defaulted it."""
    return {
        "name": name,
        "image": f"registry.example/{name}:1.0",
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [
            {
                "name": "kube-api-access-7xq2p",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            }
        ],
        **extra,
    }


def realistic_pod(**spec_extra: Any) -> dict[str, Any]:
    """A Deployment's pod at admission time: generateName, owner, defaults, token volume."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9c8b6f5-",
            "namespace": NS,
            "labels": {"app": "web", "pod-template-hash": "7d9c8b6f5"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-27T21:00:00Z"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d9c8b6f5",
                    "uid": "6a1c7a8e-4a64-4b0c-9f5e-1c2f3e4d5a6b",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": "app",
            "serviceAccount": "app",
            "containers": [
                container(
                    "web",
                    env=[{"name": "LOG_LEVEL", "value": "info"}],
                    ports=[{"containerPort": 8080, "protocol": "TCP"}],
                ),
                container("worker"),
            ],
            "volumes": [
                {
                    "name": "kube-api-access-7xq2p",
                    "projected": {
                        "defaultMode": 420,
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                        ],
                    },
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            **spec_extra,
        },
    }


def bare_pod(**spec_extra: Any) -> dict[str, Any]:
    """The least a pod can be: no annotations, no volumes, no env, no mounts."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare", "namespace": NS},
        "spec": {
            "serviceAccountName": "app",
            "containers": [{"name": "main", "image": "busybox"}],
            **spec_extra,
        },
    }


def with_annotations(pod: dict[str, Any], **annotations: str) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["metadata"].setdefault("annotations", {}).update(annotations)
    return pod


def with_init(pod: dict[str, Any], *names: str) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["spec"]["initContainers"] = [container(n) for n in names]
    return pod


def assumed_role(**spec: Any) -> dict[str, Any]:
    return {"roleArn": ROLE, "subjects": [{"kind": "ServiceAccount", "name": "app"}], **spec}


def index_of(*roles: tuple[str, str, dict[str, Any]]) -> BindingIndex:
    index = BindingIndex()
    for namespace, name, spec in roles:
        index.put(namespace, name, parse_assumed_role(namespace, name, spec))
    return index


ONE = index_of((NS, "s3", assumed_role()))


def plan(
    pod: dict[str, Any],
    index: BindingIndex = ONE,
    *,
    default_mode: str = "sidecar",
    native: bool = True,
) -> InjectionPlan:
    return plan_injection(
        InjectionRequest(
            pod,
            NS,
            index,
            default_mode=default_mode,
            sidecar_image=IMAGE,
            sidecar_port=PORT,
            native_sidecars=native,
        )
    )


def apply(pod: dict[str, Any], p: InjectionPlan) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(pod, p.patch)
    return result


def validate(pod: dict[str, Any]) -> None:
    kubernetes_validate.validate(pod, "1.33", strict=True)


def by_name(items: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items or []}


def env(ctr: dict[str, Any]) -> dict[str, Any]:
    """name -> value (or the valueFrom object)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in ctr.get("env") or []}


def ctr(pod: dict[str, Any], name: str) -> dict[str, Any]:
    everything = [*pod["spec"]["containers"], *(pod["spec"].get("initContainers") or [])]
    return by_name(everything)[name]


# --- which pods --------------------------------------------------------------------------------


@dataclass
class Selection:
    id: str
    pod: dict[str, Any]
    index: BindingIndex
    result: Result
    assumed_role: str | None = None
    warning_has: list[str] = field(default_factory=list)


TWO = index_of((NS, "s3", assumed_role()), (NS, "dynamo", assumed_role()))
OTHER_SA = index_of((NS, "s3", assumed_role()), (NS, "admin", assumed_role(subjects=[{"name": "ops"}])))
ELSEWHERE = index_of(("team-b", "s3", assumed_role()))
BROKEN = BindingIndex()
BROKEN.put_body(NS, "broken", {"roleArn": "not-an-arn", "subjects": [{"name": "app"}]})

SELECTIONS = [
    Selection("the ServiceAccount is bound by one AssumedRole", realistic_pod(), ONE, Result.INJECTED, "s3"),
    Selection(
        "a ServiceAccount nobody binds is left alone silently",
        realistic_pod(serviceAccountName="other", serviceAccount="other"),
        ONE,
        Result.SKIPPED,
    ),
    Selection(
        "no serviceAccountName means 'default'",
        bare_pod(serviceAccountName=None),
        index_of((NS, "d", assumed_role(subjects=[{"name": "default"}]))),
        Result.INJECTED,
        "d",
    ),
    Selection(
        "an AssumedRole of another namespace does not count",
        realistic_pod(),
        ELSEWHERE,
        Result.SKIPPED,
    ),
    Selection(
        "two AssumedRoles bind the ServiceAccount: ambiguous, both named, annotation suggested",
        realistic_pod(),
        TWO,
        Result.AMBIGUOUS,
        None,
        ["'dynamo'", "'s3'", c.ANN_POD_ASSUMED_ROLE],
    ),
    Selection(
        "the annotation picks one of two",
        with_annotations(realistic_pod(), **{c.ANN_POD_ASSUMED_ROLE: "dynamo"}),
        TWO,
        Result.INJECTED,
        "dynamo",
    ),
    Selection(
        "the annotation names an AssumedRole that does not exist",
        with_annotations(realistic_pod(), **{c.ANN_POD_ASSUMED_ROLE: "nope"}),
        ONE,
        Result.INVALID,
        None,
        ["'nope'", f"namespace '{NS}'"],
    ),
    Selection(
        "the annotation is a plain name: another namespace's AssumedRole is not found",
        with_annotations(realistic_pod(), **{c.ANN_POD_ASSUMED_ROLE: "team-b/s3"}),
        ELSEWHERE,
        Result.INVALID,
        None,
        ["'team-b/s3'"],
    ),
    Selection(
        "the annotation names an AssumedRole that does not bind the pod's ServiceAccount",
        with_annotations(realistic_pod(), **{c.ANN_POD_ASSUMED_ROLE: "admin"}),
        OTHER_SA,
        Result.INVALID,
        None,
        ["'admin'", "'app'", "spec.subjects"],
    ),
    Selection(
        'rolecall.dev/inject: "false" opts out',
        with_annotations(realistic_pod(), **{c.ANN_POD_INJECT: "false"}),
        ONE,
        Result.OPTED_OUT,
    ),
    Selection(
        'rolecall.dev/inject: "False" opts out too',
        with_annotations(realistic_pod(), **{c.ANN_POD_INJECT: "False"}),
        ONE,
        Result.OPTED_OUT,
    ),
    Selection(
        "every container skipped: nothing to do",
        with_annotations(realistic_pod(), **{c.ANN_POD_SKIP_CONTAINERS: "web, worker"}),
        ONE,
        Result.SKIPPED,
        "s3",
    ),
    Selection(
        "an invalid AssumedRole is not indexed",
        realistic_pod(),
        BROKEN,
        Result.SKIPPED,
    ),
]


@pytest.mark.parametrize("case", SELECTIONS, ids=[s.id for s in SELECTIONS])
def test_which_pods(case: Selection) -> None:
    p = plan(case.pod, case.index)
    assert p.result is case.result, p.reason
    assert p.inject is (case.result is Result.INJECTED)
    assert p.assumed_role == case.assumed_role
    if case.warning_has:
        [warning] = p.warnings
        for text in case.warning_has:
            assert text in warning
    elif case.result in (Result.SKIPPED, Result.OPTED_OUT, Result.INJECTED):
        assert p.warnings == []
    if not p.inject:
        assert p.patch == []
    else:
        validate(apply(case.pod, p))


# --- each mode -----------------------------------------------------------------------------------


def test_sidecar_mode_native() -> None:
    pod = with_init(realistic_pod(), "migrate")
    p = plan(pod)
    assert (p.inject, p.mode) == (True, "sidecar")
    out = apply(pod, p)
    validate(out)

    inits = out["spec"]["initContainers"]
    assert [i["name"] for i in inits] == [SIDECAR_NAME, "migrate"], "the sidecar starts first"
    sidecar = inits[0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == IMAGE
    assert sidecar["command"] == ["rolecall", "sidecar", f"--dir={MOUNT}", f"--port={PORT}"]
    probe = sidecar["startupProbe"]
    assert "httpGet" not in probe and "tcpSocket" not in probe, "kubelet cannot reach 127.0.0.1"
    assert probe["exec"]["command"] == [
        "rolecall",
        "sidecar",
        "--once-check",
        f"--dir={MOUNT}",
        f"--port={PORT}",
    ]
    assert sidecar["volumeMounts"] == [{"name": VOLUME_NAME, "mountPath": MOUNT, "readOnly": True}]
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert set(sidecar["resources"]) == {"requests", "limits"}

    volume = by_name(out["spec"]["volumes"])[VOLUME_NAME]
    assert volume["secret"] == {"secretName": "s3", "defaultMode": 0o444, "optional": False}

    for name in ("web", "worker", "migrate"):  # the init container runs after the sidecar
        e = env(ctr(out, name))
        assert e["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == FULL_URI
        assert e["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == f"{MOUNT}/token"
        # SDKs before late 2023 read only the variable: the same token, from the Secret
        assert e["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == {
            "secretKeyRef": {"name": "s3", "key": "token", "optional": False}
        }
        assert "AWS_CONFIG_FILE" not in e and "AWS_ACCESS_KEY_ID" not in e
        mounts = by_name(ctr(out, name)["volumeMounts"])
        assert mounts[VOLUME_NAME] == {"name": VOLUME_NAME, "mountPath": MOUNT, "readOnly": True}
        assert "subPath" not in mounts[VOLUME_NAME], "subPath mounts never update"
    assert env(ctr(out, "web"))["LOG_LEVEL"] == "info", "existing env kept"
    assert out["metadata"]["annotations"][c.ANN_POD_INJECTED] == "sidecar"
    assert out["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"], "others kept"


def test_sidecar_mode_plain_container_before_native_sidecars() -> None:
    pod = with_init(realistic_pod(), "migrate")
    p = plan(pod, native=False)
    out = apply(pod, p)
    validate(out)
    names = [x["name"] for x in out["spec"]["containers"]]
    assert names == ["web", "worker", SIDECAR_NAME], "appended: the app stays the default container"
    sidecar = out["spec"]["containers"][-1]
    assert "restartPolicy" not in sidecar
    assert [i["name"] for i in out["spec"]["initContainers"]] == ["migrate"]
    assert "env" not in ctr(out, "migrate"), "an init container cannot reach a plain sidecar"
    assert any("'migrate'" in w and "init containers" in w for w in p.warnings)
    assert env(ctr(out, "web"))["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == FULL_URI


def test_file_mode() -> None:
    pod = with_init(realistic_pod(), "migrate")
    index = index_of((NS, "s3", assumed_role(injection={"mode": "file"}, region="eu-west-1")))
    p = plan(pod, index)
    out = apply(pod, p)
    validate(out)
    assert p.mode == "file"
    assert SIDECAR_NAME not in by_name(out["spec"]["containers"])
    assert [i["name"] for i in out["spec"]["initContainers"]] == ["migrate"]
    for name in ("web", "worker", "migrate"):
        e = env(ctr(out, name))
        assert e["AWS_CONFIG_FILE"] == f"{MOUNT}/config"
        assert e["AWS_SDK_LOAD_CONFIG"] == "1"
        assert "AWS_SHARED_CREDENTIALS_FILE" not in e, "static keys would be read once and expire"
        assert "AWS_PROFILE" not in e, "the default profile needs no AWS_PROFILE"
        assert e["AWS_REGION"] == e["AWS_DEFAULT_REGION"] == "eu-west-1"
        assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" not in e
        assert by_name(ctr(out, name)["volumeMounts"])[VOLUME_NAME]["readOnly"] is True
    assert out["metadata"]["annotations"][c.ANN_POD_INJECTED] == "file"


def test_file_mode_with_a_named_profile_selects_it() -> None:
    index = index_of((NS, "s3", assumed_role(injection={"mode": "file"}, profile="reader")))
    out = apply(realistic_pod(), plan(realistic_pod(), index))
    assert env(ctr(out, "web"))["AWS_PROFILE"] == "reader"


def test_env_mode() -> None:
    pod = with_init(realistic_pod(), "migrate")
    index = index_of((NS, "s3", assumed_role(injection={"mode": "env"}, secretName="s3-creds")))
    p = plan(pod, index)
    out = apply(pod, p)
    validate(out)
    assert VOLUME_NAME not in by_name(out["spec"]["volumes"])
    assert SIDECAR_NAME not in by_name(out["spec"]["containers"])
    for name in ("web", "worker", "migrate"):
        e = env(ctr(out, name))
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            assert e[key] == {"secretKeyRef": {"name": "s3-creds", "key": key, "optional": False}}
        assert "AWS_REGION" not in e, "no region on the AssumedRole: none set"
        assert VOLUME_NAME not in by_name(ctr(out, name)["volumeMounts"])


@pytest.mark.parametrize(
    ("annotation", "ar_mode", "default", "expected", "warns"),
    [
        (None, "", "sidecar", "sidecar", False),
        (None, "", "file", "file", False),
        (None, "env", "sidecar", "env", False),
        ("file", "env", "sidecar", "file", False),
        (" ENV ", "", "sidecar", "env", False),
        ("magic", "file", "sidecar", "file", True),
        ("magic", "", "env", "env", True),
    ],
    ids=[
        "operator default",
        "operator default file",
        "the AssumedRole's mode beats the default",
        "the pod annotation beats the AssumedRole",
        "the annotation is trimmed and case-insensitive",
        "an unknown annotation warns and falls back to the AssumedRole",
        "an unknown annotation warns and falls back to the default",
    ],
)
def test_mode_precedence(
    annotation: str | None, ar_mode: str, default: str, expected: str, warns: bool
) -> None:
    pod = realistic_pod()
    if annotation is not None:
        pod = with_annotations(pod, **{c.ANN_POD_MODE: annotation})
    index = index_of((NS, "s3", assumed_role(injection={"mode": ar_mode} if ar_mode else {})))
    p = plan(pod, index, default_mode=default)
    assert p.mode == expected
    assert bool(p.warnings) is warns
    if warns:
        assert repr(annotation) in p.warnings[0] and repr(expected) in p.warnings[0]
    out = apply(pod, p)
    validate(out)
    assert out["metadata"]["annotations"][c.ANN_POD_INJECTED] == expected


@pytest.mark.parametrize("mode", ["sidecar", "file", "env"])
def test_instance_metadata_is_disabled_in_every_mode(mode: str) -> None:
    """An SDK that cannot use rolecall's credentials must fail, not act as the node's role."""
    pod = with_annotations(with_init(realistic_pod(), "migrate"), **{c.ANN_POD_SKIP_CONTAINERS: "worker"})
    index = index_of((NS, "s3", assumed_role(injection={"mode": mode})))
    out = apply(pod, plan(pod, index))
    validate(out)
    for name in ("web", "migrate"):
        assert env(ctr(out, name))["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "env" not in ctr(out, "worker"), "a skipped container is left alone"
    if mode == "sidecar":
        assert "env" not in ctr(out, SIDECAR_NAME)


@pytest.mark.parametrize(
    ("annotation", "disabled", "warns"),
    [("allow", False, False), (" Allow ", False, False), ("deny", True, False), ("yes please", True, True)],
    ids=["allow opts out", "trimmed, any case", "deny is the default", "anything else warns, denies"],
)
def test_instance_metadata_opt_out_annotation(annotation: str, disabled: bool, warns: bool) -> None:
    pod = with_annotations(realistic_pod(), **{c.ANN_POD_EC2_METADATA: annotation})
    p = plan(pod)
    e = env(ctr(apply(pod, p), "web"))
    assert ("AWS_EC2_METADATA_DISABLED" in e) is disabled
    assert bool(p.warnings) is warns
    if warns:
        assert c.ANN_POD_EC2_METADATA in p.warnings[0] and repr(annotation) in p.warnings[0]


def test_a_container_that_sets_metadata_disabled_itself_keeps_its_value_quietly() -> None:
    pod = realistic_pod()
    pod["spec"]["containers"][0]["env"].append({"name": "AWS_EC2_METADATA_DISABLED", "value": "false"})
    p = plan(pod)
    out = apply(pod, p)
    assert [e for e in ctr(out, "web")["env"] if e["name"] == "AWS_EC2_METADATA_DISABLED"] == [
        {"name": "AWS_EC2_METADATA_DISABLED", "value": "false"}
    ]
    assert p.warnings == []
    assert env(ctr(out, "worker"))["AWS_EC2_METADATA_DISABLED"] == "true"


def test_the_request_is_built_from_the_operator_settings() -> None:
    from rolecall.config import Settings

    settings = Settings(default_injection_mode="file", sidecar_image="img:2", sidecar_port=9000)
    request = InjectionRequest.of(realistic_pod(), NS, ONE, settings, native_sidecars=False)
    assert (request.default_mode, request.sidecar_image, request.sidecar_port) == ("file", "img:2", 9000)
    assert request.native_sidecars is False and request.sidecar_resources == settings.sidecar_resources
    assert plan_injection(request).mode == "file"


# --- containers and env ---------------------------------------------------------------------------


def test_skip_containers() -> None:
    pod = with_annotations(
        with_init(realistic_pod(), "migrate"), **{c.ANN_POD_SKIP_CONTAINERS: "worker,migrate,ghost"}
    )
    p = plan(pod)
    out = apply(pod, p)
    validate(out)
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" in env(ctr(out, "web"))
    for name in ("worker", "migrate"):
        assert "env" not in ctr(out, name)
        assert VOLUME_NAME not in by_name(ctr(out, name)["volumeMounts"])
    assert any("'ghost'" in w for w in p.warnings), "a name that matches nothing is reported"


@pytest.mark.parametrize(
    ("mode", "preset", "warns"),
    [
        ("sidecar", {"AWS_REGION": "us-west-2"}, False),
        ("sidecar", {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:1/x"}, True),
        ("sidecar", {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}, True),
        ("file", {"AWS_CONFIG_FILE": "/etc/aws/config"}, True),
        ("env", {"AWS_SESSION_TOKEN": "abc"}, True),
        ("env", {"AWS_PROFILE": "x"}, False),
    ],
    ids=[
        "a preset region is kept quietly",
        "a preset credentials URI is kept, with a warning",
        "static keys that would win over the sidecar are reported",
        "a preset AWS_CONFIG_FILE is kept, with a warning",
        "a preset session token is kept, with a warning",
        "env mode does not care about AWS_PROFILE (env keys win)",
    ],
)
def test_env_vars_a_container_sets_are_never_overwritten(
    mode: str, preset: dict[str, str], warns: bool
) -> None:
    pod = realistic_pod()
    web = pod["spec"]["containers"][0]
    web["env"] += [{"name": k, "value": v} for k, v in preset.items()]
    index = index_of((NS, "s3", assumed_role(injection={"mode": mode}, region="eu-west-1")))
    p = plan(pod, index)
    out = apply(pod, p)
    validate(out)
    e = env(ctr(out, "web"))
    for key, value in preset.items():
        assert e[key] == value
        assert [x["name"] for x in ctr(out, "web")["env"]].count(key) == 1
    assert bool(p.warnings) is warns
    if warns:
        assert "'web'" in p.warnings[0]
    assert env(ctr(out, "worker"))["AWS_REGION"] == "eu-west-1", "other containers still get it"


def test_region_only_when_the_assumed_role_has_one() -> None:
    with_region = index_of((NS, "s3", assumed_role(region="ap-southeast-2")))
    e = env(ctr(apply(realistic_pod(), plan(realistic_pod(), with_region)), "web"))
    assert e["AWS_REGION"] == e["AWS_DEFAULT_REGION"] == "ap-southeast-2"
    e = env(ctr(apply(realistic_pod(), plan(realistic_pod())), "web"))
    assert "AWS_REGION" not in e and "AWS_DEFAULT_REGION" not in e


def test_custom_mount_path_and_secret_name() -> None:
    index = index_of((NS, "s3", assumed_role(mountPath="/aws/", secretName="s3-creds")))
    out = apply(realistic_pod(), plan(realistic_pod(), index))
    validate(out)
    assert by_name(out["spec"]["volumes"])[VOLUME_NAME]["secret"]["secretName"] == "s3-creds"
    assert env(ctr(out, "web"))["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == "/aws/token"
    assert by_name(ctr(out, "web")["volumeMounts"])[VOLUME_NAME]["mountPath"] == "/aws"


def test_a_taken_mount_path_refuses_injection() -> None:
    pod = realistic_pod()
    pod["spec"]["containers"][1]["volumeMounts"].append({"name": "mine", "mountPath": MOUNT + "/"})
    p = plan(pod)
    assert (p.inject, p.result) == (False, Result.INVALID)
    assert "'worker'" in p.warnings[0] and MOUNT in p.warnings[0]


def test_host_network_and_port_clash_warn() -> None:
    pod = realistic_pod(hostNetwork=True)
    pod["spec"]["containers"][1]["ports"] = [{"containerPort": PORT, "protocol": "TCP"}]
    p = plan(pod)
    assert p.inject
    assert any("hostNetwork" in w for w in p.warnings)
    assert any("'worker'" in w and str(PORT) in w for w in p.warnings)


# --- JSON-patch details ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sidecar", "file", "env"])
@pytest.mark.parametrize("native", [True, False], ids=["native", "plain"])
def test_patch_creates_absent_lists_and_maps(mode: str, native: bool) -> None:
    pod = bare_pod()
    index = index_of((NS, "s3", assumed_role(injection={"mode": mode})))
    p = plan(pod, index, native=native)
    paths = {op["path"] for op in p.patch}
    assert "/metadata/annotations" in paths
    if mode != "env":
        assert "/spec/volumes" in paths
        assert "/spec/containers/0/volumeMounts" in paths
    if mode == "sidecar" and native:
        assert "/spec/initContainers" in paths
    assert "/spec/containers/0/env" in paths
    out = apply(pod, p)
    validate(out)
    assert out["metadata"]["annotations"] == {c.ANN_POD_INJECTED: mode}


def test_patch_escapes_annotation_keys() -> None:
    p = plan(realistic_pod())
    [op] = [op for op in p.patch if op["path"].startswith("/metadata/annotations")]
    assert op == {"op": "add", "path": "/metadata/annotations/rolecall.dev~1injected", "value": "sidecar"}
    assert escape_pointer("a~b/c") == "a~0b~1c"


def test_patch_appends_to_existing_lists_and_addresses_init_containers_by_their_index() -> None:
    pod = with_init(realistic_pod(), "first", "second")
    pod["spec"]["initContainers"][1]["env"] = [{"name": "X", "value": "1"}]
    p = plan(pod)
    assert {
        "op": "add",
        "path": "/spec/volumes/-",
        "value": by_name([op["value"] for op in p.patch if op["path"] == "/spec/volumes/-"])[VOLUME_NAME],
    } in p.patch
    out = apply(pod, p)
    assert [i["name"] for i in out["spec"]["initContainers"]] == [SIDECAR_NAME, "first", "second"]
    assert env(ctr(out, "second"))["X"] == "1"
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" in env(ctr(out, "second"))
    assert "env" not in ctr(out, SIDECAR_NAME), "the sidecar itself gets no app env"
    assert [v["name"] for v in out["spec"]["volumes"]] == ["kube-api-access-7xq2p", VOLUME_NAME]
    validate(out)


# --- idempotency ----------------------------------------------------------------------------------

IDEMPOTENCY = [
    ("sidecar native", realistic_pod, "sidecar", True),
    ("sidecar plain", realistic_pod, "sidecar", False),
    ("file", realistic_pod, "file", True),
    ("env", realistic_pod, "env", True),
    ("bare pod, sidecar", bare_pod, "sidecar", True),
]


@pytest.mark.parametrize(
    ("factory", "mode", "native"), [i[1:] for i in IDEMPOTENCY], ids=[i[0] for i in IDEMPOTENCY]
)
def test_injecting_twice_changes_nothing(
    factory: Callable[[], dict[str, Any]], mode: str, native: bool
) -> None:
    index = index_of((NS, "s3", assumed_role(injection={"mode": mode})))
    pod = factory()
    assert not pod_is_injected(pod)
    once = apply(pod, plan(pod, index, native=native))
    assert pod_is_injected(once)
    again = plan(once, index, native=native)
    assert (again.inject, again.result, again.patch) == (False, Result.SKIPPED, [])
    assert apply(once, again) == once


@pytest.mark.parametrize(
    "mark",
    ["annotation", "volume", "sidecar container", "sidecar init container"],
)
def test_any_rolecall_mark_counts_as_injected(mark: str) -> None:
    pod = realistic_pod()
    if mark == "annotation":
        pod = with_annotations(pod, **{c.ANN_POD_INJECTED: "file"})
    elif mark == "volume":
        pod["spec"]["volumes"].append({"name": VOLUME_NAME, "secret": {"secretName": "x"}})
    elif mark == "sidecar container":
        pod["spec"]["containers"].append(container(SIDECAR_NAME))
    else:
        pod["spec"]["initContainers"] = [container(SIDECAR_NAME)]
    assert pod_is_injected(pod)
    assert plan(pod).patch == []


def test_a_suspended_assumed_role_still_injects_but_warns() -> None:
    p = plan(realistic_pod(), index_of((NS, "s3", assumed_role(suspend=True))))
    assert p.inject
    [warning] = p.warnings
    assert "suspended" in warning and "'s3'" in warning


def test_sidecar_resources_come_from_the_operator_settings() -> None:
    resources = {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"memory": "48Mi"}}
    p = plan_injection(
        InjectionRequest(
            realistic_pod(), NS, ONE, sidecar_image=IMAGE, sidecar_port=PORT, sidecar_resources=resources
        )
    )
    pod = apply(realistic_pod(), p)
    sidecar = next(ct for ct in pod["spec"]["initContainers"] if ct.get("restartPolicy") == "Always")
    assert sidecar["resources"] == resources
    validate(pod)
