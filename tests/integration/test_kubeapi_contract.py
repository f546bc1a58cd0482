"""Contract tests of the Kubernetes API emulator (tests/harness/kubeapi).

They speak only the Kubernetes API (the kubernetes client with an explicit Configuration from a
kubeconfig, plus raw HTTP through the same client where needed), so the same tests run against
a real cluster. By default they run against the emulator. To check that the emulator behaves
like a real API server, run them against kind or k3d:

    kind create cluster        # or: k3d cluster create
    ROLECALL_CONTRACT_KUBECONFIG=~/.kube/config pytest tests/integration/test_kubeapi_contract.py

Against a real cluster the tests that need the emulator's introspection (request counts,
history compaction, the CLI, webhooks served from this machine's loopback) are skipped.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gc
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import kopf
import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes.client import ApiException

from tests.harness.kube_fixtures import (
    KubeTarget,
    RawResponse,
    api_client_from_kubeconfig,
    apply_crds,
    create_test_namespace,
    delete_test_namespace,
    raw_request,
    service_account_identity,
    unique_namespace_name,
)
from tests.harness.kubeapi import KubeAPIEmulator
from tests.harness.tools import ensure_kubectl
from tests.harness.wait import wait_for

GROUP = "contract.rolecall.dev"
ROOT = pathlib.Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers


def status_of(e: ApiException) -> dict[str, Any]:
    body = json.loads(e.body)
    assert body["kind"] == "Status", body
    assert body["status"] == "Failure", body
    assert body["code"] == e.status, body
    return body


def expect_error(status: int, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as info:
        fn(*args, **kwargs)
    assert info.value.status == status, info.value.body
    return status_of(info.value)


def core(api: Any) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


def custom(api: Any) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


def secret_or_none(api: Any, namespace: str, name: str) -> Any:
    try:
        return core(api).read_namespaced_secret(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def gone(fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def watch_events(
    api: Any, path: str, timeout_seconds: int = 1, **query: Any
) -> tuple[RawResponse, list[dict[str, Any]]]:
    query = {"watch": "true", "timeoutSeconds": str(timeout_seconds), **query}
    response = raw_request(api, "GET", path, query=query, timeout=timeout_seconds + 20)
    return response, response.lines() if response.status == 200 else []


def default_service_account(api: Any, namespace: str) -> None:
    # A real cluster creates it asynchronously; pods cannot be created before it exists.
    wait_for(
        lambda: not gone(core(api).read_namespaced_service_account, "default", namespace),
        timeout=30,
        message="no default ServiceAccount",
    )


def pod_manifest(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "containers": [
                {"name": "main", "image": "busybox:1.36", "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "busybox:1.36"},
            ]
        },
    }


def widget_crd() -> dict[str, Any]:
    spec_schema = {
        "type": "object",
        "required": ["size"],
        "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 10},
            "mode": {"type": "string", "enum": ["fast", "slow"], "default": "slow"},
            "code": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
            "ratio": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
            "tags": {
                "type": "array",
                "maxItems": 3,
                "items": {"type": "string", "minLength": 1},
            },
            "owner": {
                "type": "object",
                "required": ["team"],
                "properties": {"team": {"type": "string"}},
            },
            "nested": {
                "type": "object",
                "default": {},
                "properties": {"retries": {"type": "integer", "default": 3}},
            },
            "port": {"x-kubernetes-int-or-string": True},
            "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "rules": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                },
            },
            "minReplicas": {"type": "integer"},
            "maxReplicas": {"type": "integer"},
            "immutableName": {
                "type": "string",
                "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": "immutableName is immutable"}
                ],
            },
        },
        "x-kubernetes-validations": [
            {
                "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || "
                "self.minReplicas <= self.maxReplicas",
                "message": "minReplicas must not exceed maxReplicas",
            }
        ],
    }
    schema = {
        "type": "object",
        "properties": {
            "spec": spec_schema,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": "widgets",
                "singular": "widget",
                "kind": "Widget",
                "shortNames": ["wdg"],
                "categories": ["rolecall-contract"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                },
                {
                    "name": "v1beta1",
                    "served": True,
                    "storage": False,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                },
            ],
        },
    }


def simple_crd(plural: str, kind: str, scope: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }


def write_crds(directory: pathlib.Path, *crds: dict[str, Any]) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    for crd in crds:
        (directory / f"{crd['metadata']['name']}.yaml").write_text(yaml.safe_dump(crd))
    return directory


@pytest.fixture(scope="module")
def crds(target_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    directory = write_crds(
        tmp_path_factory.mktemp("crds"),
        widget_crd(),
        simple_crd("gadgets", "Gadget", "Cluster"),
    )
    apply_crds(target_api, directory)
    yield
    ext = kubernetes.client.ApiextensionsV1Api(target_api)
    for name in (f"widgets.{GROUP}", f"gadgets.{GROUP}"):
        try:
            ext.delete_custom_resource_definition(name)
        except ApiException as e:
            if e.status != 404:
                raise


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": 1, **spec},
    }


def create_widget(api: Any, namespace: str, body: dict[str, Any], version: str = "v1") -> Any:
    return custom(api).create_namespaced_custom_object(GROUP, version, namespace, "widgets", body)


def read_widget(api: Any, namespace: str, name: str, version: str = "v1") -> Any:
    return custom(api).get_namespaced_custom_object(GROUP, version, namespace, "widgets", name)


# --------------------------------------------------------------------------- discovery


def test_discovery_documents(target_api: Any) -> None:
    version = raw_request(target_api, "GET", "/version").json()
    assert version["major"] and version["minor"] and version["gitVersion"].startswith("v")

    assert "v1" in raw_request(target_api, "GET", "/api").json()["versions"]

    v1 = {r["name"]: r for r in raw_request(target_api, "GET", "/api/v1").json()["resources"]}
    assert v1["secrets"]["namespaced"] is True and v1["secrets"]["kind"] == "Secret"
    assert {"create", "get", "list", "watch", "patch", "update", "delete"} <= set(v1["secrets"]["verbs"])
    assert v1["namespaces"]["namespaced"] is False and "ns" in v1["namespaces"]["shortNames"]
    assert "po" in v1["pods"]["shortNames"] and v1["pods"]["singularName"] == "pod"
    assert v1["pods/status"]["kind"] == "Pod" and "patch" in v1["pods/status"]["verbs"]
    assert "secrets/status" not in v1
    for name in ("configmaps", "serviceaccounts", "services", "events"):
        assert v1[name]["namespaced"] is True

    groups = {g["name"]: g for g in raw_request(target_api, "GET", "/apis").json()["groups"]}
    for group in (
        "events.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "admissionregistration.k8s.io",
    ):
        assert any(v["version"] == "v1" for v in groups[group]["versions"]), group
        assert groups[group]["preferredVersion"]["version"]

    leases = raw_request(target_api, "GET", "/apis/coordination.k8s.io/v1").json()
    assert any(r["name"] == "leases" and r["namespaced"] for r in leases["resources"])
    hooks = raw_request(target_api, "GET", "/apis/admissionregistration.k8s.io/v1").json()
    names = {r["name"]: r for r in hooks["resources"]}
    assert names["mutatingwebhookconfigurations"]["namespaced"] is False
    assert "validatingwebhookconfigurations" in names
    crds = raw_request(target_api, "GET", "/apis/apiextensions.k8s.io/v1").json()
    crd = next(r for r in crds["resources"] if r["name"] == "customresourcedefinitions")
    assert "crd" in crd["shortNames"] and crd["namespaced"] is False

    assert raw_request(target_api, "GET", "/apis/no.such.group/v1").status == 404
    assert raw_request(target_api, "GET", "/api/v1/nosuchthings").status == 404


def test_initial_namespaces_exist(target_api: Any) -> None:
    names = {n.metadata.name for n in core(target_api).list_namespace().items}
    assert {"default", "kube-system"} <= names


# --------------------------------------------------------------------------- metadata


def test_server_managed_metadata(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    created = api.create_namespaced_secret(
        target_namespace,
        {"metadata": {"generateName": "gen-"}, "stringData": {"user": "admin"}, "data": {"x": "eA=="}},
    )
    meta = created.metadata
    assert meta.name.startswith("gen-") and len(meta.name) == len("gen-") + 5
    assert meta.namespace == target_namespace
    assert meta.uid and meta.creation_timestamp is not None
    assert int(meta.resource_version) > 0
    assert created.data == {"x": "eA==", "user": base64.b64encode(b"admin").decode()}
    assert created.string_data is None
    assert created.type == "Opaque"

    stored = raw_request(
        target_api, "GET", f"/api/v1/namespaces/{target_namespace}/secrets/{meta.name}"
    ).json()
    assert "stringData" not in stored
    assert stored["metadata"]["uid"] == meta.uid

    updated = api.patch_namespaced_secret(meta.name, target_namespace, {"metadata": {"labels": {"a": "b"}}})
    assert int(updated.metadata.resource_version) > int(meta.resource_version)
    assert updated.metadata.uid == meta.uid

    second = api.create_namespaced_secret(target_namespace, {"metadata": {"generateName": "gen-"}})
    assert second.metadata.name != meta.name
    assert int(second.metadata.resource_version) > int(updated.metadata.resource_version)


def test_namespace_in_body_must_match_url(target_api: Any, target_namespace: str) -> None:
    status = expect_error(
        400,
        core(target_api).create_namespaced_config_map,
        target_namespace,
        {"metadata": {"name": "cm", "namespace": "default"}},
    )
    assert status["reason"] == "BadRequest"
    assert "does not match the namespace" in status["message"]


def test_generation_of_custom_resources(target_api: Any, target_namespace: str, crds: None) -> None:
    created = create_widget(target_api, target_namespace, widget("gen"))
    assert created["metadata"]["generation"] == 1
    cr = custom(target_api)
    after_status = cr.patch_namespaced_custom_object_status(
        GROUP, "v1", target_namespace, "widgets", "gen", {"status": {"phase": "Ready"}}
    )
    assert after_status["metadata"]["generation"] == 1
    after_label = cr.patch_namespaced_custom_object(
        GROUP, "v1", target_namespace, "widgets", "gen", {"metadata": {"labels": {"x": "y"}}}
    )
    assert after_label["metadata"]["generation"] == 1
    after_spec = cr.patch_namespaced_custom_object(
        GROUP, "v1", target_namespace, "widgets", "gen", {"spec": {"size": 2}}
    )
    assert after_spec["metadata"]["generation"] == 2


# --------------------------------------------------------------------------- errors


def test_already_exists_and_not_found(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    api.create_namespaced_secret(target_namespace, {"metadata": {"name": "dup"}})
    status = expect_error(409, api.create_namespaced_secret, target_namespace, {"metadata": {"name": "dup"}})
    assert status["reason"] == "AlreadyExists"
    assert status["message"] == 'secrets "dup" already exists'
    assert status["details"]["name"] == "dup" and status["details"]["kind"] == "secrets"

    status = expect_error(404, api.read_namespaced_secret, "nope", target_namespace)
    assert status["reason"] == "NotFound"
    assert status["message"] == 'secrets "nope" not found'
    assert status["details"] == {"name": "nope", "kind": "secrets"}

    status = expect_error(404, api.delete_namespaced_secret, "nope", target_namespace)
    assert status["message"] == 'secrets "nope" not found'


def test_stale_resource_version_conflicts(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    stale = api.read_namespaced_config_map("cm", target_namespace)
    api.patch_namespaced_config_map("cm", target_namespace, {"data": {"a": "2"}})

    stale.data = {"a": "3"}
    status = expect_error(409, api.replace_namespaced_config_map, "cm", target_namespace, stale)
    assert status["reason"] == "Conflict"
    assert status["message"].startswith('Operation cannot be fulfilled on configmaps "cm"')

    old_rv = stale.metadata.resource_version
    status = expect_error(
        409,
        api.patch_namespaced_config_map,
        "cm",
        target_namespace,
        {"metadata": {"resourceVersion": old_rv}, "data": {"a": "4"}},
        _content_type="application/merge-patch+json",
    )
    assert status["reason"] == "Conflict"
    assert api.read_namespaced_config_map("cm", target_namespace).data == {"a": "2"}

    fresh = api.read_namespaced_config_map("cm", target_namespace)
    fresh.data = {"a": "5"}
    assert api.replace_namespaced_config_map("cm", target_namespace, fresh).data == {"a": "5"}


def test_update_of_custom_resource_needs_resource_version(
    target_api: Any, target_namespace: str, crds: None
) -> None:
    create_widget(target_api, target_namespace, widget("norv"))
    body = widget("norv", size=3)
    status = expect_error(
        422,
        custom(target_api).replace_namespaced_custom_object,
        GROUP,
        "v1",
        target_namespace,
        "widgets",
        "norv",
        body,
    )
    assert status["reason"] == "Invalid"
    assert "metadata.resourceVersion" in status["message"]


def test_namespaced_requests_into_a_missing_namespace(target_api: Any) -> None:
    api = core(target_api)
    status = expect_error(
        404, api.create_namespaced_secret, "no-such-ns-contract", {"metadata": {"name": "s"}}
    )
    assert status["message"] == 'namespaces "no-such-ns-contract" not found'
    assert status["reason"] == "NotFound"
    # Like a real server: reads in a missing namespace find nothing, lists are empty.
    assert api.list_namespaced_secret("no-such-ns-contract").items == []
    expect_error(404, api.read_namespaced_secret, "s", "no-such-ns-contract")


def test_wrong_credentials_are_refused(kube_target: KubeTarget, target_api: Any) -> None:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kube_target.kubeconfig), client_configuration=configuration, persist_config=False
    )
    configuration.refresh_api_key_hook = None
    configuration.api_key = {"BearerToken": "Bearer not-a-valid-token"}
    configuration.cert_file = configuration.key_file = None
    with kubernetes.client.ApiClient(configuration) as anonymous:
        response = raw_request(anonymous, "GET", "/api/v1/namespaces/default/secrets")
    assert response.status == 401, response.data
    assert response.json()["kind"] == "Status"


# --------------------------------------------------------------------------- patches


def test_json_patch_with_test_operations(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    cm = api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "jp"}, "data": {"a": "1"}})
    rv = cm.metadata.resource_version
    patched = api.patch_namespaced_config_map(
        "jp",
        target_namespace,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": ["contract.rolecall.dev/keep"]},
            {"op": "replace", "path": "/data/a", "value": "2"},
        ],
    )
    assert patched.data == {"a": "2"}
    assert patched.metadata.finalizers == ["contract.rolecall.dev/keep"]

    status = expect_error(
        422,
        api.patch_namespaced_config_map,
        "jp",
        target_namespace,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "remove", "path": "/metadata/finalizers"},
        ],
    )
    assert status["reason"] == "Invalid"
    assert api.read_namespaced_config_map("jp", target_namespace).metadata.finalizers
    api.patch_namespaced_config_map(
        "jp", target_namespace, [{"op": "remove", "path": "/metadata/finalizers"}]
    )


def test_strategic_merge_patch_merges_lists_by_key(target_api: Any, target_namespace: str) -> None:
    default_service_account(target_api, target_namespace)
    api = core(target_api)
    manifest = pod_manifest("smp")
    manifest["metadata"]["finalizers"] = ["contract.rolecall.dev/a"]
    api.create_namespaced_pod(target_namespace, manifest)
    patched = api.patch_namespaced_pod(
        "smp",
        target_namespace,
        {
            "metadata": {"labels": {"x": "1"}, "finalizers": ["contract.rolecall.dev/b"]},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]},
        },
    )
    containers = {c.name: c for c in patched.spec.containers}
    assert set(containers) == {"main", "side"}, "containers merge by name"
    assert containers["main"].image == "busybox:1.37"
    assert {e.name: e.value for e in containers["main"].env} == {"A": "1"}
    assert patched.metadata.finalizers == ["contract.rolecall.dev/a", "contract.rolecall.dev/b"]
    assert patched.metadata.labels == {"x": "1"}
    assert patched.spec.service_account_name == "default"
    assert patched.status.phase == "Pending"

    cleared = api.patch_namespaced_pod(
        "smp",
        target_namespace,
        {
            "metadata": {
                "$deleteFromPrimitiveList/finalizers": ["contract.rolecall.dev/a", "contract.rolecall.dev/b"]
            }
        },
    )
    assert not cleared.metadata.finalizers

    status = expect_error(
        422, api.patch_namespaced_pod, "smp", target_namespace, {"spec": {"restartPolicy": "Never"}}
    )
    assert "pod updates may not change fields" in status["message"]

    api.create_namespaced_service_account(
        target_namespace, {"metadata": {"name": "puller"}, "imagePullSecrets": [{"name": "one"}]}
    )
    account = api.patch_namespaced_service_account(
        "puller", target_namespace, {"imagePullSecrets": [{"name": "two"}]}
    )
    assert [s.name for s in account.image_pull_secrets] == ["one", "two"]


def test_strategic_merge_patch_is_refused_for_custom_resources(
    target_api: Any, target_namespace: str, crds: None
) -> None:
    create_widget(target_api, target_namespace, widget("smp"))
    response = raw_request(
        target_api,
        "PATCH",
        f"/apis/{GROUP}/v1/namespaces/{target_namespace}/widgets/smp",
        body={"spec": {"size": 2}},
        content_type="application/strategic-merge-patch+json",
    )
    assert response.status == 415, response.data
    assert response.json()["reason"] == "UnsupportedMediaType"
    merged = raw_request(
        target_api,
        "PATCH",
        f"/apis/{GROUP}/v1/namespaces/{target_namespace}/widgets/smp",
        body={"spec": {"size": 2}},
        content_type="application/merge-patch+json",
    )
    assert merged.status == 200 and merged.json()["spec"]["size"] == 2


# --------------------------------------------------------------------------- status subresource


def test_status_subresource(target_api: Any, target_namespace: str, crds: None) -> None:
    body = widget("st")
    body["status"] = {"phase": "Hacked"}
    created = create_widget(target_api, target_namespace, body)
    assert "status" not in created or created["status"].get("phase") != "Hacked"

    cr = custom(target_api)
    patched = cr.patch_namespaced_custom_object_status(
        GROUP,
        "v1",
        target_namespace,
        "widgets",
        "st",
        {"status": {"phase": "Ready"}, "spec": {"size": 9}},
    )
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"]["size"] == 1, "a /status write must not change the spec"

    ignored = cr.patch_namespaced_custom_object(
        GROUP, "v1", target_namespace, "widgets", "st", {"status": {"phase": "Ignored"}, "spec": {"size": 4}}
    )
    assert ignored["status"] == {"phase": "Ready"}, "the main endpoint must not change the status"
    assert ignored["spec"]["size"] == 4

    current = read_widget(target_api, target_namespace, "st")
    current["spec"]["size"] = 5
    current.pop("status")
    replaced = cr.replace_namespaced_custom_object(GROUP, "v1", target_namespace, "widgets", "st", current)
    assert replaced["status"] == {"phase": "Ready"}, "PUT must keep the status"

    replaced["status"] = {"phase": "Done"}
    replaced["spec"]["size"] = 7
    via_status = cr.replace_namespaced_custom_object_status(
        GROUP, "v1", target_namespace, "widgets", "st", replaced
    )
    assert via_status["status"] == {"phase": "Done"} and via_status["spec"]["size"] == 5


# --------------------------------------------------------------------------- selectors & lists


def test_label_and_field_selectors(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    for name, labels in {
        "a": {"app": "web", "tier": "front"},
        "b": {"app": "web", "tier": "back"},
        "c": {"app": "db"},
        "d": {},
    }.items():
        api.create_namespaced_config_map(target_namespace, {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs: Any) -> list[str]:
        return sorted(
            i.metadata.name
            for i in api.list_namespaced_config_map(target_namespace, **kwargs).items
            if i.metadata.name in {"a", "b", "c", "d"}
        )

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app==web,tier=back") == ["b"]
    assert names(label_selector="app!=web") == ["c", "d"]
    assert names(label_selector="app in (db, web)") == ["a", "b", "c"]
    assert names(label_selector="app notin (web)") == ["c", "d"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(label_selector="!tier") == ["c", "d"]
    assert names(field_selector="metadata.name=c") == ["c"]
    assert names(field_selector="metadata.name!=c", label_selector="app") == ["a", "b"]

    everywhere = api.list_config_map_for_all_namespaces(label_selector="app=db")
    assert [
        (i.metadata.namespace, i.metadata.name)
        for i in everywhere.items
        if i.metadata.namespace == target_namespace
    ] == [(target_namespace, "c")]
    assert int(everywhere.metadata.resource_version) > 0

    bad = raw_request(
        target_api,
        "GET",
        f"/api/v1/namespaces/{target_namespace}/configmaps",
        query={"fieldSelector": "data.a=1"},
    )
    assert bad.status == 400


def test_pod_field_selectors(target_api: Any, target_namespace: str) -> None:
    default_service_account(target_api, target_namespace)
    api = core(target_api)
    api.create_namespaced_service_account(target_namespace, {"metadata": {"name": "robot"}})
    api.create_namespaced_pod(target_namespace, pod_manifest("p1"))
    other = pod_manifest("p2")
    other["spec"]["serviceAccountName"] = "robot"
    api.create_namespaced_pod(target_namespace, other)

    def names(selector: str) -> list[str]:
        return sorted(
            p.metadata.name for p in api.list_namespaced_pod(target_namespace, field_selector=selector).items
        )

    assert names("spec.serviceAccountName=robot") == ["p2"]
    assert names("spec.serviceAccountName=default") == ["p1"]
    assert names("status.phase=Pending") == ["p1", "p2"]
    assert names("spec.nodeName=") == ["p1", "p2"]


def test_list_pagination(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    for n in range(5):
        api.create_namespaced_config_map(
            target_namespace, {"metadata": {"name": f"page-{n}", "labels": {"page": "yes"}}}
        )
    first = api.list_namespaced_config_map(target_namespace, label_selector="page=yes", limit=2)
    assert len(first.items) == 2 and first.metadata._continue
    seen = [i.metadata.name for i in first.items]
    token = first.metadata._continue
    while token:
        page = api.list_namespaced_config_map(
            target_namespace, label_selector="page=yes", limit=2, _continue=token
        )
        seen.extend(i.metadata.name for i in page.items)
        token = page.metadata._continue
    assert sorted(seen) == [f"page-{n}" for n in range(5)]


# --------------------------------------------------------------------------- watch


def test_watch_from_a_resource_version(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "before"}})
    since = api.list_namespaced_config_map(target_namespace).metadata.resource_version
    api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "w1"}})
    api.patch_namespaced_config_map("before", target_namespace, {"data": {"k": "v"}})
    api.delete_namespaced_config_map("w1", target_namespace)

    started = time.monotonic()
    response, events = watch_events(
        target_api,
        f"/api/v1/namespaces/{target_namespace}/configmaps",
        timeout_seconds=1,
        resourceVersion=since,
    )
    elapsed = time.monotonic() - started
    assert response.status == 200
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]
    assert seen == [("ADDED", "w1"), ("MODIFIED", "before"), ("DELETED", "w1")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events if e["type"] != "BOOKMARK"]
    assert rvs == sorted(rvs) and rvs[0] > int(since)
    assert 0.5 < elapsed < 15, "timeoutSeconds must end the stream"


def test_watch_without_resource_version_lists_first(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    for name in ("x", "y"):
        api.create_namespaced_config_map(
            target_namespace, {"metadata": {"name": name, "labels": {"w": "yes"}}}
        )
    api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "z"}})
    _, events = watch_events(
        target_api, f"/api/v1/namespaces/{target_namespace}/configmaps", labelSelector="w=yes"
    )
    assert sorted((e["type"], e["object"]["metadata"]["name"]) for e in events) == [
        ("ADDED", "x"),
        ("ADDED", "y"),
    ]


def test_watch_with_selectors_follows_objects_in_and_out(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "mover"}})
    since = api.list_namespaced_config_map(target_namespace).metadata.resource_version
    api.patch_namespaced_config_map("mover", target_namespace, {"metadata": {"labels": {"sel": "in"}}})
    api.patch_namespaced_config_map("mover", target_namespace, {"data": {"a": "b"}})
    api.patch_namespaced_config_map("mover", target_namespace, {"metadata": {"labels": {"sel": "out"}}})
    _, events = watch_events(
        target_api,
        f"/api/v1/namespaces/{target_namespace}/configmaps",
        resourceVersion=since,
        labelSelector="sel=in",
    )
    assert [e["type"] for e in events if e["type"] != "BOOKMARK"] == ["ADDED", "MODIFIED", "DELETED"]


def test_watch_with_kubernetes_client_stream(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    since = api.list_namespaced_secret(target_namespace).metadata.resource_version
    api.create_namespaced_secret(target_namespace, {"metadata": {"name": "streamed"}})
    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(
        api.list_namespaced_secret, target_namespace, resource_version=since, timeout_seconds=2
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "streamed":
            watch.stop()
    assert ("ADDED", "streamed") in seen


def test_watch_too_old_resource_version_is_gone(
    kube_target: KubeTarget, target_api: Any, target_namespace: str
) -> None:
    api = core(target_api)
    api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "old"}})
    if kube_target.emulator is not None:
        old = api.list_namespaced_config_map(target_namespace).metadata.resource_version
        api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "newer"}})
        kube_target.emulator.compact_history()
    else:
        old = "1"  # long compacted on any real cluster
    response, events = watch_events(
        target_api, f"/api/v1/namespaces/{target_namespace}/configmaps", resourceVersion=old
    )
    if response.status == 410:
        assert response.json()["code"] == 410
        return
    assert response.status == 200
    assert events and events[0]["type"] == "ERROR", events
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_watch_initial_events_end_with_a_bookmark(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "initial"}})
    response, events = watch_events(
        target_api,
        f"/api/v1/namespaces/{target_namespace}/configmaps",
        allowWatchBookmarks="true",
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
    )
    if response.status != 200:
        pytest.skip(f"this cluster does not support sendInitialEvents: {response.status}")
    types = [e["type"] for e in events]
    assert types[0] == "ADDED" and "BOOKMARK" in types
    bookmark = events[types.index("BOOKMARK")]["object"]
    assert bookmark["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
    assert int(bookmark["metadata"]["resourceVersion"]) > 0


# --------------------------------------------------------------------------- deletion


def test_finalizers_delay_deletion(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    api.create_namespaced_config_map(
        target_namespace, {"metadata": {"name": "fin", "finalizers": ["contract.rolecall.dev/hold"]}}
    )
    response = raw_request(target_api, "DELETE", f"/api/v1/namespaces/{target_namespace}/configmaps/fin")
    assert response.status in (200, 202)
    held = api.read_namespaced_config_map("fin", target_namespace)
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == ["contract.rolecall.dev/hold"]

    status = expect_error(
        422,
        api.patch_namespaced_config_map,
        "fin",
        target_namespace,
        {"metadata": {"finalizers": ["contract.rolecall.dev/hold", "contract.rolecall.dev/more"]}},
        _content_type="application/merge-patch+json",
    )
    assert "finalizers" in status["message"]

    api.patch_namespaced_config_map(
        "fin",
        target_namespace,
        {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json",
    )
    wait_for(lambda: gone(api.read_namespaced_config_map, "fin", target_namespace), timeout=10)


def test_delete_returns_status_or_object(target_api: Any, target_namespace: str, crds: None) -> None:
    api = core(target_api)
    api.create_namespaced_secret(target_namespace, {"metadata": {"name": "del"}})
    deleted = raw_request(target_api, "DELETE", f"/api/v1/namespaces/{target_namespace}/secrets/del").json()
    assert deleted["kind"] == "Status" and deleted["status"] == "Success"
    assert deleted["details"]["name"] == "del"

    api.create_namespaced_service_account(target_namespace, {"metadata": {"name": "del"}})
    deleted = raw_request(
        target_api, "DELETE", f"/api/v1/namespaces/{target_namespace}/serviceaccounts/del"
    ).json()
    assert deleted["kind"] == "ServiceAccount" and deleted["metadata"]["name"] == "del"

    create_widget(target_api, target_namespace, widget("del"))
    deleted = custom(target_api).delete_namespaced_custom_object(
        GROUP, "v1", target_namespace, "widgets", "del", body={"propagationPolicy": "Foreground"}
    )
    assert deleted["kind"] in ("Status", "Widget")
    wait_for(lambda: gone(read_widget, target_api, target_namespace, "del"), timeout=10)


def owner_ref(obj: Any, kind: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "name": obj.metadata.name, "uid": obj.metadata.uid}


def test_garbage_collection_of_dependents(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    owner = api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "owner"}})
    child = api.create_namespaced_secret(
        target_namespace, {"metadata": {"name": "child", "ownerReferences": [owner_ref(owner, "ConfigMap")]}}
    )
    api.create_namespaced_secret(
        target_namespace,
        {"metadata": {"name": "grandchild", "ownerReferences": [owner_ref(child, "Secret")]}},
    )
    other = api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "other"}})
    api.create_namespaced_secret(
        target_namespace,
        {
            "metadata": {
                "name": "shared",
                "ownerReferences": [owner_ref(owner, "ConfigMap"), owner_ref(other, "ConfigMap")],
            }
        },
    )

    api.delete_namespaced_config_map("owner", target_namespace)
    wait_for(
        lambda: secret_or_none(target_api, target_namespace, "child") is None,
        timeout=30,
        message="child kept",
    )
    wait_for(
        lambda: secret_or_none(target_api, target_namespace, "grandchild") is None,
        timeout=30,
        message="grandchild kept",
    )
    shared = wait_for(
        lambda: (
            (s := secret_or_none(target_api, target_namespace, "shared"))
            and [r.uid for r in s.metadata.owner_references] == [other.metadata.uid]
            and s
        ),
        timeout=30,
        message="the dependent with a remaining owner must stay, without the dangling reference",
    )
    assert shared.metadata.name == "shared"

    api.delete_namespaced_config_map("other", target_namespace)
    wait_for(lambda: secret_or_none(target_api, target_namespace, "shared") is None, timeout=30)


def test_orphan_propagation_keeps_dependents(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    owner = api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "owner"}})
    api.create_namespaced_secret(
        target_namespace, {"metadata": {"name": "orphan", "ownerReferences": [owner_ref(owner, "ConfigMap")]}}
    )
    api.delete_namespaced_config_map("owner", target_namespace, propagation_policy="Orphan")
    wait_for(lambda: gone(api.read_namespaced_config_map, "owner", target_namespace), timeout=30)
    orphan = wait_for(
        lambda: (
            (s := secret_or_none(target_api, target_namespace, "orphan"))
            and not s.metadata.owner_references
            and s
        ),
        timeout=30,
    )
    assert orphan.metadata.name == "orphan"


def test_deleting_a_namespace_removes_its_contents(target_api: Any, request: pytest.FixtureRequest) -> None:
    api = core(target_api)
    name = create_test_namespace(target_api, request.node.name + "-doomed")
    try:
        api.create_namespaced_secret(name, {"metadata": {"name": "inside"}})
        api.create_namespaced_config_map(name, {"metadata": {"name": "inside"}})
        api.delete_namespace(name)
        terminating = api.read_namespace(name) if not gone(api.read_namespace, name) else None
        if terminating is not None:
            assert terminating.metadata.deletion_timestamp is not None
        wait_for(lambda: gone(api.read_namespace, name), timeout=90, message="namespace not removed")
        assert gone(api.read_namespaced_secret, "inside", name)
        assert not [s for s in api.list_secret_for_all_namespaces().items if s.metadata.namespace == name]
    finally:
        delete_test_namespace(target_api, name)


# --------------------------------------------------------------------------- CRDs


def test_crd_is_established_and_served(target_api: Any, target_namespace: str, crds: None) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(target_api)
    crd = ext.read_custom_resource_definition(f"widgets.{GROUP}")
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)

    group = raw_request(target_api, "GET", f"/apis/{GROUP}").json()
    assert {v["version"] for v in group["versions"]} == {"v1", "v1beta1"}
    assert group["preferredVersion"]["version"] == "v1"
    resources = {
        r["name"]: r for r in raw_request(target_api, "GET", f"/apis/{GROUP}/v1").json()["resources"]
    }
    assert resources["widgets"]["namespaced"] is True
    assert resources["widgets"]["kind"] == "Widget"
    assert resources["widgets"]["shortNames"] == ["wdg"]
    assert resources["widgets"]["categories"] == ["rolecall-contract"]
    assert "widgets/status" in resources
    assert resources["gadgets"]["namespaced"] is False
    beta = {r["name"] for r in raw_request(target_api, "GET", f"/apis/{GROUP}/v1beta1").json()["resources"]}
    assert "widgets" in beta

    create_widget(target_api, target_namespace, widget("multi"))
    assert read_widget(target_api, target_namespace, "multi", "v1beta1")["apiVersion"] == f"{GROUP}/v1beta1"
    assert read_widget(target_api, target_namespace, "multi")["apiVersion"] == f"{GROUP}/v1"
    via_beta = custom(target_api).patch_namespaced_custom_object(
        GROUP, "v1beta1", target_namespace, "widgets", "multi", {"spec": {"size": 2}}
    )
    assert via_beta["apiVersion"] == f"{GROUP}/v1beta1" and via_beta["spec"]["size"] == 2
    beta_status = custom(target_api).patch_namespaced_custom_object_status(
        GROUP, "v1beta1", target_namespace, "widgets", "multi", {"status": {"seen": True}}
    )
    assert beta_status["status"] == {"seen": True}

    cr = custom(target_api)
    cr.create_cluster_custom_object(
        GROUP,
        "v1",
        "gadgets",
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Gadget",
            "metadata": {"name": f"g-{target_namespace}"},
            "spec": {"any": {"thing": 1}},
        },
    )
    try:
        got = cr.get_cluster_custom_object(GROUP, "v1", "gadgets", f"g-{target_namespace}")
        assert "namespace" not in got["metadata"]
        assert got["spec"] == {"any": {"thing": 1}}
    finally:
        cr.delete_cluster_custom_object(GROUP, "v1", "gadgets", f"g-{target_namespace}")


def test_schema_validation_names_each_field(target_api: Any, target_namespace: str, crds: None) -> None:
    status = expect_error(422, create_widget, target_api, target_namespace, widget("big", size=100))
    assert status["reason"] == "Invalid"
    assert status["message"] == (
        f'Widget.{GROUP} "big" is invalid: spec.size: Invalid value: 100: '
        "spec.size in body should be less than or equal to 10"
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 100: spec.size in body should be less than or equal to 10",
            "field": "spec.size",
        }
    ]

    bad = widget(
        "bad",
        size="three",
        mode="medium",
        code="ABC",
        ratio=0,
        tags=["a", "b", "c", "d"],
        owner={},
        port=[1],
    )
    status = expect_error(422, create_widget, target_api, target_namespace, bad)
    fields = {c["field"]: c for c in status["details"]["causes"]}
    assert set(fields) >= {
        "spec.size",
        "spec.mode",
        "spec.code",
        "spec.ratio",
        "spec.tags",
        "spec.owner.team",
        "spec.port",
    }, fields
    assert fields["spec.mode"]["reason"] == "FieldValueNotSupported"
    assert 'supported values: "fast", "slow"' in fields["spec.mode"]["message"]
    assert fields["spec.owner.team"]["reason"] == "FieldValueRequired"
    assert "must be of type integer" in fields["spec.size"]["message"]
    assert "should match '^[a-z]+$'" in fields["spec.code"]["message"]
    assert "should be greater than 0" in fields["spec.ratio"]["message"]

    missing = widget("missing")
    del missing["spec"]["size"]
    status = expect_error(422, create_widget, target_api, target_namespace, missing)
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.size"]
    assert status["details"]["causes"][0]["message"] == "Required value"

    # Patterns have RE2's meaning: "$" is the very end, not "before a trailing newline".
    status = expect_error(422, create_widget, target_api, target_namespace, widget("nl", code="abc\n"))
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.code"]

    ok = create_widget(target_api, target_namespace, widget("ok", port="http", ratio=0.5))
    assert ok["spec"]["port"] == "http"
    status = expect_error(
        422,
        custom(target_api).patch_namespaced_custom_object,
        GROUP,
        "v1",
        target_namespace,
        "widgets",
        "ok",
        {"spec": {"size": 0}},
    )
    assert "greater than or equal to 1" in status["message"]


def test_pruning_and_defaults(target_api: Any, target_namespace: str, crds: None) -> None:
    body = widget("pd", config={"free": {"form": True}}, unknown="dropped")
    body["topLevelJunk"] = 1
    body["spec"]["owner"] = {"team": "a", "extra": "dropped"}
    response = raw_request(
        target_api, "POST", f"/apis/{GROUP}/v1/namespaces/{target_namespace}/widgets", body=body
    )
    assert response.status == 201, response.data
    created = response.json()
    assert "unknown" not in created["spec"] and "topLevelJunk" not in created
    assert created["spec"]["owner"] == {"team": "a"}
    assert created["spec"]["config"] == {"free": {"form": True}}
    assert created["spec"]["mode"] == "slow"
    assert created["spec"]["nested"] == {"retries": 3}
    warnings = response.headers.get("Warning", "")
    assert "unknown field" in warnings and "spec.unknown" in warnings

    updated = custom(target_api).patch_namespaced_custom_object(
        GROUP, "v1", target_namespace, "widgets", "pd", {"spec": {"mode": None, "nested": {"retries": None}}}
    )
    assert updated["spec"]["mode"] == "slow" and updated["spec"]["nested"] == {"retries": 3}


def test_cel_validation_rules(target_api: Any, target_namespace: str, crds: None) -> None:
    status = expect_error(
        422,
        create_widget,
        target_api,
        target_namespace,
        widget("cel", minReplicas=5, maxReplicas=2),
    )
    assert "minReplicas must not exceed maxReplicas" in status["message"]
    assert status["details"]["causes"][0]["field"] == "spec"

    create_widget(
        target_api, target_namespace, widget("cel", minReplicas=1, maxReplicas=2, immutableName="a")
    )
    status = expect_error(
        422,
        custom(target_api).patch_namespaced_custom_object,
        GROUP,
        "v1",
        target_namespace,
        "widgets",
        "cel",
        {"spec": {"immutableName": "b"}},
    )
    assert "immutableName is immutable" in status["message"]
    assert status["details"]["causes"][0]["field"] == "spec.immutableName"
    unchanged = custom(target_api).patch_namespaced_custom_object(
        GROUP, "v1", target_namespace, "widgets", "cel", {"spec": {"size": 3}}
    )
    assert unchanged["spec"]["size"] == 3


def test_deleting_a_crd_removes_its_objects(
    target_api: Any, target_namespace: str, tmp_path: pathlib.Path
) -> None:
    crd = simple_crd("doohickeys", "Doohickey", "Namespaced")
    apply_crds(target_api, write_crds(tmp_path, crd))
    cr = custom(target_api)
    cr.create_namespaced_custom_object(
        GROUP,
        "v1",
        target_namespace,
        "doohickeys",
        {"apiVersion": f"{GROUP}/v1", "kind": "Doohickey", "metadata": {"name": "d"}},
    )
    kubernetes.client.ApiextensionsV1Api(target_api).delete_custom_resource_definition(
        crd["metadata"]["name"]
    )
    wait_for(
        lambda: (
            raw_request(
                target_api, "GET", f"/apis/{GROUP}/v1/namespaces/{target_namespace}/doohickeys/d"
            ).status
            == 404
        ),
        timeout=60,
        message="the object outlived its CRD",
    )
    wait_for(
        lambda: gone(
            kubernetes.client.ApiextensionsV1Api(target_api).read_custom_resource_definition,
            crd["metadata"]["name"],
        ),
        timeout=60,
    )
    resources = raw_request(target_api, "GET", f"/apis/{GROUP}/v1").json()
    assert "doohickeys" not in {r["name"] for r in resources.get("resources", [])}


# --------------------------------------------------------------------------- other built-ins


def test_events_and_leases(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    event = api.create_namespaced_event(
        target_namespace,
        {
            "metadata": {"generateName": "ev-"},
            "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": target_namespace},
            "reason": "Testing",
            "message": "hello",
            "type": "Normal",
        },
    )
    assert event.metadata.name.startswith("ev-")
    listed = api.list_namespaced_event(target_namespace, field_selector="reason=Testing")
    assert [e.message for e in listed.items] == ["hello"]

    events = kubernetes.client.EventsV1Api(target_api)
    new_style = events.create_namespaced_event(
        target_namespace,
        {
            "metadata": {"name": "ev2"},
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "reportingController": "contract.rolecall.dev/test",
            "reportingInstance": "test",
            "action": "Test",
            "reason": "Testing",
            "regarding": {"kind": "ConfigMap", "name": "x", "namespace": target_namespace},
            "type": "Normal",
        },
    )
    assert new_style.metadata.uid

    leases = kubernetes.client.CoordinationV1Api(target_api)
    lease = leases.create_namespaced_lease(
        target_namespace,
        {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
    )
    lease.spec.holder_identity = "b"
    replaced = leases.replace_namespaced_lease("leader", target_namespace, lease)
    assert replaced.spec.holder_identity == "b"
    lease.spec.holder_identity = "c"
    expect_error(409, leases.replace_namespaced_lease, "leader", target_namespace, lease)


def test_services_dry_run_and_delete_collection(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    service = api.create_namespaced_service(
        target_namespace,
        {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}},
    )
    assert service.spec.cluster_ip and service.spec.type == "ClusterIP"
    assert service.spec.ports[0].protocol == "TCP" and service.spec.ports[0].target_port == 80

    dry = api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "dry"}}, dry_run="All")
    assert dry.metadata.name == "dry"
    assert gone(api.read_namespaced_config_map, "dry", target_namespace)

    for name in ("del-1", "del-2", "keep"):
        labels = {"batch": "yes"} if name.startswith("del") else {}
        api.create_namespaced_config_map(target_namespace, {"metadata": {"name": name, "labels": labels}})
    api.delete_collection_namespaced_config_map(target_namespace, label_selector="batch=yes")
    wait_for(
        lambda: not api.list_namespaced_config_map(target_namespace, label_selector="batch=yes").items,
        timeout=30,
    )
    assert api.read_namespaced_config_map("keep", target_namespace).metadata.name == "keep"


def test_unknown_fields_of_built_in_kinds_are_dropped(
    kube_target: KubeTarget, target_api: Any, target_namespace: str
) -> None:
    body = {"metadata": {"name": "odd", "bogusMeta": 1}, "data": {"a": "b"}, "status": {"x": 1}}
    response = raw_request(target_api, "POST", f"/api/v1/namespaces/{target_namespace}/configmaps", body=body)
    assert response.status == 201, response.data
    stored = core(target_api).read_namespaced_config_map("odd", target_namespace)
    assert stored.data == {"a": "b"}
    raw = raw_request(target_api, "GET", f"/api/v1/namespaces/{target_namespace}/configmaps/odd")
    assert "status" not in raw.json() and "bogusMeta" not in raw.json()["metadata"]
    if kube_target.is_emulator:
        assert 'unknown field \\"status\\"' in response.headers.get("Warning", "")
    strict = raw_request(
        target_api,
        "POST",
        f"/api/v1/namespaces/{target_namespace}/configmaps",
        query={"fieldValidation": "Strict"},
        body={"metadata": {"name": "strict"}, "status": {"x": 1}},
    )
    assert strict.status == 400 and "unknown field" in strict.json()["message"]


def test_invalid_names_are_rejected(target_api: Any, target_namespace: str) -> None:
    status = expect_error(
        422,
        core(target_api).create_namespaced_config_map,
        target_namespace,
        {"metadata": {"name": "Bad_Name"}},
    )
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    assert "RFC 1123" in status["message"]


# --------------------------------------------------------------------------- kopf against the API


def test_kopf_operator_handles_custom_resources(
    target_api: Any, target_namespace: str, target_kopf_login: Any, crds: None
) -> None:
    registry = kopf.OperatorRegistry()
    seen: list[Any] = []
    deleted: list[str] = []

    kopf.on.login(registry=registry)(target_kopf_login)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 30

    @kopf.on.create(GROUP, "v1", "widgets", id="make_child", registry=registry)
    def make_child(body: Any, name: str, namespace: str, **_: Any) -> dict[str, str]:
        secret = {"metadata": {"name": f"{name}-child"}, "stringData": {"owner": name}}
        kopf.adopt(secret, owner=body)
        core(target_api).create_namespaced_secret(namespace, secret)
        kopf.info(body, reason="ChildCreated", message=f"created {secret['metadata']['name']}")
        return {"child": secret["metadata"]["name"]}

    @kopf.on.event(GROUP, "v1", "widgets", registry=registry)
    def observe(event: Any, **_: Any) -> None:
        seen.append(event["type"])

    @kopf.on.delete(GROUP, "v1", "widgets", registry=registry)
    def cleanup(name: str, **_: Any) -> None:
        deleted.append(name)

    args = ["run", "--standalone", "--namespace", target_namespace]
    with KopfRunner(args, registry=registry, timeout=60) as runner:
        created = create_widget(target_api, target_namespace, widget("kopf"))
        child = wait_for(
            lambda: secret_or_none(target_api, target_namespace, "kopf-child"),
            timeout=20,
            message="the on.create handler never created the child Secret",
        )
        assert child.metadata.owner_references[0].uid == created["metadata"]["uid"]
        assert child.metadata.owner_references[0].kind == "Widget"
        assert base64.b64decode(child.data["owner"]) == b"kopf"
        result = wait_for(
            lambda: (read_widget(target_api, target_namespace, "kopf").get("status") or {}).get("make_child"),
            timeout=20,
            message="the handler's result never reached the status",
        )
        assert result == {"child": "kopf-child"}
        assert "ADDED" in seen or None in seen
        body = read_widget(target_api, target_namespace, "kopf")
        assert body["metadata"].get("finalizers"), "kopf adds its finalizer for on.delete"

        custom(target_api).delete_namespaced_custom_object(GROUP, "v1", target_namespace, "widgets", "kopf")
        wait_for(lambda: deleted == ["kopf"], timeout=20, message="the on.delete handler never ran")
        wait_for(lambda: gone(read_widget, target_api, target_namespace, "kopf"), timeout=20)
        wait_for(
            lambda: secret_or_none(target_api, target_namespace, "kopf-child") is None,
            timeout=30,
            message="the child Secret outlived its owner",
        )
        event = wait_for(
            lambda: [
                e
                for e in core(target_api).list_namespaced_event(target_namespace).items
                if e.reason == "ChildCreated"
            ],
            timeout=20,
            message="kopf never posted its k8s event",
        )[0]
        assert event.involved_object.name == "kopf" and event.message == "created kopf-child"
        assert event.metadata.name.startswith("kopf-event-")
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
    assert "MODIFIED" in seen or "DELETED" in seen
    gc.collect()  # anything the operator's loop left unclosed is reported here, not later


# --------------------------------------------------------------------------- admission webhooks


@pytest.fixture
def webhook_tls(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    from rolecall.tls import generate_self_signed

    cert, key = generate_self_signed(["127.0.0.1", "localhost"])
    certfile, keyfile = tmp_path / "tls.crt", tmp_path / "tls.key"
    certfile.write_bytes(cert)
    keyfile.write_bytes(key)
    return certfile, keyfile


def _delete_webhook_configs(api: Any, name: str) -> None:
    hooks = kubernetes.client.AdmissionregistrationV1Api(api)
    for delete in (
        hooks.delete_mutating_webhook_configuration,
        hooks.delete_validating_webhook_configuration,
    ):
        try:
            delete(name)
        except ApiException as e:
            if e.status != 404:
                raise


def test_kopf_admission_webhooks(
    kube_target: KubeTarget,
    target_api: Any,
    target_namespace: str,
    target_kopf_login: Any,
    webhook_tls: tuple[pathlib.Path, pathlib.Path],
) -> None:
    kube_target.require_emulator()  # a real API server cannot reach this machine's loopback
    certfile, keyfile = webhook_tls
    managed = f"{target_namespace}.contract.rolecall.dev"
    port = free_port()
    registry = kopf.OperatorRegistry()
    users: list[str] = []
    kopf.on.login(registry=registry)(target_kopf_login)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.server = kopf.WebhookServer(
            addr="127.0.0.1", host="127.0.0.1", port=port, certfile=certfile, pkeyfile=keyfile
        )
        settings.admission.managed = managed

    @kopf.on.mutate(
        "pods", operations={"CREATE"}, labels={"contract-webhook": "yes"}, id="inject", registry=registry
    )
    def inject(body: Any, patch: Any, warnings: list[str], userinfo: Any, **_: Any) -> None:
        users.append(userinfo.get("username"))
        patch.metadata.setdefault("labels", {})["mutated-by"] = "kopf"
        containers = [dict(c) for c in body["spec"]["containers"]]
        containers[0]["env"] = [*containers[0].get("env", []), {"name": "INJECTED", "value": "yes"}]
        patch.spec["containers"] = containers
        warnings.append("pod mutated by the contract test")

    @kopf.on.validate("configmaps", labels={"contract-webhook": "yes"}, id="refuse", registry=registry)
    def refuse(body: Any, **_: Any) -> None:
        if "forbidden" in (body.get("data") or {}):
            raise kopf.AdmissionError("the forbidden key is not allowed", code=403)

    default_service_account(target_api, target_namespace)
    api = core(target_api)
    hooks = kubernetes.client.AdmissionregistrationV1Api(target_api)
    try:
        with KopfRunner(
            ["run", "--standalone", "--namespace", target_namespace], registry=registry, timeout=60
        ) as runner:
            config = wait_for(
                lambda: (c := hooks.read_mutating_webhook_configuration(managed)).webhooks and c,
                timeout=20,
                ignore=(ApiException,),
                message="kopf never registered its mutating webhook",
            )
            assert config.webhooks[0].client_config.url.startswith(f"https://127.0.0.1:{port}/")
            assert config.webhooks[0].client_config.ca_bundle
            wait_for(
                lambda: hooks.read_validating_webhook_configuration(managed).webhooks,
                timeout=20,
                ignore=(ApiException,),
            )

            response = raw_request(
                target_api,
                "POST",
                f"/api/v1/namespaces/{target_namespace}/pods",
                body=pod_manifest("hooked", {"contract-webhook": "yes"}),
            )
            assert response.status == 201, response.data
            assert "pod mutated by the contract test" in response.headers.get("Warning", "")
            stored = api.read_namespaced_pod("hooked", target_namespace)
            assert stored.metadata.labels["mutated-by"] == "kopf"
            env = {e.name: e.value for e in stored.spec.containers[0].env}
            assert env == {"A": "1", "INJECTED": "yes"}
            assert users == [kube_target.require_emulator().username]

            plain = api.create_namespaced_pod(target_namespace, pod_manifest("plain"))
            assert "mutated-by" not in (plain.metadata.labels or {}), "objectSelector not honoured"

            status = expect_error(
                403,
                api.create_namespaced_config_map,
                target_namespace,
                {
                    "metadata": {"name": "no", "labels": {"contract-webhook": "yes"}},
                    "data": {"forbidden": "x"},
                },
            )
            assert status["message"] == (
                f'admission webhook "refuse.{managed}" denied the request: the forbidden key is not allowed'
            )
            assert gone(api.read_namespaced_config_map, "no", target_namespace)
            allowed = api.create_namespaced_config_map(
                target_namespace,
                {"metadata": {"name": "yes", "labels": {"contract-webhook": "yes"}}, "data": {"ok": "x"}},
            )
            assert allowed.data == {"ok": "x"}
        assert runner.exit_code == 0, runner.output
        assert runner.exception is None
        gc.collect()  # anything the operator's loop left unclosed is reported here, not later
        assert not hooks.read_mutating_webhook_configuration(managed).webhooks, "kopf cleans up"
    finally:
        _delete_webhook_configs(target_api, managed)


def test_webhook_failure_policy(kube_target: KubeTarget, target_api: Any, target_namespace: str) -> None:
    kube_target.require_emulator()
    name = f"{target_namespace}.failure.rolecall.dev"
    hooks = kubernetes.client.AdmissionregistrationV1Api(target_api)
    api = core(target_api)

    def config(policy: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": f"unreachable.{name}",
                    "clientConfig": {"url": f"https://127.0.0.1:{free_port()}/nothing"},
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["configmaps"],
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": target_namespace}},
                    "failurePolicy": policy,
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 2,
                }
            ],
        }

    try:
        hooks.create_validating_webhook_configuration(config("Fail"))
        status = expect_error(
            500, api.create_namespaced_config_map, target_namespace, {"metadata": {"name": "a"}}
        )
        assert f'failed calling webhook "unreachable.{name}"' in status["message"]
        assert status["reason"] == "InternalError"
        outside = api.create_namespaced_config_map("default", {"metadata": {"generateName": "outside-"}})
        api.delete_namespaced_config_map(outside.metadata.name, "default")

        current = hooks.read_validating_webhook_configuration(name)
        current.webhooks[0].failure_policy = "Ignore"
        hooks.replace_validating_webhook_configuration(name, current)
        assert api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "b"}}).metadata.uid
    finally:
        _delete_webhook_configs(target_api, name)


# --------------------------------------------------------------------------- emulator-only


def test_request_counts(kube_target: KubeTarget, target_api: Any, target_namespace: str) -> None:
    emulator = kube_target.require_emulator()
    api = core(target_api)
    emulator.reset_counts()
    api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "c1"}})
    api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "c2"}})
    api.read_namespaced_config_map("c1", target_namespace)
    api.list_namespaced_config_map(target_namespace)
    api.patch_namespaced_config_map("c1", target_namespace, {"data": {"a": "b"}})
    api.delete_namespaced_config_map("c2", target_namespace)
    counts = emulator.request_counts()
    assert {k: counts[k] for k in ("get", "list", "watch", "create", "update", "patch", "delete")} == {
        "get": 1,
        "list": 1,
        "watch": 0,
        "create": 2,
        "update": 0,
        "patch": 1,
        "delete": 1,
    }
    emulator.reset_counts()
    assert emulator.request_counts()["create"] == 0


def test_ten_thousand_objects_and_many_watches(
    kube_target: KubeTarget, target_api: Any, target_namespace: str
) -> None:
    emulator = kube_target.require_emulator()
    api = core(target_api)
    api.create_namespaced_config_map(target_namespace, {"metadata": {"name": "probe"}})

    def median_seconds(call: Any) -> float:
        samples = []
        for _ in range(40):
            started = time.perf_counter()
            call()
            samples.append(time.perf_counter() - started)
        return sorted(samples)[len(samples) // 2]

    def get() -> Any:
        return api.read_namespaced_config_map("probe", target_namespace)

    def small_list() -> Any:
        return api.list_namespaced_config_map(target_namespace)

    before = (median_seconds(get), median_seconds(small_list))
    bulk = f"{target_namespace}-bulk"
    emulator.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": bulk}}])
    emulator.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{n}", "namespace": bulk},
            "data": {"n": str(n)},
        }
        for n in range(10_000)
    )
    try:
        assert emulator.object_count() >= 10_000
        after = (median_seconds(get), median_seconds(small_list))
        # A scan of every object (or of a request log) per request would cost far more.
        for old, new in zip(before, after, strict=True):
            assert new < old * 4 + 0.004, (before, after)
        small = api.list_namespaced_config_map(target_namespace)
        assert [i.metadata.name for i in small.items] == ["probe"]

        async def many_watches(count: int) -> list[list[str]]:
            headers = {"Authorization": f"Bearer {emulator.token}"}
            path = f"{emulator.url}/api/v1/namespaces/{target_namespace}/configmaps"
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
                rv = (await (await session.get(path)).json())["metadata"]["resourceVersion"]
                streams = [
                    await session.get(
                        path, params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "10"}
                    )
                    for _ in range(count)
                ]
                await asyncio.to_thread(
                    api.create_namespaced_config_map, target_namespace, {"metadata": {"name": "fanout"}}
                )

                async def first(stream: aiohttp.ClientResponse) -> list[str]:
                    line = await asyncio.wait_for(stream.content.readline(), 10)
                    stream.close()
                    event = json.loads(line)
                    return [event["type"], event["object"]["metadata"]["name"]]

                return await asyncio.gather(*(first(s) for s in streams))

        results = asyncio.run(many_watches(200))
        assert results == [["ADDED", "fanout"]] * 200
    finally:
        api.delete_namespace(bulk)
        wait_for(lambda: gone(api.read_namespace, bulk), timeout=30)


def test_cel_rules_celpy_cannot_run_are_skipped(
    kube_target: KubeTarget, target_api: Any, target_namespace: str, tmp_path: pathlib.Path
) -> None:
    emulator = kube_target.require_emulator()
    crd = simple_crd("celthings", "CelThing", "Namespaced")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"]["x-kubernetes-validations"] = [
        {"rule": "self.x.k8sOnlyFunction()", "message": "never evaluated"},
        {"rule": "has(self.x)", "message": "x is required"},
    ]
    apply_crds(target_api, write_crds(tmp_path, crd))
    try:
        before = emulator.cel_stats()["skipped"]
        cr = custom(target_api)
        body = {"apiVersion": f"{GROUP}/v1", "kind": "CelThing", "metadata": {"name": "c"}, "spec": {"x": 1}}
        assert cr.create_namespaced_custom_object(GROUP, "v1", target_namespace, "celthings", body)
        stats = emulator.cel_stats()
        assert stats["skipped"] > before
        assert "self.x.k8sOnlyFunction()" in stats["skipped_rules"]
        body["metadata"]["name"] = "d"
        body["spec"] = {}
        status = expect_error(
            422, cr.create_namespaced_custom_object, GROUP, "v1", target_namespace, "celthings", body
        )
        assert "x is required" in status["message"]
    finally:
        kubernetes.client.ApiextensionsV1Api(target_api).delete_custom_resource_definition(
            crd["metadata"]["name"]
        )


def test_command_line_server(kube_target: KubeTarget, tmp_path: pathlib.Path) -> None:
    kube_target.require_emulator()
    kubeconfig = tmp_path / "kubeconfig"
    crds_dir = write_crds(tmp_path / "crds", simple_crd("clithings", "CliThing", "Namespaced"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.harness.kubeapi",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--crds",
            str(crds_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=30)
        assert line and line[0].startswith("http://127.0.0.1:"), line
        api = api_client_from_kubeconfig(kubeconfig)
        with api:
            assert "default" in {n.metadata.name for n in core(api).list_namespace().items}
            crd = kubernetes.client.ApiextensionsV1Api(api).read_custom_resource_definition(
                f"clithings.{GROUP}"
            )
            assert crd.spec.names.kind == "CliThing"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# --------------------------------------------------------------------------- what kubectl and helm need


def test_openapi_v3_serves_builtin_and_crd_schemas(target_api: Any, crds: None) -> None:
    root = raw_request(target_api, "GET", "/openapi/v3").json()["paths"]
    for gv in ("api/v1", "apis/apps/v1", "apis/rbac.authorization.k8s.io/v1", f"apis/{GROUP}/v1"):
        assert root[gv]["serverRelativeURL"].startswith(f"/openapi/v3/{gv}?hash="), gv

    def patch_of(doc: dict[str, Any], kind: str) -> dict[str, Any]:
        return next(
            op["patch"]
            for op in doc["paths"].values()
            if "patch" in op and op["patch"]["x-kubernetes-group-version-kind"]["kind"] == kind
        )

    core = raw_request(target_api, "GET", root["api/v1"]["serverRelativeURL"]).json()
    secret_patch = patch_of(core, "Secret")
    assert {"fieldValidation", "fieldManager", "dryRun"} <= {p["name"] for p in secret_patch["parameters"]}
    assert "application/strategic-merge-patch+json" in secret_patch["requestBody"]["content"]
    secret = core["components"]["schemas"]["io.k8s.api.core.v1.Secret"]
    assert {"group": "", "version": "v1", "kind": "Secret"} in secret["x-kubernetes-group-version-kind"]
    assert secret["properties"]["data"]["additionalProperties"]["format"] == "byte"
    containers = core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"

    custom = raw_request(target_api, "GET", root[f"apis/{GROUP}/v1"]["serverRelativeURL"]).json()
    widget_patch = patch_of(custom, "Widget")
    assert "fieldValidation" in {p["name"] for p in widget_patch["parameters"]}
    assert "application/strategic-merge-patch+json" not in widget_patch["requestBody"]["content"]
    schema = next(
        s
        for s in custom["components"]["schemas"].values()
        if {"group": GROUP, "version": "v1", "kind": "Widget"} in s.get("x-kubernetes-group-version-kind", [])
    )
    assert schema["properties"]["spec"]["properties"]["size"]["type"] == "integer"
    assert "metadata" in schema["properties"]


def test_openapi_v2_as_json(target_api: Any) -> None:
    doc = raw_request(target_api, "GET", "/openapi/v2").json()
    assert doc["swagger"] == "2.0"
    pod = doc["definitions"]["io.k8s.api.core.v1.Pod"]
    assert pod["properties"]["spec"]["$ref"] == "#/definitions/io.k8s.api.core.v1.PodSpec"
    assert doc["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def protobuf_body(api_version: str, kind: str, message: bytes) -> bytes:
    """The k8s\\x00 envelope (runtime.Unknown) around one object's message."""
    return b"k8s\x00" + _pb(1, _pb(1, api_version) + _pb(2, kind)) + _pb(2, message)


