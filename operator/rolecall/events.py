"""What each watch event means: cache updates and exactly the scheduler triggers it implies.

kopf delivers raw watch events (``@kopf.on.event`` only: no per-object storage writes) to
:mod:`rolecall.handlers`, which hands them here. An event triggers a binding only when its
outcome may change:

- AssumedRole: a new object, a new ``generation``, deletion, or a status someone else wrote;
- managed Secrets: deleted, or changed by anyone but us (a resourceVersion we did not write);
- AssumedRolePolicy and Namespace labels: only the bindings whose access decision changes;
- new credentials for a binding: the bindings chained through it that wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from rolecall import access
from rolecall import constants as c
from rolecall.index import BindingIndex
from rolecall.model import AssumedRoleSpec, SpecError, parse_assumed_role, parse_policy
from rolecall.state import Cache, Key, slim
from rolecall.status import clean

logger = logging.getLogger("rolecall")


class WatchEvents:
    def __init__(
        self,
        *,
        cache: Cache,
        index: BindingIndex,
        trigger: Callable[[Key], None],
        forget: Callable[[Key], None],
        decide_access: Callable[[str, AssumedRoleSpec], access.Decision],
        write_policy_status: Callable[[dict[str, Any], bool, str], Coroutine[Any, Any, None]],
    ) -> None:
        self.cache = cache
        self.index = index
        self.trigger = trigger
        self.forget = forget
        self.decide_access = decide_access
        self.write_policy_status = write_policy_status
        self.dependents: dict[Key, set[Key]] = {}
        self.armed = False  # access re-evaluation only once the reconciler runs
        self._background: set[asyncio.Task[None]] = set()

    # --- AssumedRoles -------------------------------------------------------------------

    def on_assumed_role(self, event: dict[str, Any]) -> None:
        body = event.get("object") or {}
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event.get("type") == "DELETED":
            self.index.remove(*key)
            self._index_chain(key, None)
            self.cache.assumed_roles.pop(key, None)
            self.cache.forget(key)
            self.forget(key)
            self.trigger(key)  # one last run cleans up metrics
            return
        old = self.cache.assumed_roles.get(key)
        self.cache.assumed_roles[key] = slim(body)
        self.index.put_body(key[0], key[1], body.get("spec"))
        if old is None or old.get("spec") != body.get("spec"):
            self._index_chain(key, body)
        state = self.cache.states.get(key)
        if old is None or state is None:
            self.trigger(key)
            return
        if old.get("metadata", {}).get("generation") != meta.get("generation") or meta.get(
            "deletionTimestamp"
        ):
            self.trigger(key)
            return
        if state.last_status is not None and clean(body.get("status")) != state.last_status:
            # status changed by someone else (or our write raced): rewrite the truth
            state.status_written(None)
            self.trigger(key)

    def _index_chain(self, key: Key, body: dict[str, Any] | None) -> None:
        """Keep (namespace, source name) → chained bindings, so issuing is O(dependents)."""
        for deps in self.dependents.values():
            deps.discard(key)
        source = (((body or {}).get("spec") or {}).get("source") or {}).get("assumedRoleRef") or {}
        if isinstance(source, dict) and isinstance(source.get("name"), str):
            self.dependents.setdefault((key[0], source["name"]), set()).add(key)

    def issued(self, key: Key) -> None:
        """New credentials for ``key``: bindings chained through it that wait for it go now."""
        for other in self.dependents.get(key, ()):
            state = self.cache.states.get(other)
            if state is None or state.attempt > 0 or not state.ready:
                self.trigger(other)

    # --- managed Secrets ----------------------------------------------------------------

    def on_secret(self, event: dict[str, Any]) -> None:
        body = event.get("object") or {}
        meta = body.get("metadata", {})
        owners = [
            str(ref.get("name"))
            for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == c.KIND_ASSUMED_ROLE and ref.get("name")
        ]
        label = (meta.get("labels") or {}).get(c.LABEL_ASSUMED_ROLE)
        namespace = meta.get("namespace", "")
        for owner in dict.fromkeys([*owners, *([label] if label else [])]):
            key = (namespace, owner)
            if key not in self.cache.assumed_roles:
                continue
            state = self.cache.states.get(key)
            if (
                event.get("type") == "DELETED"
                or state is None
                or state.written_rv != meta.get("resourceVersion")
            ):
                if state is not None:
                    state.secret_changed_elsewhere()
                self.trigger(key)

    # --- policies and namespaces --------------------------------------------------------

    def store_policy(self, body: dict[str, Any]) -> tuple[bool, str]:
        name = body.get("metadata", {}).get("name", "")
        try:
            self.cache.policies[name] = parse_policy(name, body.get("spec"))
        except SpecError as exc:
            self.cache.policies.pop(name, None)
            logger.warning("AssumedRolePolicy %s is invalid and admits nothing: %s", name, exc)
            return False, f"invalid, admits nothing: {exc}"
        return True, "the policy is in force"

    def on_policy(self, event: dict[str, Any]) -> None:
        body = event.get("object") or {}
        if event.get("type") == "DELETED":
            self.cache.policies.pop(body.get("metadata", {}).get("name", ""), None)
        else:
            valid, message = self.store_policy(body)
            task = asyncio.get_running_loop().create_task(self.write_policy_status(body, valid, message))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._reevaluate_access(None)

    def store_namespace(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        self.cache.namespace_labels[meta.get("name", "")] = dict(meta.get("labels") or {})

    def on_namespace(self, event: dict[str, Any]) -> None:
        body = event.get("object") or {}
        meta = body.get("metadata", {})
        name = meta.get("name", "")
        labels = dict(meta.get("labels") or {})
        if event.get("type") == "DELETED":
            self.cache.namespace_labels.pop(name, None)
            return
        if self.cache.namespace_labels.get(name) != labels:
            self.cache.namespace_labels[name] = labels
            self._reevaluate_access(name)

    def _reevaluate_access(self, namespace: str | None) -> None:
        """Trigger exactly the bindings whose access decision changed."""
        if not self.armed:
            return
        for key, body in list(self.cache.assumed_roles.items()):
            if namespace is not None and key[0] != namespace:
                continue
            try:
                spec = parse_assumed_role(key[0], key[1], body.get("spec"))
            except SpecError:
                continue
            allowed = self.decide_access(key[0], spec).allowed
            state = self.cache.states.get(key)
            if state is None or state.allowed != allowed:
                self.trigger(key)

    def cancel_background(self) -> None:
        for task in list(self._background):
            task.cancel()
