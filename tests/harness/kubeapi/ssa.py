"""Field management: ``metadata.managedFields`` and server-side apply.

What the API server's field manager does, for what kubectl (``apply --server-side`` and the
client-side ``apply``), helm 4 (server-side apply by default) and kopf need:

- every write records its manager in ``metadata.managedFields``: ``manager``, ``operation``
  (``Apply`` for an apply patch, ``Update`` for POST, PUT and the other patches), ``apiVersion``,
  ``time``, ``fieldsType: FieldsV1``, ``fieldsV1`` in the ``f:``/``k:``/``v:`` notation, and
  ``subresource`` for writes to ``/status``. The manager is the ``fieldManager`` query
  parameter, or the User-Agent up to its first ``/`` (``kubectl``, ``helm``, ``kopf``);
- an Update takes the fields it adds or changes (defaulted fields included) and takes them
  away from every other manager; fields it removes leave every manager;
- an Apply merges the applied configuration into the object: maps field by field, lists by
  their merge keys where the schema says so (``x-kubernetes-list-type: map`` with
  ``x-kubernetes-list-map-keys``, or a built-in kind's ``patchMergeKey``: containers and env by
  name, ports by containerPort and protocol, …), sets of scalars (``listType: set``, finalizers)
  by value, every other list as a whole (atomic). Changing a field another manager owns
  answers 409 Conflict with the API server's message (``Apply failed with 1 conflict: conflict
  with "kubectl-client-side-apply" using v1: .data.a``) unless ``force=true``, which takes the
  field over. The applier then owns exactly what it applied; the fields it applied last time
  and no longer does are removed from the object unless another manager owns them;
- ``metadata.managedFields`` sent by a client replaces the recorded ones (kubectl's upgrade
  from client-side to server-side apply does that); ``[]`` or ``[{}]`` clears them.

The schemas are the built-in kinds' official OpenAPI definitions (``openapi.py``) and the CRDs'
``openAPIV3Schema``; where there is none (``x-kubernetes-preserve-unknown-fields``), maps are
merged field by field and lists are atomic, as the API server's deduced schema does.

Known differences from the real algorithm (structured-merge-diff): there is no per-version
conversion of the field sets (a manager's fields are kept in the version it wrote them); a
``null`` in an applied configuration is ignored rather than owned; duplicate keys in an
associative list are not refused; after every write, fields that no longer exist leave every
manager; changes made by mutating admission webhooks are attributed to the request's manager
on an Update and to nobody on an Apply; managedFields are not capped in size.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from collections.abc import Iterator
from typing import Any

from . import openapi
from .errors import ApiError, FieldError, invalid
from .patches import clone, json_equal
from .resources import ResourceType

Obj = dict[str, Any]
Path = tuple[str, ...]  # elements in the FieldsV1 notation: "f:spec", 'k:{"name":"a"}', 'v:"x"'

_STRIPPED_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def manager_from_user_agent(user_agent: str) -> str:
    """The API server's default manager name: the User-Agent up to its first ``/``."""
    prefix = user_agent.split("/", 1)[0]
    return "".join(c for c in prefix if c.isprintable())[:128]


def check_options(
    *, apply: bool, manager: str | None, force: str | None, options: str = "PatchOptions"
) -> None:
    """Validate the field manager parameters (of PatchOptions, CreateOptions, UpdateOptions)."""
    found: list[FieldError] = []
    if apply and not manager:
        found.append(FieldError.required("fieldManager", "is required for apply patch"))
    if manager is not None and len(manager) > 128:
        found.append(FieldError.too_long("fieldManager", 128))
    if manager and not all(c.isprintable() for c in manager):
        found.append(FieldError.invalid("fieldManager", manager, "must only contain printable characters"))
    if force is not None and not apply:
        found.append(FieldError.forbidden("force", "may not be specified for non-apply patch"))
    if force is not None and force not in ("true", "false"):
        found.append(FieldError.invalid("force", force, "must be true or false"))
    if found:
        raise invalid(options, "meta.k8s.io", "", found)


# --------------------------------------------------------------------------- schemas


