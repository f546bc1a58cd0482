"""An in-memory index of AssumedRoles, for the pod admission webhook.

The webhook must answer within the API server's timeout and may run on every replica
(docs/architecture.md), so it never lists AssumedRoles per pod: kopf's watch keeps this index current and the
webhook asks it two questions, both O(1): "which AssumedRole is this?" and "which
AssumedRoles of namespace N bind ServiceAccount S?".

Only valid specs are indexed: an AssumedRole whose spec does not parse is treated as absent
(it has no Secret to inject either). One event loop owns it, so there is no locking.
"""

from __future__ import annotations

from typing import Any

from rolecall.model import AssumedRoleSpec, SpecError, parse_assumed_role

_Key = tuple[str, str]


class BindingIndex:
    """AssumedRoles by (namespace, name), and their names by (namespace, ServiceAccount)."""

    def __init__(self) -> None:
        self._specs: dict[_Key, AssumedRoleSpec] = {}
        self._by_subject: dict[_Key, set[str]] = {}

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, key: object) -> bool:
        return key in self._specs

    def put(self, namespace: str, name: str, spec: AssumedRoleSpec | None) -> None:
        """Add or replace one AssumedRole; ``None`` (deleted or invalid) removes it."""
        self.remove(namespace, name)
        if spec is None:
            return
        self._specs[(namespace, name)] = spec
        for subject in spec.subjects:
            if subject.kind == "ServiceAccount":
                self._by_subject.setdefault((namespace, subject.name), set()).add(name)

    def put_body(self, namespace: str, name: str, spec: Any) -> AssumedRoleSpec | None:
        """Parse a raw ``spec`` and index it; an invalid one is removed. Returns what was stored."""
        try:
            parsed: AssumedRoleSpec | None = parse_assumed_role(namespace, name, spec)
        except SpecError:
            parsed = None
        self.put(namespace, name, parsed)
        return parsed

    def remove(self, namespace: str, name: str) -> None:
        old = self._specs.pop((namespace, name), None)
        if old is None:
            return
        for subject in old.subjects:
            key = (namespace, subject.name)
            names = self._by_subject.get(key)
            if names is None:
                continue
            names.discard(name)
            if not names:
                del self._by_subject[key]

    def get(self, namespace: str, name: str) -> AssumedRoleSpec | None:
        return self._specs.get((namespace, name))

    def for_service_account(self, namespace: str, service_account: str) -> list[str]:
        """Names of the AssumedRoles of ``namespace`` whose subjects include the ServiceAccount."""
        return sorted(self._by_subject.get((namespace, service_account), ()))