PROTOBUF = "application/vnd.kubernetes.protobuf"


def test_protobuf_request_bodies(target_api: Any, request: pytest.FixtureRequest) -> None:
    """What client-go's typed clients send (kubectl create, helm's release Secret)."""
    ns_name = unique_namespace_name(request.node.name)
    meta = _pb(1, _pb(1, ns_name) + _pb(11, _pb(1, "team") + _pb(2, "a")))
    created = raw_request(
        target_api, "POST", "/api/v1/namespaces", accept=f"{PROTOBUF}, application/json",
        content_type=PROTOBUF, body=protobuf_body("v1", "Namespace", meta),
    )  # fmt: skip
    assert created.status == 201, created.data
    assert created.json()["metadata"]["labels"]["team"] == "a"
    try:
        # Secret: ObjectMeta 1, data 2 (map<string, bytes>), type 3
        secret = _pb(1, _pb(1, "s1")) + _pb(2, _pb(1, "key") + _pb(2, b"\x00\xffbytes")) + _pb(3, "Opaque")
        done = raw_request(
            target_api, "POST", f"/api/v1/namespaces/{ns_name}/secrets", accept=f"{PROTOBUF}, application/json",
            content_type=PROTOBUF, body=protobuf_body("v1", "Secret", secret),
        )  # fmt: skip
        assert done.status == 201, done.data
        stored = core(target_api).read_namespaced_secret("s1", ns_name)
        assert base64.b64decode(stored.data["key"]) == b"\x00\xffbytes" and stored.type == "Opaque"
    finally:
        delete_test_namespace(target_api, ns_name)