class Schema:
    """One node of an OpenAPI schema, with ``$ref`` resolved against ``definitions``."""

    __slots__ = ("defs", "node")

    def __init__(self, node: Any, defs: dict[str, Obj]) -> None:
        self.defs = defs
        self.node = self._resolve(node if isinstance(node, dict) else {})

    def _resolve(self, node: Obj) -> Obj:
        for _ in range(20):
            ref = node.get("$ref")
            if not isinstance(ref, str):
                all_of = node.get("allOf")
                if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
                    ref = all_of[0].get("$ref")
            if not isinstance(ref, str):
                return node
            node = self.defs.get(ref.rsplit("/", 1)[-1]) or {}
        return node

    def field(self, name: str) -> Schema:
        props = self.node.get("properties") or {}
        if name in props:
            return Schema(props[name], self.defs)
        extra = self.node.get("additionalProperties")
        return Schema(extra if isinstance(extra, dict) else {}, self.defs)

    def items(self) -> Schema:
        return Schema(self.node.get("items") or {}, self.defs)

    def list_keys(self) -> list[str] | None:
        """``[keys...]`` for an associative list, ``[]`` for a set, ``None`` for atomic."""
        list_type = self.node.get("x-kubernetes-list-type")
        if list_type == "map":
            return [str(k) for k in self.node.get("x-kubernetes-list-map-keys") or []] or None
        if list_type == "set":
            return []
        if list_type == "atomic":
            return None
        strategy = str(self.node.get("x-kubernetes-patch-strategy") or "")
        if "merge" in strategy.split(","):
            key = self.node.get("x-kubernetes-patch-merge-key")
            return [str(key)] if key else []
        return None

    def atomic_map(self) -> bool:
        return self.node.get("x-kubernetes-map-type") == "atomic"


META_DEF = f"{openapi.META}.ObjectMeta"


@functools.cache
def _builtin_root(group: str, version: str, kind: str) -> Obj:
    name = openapi.builtin_definition_name(group, version, kind)
    return openapi.builtin_definitions().get(name or "", {})


def schema_for(rtype: ResourceType, version: str) -> Schema:
    defs = openapi.builtin_definitions()
    if rtype.builtin:
        return Schema(_builtin_root(rtype.group, version, rtype.kind), defs)
    root = dict(rtype.schemas.get(version) or {})
    root["properties"] = {
        **(root.get("properties") or {}),
        "metadata": {"$ref": f"#/definitions/{META_DEF}"},
    }
    return Schema(root, defs)


# --------------------------------------------------------------------------- walking values


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _key_element(item: Any, keys: list[str], index: int) -> str:
    if isinstance(item, dict):
        present = {k: item[k] for k in keys if k in item}
        if present:
            return "k:" + _json(present)
    return f"i:{index}"


def _kind(value: Any, schema: Schema) -> str:
    if isinstance(value, dict):
        return "leaf" if schema.atomic_map() else "map"
    if isinstance(value, list):
        keys = schema.list_keys()
        if keys is None:
            return "leaf"
        return "assoc" if keys else "set"
    return "leaf"


def _children(value: Any, schema: Schema) -> Iterator[tuple[str, Any, Schema]]:
    kind = _kind(value, schema)
    if kind == "map":
        for name, child in value.items():
            if child is not None:
                yield "f:" + name, child, schema.field(name)
    elif kind == "assoc":
        keys = schema.list_keys() or []
        items = schema.items()
        for n, item in enumerate(value):
            yield _key_element(item, keys, n), item, items
    elif kind == "set":
        items = schema.items()
        for item in value:
            yield "v:" + _json(item), item, items


def all_paths(value: Any, schema: Schema, path: Path = (), out: set[Path] | None = None) -> set[Path]:
    """Every path of a value (its own and all its descendants')."""
    if out is None:
        out = set()
    if path:
        out.add(path)
    for element, child, child_schema in _children(value, schema):
        all_paths(child, child_schema, (*path, element), out)
    return out


@dataclasses.dataclass
class Comparison:
    added: set[Path] = dataclasses.field(default_factory=set)
    modified: set[Path] = dataclasses.field(default_factory=set)
    removed: set[Path] = dataclasses.field(default_factory=set)


