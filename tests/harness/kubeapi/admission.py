"""Dynamic admission: calling the webhooks of Mutating/ValidatingWebhookConfigurations."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import ssl
import uuid
from typing import Any

import aiohttp

from .errors import ApiError, internal
from .patches import json_patch
from .resources import ResourceType
from .selectors import label_selector_object_matcher
from .store import Store

logger = logging.getLogger(__name__)

MUTATING = ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
VALIDATING = ("admissionregistration.k8s.io", "validatingwebhookconfigurations")
OPTIONS_KINDS = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}


@dataclasses.dataclass
class AdmissionRequest:
    operation: str  # CREATE, UPDATE, DELETE
    rtype: ResourceType
    version: str
    subresource: str
    namespace: str
    name: str
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    username: str
    dry_run: bool = False
    options: dict[str, Any] | None = None


class WebhookFailure(Exception):
    pass


def _rule_matches(rule: dict[str, Any], req: AdmissionRequest) -> bool:
    operations = rule.get("operations") or []
    if "*" not in operations and req.operation not in operations:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and req.rtype.group not in groups:
        return False
    versions = rule.get("apiVersions") or []
    if "*" not in versions and req.version not in versions:
        return False
    scope = rule.get("scope") or "*"
    if scope == "Cluster" and req.rtype.namespaced:
        return False
    if scope == "Namespaced" and not req.rtype.namespaced:
        return False
    for resource in rule.get("resources") or []:
        main, _, sub = resource.partition("/")
        if main not in ("*", req.rtype.plural):
            continue
        if not sub and not req.subresource:
            return True
        if sub and (sub == "*" or sub == req.subresource):
            return True
    return False


class Admission:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.session: aiohttp.ClientSession | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.calls = 0
        # kube-proxy's part: (namespace, service, port) -> the (host, port) endpoints serving it,
        # used in turn
        self.service_routes: dict[tuple[str, str, int], list[tuple[str, int]]] = {}
        self._next_endpoint = 0

    def http_session(self) -> aiohttp.ClientSession:
        if self.session is None:
            # One connection per call: no idle keep-alive connections to webhook servers that
            # stop (an in-process kopf would otherwise leave unclosed transports behind).
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        return self.session

    def endpoint(self, namespace: str, name: str, port: int) -> tuple[str, int] | None:
        """The next endpoint of a Service port (round robin), or None when it has none."""
        endpoints = self.service_routes.get((namespace, name, port))
        if not endpoints:
            return None
        self._next_endpoint += 1
        return endpoints[self._next_endpoint % len(endpoints)]

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _ssl_context(self, ca_bundle: str | None) -> ssl.SSLContext:
        key = ca_bundle or ""
        context = self._contexts.get(key)
        if context is None:
            if ca_bundle:
                try:
                    pem = base64.b64decode(ca_bundle).decode("ascii")
                except (binascii.Error, ValueError, UnicodeDecodeError) as e:
                    raise WebhookFailure(f"invalid caBundle: {e}") from None
                context = ssl.create_default_context(cadata=pem)
            else:
                context = ssl.create_default_context()
            self._contexts[key] = context
        return context

    def _hooks(self, key: tuple[str, str], req: AdmissionRequest) -> list[tuple[str, dict[str, Any]]]:
        if req.rtype.key in (MUTATING, VALIDATING):
            return []  # webhook configurations are never subject to webhooks
        found: list[tuple[str, dict[str, Any]]] = []
        configs = sorted(self.store.iter_objects(key, None), key=lambda o: o["metadata"]["name"])
        for config in configs:
            for hook in config.get("webhooks") or []:
                if self._hook_matches(hook, req):
                    found.append((config["metadata"]["name"], hook))
        return found

    def _hook_matches(self, hook: dict[str, Any], req: AdmissionRequest) -> bool:
        if not any(_rule_matches(rule, req) for rule in hook.get("rules") or []):
            return False
        objects = [o for o in (req.obj, req.old) if o is not None]
        object_matcher = label_selector_object_matcher(hook.get("objectSelector"))
        if not any(object_matcher((o.get("metadata") or {}).get("labels")) for o in objects):
            return False
        ns_matcher = label_selector_object_matcher(hook.get("namespaceSelector"))
        if req.rtype.key == ("", "namespaces"):
            if not any(ns_matcher((o.get("metadata") or {}).get("labels")) for o in objects):
                return False
        elif req.rtype.namespaced:
            ns = self.store.namespace_obj(req.namespace)
            labels = ((ns or {}).get("metadata") or {}).get("labels")
            if not ns_matcher(labels):
                return False
        return True

    def _review(self, req: AdmissionRequest, obj: dict[str, Any] | None) -> dict[str, Any]:
        gvk = {"group": req.rtype.group, "version": req.version, "kind": req.rtype.kind}
        gvr = {"group": req.rtype.group, "version": req.version, "resource": req.rtype.plural}
        request: dict[str, Any] = {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": req.name,
            "operation": req.operation,
            "userInfo": {"username": req.username, "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": req.old,
            "dryRun": req.dry_run,
            "options": {
                "apiVersion": "meta.k8s.io/v1",
                "kind": OPTIONS_KINDS.get(req.operation, "CreateOptions"),
                **(req.options or {}),
            },
        }
        if req.subresource:
            request["subResource"] = req.subresource
            request["requestSubResource"] = req.subresource
        if req.rtype.namespaced:
            request["namespace"] = req.namespace
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}

    async def _call(self, hook: dict[str, Any], review: dict[str, Any]) -> dict[str, Any]:
        client = hook.get("clientConfig") or {}
        url = client.get("url")
        target, server_hostname = url, None
        if not url:
            service = client.get("service") or {}
            port = int(service.get("port", 443))
            host = f"{service.get('name')}.{service.get('namespace')}.svc"
            url = target = f"https://{host}:{port}{service.get('path', '')}"
            route = self.endpoint(service.get("namespace", ""), service.get("name", ""), port)
            if route is not None:
                target = f"https://{route[0]}:{route[1]}{service.get('path', '')}"
                server_hostname = host  # the certificate is checked against the Service's name
        session = self.http_session()
        timeout = aiohttp.ClientTimeout(total=float(hook.get("timeoutSeconds") or 10))
        ssl_context: ssl.SSLContext | bool = False
        if url.startswith("https://"):
            ssl_context = self._ssl_context(client.get("caBundle"))
        self.calls += 1
        try:
            async with session.post(
                target, json=review, ssl=ssl_context, timeout=timeout, server_hostname=server_hostname
            ) as response:
                text = await response.text()
                if response.status != 200:
                    raise WebhookFailure(
                        f"failed to call webhook: the server responded with status "
                        f"{response.status}: {text[:200]}"
                    )
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError, OSError) as e:
            detail = str(e) or type(e).__name__
            if isinstance(e, asyncio.TimeoutError):
                detail = "context deadline exceeded"
            raise WebhookFailure(f'failed to call webhook: Post "{url}": {detail}') from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise WebhookFailure(f"received invalid webhook response: {e}") from None
        response_payload = data.get("response") if isinstance(data, dict) else None
        if not isinstance(response_payload, dict):
            raise WebhookFailure("received invalid webhook response: no response")
        if response_payload.get("uid") != review["request"]["uid"]:
            raise WebhookFailure(
                f"expected response.uid={review['request']['uid']!r}, got {response_payload.get('uid')!r}"
            )
        return response_payload

    async def run(
        self, key: tuple[str, str], req: AdmissionRequest, warnings: list[str]
    ) -> dict[str, Any] | None:
        """Call the matching webhooks of one kind; returns the (mutated) object."""
        obj = req.obj
        mutating = key == MUTATING
        for _config_name, hook in self._hooks(key, req):
            name = hook.get("name", "")
            review = self._review(req, obj)
            try:
                response = await self._call(hook, review)
            except WebhookFailure as e:
                if hook.get("failurePolicy", "Fail") == "Ignore":
                    logger.info("Webhook %s failed, ignored by its failurePolicy: %s", name, e)
                    continue
                raise internal(f'failed calling webhook "{name}": {e}') from None
            warnings.extend(str(w) for w in response.get("warnings") or [])
            if not response.get("allowed"):
                raise denial(name, response.get("status"))
            patch = response.get("patch")
            if mutating and patch and obj is not None and req.operation != "DELETE":
                if response.get("patchType", "JSONPatch") != "JSONPatch":
                    raise internal(f'failed calling webhook "{name}": unsupported patch type')
                try:
                    operations = json.loads(base64.b64decode(patch))
                    obj = json_patch(obj, operations)
                except ApiError as e:
                    raise internal(f'failed to apply the patch of webhook "{name}": {e.message}') from None
                except (ValueError, binascii.Error) as e:
                    raise internal(f'webhook "{name}" returned an invalid patch: {e}') from None
        return obj


def denial(name: str, status: dict[str, Any] | None) -> ApiError:
    status = status or {}
    code = status.get("code") or 0
    if not isinstance(code, int) or code < 400:
        code = 400
    denied = f'admission webhook "{name}" denied the request'
    if status.get("message"):
        message = f"{denied}: {status['message']}"
    elif status.get("reason"):
        message = f"{denied}: {status['reason']}"
    else:
        message = f"{denied} without explanation"
    return ApiError(code, status.get("reason") or "", message, status.get("details"))