def test_protobuf_of_an_unknown_kind_is_refused_by_name(kube_target: KubeTarget, target_api: Any) -> None:
    kube_target.require_emulator()
    done = raw_request(
        target_api, "POST", "/api/v1/namespaces/default/configmaps", content_type=PROTOBUF,
        body=protobuf_body("batch/v1", "CronJob", _pb(1, _pb(1, "x"))),
    )  # fmt: skip
    assert done.status == 415
    assert "CronJob (batch/v1)" in done.json()["message"]


TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def test_table_output_of_built_in_kinds(target_api: Any, target_namespace: str) -> None:
    table = raw_request(target_api, "GET", "/api/v1/namespaces", accept=TABLE).json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Status", "Age"]
    row = next(r for r in table["rows"] if r["cells"][0] == target_namespace)
    assert row["cells"][1] == "Active" and row["cells"][2].endswith("s")
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == target_namespace
    core(target_api).create_namespaced_secret(
        target_namespace, {"metadata": {"name": "t"}, "stringData": {"a": "1", "b": "2"}}
    )
    one = raw_request(
        target_api, "GET", f"/api/v1/namespaces/{target_namespace}/secrets/t", accept=TABLE,
        query={"includeObject": "None"},
    ).json()  # fmt: skip
    assert [c["name"] for c in one["columnDefinitions"]] == ["Name", "Type", "Data", "Age"]
    assert one["rows"][0]["cells"][:3] == ["t", "Opaque", 2] and "object" not in one["rows"][0]