def compare(
    old: Any, new: Any, schema: Schema, path: Path = (), result: Comparison | None = None
) -> Comparison:
    if result is None:
        result = Comparison()
    old_kind, new_kind = _kind(old, schema), _kind(new, schema)
    if old_kind != new_kind or old_kind == "leaf":
        if not json_equal(old, new):
            result.modified.add(path)
            if old_kind != new_kind:
                for element, child, child_schema in _children(new, schema):
                    all_paths(child, child_schema, (*path, element), result.added)
        return result
    before = {e: (v, s) for e, v, s in _children(old, schema)}
    for element, child, child_schema in _children(new, schema):
        child_path = (*path, element)
        if element in before:
            compare(before.pop(element)[0], child, child_schema, child_path, result)
        else:
            all_paths(child, child_schema, child_path, result.added)
    result.removed.update((*path, e) for e in before)
    return result


def _applied_set(applied: Any, merged: Any, schema: Schema, path: Path, out: set[Path]) -> None:
    """The fields an applied configuration sets: its leaves and list items (not its maps),
    with list items named by the keys they have in ``merged`` (defaulted key fields)."""
    kind = _kind(applied, schema)
    if kind == "leaf" or (kind == "map" and not applied):
        if path:
            out.add(path)
        return
    if kind == "map":
        for name, child in applied.items():
            if child is None:
                continue
            target = merged.get(name) if isinstance(merged, dict) else None
            _applied_set(child, target, schema.field(name), (*path, "f:" + name), out)
        return
    if kind == "set":
        out.update((*path, "v:" + _json(item)) for item in applied)
        return
    keys = schema.list_keys() or []
    items = schema.items()
    live = merged if isinstance(merged, list) else []
    for n, item in enumerate(applied):
        match = _find_item(live, item, keys)
        element = _key_element(live[match], keys, match) if match is not None else _key_element(item, keys, n)
        item_path = (*path, element)
        out.add(item_path)
        _applied_set(item, live[match] if match is not None else None, items, item_path, out)


def _find_item(items: list[Any], item: Any, keys: list[str]) -> int | None:
    """The position of the item with the same keys (the keys ``item`` leaves out match anything)."""
    if not isinstance(item, dict):
        return None
    present = [k for k in keys if k in item]
    if not present:
        return None
    partial: int | None = None
    for n, candidate in enumerate(items):
        if not isinstance(candidate, dict):
            continue
        if all(k in candidate and json_equal(candidate[k], item[k]) for k in present):
            if all(json_equal(candidate.get(k), item.get(k)) for k in keys):
                return n
            if partial is None:
                partial = n
    return partial


def merge(live: Any, applied: Any, schema: Schema) -> Any:
    """The object with an applied configuration merged in (nulls in ``applied`` are ignored)."""
    kind = _kind(applied, schema)
    if kind == "map" and isinstance(live, dict):
        result = dict(live)
        for name, value in applied.items():
            if value is None:
                continue
            result[name] = merge(live.get(name), value, schema.field(name))
        return result
    if kind == "assoc" and isinstance(live, list):
        keys = schema.list_keys() or []
        items_schema = schema.items()
        merged_list = [clone(i) for i in live]
        for item in applied:
            match = _find_item(merged_list, item, keys)
            if match is None:
                merged_list.append(_without_nulls(item))
            else:
                merged_list[match] = merge(merged_list[match], item, items_schema)
        return merged_list
    if kind == "set" and isinstance(live, list):
        merged_set = [clone(i) for i in live]
        merged_set.extend(clone(i) for i in applied if not any(json_equal(i, x) for x in merged_set))
        return merged_set
    return _without_nulls(applied)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def remove_path(obj: Any, path: Path, schema: Schema) -> None:
    """Remove the field or list item at ``path`` from ``obj`` (in place), if it is there."""
    if not path:
        return
    parent: Any = obj
    node = schema
    for element in path[:-1]:
        found = next(((v, s) for e, v, s in _children(parent, node) if e == element), None)
        if found is None:
            return
        parent, node = found
    last = path[-1]
    if isinstance(parent, dict) and last.startswith("f:"):
        parent.pop(last[2:], None)
    elif isinstance(parent, list):
        keep = [v for (e, v, _s) in _children(parent, node) if e != last]
        if len(keep) != len(parent):
            parent[:] = keep


# --------------------------------------------------------------------------- FieldsV1


def _element_order(element: str) -> tuple[int, str]:
    return ("fkvi".find(element[0]), element)


def to_fields_v1(paths: set[Path]) -> Obj:
    tree: Obj = {}
    members: set[Path] = set()
    for path in paths:
        node = tree
        for element in path:
            node = node.setdefault(element, {})
        members.add(path)

    def render(node: Obj, path: Path) -> Obj:
        out: Obj = {}
        if node and path in members:
            out["."] = {}
        for element in sorted(node, key=_element_order):
            out[element] = render(node[element], (*path, element))
        return out

    return render(tree, ())


