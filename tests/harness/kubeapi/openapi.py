"""``/openapi/v2`` and ``/openapi/v3``: the documents kubectl and helm read.

What clients do with them (kubectl 1.33, helm 4):

- field validation: before ``apply``/``create`` the client looks in the v3 document of the
  object's group-version for the PATCH operation of its kind (``x-kubernetes-group-version-kind``)
  and its ``fieldValidation`` query parameter; found, it leaves validation to the server;
- ``kubectl apply`` (client-side) computes a strategic merge patch from the v3 schemas'
  ``x-kubernetes-patch-merge-key``/``-strategy`` when the PATCH operation accepts
  ``application/strategic-merge-patch+json``, a JSON merge patch otherwise (custom resources);
- ``kubectl explain`` walks ``components.schemas`` from the schema whose
  ``x-kubernetes-group-version-kind`` names the kind.

The built-in schemas are the official Kubernetes ones, read at run time from the PyPI package
``kubernetes-validate`` (its ``_definitions.json`` is the cluster's OpenAPI definitions turned
into JSON Schema: nullable types, ``$defs`` references, enums on ``apiVersion``/``kind``); this
module turns them back into OpenAPI. Custom resources get the schemas of their CRD versions,
with ``apiVersion``, ``kind`` and ``metadata`` added as a real server does.

``/openapi/v2`` is served as JSON only: client-go asks for the gnostic protobuf form, gets
406 and falls back to v3 for everything above, as it does against a server without v2.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

from .resources import ResourceType

Obj = dict[str, Any]

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
SERVER_MINOR = "1.33"
PATCH_CONTENT_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
_COMMON_REFS = (f"{META}.Status", f"{META}.DeleteOptions", f"{META}.Patch", f"{META}.WatchEvent")


# --------------------------------------------------------------------------- built-in schemas


def _schema_dir() -> pathlib.Path:
    import kubernetes_validate

    base = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    wanted = base / f"v{SERVER_MINOR}.0-local"
    if wanted.is_dir():
        return wanted
    found = sorted(
        (p for p in base.glob("v*-local") if p.is_dir()),
        key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p.name)[:3]),
    )
    if not found:
        raise RuntimeError(f"kubernetes-validate ships no schemas under {base}")
    return found[-1]


def _to_openapi(node: Any, prefix: str, *, in_kind: bool = False) -> Any:
    """Undo the JSON Schema conversion of kubernetes-validate (see the module docstring)."""
    if isinstance(node, list):
        return [_to_openapi(v, prefix) for v in node]
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if len(kinds) == 1:
                out["type"] = kinds[0]
            elif kinds:
                out["type"] = kinds
        elif key == "$ref" and isinstance(value, str):
            out["$ref"] = prefix + value.rsplit("/", 1)[-1]
        elif key == "oneOf" and all(isinstance(v, dict) and set(v) == {"type"} for v in value):
            kinds = {t for v in value for t in (v["type"] if isinstance(v["type"], list) else [v["type"]])}
            if kinds - {"null"} == {"string", "integer"}:
                out["type"] = "string"
                out["format"] = "int-or-string"
            else:
                out["oneOf"] = _to_openapi(value, prefix)
        elif key == "properties" and isinstance(value, dict):
            gvk = "x-kubernetes-group-version-kind" in node
            props: Obj = {}
            for name, sub in value.items():
                converted = _to_openapi(sub, prefix)
                if gvk and name in ("apiVersion", "kind") and isinstance(converted, dict):
                    converted.pop("enum", None)  # added by kubernetes-validate, not in the spec
                props[name] = converted
            out["properties"] = props
        else:
            out[key] = _to_openapi(value, prefix)
    return out


@functools.cache
def builtin_definitions() -> dict[str, Obj]:
    """The official definitions, OpenAPI v2 style (``#/definitions/...`` references)."""
    raw = json.loads((_schema_dir() / "_definitions.json").read_text())
    defs: dict[str, Obj] = raw.get("$defs") or raw.get("definitions") or {}
    return {name: _to_openapi(schema, "#/definitions/") for name, schema in defs.items()}


@functools.cache
def _by_gvk() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in builtin_definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            index.setdefault((gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", "")), name)
    return index


def builtin_definition_name(group: str, version: str, kind: str) -> str | None:
    return _by_gvk().get((group, version, kind))


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _closure(roots: Iterable[str], extra: dict[str, Obj]) -> dict[str, Obj]:
    """The named schemas and every schema they reference (built-in or from ``extra``)."""
    builtin = builtin_definitions()
    found: dict[str, Obj] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        schema = extra.get(name) or builtin.get(name)
        if schema is None:
            continue
        found[name] = schema
        todo.extend(_refs(schema))
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------- custom resources


def crd_definition_names(rtype: ResourceType, version: str) -> tuple[str, str]:
    reversed_group = ".".join(reversed(rtype.group.split(".")))
    base = f"{reversed_group}.{version}.{rtype.kind}"
    return base, base + "List"


def _crd_definitions(rtype: ResourceType, version: str) -> dict[str, Obj]:
    name, list_name = crd_definition_names(rtype, version)
    schema = copy.deepcopy(rtype.schemas.get(version) or {"type": "object"})
    schema.setdefault("type", "object")
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object.",
    }
    props["kind"] = {
        "type": "string",
        "description": "Kind is a string value representing the REST resource.",
    }
    props["metadata"] = {
        "$ref": f"#/definitions/{META}.ObjectMeta",
        "description": "Standard object's metadata. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    }
    gvk = {"group": rtype.group, "version": version, "kind": rtype.kind}
    schema["x-kubernetes-group-version-kind"] = [gvk]
    listing = {
        "description": f"{rtype.kind}List is a list of {rtype.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "items": {
                "type": "array",
                "description": f"List of {rtype.plural}. More info: "
                "https://kubernetes.io/docs/reference/using-api/api-concepts/#collections",
                "items": {"$ref": f"#/definitions/{name}"},
            },
            "kind": {"type": "string"},
            "metadata": {"$ref": f"#/definitions/{META}.ListMeta"},
        },
        "x-kubernetes-group-version-kind": [{**gvk, "kind": rtype.list_kind}],
    }
    return {name: schema, list_name: listing}


def _definition_for(rtype: ResourceType, version: str) -> tuple[str | None, dict[str, Obj]]:
    if rtype.builtin:
        return builtin_definition_name(rtype.group, version, rtype.kind), {}
    extra = _crd_definitions(rtype, version)
    return crd_definition_names(rtype, version)[0], extra


# --------------------------------------------------------------------------- paths


def _operation_id(verb: str, rtype: ResourceType, version: str, namespaced: bool, suffix: str) -> str:
    group = "".join(p.capitalize() for p in re.split(r"[.-]", rtype.group.removesuffix(".k8s.io"))) or "Core"
    scope = "Namespaced" if namespaced else ""
    return f"{verb}{group}{version.capitalize()}{scope}{rtype.kind}{suffix}"


def _param(name: str, where: str, description: str, *, required: bool = False, kind: str = "string") -> Obj:
    return {"name": name, "in": where, "description": description, "required": required, "type": kind}


_DRY_RUN = _param("dryRun", "query", "When present, modifications are not persisted (All).")
_FIELD_MANAGER = _param("fieldManager", "query", "The name of the actor making the change.")
_FIELD_VALIDATION = _param(
    "fieldValidation",
    "query",
    "How to handle unknown or duplicate fields: Ignore, Warn (the default) or Strict.",
)
_FORCE = _param("force", "query", "Force an apply request over conflicting field owners.", kind="boolean")


def _operations(rtype: ResourceType, version: str, ref: str) -> dict[str, dict[str, Obj]]:
    """{path: {method: neutral operation}} for one resource type in one version."""
    base = f"/apis/{rtype.group}/{version}" if rtype.group else f"/api/{version}"
    gvk = {"group": rtype.group, "version": version, "kind": rtype.kind}
    list_ref = (
        ref + "List"
        if not rtype.builtin
        else (builtin_definition_name(rtype.group, version, rtype.list_kind) or "")
    )
    patch_types = [t for t in PATCH_CONTENT_TYPES if rtype.builtin or "strategic" not in t]
    ns_param = _param(
        "namespace", "path", "object name and auth scope, such as for teams and projects", required=True
    )
    name_param = _param("name", "path", f"name of the {rtype.kind}", required=True)
    scope = [ns_param] if rtype.namespaced else []
    collection = (
        f"{base}/namespaces/{{namespace}}/{rtype.plural}" if rtype.namespaced else f"{base}/{rtype.plural}"
    )

    def op(
        verb: str,
        action: str,
        suffix: str,
        params: list[Obj],
        *,
        body: str | None = None,
        returns: str = ref,
        consumes: list[str] | None = None,
    ) -> Obj:
        return {
            "operationId": _operation_id(verb, rtype, version, rtype.namespaced, suffix),
            "description": f"{action} {rtype.kind}",
            "parameters": params,
            "body": body,
            "consumes": consumes or ["application/json", "application/yaml"],
            "returns": returns,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        }

    paths: dict[str, dict[str, Obj]] = {
        collection: {
            "get": op("list", "list", "", [*scope]),
            "post": op("create", "post", "", [*scope, _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION], body=ref),
            "delete": op(
                "deletecollection",
                "deletecollection",
                "",
                [*scope, _DRY_RUN],
                body=f"{META}.DeleteOptions",
                returns=f"{META}.Status",
            ),
        },
        f"{collection}/{{name}}": {
            "get": op("read", "get", "", [*scope, name_param]),
            "put": op(
                "replace",
                "put",
                "",
                [*scope, name_param, _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                body=ref,
            ),
            "patch": op(
                "patch",
                "patch",
                "",
                [*scope, name_param, _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION, _FORCE],
                body=f"{META}.Patch",
                consumes=patch_types,
            ),
            "delete": op(
                "delete",
                "delete",
                "",
                [*scope, name_param, _DRY_RUN],
                body=f"{META}.DeleteOptions",
                returns=f"{META}.Status",
            ),
        },
    }
    paths[collection]["get"]["returns"] = list_ref
    if rtype.namespaced:
        paths[f"{base}/{rtype.plural}"] = {
            "get": {**op("list", "list", "ForAllNamespaces", []), "returns": list_ref}
        }
        paths[f"{base}/{rtype.plural}"]["get"]["operationId"] = _operation_id(
            "list", rtype, version, False, "ForAllNamespaces"
        )
    for sub in rtype.subresources():
        suffix = sub.capitalize()
        paths[f"{collection}/{{name}}/{sub}"] = {
            "get": op("read", "get", suffix, [*scope, name_param]),
            "put": op(
                "replace",
                "put",
                suffix,
                [*scope, name_param, _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                body=ref,
            ),
            "patch": op(
                "patch",
                "patch",
                suffix,
                [*scope, name_param, _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION, _FORCE],
                body=f"{META}.Patch",
                consumes=patch_types,
            ),
        }
    return paths


def _v3_operation(neutral: Obj) -> Obj:
    params = []
    for p in neutral["parameters"]:
        params.append(
            {
                "name": p["name"],
                "in": p["in"],
                "description": p["description"],
                **({"required": True} if p["required"] else {}),
                "schema": {"type": p["type"], **({"uniqueItems": True} if p["in"] == "query" else {})},
            }
        )
    schema = {"$ref": f"#/components/schemas/{neutral['returns']}"}
    result: Obj = {
        "description": neutral["description"],
        "operationId": neutral["operationId"],
        "parameters": params,
        "responses": {
            "200": {
                "description": "OK",
                "content": {t: {"schema": schema} for t in ("application/json", "application/yaml")},
            },
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": neutral["x-kubernetes-action"],
        "x-kubernetes-group-version-kind": neutral["x-kubernetes-group-version-kind"],
    }
    if neutral["body"]:
        body_schema = {"$ref": f"#/components/schemas/{neutral['body']}"}
        result["requestBody"] = {
            "content": {t: {"schema": body_schema} for t in neutral["consumes"]},
            "required": neutral["x-kubernetes-action"] != "delete",
        }
    return result


def _v2_operation(neutral: Obj) -> Obj:
    params = [dict(p) for p in neutral["parameters"]]
    if neutral["body"]:
        params.append(
            {
                "name": "body",
                "in": "body",
                "required": neutral["x-kubernetes-action"] != "delete",
                "schema": {"$ref": f"#/definitions/{neutral['body']}"},
            }
        )
    return {
        "description": neutral["description"],
        "operationId": neutral["operationId"],
        "consumes": neutral["consumes"],
        "produces": ["application/json", "application/yaml"],
        "schemes": ["https"],
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "schema": {"$ref": f"#/definitions/{neutral['returns']}"}},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": neutral["x-kubernetes-action"],
        "x-kubernetes-group-version-kind": neutral["x-kubernetes-group-version-kind"],
    }


def _v3_schema(node: Any) -> Any:
    """v2 → v3 references; a reference with siblings becomes ``allOf`` as kube-openapi writes it."""
    if isinstance(node, list):
        return [_v3_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _v3_schema(v) for k, v in node.items() if k != "$ref"}
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = "#/components/schemas/" + ref.rsplit("/", 1)[-1]
        if out:
            out["allOf"] = [{"$ref": target}]
            out.setdefault("default", {})
        else:
            out["$ref"] = target
    return out


# --------------------------------------------------------------------------- documents


def _group_version_parts(
    types: Iterable[ResourceType], version: str
) -> tuple[dict[str, dict[str, Obj]], dict[str, Obj]]:
    paths: dict[str, dict[str, Obj]] = {}
    roots: list[str] = list(_COMMON_REFS)
    extra: dict[str, Obj] = {}
    for rtype in sorted(types, key=lambda t: t.plural):
        name, more = _definition_for(rtype, version)
        if name is None:
            continue
        extra.update(more)
        roots.append(name)
        ops = _operations(rtype, version, name)
        for method_map in ops.values():
            for neutral in method_map.values():
                roots.append(neutral["returns"])
        paths.update(ops)
    return paths, _closure(roots, extra)


def group_version_v3(types: Iterable[ResourceType], group: str, version: str) -> Obj:
    paths, definitions = _group_version_parts(types, version)
    title = f"Kubernetes {group or 'core'}/{version}"
    return {
        "openapi": "3.0.0",
        "info": {"title": title, "version": "unversioned"},
        "paths": {
            path: {method: _v3_operation(op) for method, op in ops.items()}
            for path, ops in sorted(paths.items())
        },
        "components": {"schemas": {name: _v3_schema(schema) for name, schema in definitions.items()}},
    }


def swagger_v2(types_by_gv: dict[tuple[str, str], Iterable[ResourceType]]) -> Obj:
    paths: dict[str, Obj] = {}
    definitions: dict[str, Obj] = {}
    for (_group, version), types in sorted(types_by_gv.items()):
        gv_paths, gv_defs = _group_version_parts(types, version)
        for path, ops in gv_paths.items():
            paths[path] = {method: _v2_operation(op) for method, op in ops.items()}
        definitions.update(gv_defs)
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": f"v{SERVER_MINOR}.0"},
        "paths": dict(sorted(paths.items())),
        "definitions": dict(sorted(definitions.items())),
    }


def gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def digest(doc: Obj) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()


class OpenAPIDocuments:
    """Builds and caches the documents; a group-version is rebuilt when its types change."""

    def __init__(self) -> None:
        self._v3: dict[tuple[str, str], tuple[str, bytes, str]] = {}

    @staticmethod
    def _fingerprint(types: Iterable[ResourceType]) -> str:
        parts = [
            (t.plural, t.kind, t.namespaced, t.builtin, t.status_subresource, t.extra_subresources, t.schemas)
            for t in sorted(types, key=lambda t: t.plural)
        ]
        return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def v3(
        self, by_group_version: dict[tuple[str, str], dict[str, ResourceType]], group: str, version: str
    ) -> tuple[bytes, str]:
        """The JSON bytes of one group-version's document and its hash."""
        types = list(by_group_version[(group, version)].values())
        fingerprint = self._fingerprint(types)
        cached = self._v3.get((group, version))
        if cached is None or cached[0] != fingerprint:
            doc = group_version_v3(types, group, version)
            body = json.dumps(doc, separators=(",", ":")).encode()
            cached = (fingerprint, body, hashlib.sha512(body).hexdigest().upper())
            self._v3[(group, version)] = cached
        return cached[1], cached[2]

    def v3_root(self, by_group_version: dict[tuple[str, str], dict[str, ResourceType]]) -> Obj:
        paths: Obj = {}
        for group, version in sorted(by_group_version):
            _body, hash_ = self.v3(by_group_version, group, version)
            path = gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={hash_}"}
        return {"paths": paths}

    @staticmethod
    def v2(by_group_version: dict[tuple[str, str], dict[str, ResourceType]]) -> Obj:
        return swagger_v2({gv: list(types.values()) for gv, types in by_group_version.items()})


def serve(
    documents: OpenAPIDocuments,
    by_group_version: dict[tuple[str, str], dict[str, ResourceType]],
    segments: list[str],
    accept: str,
) -> tuple[int, bytes, str]:
    """(status, body, content type) for a GET under /openapi/."""
    json_type = "application/json"
    if segments == ["openapi", "v2"]:
        wanted = [a.split(";")[0].strip().lower() for a in accept.split(",") if a.strip()]
        if wanted and not any(w in ("application/json", "*/*", "application/*") for w in wanted):
            return 406, _not_acceptable(accept), json_type
        return 200, json.dumps(documents.v2(by_group_version), separators=(",", ":")).encode(), json_type
    if segments == ["openapi", "v3"]:
        return 200, json.dumps(documents.v3_root(by_group_version)).encode(), json_type
    if len(segments) >= 4 and segments[:2] == ["openapi", "v3"]:
        rest = segments[2:]
        if rest[0] == "api" and len(rest) == 2:
            key = ("", rest[1])
        elif rest[0] == "apis" and len(rest) == 3:
            key = (rest[1], rest[2])
        else:
            key = ("", "")
        if key in by_group_version:
            body, _hash = documents.v3(by_group_version, *key)
            return 200, body, json_type
    return 404, b"404 page not found\n", "text/plain"


def _not_acceptable(accept: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"only application/json is served here, not {accept!r} (no protobuf OpenAPI v2)",
            "reason": "NotAcceptable",
            "code": 406,
        }
    ).encode()