def gauge_crd() -> dict[str, Any]:
    crd = simple_crd("gauges", "Gauge", "Namespaced")
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = [
        {"name": "Label", "type": "string", "jsonPath": ".spec.label"},
        {"name": "Tags", "type": "string", "jsonPath": ".spec.tags"},
        {"name": "Count", "type": "integer", "jsonPath": ".spec.count"},
        {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio"},
        {"name": "On", "type": "boolean", "jsonPath": ".spec.on"},
        {"name": "Ready", "type": "string", "jsonPath": '.spec.conditions[?(@.type=="Ready")].status'},
        {"name": "When", "type": "date", "jsonPath": ".spec.when"},
        {"name": "Detail", "type": "string", "priority": 1, "jsonPath": ".spec.detail"},
    ]
    return crd


def test_table_output_of_printer_columns(
    target_api: Any, target_namespace: str, tmp_path: pathlib.Path
) -> None:
    """Each column type the way the API server prints it (a future date is <invalid>)."""
    apply_crds(target_api, write_crds(tmp_path, gauge_crd()))
    try:
        now = time.time()

        def stamp(offset: float) -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + offset))

        specs = {
            "past": {"label": "x", "tags": ["a", "b"], "count": 3, "ratio": 1.5, "on": True, "when": stamp(-7500),
                     "conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]},
            "future": {"when": stamp(3600), "count": "three", "on": "yes"},
            "garbage": {"when": "yesterday", "label": 7},
        }  # fmt: skip
        for name, spec in specs.items():
            custom(target_api).create_namespaced_custom_object(
                GROUP, "v1", target_namespace, "gauges",
                {"apiVersion": f"{GROUP}/v1", "kind": "Gauge", "metadata": {"name": name}, "spec": spec},
            )  # fmt: skip
        table = raw_request(
            target_api, "GET", f"/apis/{GROUP}/v1/namespaces/{target_namespace}/gauges", accept=TABLE
        ).json()
        columns = [(c["name"], c["type"], c["priority"]) for c in table["columnDefinitions"]]
        assert columns[0] == ("Name", "string", 0) and columns[-1] == ("Detail", "string", 1)
        rows = {r["cells"][0]: r["cells"] for r in table["rows"]}
        assert rows["past"][1:8] == ["x", '["a","b"]', 3, 1.5, True, "True", "125m"]
        assert rows["past"][8] is None  # no value: kubectl prints nothing there
        assert rows["future"][1:8] == [None, None, None, None, None, None, "<invalid>"]
        assert rows["garbage"][1] == "7" and rows["garbage"][7] == "<invalid>"
    finally:
        kubernetes.client.ApiextensionsV1Api(target_api).delete_custom_resource_definition(f"gauges.{GROUP}")


def test_apps_rbac_and_policy_groups(target_api: Any, target_namespace: str) -> None:
    labels = {"app": "demo"}
    deployment = kubernetes.client.AppsV1Api(target_api).create_namespaced_deployment(
        target_namespace,
        {
            "metadata": {"name": "demo"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "x:1"}]},
                },
            },
        },
    )
    assert deployment.spec.replicas == 1 and deployment.spec.strategy.type == "RollingUpdate"
    assert deployment.spec.template.spec.restart_policy == "Always"
    assert deployment.metadata.generation == 1
    bad = expect_error(
        422,
        kubernetes.client.AppsV1Api(target_api).create_namespaced_deployment,
        target_namespace,
        {
            "metadata": {"name": "bad"},
            "spec": {
                "selector": {"matchLabels": {"app": "other"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "x"}]},
                },
            },
        },
    )
    assert "selector" in bad["message"]
    rbac = kubernetes.client.RbacAuthorizationV1Api(target_api)
    rbac.create_namespaced_role(
        target_namespace,
        {"metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    )
    rbac.create_namespaced_role_binding(
        target_namespace,
        {
            "metadata": {"name": "rb"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": target_namespace}],
        },
    )
    changed = expect_error(
        422,
        rbac.patch_namespaced_role_binding,
        "rb",
        target_namespace,
        {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "other"}},
    )
    assert "roleRef" in changed["message"]
    pdb = kubernetes.client.PolicyV1Api(target_api).create_namespaced_pod_disruption_budget(
        target_namespace,
        {"metadata": {"name": "p"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}}},
    )
    assert pdb.spec.max_unavailable == 1
    groups = {g["name"] for g in raw_request(target_api, "GET", "/apis").json()["groups"]}
    assert {"apps", "rbac.authorization.k8s.io", "policy", "networking.k8s.io"} <= groups


# --------------------------------------------------------------------------- authentication and RBAC

RBAC = "rbac.authorization.k8s.io"


def rbac_api(api: Any) -> kubernetes.client.RbacAuthorizationV1Api:
    return kubernetes.client.RbacAuthorizationV1Api(api)


def role(name: str, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **extra}, "rules": rules}


