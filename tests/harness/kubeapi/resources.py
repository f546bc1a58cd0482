"""Resource types: the built-in ones and those defined by CRDs; discovery documents."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclasses.dataclass
class ResourceType:
    group: str
    versions: list[str]
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: list[str] = dataclasses.field(default_factory=list)
    categories: list[str] = dataclasses.field(default_factory=list)
    status_subresource: bool = False
    builtin: bool = True
    generation: bool = False
    return_deleted: bool = False
    fields: frozenset[str] = COMMON_FIELDS
    extra_subresources: tuple[str, ...] = ()
    schemas: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    printer_columns: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    crd_name: str | None = None
    storage_version: str = ""
    deleting: bool = False  # the CRD is being deleted: no new objects

    def __post_init__(self) -> None:
        if not self.storage_version:
            self.storage_version = self.versions[0]

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def subresources(self) -> list[str]:
        subs = ["status"] if self.status_subresource else []
        return subs + list(self.extra_subresources)

    def discovery(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries.append(main)
        for sub in self.subresources():
            entries.append(
                {
                    "name": f"{self.plural}/{sub}",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


_POD_FIELDS = COMMON_FIELDS | {
    "spec.nodeName",
    "spec.serviceAccountName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
}
_EVENT_FIELDS = COMMON_FIELDS | {
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
}
_EVENTS_K8S_FIELDS = COMMON_FIELDS | {
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "reason",
    "reportingController",
    "type",
}


def builtin_types() -> list[ResourceType]:
    return [
        ResourceType(
            "",
            ["v1"],
            "namespaces",
            "namespace",
            "Namespace",
            False,
            short_names=["ns"],
            status_subresource=True,
            return_deleted=True,
            fields=COMMON_FIELDS | {"status.phase"},
            extra_subresources=("finalize",),
        ),
        ResourceType("", ["v1"], "secrets", "secret", "Secret", True, fields=COMMON_FIELDS | {"type"}),
        ResourceType("", ["v1"], "configmaps", "configmap", "ConfigMap", True, short_names=["cm"]),
        ResourceType(
            "",
            ["v1"],
            "pods",
            "pod",
            "Pod",
            True,
            short_names=["po"],
            categories=["all"],
            status_subresource=True,
            generation=True,
            return_deleted=True,
            fields=_POD_FIELDS,
        ),
        ResourceType(
            "",
            ["v1"],
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            True,
            short_names=["sa"],
            return_deleted=True,
        ),
        ResourceType(
            "",
            ["v1"],
            "services",
            "service",
            "Service",
            True,
            short_names=["svc"],
            categories=["all"],
            status_subresource=True,
            return_deleted=True,
        ),
        ResourceType("", ["v1"], "events", "event", "Event", True, short_names=["ev"], fields=_EVENT_FIELDS),
        ResourceType(
            "events.k8s.io",
            ["v1"],
            "events",
            "event",
            "Event",
            True,
            short_names=["ev"],
            fields=_EVENTS_K8S_FIELDS,
        ),
        ResourceType("coordination.k8s.io", ["v1"], "leases", "lease", "Lease", True),
        ResourceType(
            "apps",
            ["v1"],
            "deployments",
            "deployment",
            "Deployment",
            True,
            short_names=["deploy"],
            categories=["all"],
            status_subresource=True,
            generation=True,
        ),
        ResourceType(
            "policy",
            ["v1"],
            "poddisruptionbudgets",
            "poddisruptionbudget",
            "PodDisruptionBudget",
            True,
            short_names=["pdb"],
            status_subresource=True,
            generation=True,
        ),
        ResourceType(
            "networking.k8s.io",
            ["v1"],
            "networkpolicies",
            "networkpolicy",
            "NetworkPolicy",
            True,
            short_names=["netpol"],
            generation=True,
        ),
        *(
            ResourceType("rbac.authorization.k8s.io", ["v1"], plural, plural[:-1], kind, namespaced)
            for plural, kind, namespaced in (
                ("roles", "Role", True),
                ("rolebindings", "RoleBinding", True),
                ("clusterroles", "ClusterRole", False),
                ("clusterrolebindings", "ClusterRoleBinding", False),
            )
        ),
        ResourceType(
            "apiextensions.k8s.io",
            ["v1"],
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            False,
            short_names=["crd", "crds"],
            categories=["api-extensions"],
            status_subresource=True,
            generation=True,
        ),
        ResourceType(
            "admissionregistration.k8s.io",
            ["v1"],
            "mutatingwebhookconfigurations",
            "mutatingwebhookconfiguration",
            "MutatingWebhookConfiguration",
            False,
            categories=["api-extensions"],
            generation=True,
        ),
        ResourceType(
            "admissionregistration.k8s.io",
            ["v1"],
            "validatingwebhookconfigurations",
            "validatingwebhookconfiguration",
            "ValidatingWebhookConfiguration",
            False,
            categories=["api-extensions"],
            generation=True,
        ),
    ]


_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key for Kubernetes' version priority: GA > beta > alpha, higher numbers first."""
    m = _VERSION.match(version)
    if not m:
        return (3, 0, 0, version)
    major = int(m.group(1))
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor, version)


def crd_to_type(crd: dict[str, Any]) -> ResourceType:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    ordered = sorted(served, key=lambda v: version_priority(v["name"]))
    storage = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), "")
    status = any("status" in (v.get("subresources") or spec.get("subresources") or {}) for v in served)
    schemas = {}
    for v in served:
        schema = ((v.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema")) or {}
        schemas[v["name"]] = schema
    printer_columns = {
        v["name"]: list(v.get("additionalPrinterColumns") or spec.get("additionalPrinterColumns") or [])
        for v in served
    }
    fields = set(COMMON_FIELDS)
    for v in served:
        for selectable in v.get("selectableFields") or []:
            path = selectable.get("jsonPath", "").lstrip(".")
            if path:
                fields.add(path)
    return ResourceType(
        group=spec.get("group", ""),
        versions=[v["name"] for v in ordered] or ["v1"],
        plural=names.get("plural", ""),
        singular=names.get("singular") or names.get("kind", "").lower(),
        kind=names.get("kind", ""),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        status_subresource=status,
        builtin=False,
        generation=True,
        fields=frozenset(fields),
        schemas=schemas,
        printer_columns=printer_columns,
        crd_name=(crd.get("metadata") or {}).get("name"),
        storage_version=storage or (ordered[0]["name"] if ordered else "v1"),
    )