def from_fields_v1(tree: Any, path: Path = (), out: set[Path] | None = None) -> set[Path]:
    if out is None:
        out = set()
    if not isinstance(tree, dict):
        return out
    for element, child in tree.items():
        if element == ".":
            if path:
                out.add(path)
            continue
        child_path = (*path, element)
        if not child:
            out.add(child_path)
        else:
            from_fields_v1(child, child_path, out)
    return out


def path_string(path: Path) -> str:
    """A path as the API server prints it in conflicts: ``.spec.containers[name="a"].image``."""
    parts: list[str] = []
    for element in path:
        kind, text = element[0], element[2:]
        if kind == "f":
            parts.append("." + text)
        elif kind == "k":
            fields = json.loads(text)
            parts.append("[" + ",".join(f"{k}={_json(v)}" for k, v in fields.items()) + "]")
        elif kind == "v":
            parts.append("[=" + text + "]")
        else:
            parts.append("[" + text + "]")
    return "".join(parts)


# --------------------------------------------------------------------------- managers


@dataclasses.dataclass
class Entry:
    manager: str
    operation: str
    api_version: str
    subresource: str
    fields: set[Path]
    time: str

    @property
    def identity(self) -> tuple[str, str, str, str]:
        # An applier is the same manager whatever version it applies with.
        version = "" if self.operation == "Apply" else self.api_version
        return (self.manager, self.operation, version, self.subresource)

    def describe(self) -> str:
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text

    def to_json(self) -> Obj:
        out: Obj = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(self.fields),
        }
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def decode_entries(raw: Any) -> list[Entry]:
    entries: list[Entry] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        entries.append(
            Entry(
                manager=str(item.get("manager") or ""),
                operation=str(item.get("operation") or "Update"),
                api_version=str(item.get("apiVersion") or ""),
                subresource=str(item.get("subresource") or ""),
                fields=from_fields_v1(item.get("fieldsV1")),
                time=str(item.get("time") or now_rfc3339()),
            )
        )
    return entries


def _is_reset(raw: Any) -> bool:
    return isinstance(raw, list) and (raw == [] or raw == [{}])


def encode_entries(entries: list[Entry], previous: list[Entry]) -> list[Obj]:
    """Entries with fields, sorted as the API server sorts them; an unchanged entry keeps its time."""
    before = {e.identity: e for e in previous}
    kept: list[Entry] = []
    for entry in entries:
        if not entry.fields:
            continue
        old = before.get(entry.identity)
        if old is not None and old.fields == entry.fields and old.api_version == entry.api_version:
            entry.time = old.time
        kept.append(entry)
    kept.sort(key=lambda e: (e.operation, e.time, e.manager, e.api_version, e.subresource))
    return [e.to_json() for e in kept]


def _strip(obj: Obj, rtype: ResourceType, subresource: str) -> Obj:
    """The part of an object whose fields are managed: no apiVersion, kind, server metadata;
    only the status on /status, no status on the main resource when it has a status subresource."""
    if subresource == "status":
        return {"status": obj["status"]} if "status" in obj else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    if rtype.status_subresource:
        out.pop("status", None)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in _STRIPPED_META}
        if meta:
            out["metadata"] = meta
        else:
            out.pop("metadata")
    return out


def _managed_view(obj: Obj) -> Obj:
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in _STRIPPED_META}
    return out


def _covers(owned: set[Path], path: Path) -> bool:
    """Whether ``owned`` holds ``path`` or a path below it."""
    size = len(path)
    return any(p[:size] == path for p in owned)