def binding(name: str, kind: str, role_name: str, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": kind, "name": role_name},
        "subjects": subjects,
    }


def sa_subject(namespace: str, name: str) -> dict[str, Any]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def forbidden(api: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    answer = raw_request(api, method, path, **kwargs)
    assert answer.status == 403, (answer.status, answer.data[:300])
    body = answer.json()
    assert (body["kind"], body["status"], body["reason"], body["code"]) == (
        "Status",
        "Failure",
        "Forbidden",
        403,
    )
    return body  # type: ignore[no-any-return]


def access_review(api: Any, kind: str, spec: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    plural = kind.lower() + "s"
    path = (
        f"/apis/authorization.k8s.io/v1/namespaces/{namespace}/{plural}"
        if namespace
        else f"/apis/authorization.k8s.io/v1/{plural}"
    )
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": spec}
    answer = raw_request(api, "POST", path, body=body)
    assert answer.status == 201, (answer.status, answer.data[:300])
    assert answer.json()["kind"] == kind
    return answer.json()["status"]  # type: ignore[no-any-return]


def can(api: Any, namespace: str, verb: str, resource: str, group: str = "", **extra: str) -> bool:
    attributes = {"namespace": namespace, "verb": verb, "resource": resource, "group": group, **extra}
    return bool(access_review(api, "SelfSubjectAccessReview", {"resourceAttributes": attributes})["allowed"])


def test_service_account_without_rules_is_forbidden(
    target_api: Any, target_namespace: str, kube_as: Any
) -> None:
    bot = kube_as(f"{target_namespace}/bot")
    user = f"system:serviceaccount:{target_namespace}:bot"
    ns = target_namespace

    body = forbidden(bot.api, "GET", f"/api/v1/namespaces/{ns}/secrets")
    assert body["message"] == (
        f'secrets is forbidden: User "{user}" cannot list resource "secrets" in API group "" in the namespace "{ns}"'
    )
    assert body["details"] == {"kind": "secrets"}
    body = forbidden(bot.api, "GET", f"/api/v1/namespaces/{ns}/secrets/s1")
    assert body["message"] == (
        f'secrets "s1" is forbidden: User "{user}" cannot get resource "secrets" in API group "" in the namespace "{ns}"'
    )
    assert body["details"] == {"name": "s1", "kind": "secrets"}
    body = forbidden(bot.api, "POST", f"/api/v1/namespaces/{ns}/configmaps", body={"metadata": {"name": "c"}})
    assert body["message"].startswith(
        f'configmaps is forbidden: User "{user}" cannot create resource "configmaps"'
    )
    # the namespace of /api/v1/namespaces/<ns> is <ns>; the list of namespaces is cluster-wide
    body = forbidden(bot.api, "GET", f"/api/v1/namespaces/{ns}")
    assert body["message"].endswith(
        f'cannot get resource "namespaces" in API group "" in the namespace "{ns}"'
    )
    body = forbidden(bot.api, "GET", "/api/v1/namespaces", query={"watch": "true"})
    assert body["message"] == (
        f'namespaces is forbidden: User "{user}" cannot watch resource "namespaces" in API group "" at the cluster scope'
    )
    body = forbidden(bot.api, "DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases")
    assert body["message"].endswith(
        f'cannot deletecollection resource "leases" in API group "coordination.k8s.io" in the namespace "{ns}"'
    )
    assert body["details"] == {"group": "coordination.k8s.io", "kind": "leases"}
    body = forbidden(bot.api, "GET", "/metrics")
    assert body["message"] == f'forbidden: User "{user}" cannot get path "/metrics"'
    # discovery and the self-reviews are open to every authenticated user
    assert raw_request(bot.api, "GET", "/apis").status == 200
    assert raw_request(bot.api, "GET", "/api/v1").status == 200
    assert not can(bot.api, ns, "list", "secrets")


def test_role_binding_grants_what_the_role_says(target_api: Any, target_namespace: str, kube_as: Any) -> None:
    ns = target_namespace
    bot = kube_as(f"{ns}/bot")
    core(target_api).create_namespaced_config_map(ns, {"metadata": {"name": "mine"}})
    core(target_api).create_namespaced_config_map(ns, {"metadata": {"name": "other"}})
    rbac_api(target_api).create_namespaced_role(
        ns,
        role(
            "reader",
            [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["mine"],
                    "verbs": ["get", "list", "patch"],
                },
                {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get"]},
            ],
        ),
    )
    rbac_api(target_api).create_namespaced_role_binding(
        ns, binding("bot-reader", "Role", "reader", [sa_subject(ns, "bot")])
    )
    user = f"system:serviceaccount:{ns}:bot"

    # RBAC on a real cluster takes effect within moments, not instantly
    wait_for(
        lambda: raw_request(bot.api, "GET", f"/api/v1/namespaces/{ns}/secrets").status == 200,
        timeout=30,
        message="the RoleBinding never took effect",
    )
    assert (
        raw_request(
            bot.api, "GET", f"/api/v1/namespaces/{ns}/secrets", query={"watch": "1", "timeoutSeconds": "1"}
        ).status
        == 200
    )
    assert raw_request(bot.api, "GET", f"/api/v1/namespaces/{ns}/configmaps/mine").status == 200
    patched = raw_request(
        bot.api,
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/mine",
        body={"data": {"a": "b"}},
        content_type="application/merge-patch+json",
    )
    assert patched.status == 200, patched.data
    # resourceNames: only the named object, and never a list or a create
    forbidden(bot.api, "GET", f"/api/v1/namespaces/{ns}/configmaps/other")
    forbidden(bot.api, "GET", f"/api/v1/namespaces/{ns}/configmaps")
    # a field selector on metadata.name names the object for RBAC
    assert (
        raw_request(
            bot.api,
            "GET",
            f"/api/v1/namespaces/{ns}/configmaps",
            query={"fieldSelector": "metadata.name=mine"},
        ).status
        == 200
    )
    # a verb not granted, a subresource is not its resource, another namespace is out of reach
    body = forbidden(bot.api, "DELETE", f"/api/v1/namespaces/{ns}/secrets/s1")
    assert body["message"].startswith(
        f'secrets "s1" is forbidden: User "{user}" cannot delete resource "secrets"'
    )
    assert not can(bot.api, ns, "get", "pods")
    assert can(bot.api, ns, "get", "pods", subresource="status")
    forbidden(bot.api, "GET", "/api/v1/namespaces/default/secrets")
    forbidden(bot.api, "GET", "/api/v1/secrets")

    # roleRef is immutable
    current = rbac_api(target_api).read_namespaced_role_binding("bot-reader", ns)
    current.role_ref.name = "something-else"
    body = expect_error(422, rbac_api(target_api).replace_namespaced_role_binding, "bot-reader", ns, current)
    assert "cannot change roleRef" in body["message"]

    rbac_api(target_api).delete_namespaced_role_binding("bot-reader", ns)
    wait_for(
        lambda: raw_request(bot.api, "GET", f"/api/v1/namespaces/{ns}/secrets").status == 403,
        timeout=30,
        message="the RoleBinding's grant outlived it",
    )


def test_self_subject_access_and_rules_reviews(target_api: Any, target_namespace: str, kube_as: Any) -> None:
    ns = target_namespace
    bot = kube_as(f"{ns}/bot")
    rbac_api(target_api).create_namespaced_role(
        ns, role("lister", [{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["list"]}])
    )
    rbac_api(target_api).create_namespaced_role_binding(
        ns, binding("bot-lister", "Role", "lister", [sa_subject(ns, "bot")])
    )
    wait_for(lambda: can(bot.api, ns, "list", "deployments", "apps"), timeout=30, message="never allowed")

    status = access_review(
        bot.api,
        "SelfSubjectAccessReview",
        {"resourceAttributes": {"namespace": ns, "verb": "list", "group": "apps", "resource": "deployments"}},
    )
    assert status["allowed"] is True
    assert status["reason"] == (
        f'RBAC: allowed by RoleBinding "bot-lister/{ns}" of Role "lister" to ServiceAccount "bot/{ns}"'
    )
    assert not can(bot.api, ns, "get", "deployments", "apps")
    assert not can(bot.api, "default", "list", "deployments", "apps")
    assert can(bot.api, ns, "list", "statefulsets", "apps", subresource="scale")  # "*" covers subresources
    nonresource = access_review(
        bot.api, "SelfSubjectAccessReview", {"nonResourceAttributes": {"path": "/apis", "verb": "get"}}
    )
    assert nonresource["allowed"] is True

    rules = access_review(bot.api, "SelfSubjectRulesReview", {"namespace": ns})
    assert {"verbs": ["list"], "apiGroups": ["apps"], "resources": ["*"]} in rules["resourceRules"]
    assert any("/apis" in r["nonResourceURLs"] for r in rules["nonResourceRules"])

    whoami = raw_request(
        bot.api,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert whoami.status == 201, whoami.data
    info = whoami.json()["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{ns}:bot"
    assert {"system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"} <= set(
        info["groups"]
    )

    # the admin asks about others
    sar = access_review(
        target_api,
        "SubjectAccessReview",
        {
            "user": f"system:serviceaccount:{ns}:bot",
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "namespace": ns,
                "verb": "list",
                "group": "apps",
                "resource": "deployments",
            },
        },
    )
    assert sar["allowed"] is True
    lsar = access_review(
        target_api,
        "LocalSubjectAccessReview",
        {
            "user": "nobody-at-all",
            "resourceAttributes": {"namespace": ns, "verb": "list", "resource": "secrets"},
        },
        namespace=ns,
    )
    assert lsar["allowed"] is False
    mismatch = raw_request(
        target_api,
        "POST",
        f"/apis/authorization.k8s.io/v1/namespaces/{ns}/localsubjectaccessreviews",
        body={
            "spec": {
                "user": "x",
                "resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"},
            }
        },
    )
    assert mismatch.status == 400, mismatch.data
    # a ServiceAccount may not ask about others
    body = forbidden(
        bot.api,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        body={"spec": {"user": "x", "resourceAttributes": {"verb": "get", "resource": "pods"}}},
    )
    assert (
        'cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope'
        in body["message"]
    )


def test_cluster_role_binding_and_aggregation(target_api: Any, target_namespace: str, kube_as: Any) -> None:
    ns = target_namespace
    bot = kube_as(f"{ns}/bot")
    label = f"contract.rolecall.dev/aggregate-to-{ns}"
    names = [f"{ns}-agg", f"{ns}-part", f"{ns}-binding"]
    rbac = rbac_api(target_api)
    try:
        rbac.create_cluster_role(
            {
                "metadata": {"name": names[0]},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]},
            }
        )
        rbac.create_cluster_role(
            role(
                names[1],
                [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
                labels={label: "true"},
            )
        )
        wait_for(
            lambda: rbac.read_cluster_role(names[0]).rules,
            timeout=30,
            message="the aggregated ClusterRole never got the rules of the role its selector matches",
        )
        assert [r.resources for r in rbac.read_cluster_role(names[0]).rules] == [["configmaps"]]
        rbac.create_cluster_role_binding(binding(names[2], "ClusterRole", names[0], [sa_subject(ns, "bot")]))
        wait_for(
            lambda: raw_request(bot.api, "GET", "/api/v1/configmaps").status == 200,
            timeout=30,
            message="the ClusterRoleBinding never took effect",
        )
        assert raw_request(bot.api, "GET", "/api/v1/namespaces/default/configmaps").status == 200
        forbidden(bot.api, "GET", "/api/v1/namespaces/default/secrets")
        # a rule added to a selected role reaches the aggregate
        part = rbac.read_cluster_role(names[1])
        part.rules.append(
            kubernetes.client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["get"])
        )
        rbac.replace_cluster_role(names[1], part)
        wait_for(
            lambda: raw_request(bot.api, "GET", f"/api/v1/namespaces/{ns}/secrets/nothing").status == 404,
            timeout=30,
            message="the aggregate never followed its parts",
        )
    finally:
        for call, name in [
            (rbac.delete_cluster_role_binding, names[2]),
            (rbac.delete_cluster_role, names[1]),
            (rbac.delete_cluster_role, names[0]),
        ]:
            try:
                call(name)
            except ApiException as e:
                if e.status != 404:
                    raise


