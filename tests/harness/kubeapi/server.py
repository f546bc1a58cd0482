"""The aiohttp application: routing, discovery and the request pipelines."""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import logging
import pathlib
import random
import urllib.parse
from collections.abc import Callable
from typing import Any

import yaml
from aiohttp import ClientTimeout as aiohttp_timeout
from aiohttp import web
from multidict import CIMultiDict

from . import builtins, errors, openapi, protobuf, rbac, ssa, tables
from .admission import MUTATING, VALIDATING, Admission, AdmissionRequest
from .errors import ApiError, FieldError
from .patches import clone, json_equal, json_patch, merge_patch, strategic_merge
from .resources import ResourceType
from .schema import CelRules, Validator, apply_defaults, prune
from .selectors import match_fields, match_requirements, parse_field_selector, parse_label_selector
from .store import CRD_KEY, NS_KEY, SA_KEY, STOP, Store, TooOld, encode_event, now_iso, with_version

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "discovery")
_MISSING = object()
SERVER_MANAGED = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
    "managedFields",
)
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
VERSION_INFO = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-rolecall-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


class Target:
    __slots__ = ("name", "namespace", "rtype", "subresource", "version")

    def __init__(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        name: str | None,
        subresource: str | None,
    ) -> None:
        self.rtype = rtype
        self.version = version
        self.namespace = namespace
        self.name = name
        self.subresource = subresource

    @property
    def api_version(self) -> str:
        return self.rtype.api_version(self.version)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _spec_part(obj: Obj, *, skip_status: bool) -> Obj:
    skipped = {"metadata", "status"} if skip_status else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skipped}