class FieldManager:
    """The field management of one write request."""

    def __init__(
        self,
        rtype: ResourceType,
        version: str,
        manager: str,
        subresource: str | None,
        *,
        applied: Obj | None = None,
        force: bool = False,
    ) -> None:
        self.rtype = rtype
        self.api_version = rtype.api_version(version)
        self.schema = schema_for(rtype, version)
        self.manager = manager
        self.subresource = subresource or ""
        self.applied = applied
        self.force = force
        self._pending: list[Entry] | None = None

    @property
    def operation(self) -> str:
        return "Apply" if self.applied is not None else "Update"

    def _me(self, entries: list[Entry]) -> Entry:
        me = Entry(self.manager, self.operation, self.api_version, self.subresource, set(), now_rfc3339())
        for entry in entries:
            if entry.identity == me.identity:
                entry.api_version = self.api_version
                entry.time = me.time
                return entry
        entries.append(me)
        return me

    def apply(self, current: Obj) -> Obj:
        """Merge the applied configuration into ``current``: conflicts, ownership, removals."""
        assert self.applied is not None
        if (self.applied.get("metadata") or {}).get("managedFields"):
            raise ApiError(400, "BadRequest", "metadata.managedFields must be nil")
        applied = _strip(self.applied, self.rtype, self.subresource)
        live = _strip(current, self.rtype, self.subresource)
        merged_part = merge(live, applied, self.schema)
        entries = decode_entries(current["metadata"].get("managedFields"))
        me = self._me(entries)
        previous = set(me.fields) if me.operation == "Apply" else set()
        wanted: set[Path] = set()
        _applied_set(applied, merged_part, self.schema, (), wanted)
        changed = compare(live, merged_part, self.schema).modified
        conflicts: list[tuple[Entry, Path]] = []
        for entry in entries:
            if entry is me:
                continue
            for path in sorted(entry.fields & changed):
                conflicts.append((entry, path))
        if conflicts and not self.force:
            raise _conflict_error(conflicts)
        for entry, path in conflicts:
            entry.fields.discard(path)
        # What stays owned (by another manager, or by this one below the path) is kept.
        kept: set[Path] = wanted.union(*(e.fields for e in entries if e is not me))
        for path in sorted(previous - wanted, key=len):
            if not _covers(kept, path):
                remove_path(merged_part, path, self.schema)
        self._pending = entries
        result = {**current, **{k: v for k, v in merged_part.items() if k != "metadata"}}
        for key in [k for k in live if k not in merged_part and k != "metadata"]:
            result.pop(key, None)
        meta = dict(current["metadata"])
        if not self.subresource:
            for key in [k for k in meta if k not in _STRIPPED_META]:
                del meta[key]
            meta.update(merged_part.get("metadata") or {})
        wanted_version = (self.applied.get("metadata") or {}).get("resourceVersion")
        if wanted_version:
            meta["resourceVersion"] = wanted_version  # an apply may be conditional, like an update
        result["metadata"] = meta
        if "apiVersion" in self.applied:
            result["apiVersion"] = self.applied["apiVersion"]
        return result

    def finish(self, current: Obj | None, new: Obj, requested: Any) -> list[Obj]:
        """The managedFields of ``new`` (the object about to be stored, after admission)."""
        live_entries = decode_entries((current or {}).get("metadata", {}).get("managedFields"))
        new_part = _strip(new, self.rtype, self.subresource)
        if self.applied is not None:
            entries = self._pending if self._pending is not None else []
            me = self._me(entries)
            me.fields = set()
            _applied_set(
                _strip(self.applied, self.rtype, self.subresource), new_part, self.schema, (), me.fields
            )
        else:
            if self.subresource or requested is None:
                entries = live_entries
            elif _is_reset(requested):
                entries = []
            else:
                entries = decode_entries(requested) or live_entries
            old_part = _strip(current, self.rtype, self.subresource) if current is not None else {}
            diff = compare(old_part, new_part, self.schema)
            touched = diff.added | diff.modified
            if touched:
                me = self._me(entries)
                for entry in entries:
                    if entry is not me:
                        entry.fields -= touched
                me.fields |= touched
        existing = all_paths(_managed_view(new), self.schema)
        existing.discard(("f:metadata",))  # never owned as such, like the fields stripped from it
        for entry in entries:
            entry.fields &= existing
        return encode_entries(entries, live_entries)


def _conflict_error(conflicts: list[tuple[Entry, Path]]) -> ApiError:
    causes = [
        {
            "type": "FieldManagerConflict",
            "message": f"conflict with {entry.describe()}",
            "field": path_string(path),
        }
        for entry, path in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.describe()}: {path_string(path)}"
    else:
        by_manager: dict[str, list[str]] = {}
        for entry, path in conflicts:
            by_manager.setdefault(entry.describe(), []).append(path_string(path))
        lines: list[str] = []
        for name in sorted(by_manager):
            lines.append(f"conflicts with {name}:")
            lines.extend(f"- {p}" for p in by_manager[name])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})
