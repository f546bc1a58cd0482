"""The only Kubernetes client user: Secrets, status, events and pods, as plain dicts.

One place owns the HTTP semantics: 404 → :class:`NotFound`, 409 → :class:`Conflict` or
:class:`AlreadyExists`, anything else → :class:`KubeError`. Responses are decoded straight
from JSON (the generated models are slow and lossy for custom resources). Blocking: the
reconciler calls these from worker threads.
"""

from __future__ import annotations

import datetime
import json
import secrets as pysecrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from rolecall import constants as c
from rolecall.timefmt import format_time


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


class AlreadyExists(Conflict):
    pass


@dataclass(frozen=True)
class Connection:
    """How to reach the API server; shared with kopf's login so both use one config."""

    server: str
    token: str | None
    ca_path: str | None
    cert_path: str | None
    key_path: str | None
    insecure: bool


def load_configuration(
    kubeconfig: str | None = None, context: str | None = None
) -> kubernetes.client.Configuration:
    """In-cluster config when running in a pod (and no kubeconfig is given), else a kubeconfig."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            configuration.rolecall_in_cluster = True
            return configuration
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, context=context, client_configuration=configuration
    )
    return configuration


class KubeAdapter:
    def __init__(self, configuration: kubernetes.client.Configuration, *, pool_size: int = 16) -> None:
        configuration.connection_pool_maxsize = pool_size
        self.configuration = configuration
        self.api = kubernetes.client.ApiClient(configuration)
        self.in_cluster = bool(getattr(configuration, "rolecall_in_cluster", False))

    def connection(self) -> Connection:
        cfg = self.configuration
        token = None
        auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        if auth:
            token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
        return Connection(
            server=cfg.host,
            token=token,
            ca_path=cfg.ssl_ca_cert,
            cert_path=cfg.cert_file,
            key_path=cfg.key_file,
            insecure=not cfg.verify_ssl,
        )

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    # --- the one request primitive ---------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if query:
            path = f"{path}?{urlencode(query)}"
        _, url, headers, body_out, post = self.api.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(
                method,
                url,
                header_params=headers,
                body=body_out,
                post_params=post,
                _request_timeout=timeout,
            )
            raw = response.read()  # type: ignore[no-untyped-call]
        except ApiException as exc:  # raised by the REST layer for transport-level errors
            raise KubeError(exc.status or 0, exc.reason or "Error", str(exc.body or "")[:500]) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(0, "Unreachable", f"{type(exc).__name__}") from None
        status = response.status
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {
                "message": raw[:500].decode(errors="replace") if isinstance(raw, bytes) else str(raw)[:500]
            }
        if status >= 400:
            reason = str(payload.get("reason") or response.reason or "Error")
            message = str(payload.get("message") or "")
            if status == 404:
                raise NotFound(status, reason, message)
            if status == 409:
                raise (AlreadyExists if reason == "AlreadyExists" else Conflict)(status, reason, message)
            raise KubeError(status, reason, message)
        return payload if isinstance(payload, dict) else {}

    # --- Secrets -------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except NotFound:
            return None

    def create_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        ns = body["metadata"]["namespace"]
        return self.request("POST", f"/api/v1/namespaces/{ns}/secrets", body=body)

    def replace_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the body's resourceVersion: a concurrent change answers Conflict."""
        meta = body["metadata"]
        return self.request(
            "PUT", f"/api/v1/namespaces/{meta['namespace']}/secrets/{meta['name']}", body=body
        )

    def delete_secret(
        self, namespace: str, name: str, uid: str | None = None, resource_version: str | None = None
    ) -> bool:
        """DELETE with preconditions: a Secret replaced or changed since it was read answers
        409 Conflict instead of being deleted."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if preconditions:
            body["preconditions"] = preconditions
        try:
            self.request("DELETE", f"/api/v1/namespaces/{namespace}/secrets/{name}", body=body)
        except NotFound:
            return False
        return True

    # --- AssumedRoles ----------------------------------------------------------------

    def get_assumed_role(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request(
                "GET",
                f"/apis/{c.API_VERSION}/namespaces/{namespace}/{c.PLURAL_ASSUMED_ROLE}/{name}",
            )
        except NotFound:
            return None

    def patch_assumed_role_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.request(
            "PATCH",
            f"/apis/{c.API_VERSION}/namespaces/{namespace}/{c.PLURAL_ASSUMED_ROLE}/{name}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    def patch_policy_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.request(
            "PATCH",
            f"/apis/{c.API_VERSION}/{c.PLURAL_POLICY}/{name}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    # --- events and pods ---------------------------------------------------------------

    def create_event(
        self,
        involved: dict[str, Any],
        *,
        reason: str,
        message: str,
        type_: str,
        now: datetime.datetime,
        component: str = "rolecall",
    ) -> None:
        meta = involved.get("metadata", {})
        ns = meta.get("namespace") or "default"
        stamp = format_time(now)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name', 'x')}.{pysecrets.token_hex(8)}",
                "namespace": ns,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", c.API_VERSION),
                "kind": involved.get("kind", c.KIND_ASSUMED_ROLE),
                "name": meta.get("name"),
                "namespace": ns,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self.request("POST", f"/api/v1/namespaces/{ns}/events", body=body)

    def list_pods(self, namespace: str, service_account: str) -> list[dict[str, Any]]:
        answer = self.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            query={"fieldSelector": f"spec.serviceAccountName={service_account}"},
        )
        return list(answer.get("items") or [])

    # --- cluster-wide reads at startup --------------------------------------------------

    def server_version(self) -> dict[str, Any]:
        return self.request("GET", "/version")

    def list_policies(self) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/apis/{c.API_VERSION}/{c.PLURAL_POLICY}").get("items") or [])

    def get_namespace_labels(self, name: str) -> dict[str, str] | None:
        try:
            body = self.request("GET", f"/api/v1/namespaces/{name}")
        except NotFound:
            return None
        return dict((body.get("metadata") or {}).get("labels") or {})

    def list_namespaces(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/namespaces").get("items") or [])

    # --- authorising callers of the operator's own endpoints ------------------------------

    def may_get_non_resource(self, token: str, path: str) -> bool:
        """Does the API server vouch for this bearer token (TokenReview), and may its user
        ``get`` the non-resource URL ``path`` (SubjectAccessReview)?"""
        review = self.request(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}},
        )
        result = review.get("status") or {}
        if not result.get("authenticated"):
            return False
        user = result.get("user") or {}
        access = self.request(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            body={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user.get("username", ""),
                    "groups": list(user.get("groups") or []),
                    "uid": user.get("uid", ""),
                    "nonResourceAttributes": {"path": path, "verb": "get"},
                },
            },
        )
        return bool((access.get("status") or {}).get("allowed"))

    # --- the leader Lease ---------------------------------------------------------------

    def _lease_path(self, namespace: str, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{base}/{name}" if name else base

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", self._lease_path(namespace, name))
        except NotFound:
            return None

    def create_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", self._lease_path(body["metadata"]["namespace"]), body=body)

    def replace_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the body's resourceVersion: a concurrent holder answers Conflict."""
        meta = body["metadata"]
        return self.request("PUT", self._lease_path(meta["namespace"], meta["name"]), body=body)

    # --- webhook configurations (webhookcerts, doctor) -------------------------------------

    def get_webhook_configuration(self, kind: str, name: str) -> dict[str, Any] | None:
        """``kind``: "mutating" or "validating"."""
        try:
            return self.request(
                "GET", f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations/{name}"
            )
        except NotFound:
            return None

    def replace_webhook_configuration(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the body's resourceVersion: a concurrent change answers Conflict."""
        name = body["metadata"]["name"]
        return self.request(
            "PUT", f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations/{name}", body=body
        )

    # --- discovery and CRDs (crds, doctor) -------------------------------------------------

    def served_resources(self, group_version: str) -> set[str] | None:
        """Plural names the API server serves in ``group/version`` (discovery, open to every
        authenticated client); None when it serves no such group version."""
        try:
            answer = self.request("GET", f"/apis/{group_version}", timeout=10.0)
        except NotFound:
            return None
        return {str(r.get("name")) for r in answer.get("resources") or [] if "/" not in str(r.get("name"))}

    def get_crd(self, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        except NotFound:
            return None

    # --- read-only listings and the service proxy (doctor) -----------------------------------

    def list_objects(self, path: str) -> list[dict[str, Any]]:
        """Items of a list ``path`` such as ``/apis/rolecall.dev/v1alpha1/assumedroles``."""
        return list(self.request("GET", path).get("items") or [])

    def get_object(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except NotFound:
            return None

    def proxy_service(
        self, namespace: str, name: str, port: int | str, path: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """POST ``body`` to ``https://<service>:<port><path>`` through the API server's service
        proxy (the API server does not verify the service's certificate on this path)."""
        return self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/services/https:{name}:{port}/proxy{path}",
            body=body,
            timeout=15.0,
        )