def token_request(api: Any, namespace: str, name: str, **spec: Any) -> RawResponse:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    return raw_request(api, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body=body)


def test_service_account_tokens(target_api: Any, target_namespace: str, kube_as: Any) -> None:
    ns = target_namespace
    bot = kube_as(f"{ns}/bot")

    short = token_request(target_api, ns, "bot", expirationSeconds=60)
    assert short.status == 422, short.data
    assert "spec.expirationSeconds" in short.json()["message"]
    missing = token_request(target_api, ns, "nobody")
    assert missing.status == 404, missing.data
    assert missing.json()["message"] == 'serviceaccounts "nobody" not found'
    issued = token_request(target_api, ns, "bot")
    assert issued.status == 201, issued.data
    assert issued.json()["status"]["token"].count(".") == 2  # a JWT
    assert issued.json()["status"]["expirationTimestamp"].endswith("Z")
    # without the rule, a ServiceAccount cannot mint tokens, not even for itself
    assert token_request(bot.api, ns, "bot").status == 403

    # the token dies with its ServiceAccount
    assert raw_request(bot.api, "GET", "/apis").status == 200
    core(target_api).delete_namespaced_service_account("bot", ns)
    wait_for(
        lambda: raw_request(bot.api, "GET", "/apis").status == 401,
        timeout=60,
        message="the token of a deleted ServiceAccount still authenticates",
    )


