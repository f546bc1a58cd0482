"""The object store: objects by type/namespace/name, resourceVersions, watch history,
watchers, garbage collection, finalizers, namespace and CRD termination.

Everything here is synchronous and runs on the emulator's event loop only: a request's
check-and-commit happens with no ``await`` in between, so it is atomic.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import uuid
from collections.abc import Iterator
from typing import Any

from . import builtins
from .resources import ResourceType, builtin_types, crd_to_type
from .selectors import FieldRequirement, Requirement, match_fields, match_requirements

Obj = dict[str, Any]
Key = tuple[str, str]  # (group, plural)

CRD_KEY: Key = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY: Key = ("", "namespaces")
SA_KEY: Key = ("", "serviceaccounts")
CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_finalizers(rtype: ResourceType, obj: Obj) -> list[str]:
    """A Namespace's ``spec.finalizers`` (``kubernetes``: the namespace controller's)."""
    if rtype.key != NS_KEY:
        return []
    return list((obj.get("spec") or {}).get("finalizers") or [])


def with_version(obj: Obj, api_version: str) -> Obj:
    if obj.get("apiVersion") == api_version:
        return obj
    return {**obj, "apiVersion": api_version}


class Event:
    __slots__ = ("cache", "key", "obj", "old", "rv", "type")

    def __init__(self, rv: int, key: Key, type_: str, obj: Obj, old: Obj | None) -> None:
        self.rv = rv
        self.key = key
        self.type = type_
        self.obj = obj
        self.old = old
        self.cache: dict[tuple[str, str], bytes] = {}

    def line(self, type_: str, api_version: str) -> bytes:
        cached = self.cache.get((type_, api_version))
        if cached is None:
            cached = encode_event(type_, with_version(self.obj, api_version))
            self.cache[(type_, api_version)] = cached
        return cached


def encode_event(type_: str, obj: Obj) -> bytes:
    return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"


STOP = object()


class Watcher:
    def __init__(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[FieldRequirement],
    ) -> None:
        self.rtype = rtype
        self.api_version = rtype.api_version(version)
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if self.labels and not match_requirements(self.labels, meta.get("labels")):
            return False
        return not (self.fields and not match_fields(self.fields, obj))

    def offer(self, event: Event) -> None:
        now = self.matches(event.obj)
        if event.type == "ADDED":
            type_ = "ADDED" if now else None
        elif event.type == "DELETED":
            type_ = "DELETED" if now else None
        else:
            before = self.matches(event.old)
            if now and before:
                type_ = "MODIFIED"
            elif now:
                type_ = "ADDED"
            elif before:
                type_ = "DELETED"
            else:
                type_ = None
        if type_ is not None:
            self.queue.put_nowait(event.line(type_, self.api_version))

    def send_object(self, type_: str, obj: Obj) -> None:
        self.queue.put_nowait(encode_event(type_, with_version(obj, self.api_version)))

    def stop(self) -> None:
        self.queue.put_nowait(STOP)


class TooOld(Exception):
    pass


class Store:
    def __init__(self, history_size: int = 2000) -> None:
        self.history_size = history_size
        self.types: dict[Key, ResourceType] = {}
        self.by_group_version: dict[tuple[str, str], dict[str, ResourceType]] = {}
        self.objects: dict[Key, dict[str, dict[str, Obj]]] = {}
        self.type_counts: collections.Counter[Key] = collections.Counter()
        self.ns_counts: collections.Counter[str] = collections.Counter()
        self.uids: dict[str, tuple[Key, str, str]] = {}
        self.dependents: dict[str, set[str]] = {}
        self.rv = 0
        self.history: dict[Key, collections.deque[Event]] = {}
        self.evicted: dict[Key, int] = {}
        self.watchers: dict[Key, set[Watcher]] = {}
        for rtype in builtin_types():
            self.register(rtype)

    # ----------------------------------------------------------------- types

    def register(self, rtype: ResourceType) -> None:
        old = self.types.get(rtype.key)
        self.types[rtype.key] = rtype
        self.objects.setdefault(rtype.key, {})
        if old is not None:
            for watcher in self.watchers.get(rtype.key, ()):
                watcher.rtype = rtype
        self._reindex_types()

    def unregister(self, key: Key) -> None:
        self.types.pop(key, None)
        self.objects.pop(key, None)
        self.type_counts.pop(key, None)
        self.history.pop(key, None)
        for watcher in self.watchers.pop(key, set()):
            watcher.stop()
        self._reindex_types()

    def _reindex_types(self) -> None:
        index: dict[tuple[str, str], dict[str, ResourceType]] = {}
        for rtype in self.types.values():
            for version in rtype.versions:
                index.setdefault((rtype.group, version), {})[rtype.plural] = rtype
        self.by_group_version = index

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, in priority order (preferred first)."""
        from .resources import version_priority

        found: dict[str, set[str]] = {}
        for group, version in self.by_group_version:
            found.setdefault(group, set()).add(version)
        return {g: sorted(vs, key=version_priority) for g, vs in found.items()}

    # ----------------------------------------------------------------- reads

    def get(self, key: Key, namespace: str | None, name: str) -> Obj | None:
        return self.objects.get(key, {}).get(namespace or "", {}).get(name)

    def iter_objects(self, key: Key, namespace: str | None) -> Iterator[Obj]:
        buckets = self.objects.get(key, {})
        if namespace is not None:
            yield from buckets.get(namespace, {}).values()
        else:
            for bucket in buckets.values():
                yield from bucket.values()

    def by_uid(self, uid: str) -> tuple[ResourceType, Obj] | None:
        location = self.uids.get(uid)
        if location is None:
            return None
        key, namespace, name = location
        obj = self.get(key, namespace, name)
        rtype = self.types.get(key)
        if obj is None or rtype is None:
            return None
        return rtype, obj

    def namespace_obj(self, name: str) -> Obj | None:
        return self.get(NS_KEY, None, name)

    # ----------------------------------------------------------------- writes

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(self, key: Key, type_: str, obj: Obj, old: Obj | None) -> None:
        event = Event(int(obj["metadata"]["resourceVersion"]), key, type_, obj, old)
        history = self.history.get(key)
        if history is None:
            history = self.history[key] = collections.deque()
        if len(history) >= self.history_size:
            self.evicted[key] = history.popleft().rv
        history.append(event)
        for watcher in list(self.watchers.get(key, ())):
            watcher.offer(event)

    def _index_owners(self, uid: str, old: Obj | None, new: Obj | None) -> None:
        def owners(obj: Obj | None) -> set[str]:
            refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
            return {r["uid"] for r in refs if isinstance(r, dict) and r.get("uid")}

        before, after = owners(old), owners(new)
        for owner in before - after:
            deps = self.dependents.get(owner)
            if deps is not None:
                deps.discard(uid)
                if not deps:
                    del self.dependents[owner]
        for owner in after - before:
            self.dependents.setdefault(owner, set()).add(uid)

    def put(self, rtype: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        """Store a new version of an object (create or update) and notify the watchers.

        Returns the stored object. If the object is being deleted and has no finalizers
        left, it is removed right away (as the real server does).
        """
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._next_rv())
        namespace = meta.get("namespace") or ""
        bucket = self.objects[rtype.key].setdefault(namespace, {})
        bucket[meta["name"]] = obj
        uid = meta["uid"]
        if old is None:
            self.uids[uid] = (rtype.key, namespace, meta["name"])
            self.type_counts[rtype.key] += 1
            if namespace:
                self.ns_counts[namespace] += 1
        self._index_owners(uid, old, obj)
        self._emit(rtype.key, "ADDED" if old is None else "MODIFIED", obj, old)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not _spec_finalizers(rtype, obj):
            self.remove(rtype, obj)
        elif old is None and meta.get("ownerReferences"):
            self._check_orphaned_soon(uid)
        return obj

    def remove(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Remove an object now; garbage-collect its dependents."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or ""
        bucket = self.objects.get(rtype.key, {}).get(namespace, {})
        current = bucket.get(meta["name"])
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            return obj
        del bucket[meta["name"]]
        if not bucket:
            self.objects[rtype.key].pop(namespace, None)
        uid = meta["uid"]
        self.uids.pop(uid, None)
        self.type_counts[rtype.key] -= 1
        if namespace:
            self.ns_counts[namespace] -= 1
        self._index_owners(uid, current, None)
        final = {**current, "metadata": {**current["metadata"], "resourceVersion": str(self._next_rv())}}
        self._emit(rtype.key, "DELETED", final, current)
        if rtype.key == CRD_KEY:
            self.crd_removed(final)
        self._collect_dependents(uid)
        self._after_removal(rtype, final)
        return final

    def mark_deleted(self, rtype: ResourceType, obj: Obj, *, extra_finalizers: tuple[str, ...] = ()) -> Obj:
        """Set deletionTimestamp (keeping the object because of finalizers)."""
        new = dict(obj)
        meta = dict(obj["metadata"])
        new["metadata"] = meta
        meta.setdefault("deletionTimestamp", now_iso())
        meta.setdefault("deletionGracePeriodSeconds", 0)
        finalizers = list(meta.get("finalizers") or [])
        for finalizer in extra_finalizers:
            if finalizer not in finalizers:
                finalizers.append(finalizer)
        if finalizers:
            meta["finalizers"] = finalizers
        if new == obj:
            return obj
        return self.put(rtype, new, obj)

    def delete(self, rtype: ResourceType, obj: Obj, propagation: str = "Background") -> tuple[Obj, bool]:
        """Delete as a DELETE request does. Returns (object, removed_now)."""
        meta = obj["metadata"]
        if rtype.key == NS_KEY:
            return self._terminate_namespace(obj)
        if rtype.key == CRD_KEY:
            return self._terminate_crd(obj)
        uid = meta["uid"]
        if propagation == "Orphan":
            self._orphan_dependents(uid)
        elif propagation == "Foreground" and self.dependents.get(uid):
            marked = self.mark_deleted(rtype, obj, extra_finalizers=("foregroundDeletion",))
            for dep_uid in list(self.dependents.get(uid, ())):
                found = self.by_uid(dep_uid)
                if found is not None:
                    self.delete(found[0], found[1], "Background")
            self._maybe_finish_foreground(uid)
            current = self.get(rtype.key, meta.get("namespace"), meta["name"])
            return (current or marked), current is None
        if meta.get("finalizers"):
            return self.mark_deleted(rtype, obj), False
        return self.remove(rtype, obj), True

    # ----------------------------------------------------------------- garbage collection

    def _orphan_dependents(self, uid: str) -> None:
        for dep_uid in list(self.dependents.get(uid, ())):
            found = self.by_uid(dep_uid)
            if found is None:
                continue
            rtype, dep = found
            refs = [r for r in dep["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            new = {**dep, "metadata": {**dep["metadata"]}}
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self.put(rtype, new, dep)

    def _collect_dependents(self, uid: str) -> None:
        for dep_uid in list(self.dependents.pop(uid, ())):
            self._collect_one(dep_uid)

    def _collect_one(self, dep_uid: str) -> None:
        found = self.by_uid(dep_uid)
        if found is None:
            return
        rtype, dep = found
        refs = dep["metadata"].get("ownerReferences") or []
        if not refs:  # orphaned meanwhile (propagationPolicy Orphan): nothing owns it any more
            return
        alive = [r for r in refs if r.get("uid") in self.uids]
        if alive:
            if len(alive) != len(refs):
                new = {**dep, "metadata": {**dep["metadata"], "ownerReferences": alive}}
                self.put(rtype, new, dep)
            return
        if dep["metadata"].get("deletionTimestamp") and dep["metadata"].get("finalizers"):
            return
        self.delete(rtype, dep, "Background")

    def _check_orphaned_soon(self, uid: str) -> None:
        """A new object whose owners are all absent is collected (asynchronously, like GC)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(0.05, self._collect_one, uid)

    def _maybe_finish_foreground(self, owner_uid: str) -> None:
        if self.dependents.get(owner_uid):
            return
        found = self.by_uid(owner_uid)
        if found is None:
            return
        rtype, owner = found
        finalizers = owner["metadata"].get("finalizers") or []
        if "foregroundDeletion" in finalizers and owner["metadata"].get("deletionTimestamp"):
            new = {**owner, "metadata": {**owner["metadata"]}}
            rest = [f for f in finalizers if f != "foregroundDeletion"]
            if rest:
                new["metadata"]["finalizers"] = rest
            else:
                new["metadata"].pop("finalizers", None)
            self.put(rtype, new, owner)

    def _after_removal(self, rtype: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        for ref in meta.get("ownerReferences") or []:
            if ref.get("uid"):
                self._maybe_finish_foreground(ref["uid"])
        namespace = meta.get("namespace")
        if namespace and self.ns_counts.get(namespace, 0) <= 0:
            self.ns_counts.pop(namespace, None)
            ns = self.namespace_obj(namespace)
            if ns is not None and ns["metadata"].get("deletionTimestamp"):
                self._finish_namespace(ns)
        if not rtype.builtin and rtype.crd_name and self.type_counts.get(rtype.key, 0) <= 0:
            crd = self.get(CRD_KEY, None, rtype.crd_name)
            if crd is not None and crd["metadata"].get("deletionTimestamp"):
                self._finish_crd(crd)

    # ----------------------------------------------------------------- namespaces & CRDs

    def _terminate_namespace(self, ns: Obj) -> tuple[Obj, bool]:
        """DELETE of a Namespace: it turns Terminating; the namespace controller (run soon after,
        on the event loop) deletes its contents, then finalizes and removes it."""
        name = ns["metadata"]["name"]
        if not ns["metadata"].get("deletionTimestamp"):
            new = {
                **ns,
                "metadata": {
                    **ns["metadata"],
                    "deletionTimestamp": now_iso(),
                    "deletionGracePeriodSeconds": 0,
                },
            }
            new["status"] = {**(ns.get("status") or {}), "phase": "Terminating"}
            ns = self.put(self.types[NS_KEY], new, ns)
        current = self.namespace_obj(name)
        if current is None:
            return ns, True
        try:
            asyncio.get_running_loop().call_soon(self.namespace_controller, name)
        except RuntimeError:
            self.namespace_controller(name)
        return current, False

    def namespace_controller(self, name: str) -> None:
        """Delete what a Terminating namespace holds; finalize it once nothing is left."""
        ns = self.namespace_obj(name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        for key, rtype in list(self.types.items()):
            if not rtype.namespaced:
                continue
            for obj in list(self.objects.get(key, {}).get(name, {}).values()):
                if not obj["metadata"].get("deletionTimestamp") or not obj["metadata"].get("finalizers"):
                    self.delete(rtype, obj, "Background")
        ns = self.namespace_obj(name)
        if ns is None:
            return
        if self.ns_counts.get(name, 0) <= 0:
            self._finish_namespace(ns)
            return
        status = {**(ns.get("status") or {}), "conditions": self._namespace_conditions(name)}
        if status != ns.get("status"):
            self.put(self.types[NS_KEY], {**ns, "status": status}, ns)

    def _namespace_conditions(self, name: str) -> list[Obj]:
        """The conditions the namespace controller reports while content is left."""
        remaining: list[str] = []
        finalizers: collections.Counter[str] = collections.Counter()
        for key, rtype in sorted(self.types.items(), key=lambda item: item[1].plural):
            objects = list(self.objects.get(key, {}).get(name, {}).values())
            if objects:
                group = f".{rtype.group}" if rtype.group else "."
                remaining.append(f"{rtype.plural}{group} has {len(objects)} resource instances")
            for obj in objects:
                finalizers.update(obj["metadata"].get("finalizers") or [])
        now = now_iso()

        def condition(type_: str, status: str, reason: str, message: str) -> Obj:
            return {
                "type": type_,
                "status": status,
                "lastTransitionTime": now,
                "reason": reason,
                "message": message,
            }

        conditions = [
            condition(
                "NamespaceDeletionDiscoveryFailure",
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered",
            ),
            condition(
                "NamespaceDeletionGroupVersionParsingFailure",
                "False",
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed",
            ),
            condition(
                "NamespaceDeletionContentFailure",
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization",
            ),
            condition(
                "NamespaceContentRemaining",
                "True",
                "SomeResourcesRemain",
                "Some resources are remaining: " + ", ".join(remaining),
            ),
        ]
        if finalizers:
            held = ", ".join(f"{f} in {n} resource instances" for f, n in sorted(finalizers.items()))
            conditions.append(
                condition(
                    "NamespaceFinalizersRemaining",
                    "True",
                    "SomeFinalizersRemain",
                    f"Some content in the namespace has finalizers remaining: {held}",
                )
            )
        return conditions

    def _finish_namespace(self, ns: Obj) -> Obj:
        """The namespace controller's last step: drop the ``kubernetes`` finalizer (the object
        is removed then, unless metadata.finalizers hold it)."""
        current = self.namespace_obj(ns["metadata"]["name"])
        if current is None:
            return ns
        spec = current.get("spec") or {}
        rest = [f for f in spec.get("finalizers") or [] if f != "kubernetes"]
        if spec.get("finalizers"):
            return self.put(self.types[NS_KEY], {**current, "spec": {**spec, "finalizers": rest}}, current)
        if not current["metadata"].get("finalizers"):
            return self.remove(self.types[NS_KEY], current)
        return current

    def _terminate_crd(self, crd: Obj) -> tuple[Obj, bool]:
        crd_type = self.types[CRD_KEY]
        key = self._crd_key(crd)
        rtype = self.types.get(key) if key else None
        owns = rtype is not None and rtype.crd_name == crd["metadata"]["name"]
        if owns and key is not None and rtype is not None and self.type_counts.get(key, 0) > 0:
            rtype.deleting = True
            crd = self.mark_deleted(crd_type, crd, extra_finalizers=(CRD_CLEANUP_FINALIZER,))
            for obj in list(self.iter_objects(key, None)):
                if not obj["metadata"].get("deletionTimestamp") or not obj["metadata"].get("finalizers"):
                    self.delete(rtype, obj, "Background")
            current = self.get(CRD_KEY, None, crd["metadata"]["name"])
            return (current or crd), current is None
        if crd["metadata"].get("finalizers"):
            return self.mark_deleted(crd_type, crd), False
        return self.remove(crd_type, crd), True

    def _finish_crd(self, crd: Obj) -> None:
        finalizers = [f for f in crd["metadata"].get("finalizers") or [] if f != CRD_CLEANUP_FINALIZER]
        new = {**crd, "metadata": {**crd["metadata"]}}
        if finalizers:
            new["metadata"]["finalizers"] = finalizers
        else:
            new["metadata"].pop("finalizers", None)
        self.put(self.types[CRD_KEY], new, crd)

    @staticmethod
    def _crd_key(crd: Obj) -> Key | None:
        spec = crd.get("spec") or {}
        plural = (spec.get("names") or {}).get("plural")
        if not plural:
            return None
        return (spec.get("group", ""), plural)

    def crd_committed(self, crd: Obj) -> None:
        """(Re-)register the resource type a CRD defines, and set the CRD's status."""
        key = self._crd_key(crd)
        if key is None or crd["metadata"].get("deletionTimestamp"):
            return
        rtype = crd_to_type(crd)
        self.register(rtype)
        status = builtins.crd_status(crd, now_iso())
        if crd.get("status") != status:
            new = {**crd, "status": status}
            self.put(self.types[CRD_KEY], new, crd)

    def crd_removed(self, crd: Obj) -> None:
        key = self._crd_key(crd)
        rtype = self.types.get(key) if key else None
        if key and rtype is not None and rtype.crd_name == crd["metadata"]["name"]:
            self.unregister(key)

    # ----------------------------------------------------------------- watching

    def watch(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[FieldRequirement],
        since: int | None,
        *,
        initial_bookmark: bool,
    ) -> Watcher:
        """Register a watcher, pre-filled with what it must see first.

        ``since=None``: ADDED for every current object (then a bookmark marking the end of
        the initial events if asked). Otherwise the events after ``since`` from the history;
        raises ``TooOld`` when the history no longer reaches back that far.
        """
        watcher = Watcher(rtype, version, namespace, labels, fields)
        key = rtype.key
        if since is None:
            for obj in self.iter_objects(key, namespace):
                if watcher.matches(obj):
                    watcher.send_object("ADDED", obj)
            if initial_bookmark:
                watcher.queue.put_nowait(
                    encode_event("BOOKMARK", self.bookmark(rtype, version, initial_end=True))
                )
        else:
            if since < self.evicted.get(key, 0):
                raise TooOld(f"too old resource version: {since} ({self.evicted[key] + 1})")
            for event in self.history.get(key, ()):
                if event.rv > since:
                    watcher.offer(event)
        self.watchers.setdefault(key, set()).add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watchers = self.watchers.get(watcher.rtype.key)
        if watchers is not None:
            watchers.discard(watcher)

    def bookmark(self, rtype: ResourceType, version: str, *, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(self.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rtype.kind, "apiVersion": rtype.api_version(version), "metadata": meta}

    def compact(self) -> None:
        """Forget the watch history: resuming from any older resourceVersion gets 410 Gone."""
        for key in list(self.history):
            self.history[key].clear()
        for key in self.types:
            self.evicted[key] = self.rv

    def stop_all_watchers(self) -> None:
        for watchers in self.watchers.values():
            for watcher in watchers:
                watcher.stop()

    def count_objects(self) -> int:
        return sum(self.type_counts.values())

    def new_uid(self) -> str:
        return str(uuid.uuid4())