class ApiServer:
    """All state and request handling; lives on one event loop."""

    def __init__(
        self,
        *,
        tokens: dict[str, rbac.User],
        require_auth: bool = False,
        secure: bool = False,
        history_size: int = 2000,
        bookmark_interval: float = 50.0,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        self.store = Store(history_size=history_size)
        rbac.register_types(self.store)
        self.auth = rbac.Auth(self.store, tokens, require_auth=require_auth)
        self.secure = secure
        self.admission = Admission(self.store)
        self.cel = CelRules()
        self.validator = Validator(self.cel)
        self.openapi = openapi.OpenAPIDocuments()
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.counts: collections.Counter[str] = collections.Counter()
        self.address = ""
        # (namespace, pod) -> the file holding its container's output (kubelet.py writes it)
        self.pod_logs: dict[tuple[str, str], pathlib.Path] = {}
        self._bootstrap()

    # ----------------------------------------------------------------- setup

    def _bootstrap(self) -> None:
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._put_new(
                self.store.types[NS_KEY],
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
        for obj in rbac.bootstrap_policy():
            group, _, version = obj["apiVersion"].rpartition("/")
            types = self.store.by_group_version[(group, version)].values()
            self._put_new(next(t for t in types if t.kind == obj["kind"]), obj)

    def _put_new(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Create an object directly (server-internal, no admission)."""
        meta = obj["metadata"]
        meta["uid"] = self.store.new_uid()
        meta["creationTimestamp"] = now_iso()
        if rtype.generation:
            meta["generation"] = 1
        builtins.prepare(rtype, obj, None)
        builtins.initial_status(rtype, obj)
        stored = self.store.put(rtype, obj, None)
        self._after_commit(rtype, stored, None)
        return stored

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def close(self) -> None:
        self.store.stop_all_watchers()
        await self.admission.close()

    # ----------------------------------------------------------------- entry point

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as e:
            return self._error(e)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:
            logger.exception("Emulator failure on %s %s", request.method, request.path_qs)
            return self._error(errors.internal(f"emulator failure: {e!r}"))

    def _error(self, e: ApiError) -> web.Response:
        headers = CIMultiDict(e.headers)
        return web.Response(
            body=json.dumps(e.status()).encode(),
            status=e.code,
            content_type="application/json",
            headers=headers,
        )

    def _json(self, body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
        headers: CIMultiDict[str] = CIMultiDict()
        for warning in dict.fromkeys(warnings or []):
            escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
            headers.add("Warning", f'299 - "{escaped}"')
        return web.Response(
            body=json.dumps(body, separators=(",", ":")).encode(),
            status=status,
            content_type="application/json",
            headers=headers,
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            self.counts["discovery"] += 1
            return self._json(VERSION_INFO)
        # Authentication and RBAC (rbac.py); reviews and TokenRequests are answered there.
        user = self.auth.authenticate(request.headers, secure=self.secure)
        attrs = rbac.request_attributes(request.method, path, request.query)
        self.auth.authorize(user, request.method, attrs)
        if self.auth.is_served_here(request.method, attrs):
            body = await self._body(request) if request.method == "POST" else None
            return self._json(*self.auth.serve(request.method, attrs, user, body))
        username = user.name
        segments = [urllib.parse.unquote(s) for s in path.split("/") if s]
        if segments[:1] == ["openapi"] and request.method == "GET":
            return self._openapi(request, segments)
        if request.method == "GET":
            discovery = self._discovery(segments)
            if discovery is not None:
                self.counts["discovery"] += 1
                return self._json(discovery)
        if segments[:3] == ["api", "v1", "namespaces"] and len(segments) >= 7:
            if segments[4] == "services" and segments[6] == "proxy":
                return await self._proxy_service(request, segments[3], segments[5], segments[7:])
            if segments[4] == "pods" and segments[6:] == ["log"] and request.method == "GET":
                return self._pod_log(segments[3], segments[5], request.query)
        target = self._resolve(segments)
        if not protobuf.accepts_json(request.headers.get("Accept", "")):
            raise errors.not_acceptable(request.headers.get("Accept", ""))
        params = request.query
        method = request.method
        if method == "GET":
            if target.name is None:
                if _truthy(params.get("watch")):
                    self.counts["watch"] += 1
                    return await self._watch(request, target)
                self.counts["list"] += 1
                return self._list(target, params, request.headers.get("Accept", ""))
            self.counts["get"] += 1
            obj = self._for_version(self._get_existing(target), target)
            if tables.wants_table(request.headers.get("Accept", "")):
                return self._table(
                    target, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}, params
                )
            return self._json(obj)
        manager = params.get("fieldManager") or ssa.manager_from_user_agent(
            request.headers.get("User-Agent", "")
        )
        if method == "POST":
            if target.name is not None or (target.rtype.namespaced and target.namespace is None):
                raise errors.method_not_allowed()
            self.counts["create"] += 1
            ssa.check_options(
                apply=False, manager=params.get("fieldManager"), force=None, options="CreateOptions"
            )
            body = await self._body(request)
            fields = ssa.FieldManager(target.rtype, target.version, manager, target.subresource)
            return await self._create(target, body, params, username, fields)
        if method == "PUT":
            if target.name is None:
                raise errors.method_not_allowed()
            self.counts["update"] += 1
            ssa.check_options(
                apply=False, manager=params.get("fieldManager"), force=None, options="UpdateOptions"
            )
            body = await self._body(request)
            fields = ssa.FieldManager(target.rtype, target.version, manager, target.subresource)
            return await self._update(target, body, params, username, fields)
        if method == "PATCH":
            if target.name is None:
                raise errors.method_not_allowed()
            self.counts["patch"] += 1
            return await self._patch(request, target, params, username, manager)
        if method == "DELETE":
            body = await self._body(request, allow_empty=True)
            if target.name is None:
                self.counts["deletecollection"] += 1
                return await self._delete_collection(target, body, params, username)
            if target.subresource:
                raise errors.method_not_allowed()
            self.counts["delete"] += 1
            return await self._delete(target, body, params, username)
        raise errors.method_not_allowed()

    async def _proxy_service(
        self, request: web.Request, namespace: str, ref: str, rest: list[str]
    ) -> web.Response:
        """``services/[https:]<name>[:<port>]/proxy/<path>``: the request sent on to one of the
        Service's endpoints (kubelet.py registers them), whose certificate is not verified."""
        parts = ref.split(":")
        scheme = parts[0] if len(parts) > 1 and parts[0] in ("http", "https") else ""
        if scheme:
            parts = parts[1:]
        name, port_ref = parts[0], (parts[1] if len(parts) > 1 else "")
        service = self.store.get(("", "services"), namespace, name)
        if service is None:
            raise errors.not_found("services", "", name)
        ports = (service.get("spec") or {}).get("ports") or []
        port = next(
            (p for p in ports if not port_ref or str(p.get("port")) == port_ref or p.get("name") == port_ref),
            None,
        )
        if port is None:
            raise errors.service_unavailable(f'no endpoints available for service "{ref}"')
        endpoint = self.admission.endpoint(namespace, name, int(port["port"]))
        if endpoint is None:
            raise errors.service_unavailable(f'no endpoints available for service "{ref}"')
        scheme = scheme or ("https" if int(port["port"]) == 443 else "http")
        url = f"{scheme}://{endpoint[0]}:{endpoint[1]}/" + "/".join(urllib.parse.quote(p) for p in rest)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        session = self.admission.http_session()
        try:
            async with session.request(
                request.method,
                url,
                data=body or None,
                headers=headers,
                ssl=False,
                timeout=aiohttp_timeout(30),
            ) as response:
                payload = await response.read()
                return web.Response(
                    body=payload,
                    status=response.status,
                    headers={"Content-Type": response.headers.get("Content-Type", "text/plain")},
                )
        except (TimeoutError, OSError) as e:
            raise errors.service_unavailable(f"error trying to reach service: {e}") from None

    def _pod_log(self, namespace: str, name: str, params: Any) -> web.Response:
        """``pods/<name>/log``: the output of a pod run by the kubelet stand-in."""
        pod = self.store.get(("", "pods"), namespace, name)
        if pod is None:
            raise errors.not_found("pods", "", name)
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        container = params.get("container") or (containers[0] if containers else "")
        if container not in containers:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        path = self.pod_logs.get((namespace, name))
        if path is None:
            raise errors.bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        text = path.read_text(errors="replace") if path.exists() else ""
        tail = params.get("tailLines")
        if tail and tail.isdigit():
            text = "".join(text.splitlines(keepends=True)[-int(tail) :]) if int(tail) else ""
        return web.Response(text=text, content_type="text/plain")

    def _openapi(self, request: web.Request, segments: list[str]) -> web.Response:
        self.counts["discovery"] += 1
        status, body, content_type = openapi.serve(
            self.openapi, self.store.by_group_version, segments, request.headers.get("Accept", "")
        )
        return web.Response(body=body, status=status, content_type=content_type)

    async def _body(self, request: web.Request, *, allow_empty: bool = False) -> Any:
        raw = await request.read()
        if not raw.strip():
            if allow_empty:
                return None
            raise errors.bad_request("the body of the request is empty")
        content_types = " ".join(request.headers.getall("Content-Type", [])).lower()
        if protobuf.CONTENT_TYPE in content_types and raw.startswith(protobuf.MAGIC):
            return protobuf.decode(raw)
        try:
            if raw.lstrip()[:1] in (b"{", b"["):
                return json.loads(raw)
            if "yaml" in content_types:
                return yaml.safe_load(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise errors.bad_request(f"couldn't get version/kind; json parse error: {e}") from None
        if "protobuf" in content_types:
            raise errors.unsupported_media_type(protobuf.CONTENT_TYPE)
        raise errors.bad_request("couldn't get version/kind; json parse error: not a JSON object")

    # ----------------------------------------------------------------- discovery & routing

    def _discovery(self, segments: list[str]) -> Any | None:
        groups = self.store.groups()
        if not segments:
            paths = ["/api", "/api/v1", "/apis", "/version", "/healthz"]
            for group, versions in groups.items():
                if group:
                    paths.append(f"/apis/{group}")
                    paths.extend(f"/apis/{group}/{v}" for v in versions)
            return {"paths": sorted(paths)}
        if segments == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}],
            }
        if segments == ["apis"]:
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group_doc(g, vs) for g, vs in sorted(groups.items()) if g],
            }
        if len(segments) == 2 and segments[0] == "apis":
            group = segments[1]
            if group not in groups:
                raise errors.no_such_path()
            return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, groups[group])}
        if (len(segments) == 2 and segments[0] == "api") or (len(segments) == 3 and segments[0] == "apis"):
            group = "" if segments[0] == "api" else segments[1]
            version = segments[-1]
            types = self.store.by_group_version.get((group, version))
            if types is None:
                raise errors.no_such_path()
            resources: list[Obj] = []
            for rtype in sorted(types.values(), key=lambda t: t.plural):
                resources.extend(rtype.discovery())
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": resources,
            }
        return None

    @staticmethod
    def _group_doc(group: str, versions: list[str]) -> Obj:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _resolve(self, segments: list[str]) -> Target:
        if len(segments) >= 2 and segments[0] == "api":
            group, version, rest = "", segments[1], segments[2:]
        elif len(segments) >= 3 and segments[0] == "apis":
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise errors.no_such_path()
        types = self.store.by_group_version.get((group, version))
        if types is None or not rest:
            raise errors.no_such_path()
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise errors.no_such_path()
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        rtype = types.get(plural)
        if rtype is None:
            raise errors.no_such_path()
        if namespace is not None and not rtype.namespaced:
            raise errors.no_such_path()
        if rtype.namespaced and namespace is None and name is not None:
            raise errors.no_such_path()
        if sub is not None and sub not in rtype.subresources():
            raise errors.no_such_path()
        return Target(rtype, version, namespace, name, sub)

    # ----------------------------------------------------------------- reads

    def _for_version(self, obj: Obj, target: Target) -> Obj:
        return with_version(obj, target.api_version)

    def _get_existing(self, target: Target) -> Obj:
        assert target.name is not None
        obj = self.store.get(target.rtype.key, target.namespace, target.name)
        if obj is None:
            raise errors.not_found(target.rtype.plural, target.rtype.group, target.name)
        return obj

    def _selectors(self, target: Target, params: Any) -> tuple[Any, Any]:
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"), target.rtype.fields)
        return labels, fields

    def _table(self, target: Target, objects: list[Obj], list_meta: Obj, params: Any) -> web.Response:
        table = tables.to_table(
            target.rtype,
            target.rtype.printer_columns.get(target.version),
            objects,
            list_meta,
            params.get("includeObject"),
        )
        response = self._json(table)
        response.content_type = "application/json"
        response.headers["Content-Type"] = tables.TABLE_CONTENT_TYPE
        return response

    def _list(self, target: Target, params: Any, accept: str = "") -> web.Response:
        labels, fields = self._selectors(target, params)
        items = [
            obj
            for obj in self.store.iter_objects(target.rtype.key, target.namespace)
            if (not labels or match_requirements(labels, obj["metadata"].get("labels")))
            and (not fields or match_fields(fields, obj))
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        token = params.get("continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise errors.bad_request("continue key is not valid") from None
            items = [o for o in items if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > start]
        limit = params.get("limit")
        if limit and limit.isdigit() and int(limit) > 0 and len(items) > int(limit):
            items = items[: int(limit)]
            last = items[-1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"start": [last.get("namespace", ""), last["name"]], "rv": self.store.rv}).encode()
            ).decode()
        api_version = target.api_version
        if tables.wants_table(accept):
            return self._table(target, [with_version(o, api_version) for o in items], meta, params)
        return self._json(
            {
                "kind": target.rtype.list_kind,
                "apiVersion": api_version,
                "metadata": meta,
                "items": [with_version(o, api_version) for o in items],
            }
        )

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        params = request.query
        labels, fields = self._selectors(target, params)
        since_text = params.get("resourceVersion") or ""
        send_initial = _truthy(params.get("sendInitialEvents"))
        bookmarks = _truthy(params.get("allowWatchBookmarks"))
        try:
            timeout = float(params.get("timeoutSeconds") or self.default_watch_timeout)
        except ValueError:
            raise errors.bad_request("invalid timeoutSeconds") from None
        since: int | None = None
        if since_text not in ("", "0") and not send_initial:
            try:
                since = int(since_text)
            except ValueError:
                raise errors.bad_request(f"invalid resource version: {since_text!r}") from None
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        try:
            watcher = self.store.watch(
                target.rtype,
                target.version,
                target.namespace,
                labels,
                fields,
                since,
                initial_bookmark=send_initial and bookmarks,
            )
        except TooOld as e:
            await response.prepare(request)
            await response.write(encode_event("ERROR", errors.gone(str(e)).status()))
            await response.write_eof()
            return response
        loop = asyncio.get_running_loop()
        try:
            await response.prepare(request)
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                wait = min(deadline, next_bookmark) - now if bookmarks else deadline - now
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), max(wait, 0.001))
                except TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark:
                        bookmark = self.store.bookmark(watcher.rtype, target.version)
                        await response.write(encode_event("BOOKMARK", bookmark))
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                chunks = [item]
                while not watcher.queue.empty():
                    chunks.append(watcher.queue.get_nowait())
                stop = STOP in chunks
                data = (
                    b"".join(c for c in chunks[: chunks.index(STOP)] if c is not STOP)
                    if stop
                    else b"".join(chunks)
                )
                if data:
                    await response.write(data)
                if stop:
                    break
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.store.unwatch(watcher)
        return response

    # ----------------------------------------------------------------- shared pipeline steps

    def _check_namespace(self, target: Target, name: str) -> None:
        if not target.rtype.namespaced or target.namespace is None:
            return
        ns = self.store.namespace_obj(target.namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", target.namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                target.rtype.plural,
                target.rtype.group,
                name,
                f"unable to create new content in namespace {target.namespace} because it is "
                f"being terminated",
            )

    def _check_service_account(self, target: Target, obj: Obj) -> None:
        if target.rtype.key != ("", "pods"):
            return
        account = (obj.get("spec") or {}).get("serviceAccountName") or "default"
        if self.store.get(SA_KEY, target.namespace, account) is None:
            raise errors.forbidden(
                "pods",
                "",
                obj["metadata"].get("name") or obj["metadata"].get("generateName", ""),
                f"error looking up service account {target.namespace}/{account}: "
                f'serviceaccount "{account}" not found',
            )

    def _shape_custom(self, target: Target, obj: Obj, warnings: list[str], strict: bool) -> None:
        """Prune unknown fields and apply defaults (for built-ins: unknown top-level fields)."""
        rtype = target.rtype
        if rtype.builtin:
            dropped = builtins.prune_top_level(rtype, obj)
            if dropped and strict:
                raise errors.bad_request(
                    "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in dropped)
                )
            warnings.extend(f'unknown field "{p}"' for p in dropped)
            return
        schema = rtype.schemas.get(target.version) or {}
        if not schema:
            return
        dropped = prune(obj, schema, root=True)
        if dropped:
            if strict:
                raise errors.bad_request(
                    "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in dropped)
                )
            warnings.extend(f'unknown field "{p}"' for p in dropped)
        apply_defaults(obj, schema)

    def _validate(self, target: Target, obj: Obj, old: Obj | None) -> None:
        rtype = target.rtype
        found: list[FieldError] = builtins.validate(rtype, obj, old) + rbac.validate(rtype, obj, old)
        if not rtype.builtin:
            schema = rtype.schemas.get(target.version) or {}
            if schema:
                found.extend(self.validator.validate(obj, schema, old, has_old=old is not None))
        if found:
            raise errors.invalid(rtype.kind, rtype.group, obj["metadata"].get("name", ""), found)

    async def _admit(
        self,
        key: tuple[str, str],
        target: Target,
        operation: str,
        obj: Obj | None,
        old: Obj | None,
        username: str,
        warnings: list[str],
        dry_run: bool,
        options: Obj | None = None,
    ) -> Obj | None:
        meta = (obj or old or {}).get("metadata") or {}
        req = AdmissionRequest(
            operation=operation,
            rtype=target.rtype,
            version=target.version,
            subresource=target.subresource or "",
            namespace=target.namespace or "",
            name=meta.get("name", ""),
            obj=obj,
            old=old,
            username=username,
            dry_run=dry_run,
            options=options,
        )
        return await self.admission.run(key, req, warnings)

    def _after_commit(self, rtype: ResourceType, obj: Obj, old: Obj | None) -> None:
        if rtype.key == CRD_KEY:
            self.store.crd_committed(obj)
        elif rtype.key == NS_KEY and old is None:
            name = obj["metadata"]["name"]
            if self.store.get(SA_KEY, name, "default") is None:
                self._put_new(
                    self.store.types[SA_KEY],
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": "default", "namespace": name},
                    },
                )

    # ----------------------------------------------------------------- create

    def _normalise_body(self, target: Target, body: Any) -> Obj:
        obj = builtins.check_body_object(body)
        api_version = target.api_version
        if obj.get("apiVersion") not in (None, "", api_version):
            raise errors.bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the expected "
                f"API version ({api_version})"
            )
        if obj.get("kind") not in (None, "", target.rtype.kind):
            raise errors.bad_request(
                f"the kind in the data ({obj['kind']}) does not match the expected kind ({target.rtype.kind})"
            )
        obj["apiVersion"] = api_version
        obj["kind"] = target.rtype.kind
        meta = obj["metadata"]
        for unknown in [k for k in meta if k not in OBJECT_META_FIELDS]:
            del meta[unknown]  # ObjectMeta is a typed struct: unknown fields do not survive
        if target.rtype.namespaced:
            if meta.get("namespace") and target.namespace and meta["namespace"] != target.namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            if target.namespace:
                meta["namespace"] = target.namespace
        else:
            meta.pop("namespace", None)
        return obj

    async def _create(
        self, target: Target, body: Any, params: Any, username: str, fields: ssa.FieldManager
    ) -> web.Response:
        obj, warnings = await self.create_object(target, body, params, username, fields)
        return self._json(self._for_version(obj, target), 201, warnings)

    async def create_object(
        self,
        target: Target,
        body: Any,
        params: Any,
        username: str,
        fields: ssa.FieldManager | None = None,
    ) -> tuple[Obj, list[str]]:
        rtype = target.rtype
        dry_run = params.get("dryRun") == "All"
        strict = params.get("fieldValidation") == "Strict"
        warnings: list[str] = []
        obj = self._normalise_body(target, clone(body))
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise errors.internal("resourceVersion should not be set on objects to be created")
        requested_fields = meta.get("managedFields")
        for field in SERVER_MANAGED:
            meta.pop(field, None)
        display_name = meta.get("name") or meta.get("generateName") or ""
        if rtype.deleting:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "create not allowed while custom resource definition is terminating",
            )
        self._check_namespace(target, display_name)
        if rtype.status_subresource:
            obj.pop("status", None)
        builtins.prepare(rtype, obj, None)
        self._check_service_account(target, obj)
        self._shape_custom(target, obj, warnings, strict)
        mutated = await self._admit(MUTATING, target, "CREATE", obj, None, username, warnings, dry_run)
        if mutated is not obj and mutated is not None:
            obj = mutated
            obj["metadata"] = obj.get("metadata") or {}
            meta = obj["metadata"]
            self._shape_custom(target, obj, warnings, False)
        if not meta.get("name") and meta.get("generateName"):
            prefix = str(meta["generateName"])
            for _ in range(100):
                candidate = prefix + "".join(random.choices(NAME_CHARS, k=5))
                if self.store.get(rtype.key, target.namespace, candidate) is None:
                    break
            meta["name"] = candidate
        meta["uid"] = self.store.new_uid()
        meta["creationTimestamp"] = now_iso()
        if rtype.generation:
            meta["generation"] = 1
        if rtype.status_subresource and rtype.builtin:
            builtins.initial_status(rtype, obj)
        self._validate(target, obj, None)
        await self._admit(VALIDATING, target, "CREATE", obj, None, username, warnings, dry_run)
        # Commit: no awaits from here on.
        self._check_namespace(target, meta["name"])
        existing = self.store.get(rtype.key, target.namespace, meta["name"])
        if existing is not None:
            error = errors.already_exists(rtype.plural, rtype.group, meta["name"])
            if existing["metadata"].get("deletionTimestamp"):
                error.message = f"object is being deleted: {error.message}"
            raise error
        if rtype.key == CRD_KEY:
            self._check_crd_conflicts(obj)
        if fields is not None:
            managed = fields.finish(None, obj, requested_fields)
            if managed:
                meta["managedFields"] = managed
        if dry_run:
            return obj, warnings
        stored = self.store.put(rtype, obj, None)
        self._after_commit(rtype, stored, None)
        return self.store.get(rtype.key, target.namespace, meta["name"]) or stored, warnings

    def _check_crd_conflicts(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        existing = self.store.types.get(key)
        if existing is not None and existing.crd_name != crd["metadata"]["name"]:
            raise errors.invalid(
                "CustomResourceDefinition",
                "apiextensions.k8s.io",
                crd["metadata"]["name"],
                [FieldError.invalid("spec.names.plural", key[1], "the name is already in use")],
            )

    # ----------------------------------------------------------------- update & patch

    async def _update(
        self, target: Target, body: Any, params: Any, username: str, fields: ssa.FieldManager
    ) -> web.Response:
        body = builtins.check_body_object(body)
        if body["metadata"].get("name") not in (None, target.name):
            raise errors.bad_request(
                f"the name of the object ({body['metadata']['name']}) does not match the name "
                f"on the URL ({target.name})"
            )

        def replace(current: Obj) -> Obj:
            new = self._normalise_body(target, clone(body))
            if not new["metadata"].get("resourceVersion") and not target.rtype.builtin:
                raise errors.invalid(
                    target.rtype.kind,
                    target.rtype.group,
                    target.name or "",
                    [
                        FieldError.invalid(
                            "metadata.resourceVersion", "0x0", "must be specified for an update"
                        )
                    ],
                )
            return new

        obj, warnings, status = await self.modify(target, replace, params, username, fields)
        return self._json(self._for_version(obj, target), status, warnings)

    async def _patch(
        self, request: web.Request, target: Target, params: Any, username: str, manager: str
    ) -> web.Response:
        content_types = [
            value.split(";")[0].strip().lower() for value in request.headers.getall("Content-Type", [])
        ]
        content_type = next((c for c in content_types if c in PATCH_TYPES), ",".join(content_types))
        kind = PATCH_TYPES.get(content_type)
        if kind is None or (kind == "strategic" and not target.rtype.builtin):
            raise errors.unsupported_media_type(content_type)
        patch = await self._body(request)
        if kind == "json" and not isinstance(patch, list):
            raise errors.bad_request("json patch: the body must be a list of operations")
        if kind != "json" and not isinstance(patch, dict):
            raise errors.bad_request("the patch must be a JSON object")
        ssa.check_options(
            apply=kind == "apply", manager=params.get("fieldManager"), force=params.get("force")
        )
        fields = ssa.FieldManager(
            target.rtype,
            target.version,
            manager,
            target.subresource,
            applied=patch if kind == "apply" else None,
            force=_truthy(params.get("force")),
        )
        if kind == "apply" and target.subresource is None:
            existing = self.store.get(target.rtype.key, target.namespace, target.name or "")
            if existing is None:
                if (patch.get("metadata") or {}).get("managedFields"):
                    raise errors.bad_request("metadata.managedFields must be nil")
                body = clone(patch)
                body.setdefault("metadata", {})["name"] = target.name
                obj, warnings = await self.create_object(target, body, params, username, fields)
                return self._json(self._for_version(obj, target), 201, warnings)

        def apply(current: Obj) -> Obj:
            if kind == "merge":
                return merge_patch(current, patch)
            if kind == "json":
                return json_patch(current, patch)
            if kind == "strategic":
                return strategic_merge(current, patch)
            return fields.apply(current)

        obj, warnings, status = await self.modify(target, apply, params, username, fields)
        return self._json(self._for_version(obj, target), status, warnings)

    async def modify(
        self,
        target: Target,
        change: Callable[[Obj], Obj],
        params: Any,
        username: str,
        fields: ssa.FieldManager | None = None,
    ) -> tuple[Obj, list[str], int]:
        """The shared update pipeline of PUT and PATCH (main resource or a subresource)."""
        rtype = target.rtype
        dry_run = params.get("dryRun") == "All"
        strict = params.get("fieldValidation") == "Strict"
        for _attempt in range(10):
            warnings: list[str] = []
            current = self._get_existing(target)
            current_rv = current["metadata"]["resourceVersion"]
            base = clone(current)
            base["apiVersion"] = target.api_version
            new = change(base)
            new = builtins.check_body_object(new)
            new = self._normalise_body(target, new)
            meta = new["metadata"]
            requested_fields = meta.get("managedFields", _MISSING)
            if requested_fields is _MISSING or json_equal(
                requested_fields, current["metadata"].get("managedFields")
            ):
                requested_fields = None
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != current_rv:
                raise errors.conflict(rtype.plural, rtype.group, target.name or "")
            # Whatever the client sent, the server owns these.
            meta["name"] = current["metadata"]["name"]
            for field in SERVER_MANAGED:
                if field in current["metadata"]:
                    meta[field] = current["metadata"][field]
                else:
                    meta.pop(field, None)
            if current["metadata"].get("namespace"):
                meta["namespace"] = current["metadata"]["namespace"]
            new = self._apply_subresource(target, current, new)
            meta = new["metadata"]
            if current["metadata"].get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(current["metadata"].get("finalizers") or [])
                if added:
                    raise errors.invalid(
                        rtype.kind,
                        rtype.group,
                        target.name or "",
                        [
                            FieldError.forbidden(
                                "metadata.finalizers",
                                "no new finalizers can be added if the object is being deleted",
                            )
                        ],
                    )
            builtins.prepare(rtype, new, current)
            self._shape_custom(target, new, warnings, strict)
            mutated = await self._admit(MUTATING, target, "UPDATE", new, current, username, warnings, dry_run)
            if mutated is not None and mutated is not new:
                new = self._apply_subresource(target, current, mutated)
                self._shape_custom(target, new, warnings, False)
            self._validate(target, new, current)
            await self._admit(VALIDATING, target, "UPDATE", new, current, username, warnings, dry_run)
            # Commit: no awaits from here on.
            latest = self._get_existing(target)
            if latest["metadata"]["resourceVersion"] != current_rv:
                continue  # changed meanwhile: redo with the fresh object
            if fields is not None:
                managed = fields.finish(current, new, requested_fields)
                if managed:
                    new["metadata"]["managedFields"] = managed
                else:
                    new["metadata"].pop("managedFields", None)
            if json_equal(new, current):
                return current, warnings, 200
            if rtype.generation and not json_equal(
                _spec_part(new, skip_status=rtype.status_subresource or rtype.builtin),
                _spec_part(current, skip_status=rtype.status_subresource or rtype.builtin),
            ):
                new["metadata"]["generation"] = int(current["metadata"].get("generation") or 0) + 1
            if rtype.key == CRD_KEY:
                self._check_crd_conflicts(new)
            if dry_run:
                return new, warnings, 200
            stored = self.store.put(rtype, new, current)
            if self.store.get(rtype.key, target.namespace, target.name or "") is not None:
                self._after_commit(rtype, stored, current)
                stored = self.store.get(rtype.key, target.namespace, target.name or "") or stored
            return stored, warnings, 200
        raise errors.conflict(rtype.plural, rtype.group, target.name or "")

    @staticmethod
    def _apply_subresource(target: Target, current: Obj, new: Obj) -> Obj:
        rtype = target.rtype
        if target.subresource == "status":
            result = clone(current)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            return result
        if target.subresource == "finalize":
            result = clone(current)
            result.setdefault("spec", {})["finalizers"] = (new.get("spec") or {}).get("finalizers") or []
            return result
        if rtype.status_subresource:
            if "status" in current:
                new["status"] = clone(current["status"])
            else:
                new.pop("status", None)
        return new

    # ----------------------------------------------------------------- delete

    @staticmethod
    def _delete_options(body: Any, params: Any) -> Obj:
        options = dict(body) if isinstance(body, dict) else {}
        if params.get("propagationPolicy"):
            options["propagationPolicy"] = params["propagationPolicy"]
        if params.get("gracePeriodSeconds"):
            options["gracePeriodSeconds"] = int(params["gracePeriodSeconds"])
        if params.get("dryRun"):
            options["dryRun"] = [params["dryRun"]]
        if options.get("orphanDependents") is True or params.get("orphanDependents") == "true":
            options.setdefault("propagationPolicy", "Orphan")
        return options

    async def _delete(self, target: Target, body: Any, params: Any, username: str) -> web.Response:
        options = self._delete_options(body, params)
        obj, removed, warnings = await self.delete_object(target, options, username)
        rtype = target.rtype
        if not removed:
            # 202 only when the client asked for cascading deletion the old way, as the API
            # server answers (namespaces, finalizers, foreground deletion: 200 otherwise).
            accepted = options.get("orphanDependents") is False
            return self._json(self._for_version(obj, target), 202 if accepted else 200, warnings)
        if rtype.return_deleted:
            return self._json(self._for_version(obj, target), 200, warnings)
        return self._json(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": obj["metadata"]["name"],
                    **({"group": rtype.group} if rtype.group else {}),
                    "kind": rtype.plural,
                    "uid": obj["metadata"]["uid"],
                },
            },
            200,
            warnings,
        )

    async def delete_object(self, target: Target, options: Obj, username: str) -> tuple[Obj, bool, list[str]]:
        rtype = target.rtype
        current = self._get_existing(target)
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != current["metadata"]["uid"]:
            raise errors.conflict(
                rtype.plural,
                rtype.group,
                target.name or "",
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object "
                f"meta: {current['metadata']['uid']}",
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            raise errors.conflict(
                rtype.plural,
                rtype.group,
                target.name or "",
                f"Precondition failed: ResourceVersion in precondition: "
                f"{preconditions['resourceVersion']}, ResourceVersion in object meta: "
                f"{current['metadata']['resourceVersion']}",
            )
        dry_run = "All" in (options.get("dryRun") or [])
        warnings: list[str] = []
        admission_options = {
            k: v
            for k, v in options.items()
            if k in ("propagationPolicy", "gracePeriodSeconds", "preconditions")
        }
        await self._admit(
            MUTATING, target, "DELETE", None, current, username, warnings, dry_run, admission_options
        )
        await self._admit(
            VALIDATING, target, "DELETE", None, current, username, warnings, dry_run, admission_options
        )
        current = self._get_existing(target)
        if dry_run:
            return current, False, warnings
        propagation = options.get("propagationPolicy") or "Background"
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise errors.bad_request(f"propagationPolicy: Unsupported value: {propagation!r}")
        result, removed = self.store.delete(rtype, current, propagation)
        return result, removed, warnings

    async def _delete_collection(self, target: Target, body: Any, params: Any, username: str) -> web.Response:
        labels, fields = self._selectors(target, params)
        options = self._delete_options(body, params)
        names = [
            (o["metadata"].get("namespace"), o["metadata"]["name"])
            for o in self.store.iter_objects(target.rtype.key, target.namespace)
            if match_requirements(labels, o["metadata"].get("labels")) and match_fields(fields, o)
        ]
        warnings: list[str] = []
        for namespace, name in names:
            one = Target(target.rtype, target.version, namespace, name, None)
            try:
                _obj, _removed, more = await self.delete_object(one, options, username)
            except ApiError as e:
                if e.code == 404:
                    continue
                raise
            warnings.extend(more)
        return self._json(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}, 200, warnings
        )

    # ----------------------------------------------------------------- helpers for the wrapper

    async def apply_object(self, obj: Obj) -> Obj:
        """Create or replace an object from a manifest (used for --crds and helpers)."""
        api_version = obj.get("apiVersion", "v1")
        group, _, version = api_version.rpartition("/")
        kind = obj.get("kind")
        rtype = next(
            (t for t in self.store.by_group_version.get((group, version), {}).values() if t.kind == kind),
            None,
        )
        if rtype is None:
            raise errors.bad_request(f"no resource for {api_version} {kind}")
        meta = obj.get("metadata") or {}
        target = Target(rtype, version, meta.get("namespace") if rtype.namespaced else None, None, None)
        existing = self.store.get(rtype.key, target.namespace, meta.get("name", ""))
        user = "system:admin"
        if existing is None:
            created, _ = await self.create_object(target, obj, {}, user)
            return created
        target.name = meta["name"]

        def replace(current: Obj) -> Obj:
            new = clone(obj)
            new.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            return new

        updated, _, _ = await self.modify(target, replace, {}, user)
        return updated