def test_impersonation_needs_the_impersonate_verb(
    target_api: Any, target_namespace: str, kube_as: Any
) -> None:
    ns = target_namespace
    bot = kube_as(f"{ns}/bot")
    alice = kube_as(user=f"alice-{ns}", group=f"group-{ns}")
    body = forbidden(alice.api, "GET", f"/api/v1/namespaces/{ns}/secrets")
    assert body["message"] == (
        f'secrets is forbidden: User "alice-{ns}" cannot list resource "secrets" in API group "" in the namespace "{ns}"'
    )
    rbac_api(target_api).create_namespaced_role(
        ns, role("secrets", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}])
    )
    rbac_api(target_api).create_namespaced_role_binding(
        ns,
        binding(
            "group-secrets", "Role", "secrets", [{"apiGroup": RBAC, "kind": "Group", "name": f"group-{ns}"}]
        ),
    )
    wait_for(
        lambda: raw_request(alice.api, "GET", f"/api/v1/namespaces/{ns}/secrets").status == 200,
        timeout=30,
        message="a binding to the group never reached its member",
    )
    bot.api.set_default_header("Impersonate-User", f"alice-{ns}")
    body = forbidden(bot.api, "GET", f"/api/v1/namespaces/{ns}/secrets")
    assert body["message"] == (
        f'users "alice-{ns}" is forbidden: User "system:serviceaccount:{ns}:bot" cannot impersonate resource '
        f'"users" in API group "" at the cluster scope'
    )


def test_a_namespace_admin_cannot_reach_other_namespaces(
    target_api: Any, target_namespace: str, kube_as: Any, request: pytest.FixtureRequest
) -> None:
    """The tenant model rolecall builds on: ``admin`` bound in one namespace stays there."""
    mine = target_namespace
    theirs = create_test_namespace(target_api, request.node.name + "-other")
    try:
        core(target_api).create_namespaced_secret(
            theirs, {"metadata": {"name": "keys"}, "stringData": {"k": "v"}}
        )
        tenant = kube_as(f"{mine}/tenant")
        rbac_api(target_api).create_namespaced_role_binding(
            mine, binding("tenant-admin", "ClusterRole", "admin", [sa_subject(mine, "tenant")])
        )
        wait_for(
            lambda: raw_request(tenant.api, "GET", f"/api/v1/namespaces/{mine}/secrets").status == 200,
            timeout=30,
            message="admin in its own namespace never took effect",
        )
        created = raw_request(
            tenant.api,
            "POST",
            f"/api/v1/namespaces/{mine}/secrets",
            body={"metadata": {"name": "own"}, "stringData": {"a": "b"}},
        )
        assert created.status == 201, created.data
        user = f"system:serviceaccount:{mine}:tenant"
        for method, path, verb in [
            ("GET", f"/api/v1/namespaces/{theirs}/secrets", "list"),
            ("GET", f"/api/v1/namespaces/{theirs}/secrets/keys", "get"),
            ("GET", f"/api/v1/namespaces/{theirs}/secrets?watch=true", "watch"),
        ]:
            body = forbidden(
                tenant.api, method, path.split("?")[0], query={"watch": "true"} if "watch" in path else None
            )
            assert (
                f'User "{user}" cannot {verb} resource "secrets" in API group "" in the namespace "{theirs}"'
                in body["message"]
            )
        body = forbidden(tenant.api, "GET", "/api/v1/secrets")
        assert body["message"].endswith('cannot list resource "secrets" in API group "" at the cluster scope')
        # nor through a binding of its own making in the other namespace, nor cluster-wide
        forbidden(
            tenant.api,
            "POST",
            f"/apis/{RBAC}/v1/namespaces/{theirs}/rolebindings",
            body=binding("me-too", "ClusterRole", "admin", [sa_subject(mine, "tenant")]),
        )
        forbidden(
            tenant.api,
            "POST",
            f"/apis/{RBAC}/v1/clusterrolebindings",
            body=binding(f"{mine}-me-too", "ClusterRole", "admin", [sa_subject(mine, "tenant")]),
        )
        # nor by minting a token for a ServiceAccount of the other namespace
        assert token_request(tenant.api, theirs, "default").status == 403
    finally:
        delete_test_namespace(target_api, theirs)


