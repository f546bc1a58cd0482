"""Small helpers for tests that speak to the Kubernetes API (emulator or real cluster)."""

from __future__ import annotations

import base64
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION = "rolecall.dev", "v1alpha1"


class K8s:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    # AssumedRoles
    def create_ar(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AssumedRole",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "assumedroles", body)  # type: ignore[no-any-return]

    def get_ar(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "assumedroles", name)  # type: ignore[no-any-return]
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_ar(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "assumedroles", name, patch
        )  # type: ignore[no-any-return]

    def delete_ar(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "assumedroles", name)

    def condition(self, namespace: str, name: str, ctype: str = "Ready") -> dict[str, Any] | None:
        body = self.get_ar(namespace, name) or {}
        for cond in (body.get("status") or {}).get("conditions") or []:
            if cond.get("type") == ctype:
                return cond  # type: ignore[no-any-return]
        return None

    # policies
    def create_policy(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AssumedRolePolicy",
            "metadata": {"name": name},
            "spec": spec,
        }
        return self.custom.create_cluster_custom_object(GROUP, VERSION, "assumedrolepolicies", body)  # type: ignore[no-any-return]

    def delete_policy(self, name: str) -> None:
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, "assumedrolepolicies", name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # Secrets
    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.sanitize_for_serialization(self.core.read_namespaced_secret(name, namespace))  # type: ignore[no-any-return]
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        body = self.secret(namespace, name)
        if body is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return [
            self.api.sanitize_for_serialization(e) for e in self.core.list_namespaced_event(namespace).items
        ]