@dataclasses.dataclass
class KubectlTeam:
    """An emulator over TLS (kubectl sends credentials only over TLS), namespace ``team`` and
    its ServiceAccount ``bot``; ``run`` runs real kubectl as the bot or, with ``admin=True``,
    as the admin."""

    admin: Any
    admin_config: pathlib.Path
    bot: Any
    kubectl: str

    def run(self, *args: str, admin: bool = False) -> subprocess.CompletedProcess[str]:
        config = self.admin_config if admin else self.bot.kubeconfig
        return subprocess.run(
            [self.kubectl, "--kubeconfig", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def grant_edit(self) -> None:
        rbac_api(self.admin).create_namespaced_role_binding(
            "team", binding("bot-edit", "ClusterRole", "edit", [sa_subject("team", "bot")])
        )


@pytest.fixture
def kubectl_team(kube_target: KubeTarget, tmp_path: pathlib.Path) -> Iterator[KubectlTeam]:
    kube_target.require_emulator()
    kubectl = str(ensure_kubectl())
    with KubeAPIEmulator(tls=True) as emulator:
        admin_config = emulator.write_kubeconfig(tmp_path / "admin")
        with api_client_from_kubeconfig(admin_config) as admin:
            core(admin).create_namespace({"metadata": {"name": "team"}})
            bot = service_account_identity(admin, admin_config, "team", "bot", tmp_path)
            try:
                yield KubectlTeam(admin, admin_config, bot, kubectl)
            finally:
                bot.api.close()


def test_kubectl_as_a_service_account_is_judged_by_rbac(kubectl_team: KubectlTeam) -> None:
    denied = kubectl_team.run("get", "secrets", "-n", "team")
    assert denied.returncode == 1
    assert (
        'secrets is forbidden: User "system:serviceaccount:team:bot" cannot list resource "secrets" '
        'in API group "" in the namespace "team"'
    ) in denied.stderr
    kubectl_team.grant_edit()
    allowed = kubectl_team.run("get", "secrets", "-n", "team")
    assert allowed.returncode == 0, allowed.stderr
    assert kubectl_team.run("get", "secrets", "-n", "default").returncode == 1
    impersonating = kubectl_team.run("get", "secrets", "-n", "default", "--as", "someone", admin=True)
    assert 'User "someone" cannot list resource "secrets"' in impersonating.stderr


def test_kubectl_auth_can_i_whoami_and_create_token(kubectl_team: KubectlTeam) -> None:
    whoami = kubectl_team.run("auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == kubectl_team.bot.username
    no = kubectl_team.run("auth", "can-i", "list", "secrets", "-n", "team")
    assert (no.returncode, no.stdout.strip()) == (1, "no"), no
    kubectl_team.grant_edit()
    yes = kubectl_team.run("auth", "can-i", "list", "secrets", "-n", "team")
    assert (yes.returncode, yes.stdout.strip()) == (0, "yes"), yes
    listed = kubectl_team.run("auth", "can-i", "--list", "-n", "team")
    assert listed.returncode == 0 and "secrets" in listed.stdout, listed
    as_bot = kubectl_team.run(
        "auth", "can-i", "delete", "secrets", "-n", "team", "--as", kubectl_team.bot.username, admin=True
    )
    assert (as_bot.returncode, as_bot.stdout.strip()) == (0, "yes"), as_bot
    token = kubectl_team.run("create", "token", "bot", "-n", "team", admin=True)
    assert token.returncode == 0 and token.stdout.count(".") == 2, token


def test_requests_without_credentials(kube_target: KubeTarget, tmp_path: pathlib.Path) -> None:
    """No token: 401 when authentication is required; over TLS, system:anonymous for RBAC to
    judge; over plain http (where kubectl sends no credentials) the old insecure port's admin."""
    kube_target.require_emulator()

    def anonymous(emulator: KubeAPIEmulator, path: str) -> RawResponse:
        config = emulator.write_kubeconfig(tmp_path / f"{emulator.port}")
        with api_client_from_kubeconfig(config) as api:
            api.configuration.api_key = {}
            return raw_request(api, "GET", path)

    with KubeAPIEmulator(require_auth=True) as strict:
        refused = anonymous(strict, "/api/v1/namespaces")
        assert refused.status == 401
        assert refused.json()["reason"] == "Unauthorized"
    with KubeAPIEmulator(tls=True) as secure:
        refused = anonymous(secure, "/api/v1/namespaces")
        assert refused.status == 403
        assert refused.json()["message"] == (
            'namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" '
            'in API group "" at the cluster scope'
        )
        assert anonymous(secure, "/api").status == 403  # discovery is for authenticated users
    with KubeAPIEmulator() as plain:
        assert anonymous(plain, "/api/v1/namespaces").status == 200


# --------------------------------------------------------------------------- field management


def apply_patch(
    api: Any, path: str, body: dict[str, Any], manager: str | None, *, force: bool | None = None
) -> RawResponse:
    query: dict[str, Any] = {}
    if manager is not None:
        query["fieldManager"] = manager
    if force is not None:
        query["force"] = "true" if force else "false"
    return raw_request(
        api, "PATCH", path, query=query, body=json.dumps(body), content_type="application/apply-patch+yaml"
    )


def managed_fields(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(manager, operation) -> the managedFields entry, checking the entries' shape."""
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in obj["metadata"].get("managedFields") or []:
        assert entry["fieldsType"] == "FieldsV1", entry
        assert entry["operation"] in ("Apply", "Update"), entry
        assert entry["time"], entry
        entries[(entry["manager"], entry["operation"])] = entry
    return entries


def config_map_doc(name: str, data: dict[str, str], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": data}


def test_server_side_apply_records_its_fields(target_api: Any, target_namespace: str) -> None:
    path = f"/api/v1/namespaces/{target_namespace}/configmaps/applied"
    doc = config_map_doc("applied", {"a": "1"}, labels={"app": "x"})
    created = apply_patch(target_api, path, doc, "alice")
    assert created.status == 201, created.json()
    entries = managed_fields(created.json())
    assert list(entries) == [("alice", "Apply")]
    assert entries["alice", "Apply"]["apiVersion"] == "v1"
    assert entries["alice", "Apply"]["fieldsV1"] == {
        "f:data": {"f:a": {}},
        "f:metadata": {"f:labels": {"f:app": {}}},
    }

    again = apply_patch(target_api, path, doc, "alice")
    assert again.status == 200
    assert again.json()["metadata"]["resourceVersion"] == created.json()["metadata"]["resourceVersion"]

    # YAML bodies too, as kubectl and helm may send them.
    yaml_body = yaml.safe_dump(config_map_doc("applied", {"a": "1", "y": "2"}, labels={"app": "x"}))
    response = raw_request(
        target_api,
        "PATCH",
        path,
        query={"fieldManager": "alice"},
        body=yaml_body,
        content_type="application/apply-patch+yaml",
    )
    assert response.status == 200, response.json()
    assert response.json()["data"] == {"a": "1", "y": "2"}


def test_apply_needs_a_field_manager_and_force_is_for_apply_only(
    target_api: Any, target_namespace: str
) -> None:
    path = f"/api/v1/namespaces/{target_namespace}/configmaps/nomanager"
    response = apply_patch(target_api, path, config_map_doc("nomanager", {"a": "1"}), None)
    assert response.status == 422, response.json()
    assert response.json()["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )
    core(target_api).create_namespaced_config_map(target_namespace, {"metadata": {"name": "nomanager"}})
    response = raw_request(
        target_api,
        "PATCH",
        path,
        query={"force": "true"},
        body={"data": {"a": "1"}},
        content_type="application/merge-patch+json",
    )
    assert response.status == 422, response.json()
    assert response.json()["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for non-apply patch'
    )


def test_updates_record_their_manager(target_api: Any, target_namespace: str) -> None:
    api = core(target_api)
    created = api.create_namespaced_config_map(
        target_namespace, {"metadata": {"name": "updated"}, "data": {"a": "1"}}, field_manager="creator"
    )
    entries = managed_fields(target_api.sanitize_for_serialization(created))
    assert entries["creator", "Update"]["fieldsV1"] == {"f:data": {".": {}, "f:a": {}}}
    assert entries["creator", "Update"]["apiVersion"] == "v1"

    replaced = api.replace_namespaced_config_map(
        "updated",
        target_namespace,
        {
            "metadata": {"name": "updated", "resourceVersion": created.metadata.resource_version},
            "data": {"a": "2"},
        },
        field_manager="replacer",
    )
    entries = managed_fields(target_api.sanitize_for_serialization(replaced))
    assert entries["replacer", "Update"]["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert entries["creator", "Update"]["fieldsV1"] == {"f:data": {}}  # the map itself stays its

    patched = api.patch_namespaced_config_map(
        "updated",
        target_namespace,
        {"metadata": {"labels": {"x": "1"}}},
        field_manager="patcher",
        _content_type="application/strategic-merge-patch+json",
    )
    entries = managed_fields(target_api.sanitize_for_serialization(patched))
    assert entries["patcher", "Update"]["fieldsV1"] == {"f:metadata": {"f:labels": {".": {}, "f:x": {}}}}

    # Without fieldManager the manager is the User-Agent up to its first "/".
    api.patch_namespaced_config_map(
        "updated", target_namespace, {"data": {"b": "1"}}, _content_type="application/merge-patch+json"
    )
    agent = target_api.user_agent.split("/")[0]
    current = raw_request(
        target_api, "GET", f"/api/v1/namespaces/{target_namespace}/configmaps/updated"
    ).json()
    assert managed_fields(current)[agent, "Update"]["fieldsV1"] == {"f:data": {"f:b": {}}}

    # A client may replace managedFields; [{}] clears them.
    cleared = api.patch_namespaced_config_map(
        "updated",
        target_namespace,
        {"metadata": {"managedFields": [{}]}},
        _content_type="application/merge-patch+json",
    )
    assert not cleared.metadata.managed_fields


def test_apply_conflicts_with_other_managers_unless_forced(target_api: Any, target_namespace: str) -> None:
    path = f"/api/v1/namespaces/{target_namespace}/configmaps/contested"
    assert (
        apply_patch(target_api, path, config_map_doc("contested", {"a": "1", "b": "1"}), "alice").status
        == 201
    )
    core(target_api).patch_namespaced_config_map(
        "contested",
        target_namespace,
        {"data": {"a": "2"}},
        field_manager="bob",
        _content_type="application/merge-patch+json",
    )
    refused = apply_patch(target_api, path, config_map_doc("contested", {"a": "1", "b": "1"}), "alice")
    assert refused.status == 409
    status = refused.json()
    assert status["reason"] == "Conflict"
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "bob" using v1: .data.a'
    assert status["details"]["causes"] == [
        {"type": "FieldManagerConflict", "message": 'conflict with "bob" using v1', "field": ".data.a"}
    ]

    # Applying the value a field already has shares it; an Apply manager is named without a version.
    shared = apply_patch(target_api, path, config_map_doc("contested", {"b": "1"}), "carol")
    assert shared.status == 200, shared.json()
    refused = apply_patch(target_api, path, config_map_doc("contested", {"a": "3", "b": "3"}), "dave")
    assert refused.status == 409
    assert refused.json()["message"] == (
        "Apply failed with 3 conflicts: "
        'conflicts with "alice":\n- .data.b\n'
        'conflicts with "bob" using v1:\n- .data.a\n'
        'conflicts with "carol":\n- .data.b'
    )

    forced = apply_patch(
        target_api, path, config_map_doc("contested", {"a": "1", "b": "1"}), "alice", force=True
    )
    assert forced.status == 200, forced.json()
    assert forced.json()["data"] == {"a": "1", "b": "1"}
    entries = managed_fields(forced.json())
    assert ("bob", "Update") not in entries  # its only field was taken over
    assert entries["alice", "Apply"]["fieldsV1"] == {"f:data": {"f:a": {}, "f:b": {}}}
    assert entries["carol", "Apply"]["fieldsV1"] == {"f:data": {"f:b": {}}}


def test_fields_no_longer_applied_are_removed_unless_owned(target_api: Any, target_namespace: str) -> None:
    path = f"/api/v1/namespaces/{target_namespace}/configmaps/pruned"
    doc = config_map_doc("pruned", {"a": "1", "b": "1", "c": "1"}, labels={"keep": "1", "drop": "1"})
    assert apply_patch(target_api, path, doc, "alice").status == 201
    assert apply_patch(target_api, path, config_map_doc("pruned", {"c": "1"}), "carol").status == 200
    core(target_api).patch_namespaced_config_map(
        "pruned",
        target_namespace,
        {"data": {"d": "1"}},
        field_manager="bob",
        _content_type="application/merge-patch+json",
    )

    after = apply_patch(target_api, path, config_map_doc("pruned", {"a": "1"}, labels={"keep": "1"}), "alice")
    assert after.status == 200, after.json()
    obj = after.json()
    # b: alice's only, gone; c: carol applies it too; d: bob's.
    assert obj["data"] == {"a": "1", "c": "1", "d": "1"}
    assert obj["metadata"]["labels"] == {"keep": "1"}
    assert managed_fields(obj)["alice", "Apply"]["fieldsV1"] == {
        "f:data": {"f:a": {}},
        "f:metadata": {"f:labels": {"f:keep": {}}},
    }


def deployment_doc(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            **spec,
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}},
        },
    }


def test_apply_merges_built_in_lists_by_their_keys(target_api: Any, target_namespace: str) -> None:
    path = f"/apis/apps/v1/namespaces/{target_namespace}/deployments/merged"
    main = {
        "name": "main",
        "image": "busybox:1.36",
        "args": ["a"],
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 80}],
    }
    doc = deployment_doc("merged", [main], selector={"matchLabels": {"app": "merged"}})
    created = apply_patch(target_api, path, doc, "alice")
    assert created.status == 201, created.json()
    containers = created.json()["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"][
        "f:containers"
    ]
    assert containers == {
        'k:{"name":"main"}': {
            ".": {},
            "f:args": {},
            "f:env": {
                'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}},
                'k:{"name":"B"}': {".": {}, "f:name": {}, "f:value": {}},
            },
            "f:image": {},
            "f:name": {},
            # the key of a port includes its defaulted protocol
            "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}},
        }
    }

    # Another manager adds a container: the list is merged by name, not replaced.
    side = deployment_doc("merged", [{"name": "side", "image": "busybox:1.36"}])
    del side["spec"]["template"]["metadata"]
    response = apply_patch(target_api, path, side, "bob")
    assert response.status == 200, response.json()
    spec = response.json()["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["main", "side"]

    # An atomic list (args) is one field: changing it conflicts, with the item's key in the path.
    clash = deployment_doc("merged", [{"name": "main", "args": ["b"]}])
    del clash["spec"]["template"]["metadata"]
    refused = apply_patch(target_api, path, clash, "bob")
    assert refused.status == 409
    assert refused.json()["message"] == (
        'Apply failed with 1 conflict: conflict with "alice": .spec.template.spec.containers[name="main"].args'
    )

    # alice stops applying env B: it goes; env A and bob's container stay.
    main["env"] = [{"name": "A", "value": "1"}]
    response = apply_patch(target_api, path, doc, "alice")
    assert response.status == 200, response.json()
    spec = response.json()["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["main", "side"]
    assert spec["containers"][0]["env"] == [{"name": "A", "value": "1"}]


def test_apply_merges_custom_resource_lists_by_map_keys(
    target_api: Any, target_namespace: str, crds: None
) -> None:
    path = f"/apis/{GROUP}/v1/namespaces/{target_namespace}/widgets/keyed"
    first = widget("keyed", rules=[{"name": "r1", "value": "a"}], tags=["x"])
    assert apply_patch(target_api, path, first, "alice").status == 201
    second = {
        **widget("keyed", rules=[{"name": "r2", "value": "b"}]),
        "spec": {"rules": [{"name": "r2", "value": "b"}]},
    }
    response = apply_patch(target_api, path, second, "bob")
    assert response.status == 200, response.json()
    assert response.json()["spec"]["rules"] == [{"name": "r1", "value": "a"}, {"name": "r2", "value": "b"}]
    entries = managed_fields(response.json())
    assert entries["bob", "Apply"]["apiVersion"] == f"{GROUP}/v1"
    assert entries["bob", "Apply"]["fieldsV1"] == {
        "f:spec": {"f:rules": {'k:{"name":"r2"}': {".": {}, "f:name": {}, "f:value": {}}}}
    }

    # tags has no list type: atomic, owned by alice as a whole.
    refused = apply_patch(target_api, path, {**second, "spec": {"tags": ["y"]}}, "bob")
    assert refused.status == 409
    assert refused.json()["message"] == 'Apply failed with 1 conflict: conflict with "alice": .spec.tags'


# --------------------------------------------------------------------------- namespace termination


def test_namespace_termination(target_api: Any, request: pytest.FixtureRequest) -> None:
    api = core(target_api)
    name = create_test_namespace(target_api, request.node.name + "-ending")
    try:
        api.create_namespaced_config_map(
            name, {"metadata": {"name": "held", "finalizers": ["contract.rolecall.dev/hold"]}}
        )
        api.create_namespaced_secret(name, {"metadata": {"name": "free"}})
        before = api.read_namespace(name)
        assert before.spec.finalizers == ["kubernetes"]
        assert before.status.phase == "Active"

        response = raw_request(target_api, "DELETE", f"/api/v1/namespaces/{name}")
        assert response.status == 200
        deleted = response.json()
        assert deleted["kind"] == "Namespace"
        assert deleted["status"]["phase"] == "Terminating"
        assert deleted["metadata"]["deletionTimestamp"]
        assert deleted["spec"]["finalizers"] == ["kubernetes"]

        # The namespace controller deletes the contents; the finalizer holds one object and the namespace.
        wait_for(lambda: gone(api.read_namespaced_secret, "free", name), timeout=60, message="secret kept")
        held = api.read_namespaced_config_map("held", name)
        assert held.metadata.deletion_timestamp is not None

        def remaining() -> Any:
            ns = api.read_namespace(name)
            conditions = {c.type: c for c in ns.status.conditions or []}
            found = conditions.get("NamespaceFinalizersRemaining")
            return ns if found is not None and found.status == "True" else None

        terminating = wait_for(remaining, timeout=60, message="no NamespaceFinalizersRemaining condition")
        assert terminating.status.phase == "Terminating"
        conditions = {c.type: c for c in terminating.status.conditions}
        assert conditions["NamespaceFinalizersRemaining"].message == (
            "Some content in the namespace has finalizers remaining: contract.rolecall.dev/hold in 1 resource "
            "instances"
        )
        assert conditions["NamespaceContentRemaining"].message == (
            "Some resources are remaining: configmaps. has 1 resource instances"
        )

        status = expect_error(403, api.create_namespaced_config_map, name, {"metadata": {"name": "late"}})
        assert status["reason"] == "Forbidden"
        assert status["message"] == (
            f'configmaps "late" is forbidden: unable to create new content in namespace {name} because it is '
            "being terminated"
        )
        status = expect_error(409, api.create_namespace, {"metadata": {"name": name}})
        assert status["message"] == f'object is being deleted: namespaces "{name}" already exists'

        api.patch_namespaced_config_map(
            "held", name, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
        )
        wait_for(lambda: gone(api.read_namespace, name), timeout=90, message="namespace not removed")

        _response, events = watch_events(
            target_api,
            "/api/v1/namespaces",
            resourceVersion=before.metadata.resource_version,
            fieldSelector=f"metadata.name={name}",
        )
        types = [e["type"] for e in events]
        assert types[0] == "MODIFIED" and types[-1] == "DELETED", types
        assert set(types) == {"MODIFIED", "DELETED"}, types
        assert events[0]["object"]["status"]["phase"] == "Terminating"
    finally:
        delete_test_namespace(target_api, name)
