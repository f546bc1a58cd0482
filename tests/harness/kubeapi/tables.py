"""Server-side printing: ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``.

What ``kubectl get`` shows is computed by the server. As a real API server does:

- custom resources: a ``Name`` column, then the CRD version's ``additionalPrinterColumns``
  (or a single ``Age`` column when it declares none). A column's JSONPath is evaluated on the
  object; no result is an empty cell (kubectl prints ``<none>``). By type: ``string`` prints the
  first result as client-go's JSONPath printer does (lists and maps as compact JSON, numbers and
  booleans as text); ``integer``, ``number`` and ``boolean`` keep a value of that JSON type and
  drop any other; ``date`` turns an RFC 3339 string into a relative age (``5m``, ``3h20m``,
  ``12d``), ``<unknown>`` for an empty one, and ``<invalid>`` for a time that does not parse or
  lies more than a second in the future.
- built-in kinds: the columns of Kubernetes' own printers for Namespace, Pod, Secret,
  ConfigMap, ServiceAccount, Service, Deployment, PodDisruptionBudget, RBAC, Lease, webhook
  configurations and CRDs; any other kind gets the server's default ``Name``, ``Created At``.
- each row carries the object as ``PartialObjectMetadata`` (``includeObject=Metadata``, the
  default), the whole object (``Object``) or nothing (``None``).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any

from .resources import ResourceType

Obj = dict[str, Any]
TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"
NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name automatically. "
    "Name is primarily intended for creation idempotence and configuration definition. Cannot be "
    "updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)


def wants_table(accept: str) -> bool:
    """Whether the Accept header asks for a meta.k8s.io Table (first choice or any choice)."""
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[-1].strip() for p in part.split(";")[1:]}
        if (
            params.get("as") == "Table"
            and params.get("g") == "meta.k8s.io"
            and params.get("v") in ("v1", "v1beta1")
        ):
            return True
    return False


# --------------------------------------------------------------------------- ages


def human_duration(seconds_float: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    seconds = int(seconds_float)  # Go truncates toward zero
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _parse_time(text: str) -> datetime.datetime:
    """RFC 3339 as Go's time.Parse(time.RFC3339) reads it (raises ValueError otherwise)."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", text):
        raise ValueError(text)
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def age(timestamp: Any, now: datetime.datetime | None = None) -> str:
    """A creationTimestamp as kubectl's AGE column shows it."""
    if not timestamp:
        return "<unknown>"
    try:
        moment = _parse_time(str(timestamp))
    except ValueError:
        return "<invalid>"
    now = now or datetime.datetime.now(datetime.UTC)
    return human_duration((now - moment).total_seconds())


# --------------------------------------------------------------------------- JSONPath


_TOKEN = re.compile(
    r"""\.\.|\.(?P<field>[A-Za-z0-9_\-$]+)|\[(?P<index>-?\d+|\*)\]|\[['"](?P<quoted>[^'"]*)['"]\]"""
    r"""|\[\?\(@(?P<fpath>(?:\.[A-Za-z0-9_\-]+)+)\s*(?P<op>==|!=)\s*(?P<value>"[^"]*"|'[^']*'|[^)\s]+)\s*\)\]"""
)


class JSONPathError(ValueError):
    pass


def _steps(path: str) -> list[tuple[str, Any]]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    text = text.removeprefix("$")
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.group(0) == "..":
            raise JSONPathError(f"unsupported JSONPath {path!r} at {text[pos:]!r}")
        if match.group("field") is not None:
            steps.append(("field", match.group("field")))
        elif match.group("quoted") is not None:
            steps.append(("field", match.group("quoted")))
        elif match.group("index") is not None:
            index = match.group("index")
            steps.append(("all", None) if index == "*" else ("index", int(index)))
        else:
            raw = match.group("value")
            value: Any = raw[1:-1] if raw[:1] in "\"'" else json.loads(raw)
            steps.append(("filter", (match.group("fpath")[1:].split("."), match.group("op"), value)))
        pos = match.end()
    return steps


def find_results(obj: Any, path: str) -> list[Any]:
    """The values a simple JSONPath selects (missing keys select nothing)."""
    current = [obj]
    for kind, arg in _steps(path):
        following: list[Any] = []
        for value in current:
            if (kind == "field" and isinstance(value, dict) and arg in value) or (
                kind == "index" and isinstance(value, list) and -len(value) <= arg < len(value)
            ):
                following.append(value[arg])
            elif kind == "all":
                following.extend(
                    value if isinstance(value, list) else (value.values() if isinstance(value, dict) else [])
                )
            elif kind == "filter" and isinstance(value, list):
                keys, op, wanted = arg
                for item in value:
                    found: Any = item
                    for key in keys:
                        found = found.get(key) if isinstance(found, dict) else None
                    if (found == wanted) == (op == "=="):
                        following.append(item)
        current = following
    return current


def print_result(value: Any) -> str:
    """client-go's JSONPath printer: containers as compact JSON, scalars as Go prints them."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def cell_for(column_type: str, value: Any, now: datetime.datetime | None = None) -> Any:
    """apiextensions-apiserver's cellForJSONValue (for every type but string)."""
    if value is None:
        return None
    if column_type == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value)
    elif column_type == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif column_type == "boolean":
        if isinstance(value, bool):
            return value
    elif column_type == "string":
        if isinstance(value, str):
            return value
    elif column_type == "date" and isinstance(value, str):
        if value in ("", "null"):
            return "<unknown>"
        try:
            moment = _parse_time(value)
        except ValueError:
            return "<invalid>"
        now = now or datetime.datetime.now(datetime.UTC)
        return human_duration((now - moment).total_seconds())
    return None


# --------------------------------------------------------------------------- columns


def _column(name: str, type_: str = "string", description: str = "", priority: int = 0, fmt: str = "") -> Obj:
    column: Obj = {
        "name": name,
        "type": type_,
        "format": fmt,
        "description": description,
        "priority": priority,
    }
    return column


NAME = _column("Name", fmt="name", description=NAME_DESCRIPTION)
AGE = _column("Age", description=AGE_DESCRIPTION)
Row = Callable[[Obj], list[Any]]


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _age(obj: Obj) -> str:
    return age(_meta(obj).get("creationTimestamp"))


def _or_none(value: Any) -> str:
    return str(value) if value not in (None, "") else "<none>"


def _selector(selector: Any) -> str:
    if not isinstance(selector, dict):
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        values = ",".join(expr.get("values") or [])
        op = expr.get("operator", "")
        parts.append(
            f"{expr.get('key')} {op.lower()} ({values})"
            if values
            else f"{'!' if op == 'DoesNotExist' else ''}{expr.get('key')}"
        )
    return ",".join(parts) or "<none>"


def _pod_row(pod: Obj) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    containers = spec.get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    reason = status.get("reason") or status.get("phase") or ""
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            reason = waiting["reason"]
    if _meta(pod).get("deletionTimestamp"):
        reason = "Terminating"
    gates = spec.get("readinessGates") or []
    return [
        _meta(pod).get("name"),
        f"{ready}/{len(containers)}",
        reason,
        str(restarts),
        _age(pod),
        _or_none(status.get("podIP")),
        _or_none(spec.get("nodeName")),
        _or_none(status.get("nominatedNodeName")),
        f"0/{len(gates)}" if gates else "<none>",
    ]


def _deployment_row(d: Obj) -> list[Any]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [
        _meta(d).get("name"),
        f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
        int(status.get("updatedReplicas") or 0),
        int(status.get("availableReplicas") or 0),
        _age(d),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _selector(spec.get("selector")),
    ]


def _service_row(svc: Obj) -> list[Any]:
    spec = svc.get("spec") or {}
    ports = [
        f"{p.get('port')}{'/' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    ]
    external = ",".join(spec.get("externalIPs") or []) or "<none>"
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or "<none>"
    return [
        _meta(svc).get("name"),
        spec.get("type", "ClusterIP"),
        _or_none(spec.get("clusterIP")),
        external,
        ",".join(ports) or "<none>",
        _age(svc),
        selector,
    ]


def _pdb_row(pdb: Obj) -> list[Any]:
    spec = pdb.get("spec") or {}
    return [
        _meta(pdb).get("name"),
        str(spec["minAvailable"]) if "minAvailable" in spec else "N/A",
        str(spec["maxUnavailable"]) if "maxUnavailable" in spec else "N/A",
        int((pdb.get("status") or {}).get("disruptionsAllowed") or 0),
        _age(pdb),
    ]


def _binding_row(binding: Obj) -> list[Any]:
    ref = binding.get("roleRef") or {}
    subjects = binding.get("subjects") or []

    def names(kind: str) -> str:
        found = [
            (f"{s.get('namespace')}/{s.get('name')}" if kind == "ServiceAccount" else s.get("name", ""))
            for s in subjects
            if s.get("kind") == kind
        ]
        return ", ".join(found)

    return [
        _meta(binding).get("name"),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        _age(binding),
        names("User"),
        names("Group"),
        names("ServiceAccount"),
    ]


def _created_at(obj: Obj) -> str:
    return str(_meta(obj).get("creationTimestamp") or "")


BUILTIN_COLUMNS: dict[tuple[str, str], tuple[list[Obj], Row]] = {
    ("", "namespaces"): (
        [NAME, _column("Status", description="The status of the namespace"), AGE],
        lambda o: [_meta(o).get("name"), (o.get("status") or {}).get("phase", ""), _age(o)],
    ),
    ("", "pods"): (
        [
            NAME,
            _column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
            _column("Status", description="The aggregate status of the containers in this pod."),
            _column(
                "Restarts", description="The number of times the containers in this pod have been restarted."
            ),
            AGE,
            _column("IP", priority=1, description="IP address allocated to the pod."),
            _column("Node", priority=1, description="NodeName is the node the pod is scheduled onto."),
            _column("Nominated Node", priority=1, description="The node the scheduler nominated."),
            _column("Readiness Gates", priority=1, description="Readiness gates of the pod."),
        ],
        _pod_row,
    ),
    ("", "secrets"): (
        [
            NAME,
            _column("Type", description="Used to facilitate programmatic handling of secret data."),
            _column("Data", description="The number of keys in the Secret's data."),
            AGE,
        ],
        lambda o: [_meta(o).get("name"), o.get("type", ""), len(o.get("data") or {}), _age(o)],
    ),
    ("", "configmaps"): (
        [NAME, _column("Data", description="The number of keys in data and binaryData."), AGE],
        lambda o: [_meta(o).get("name"), len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o)],
    ),
    ("", "serviceaccounts"): (
        [NAME, _column("Secrets", description="Secrets of the ServiceAccount."), AGE],
        lambda o: [_meta(o).get("name"), len(o.get("secrets") or []), _age(o)],
    ),
    ("", "services"): (
        [
            NAME,
            _column("Type"),
            _column("Cluster-IP"),
            _column("External-IP"),
            _column("Port(s)"),
            AGE,
            _column("Selector", priority=1),
        ],
        _service_row,
    ),
    ("apps", "deployments"): (
        [
            NAME,
            _column("Ready", description="Number of the pod with ready state"),
            _column(
                "Up-to-date",
                "integer",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            _column(
                "Available",
                "integer",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            _column("Containers", priority=1, description="Names of each container in the template."),
            _column("Images", priority=1, description="Images referenced by each container in the template."),
            _column("Selector", priority=1, description="Label selector for pods."),
        ],
        _deployment_row,
    ),
    ("policy", "poddisruptionbudgets"): (
        [
            NAME,
            _column("Min Available"),
            _column("Max Unavailable"),
            _column("Allowed Disruptions", "integer"),
            AGE,
        ],
        _pdb_row,
    ),
    ("coordination.k8s.io", "leases"): (
        [NAME, _column("Holder", description="The holder of the lease"), AGE],
        lambda o: [_meta(o).get("name"), (o.get("spec") or {}).get("holderIdentity", ""), _age(o)],
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        [NAME, _column("Created At", "date", AGE_DESCRIPTION)],
        lambda o: [_meta(o).get("name"), _created_at(o)],
    ),
}
_ROLES: tuple[list[Obj], Row] = (
    [NAME, _column("Created At", description=AGE_DESCRIPTION)],
    lambda o: [_meta(o).get("name"), _created_at(o)],
)
_BINDINGS: tuple[list[Obj], Row] = (
    [
        NAME,
        _column("Role"),
        AGE,
        *(_column(name, priority=1) for name in ("Users", "Groups", "ServiceAccounts")),
    ],
    _binding_row,
)
_WEBHOOKS: tuple[list[Obj], Row] = (
    [NAME, _column("Webhooks", "integer"), AGE],
    lambda o: [_meta(o).get("name"), len(o.get("webhooks") or []), _age(o)],
)
for _plural, _columns in (
    ("roles", _ROLES),
    ("clusterroles", _ROLES),
    ("rolebindings", _BINDINGS),
    ("clusterrolebindings", _BINDINGS),
):
    BUILTIN_COLUMNS[("rbac.authorization.k8s.io", _plural)] = _columns
for _plural in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
    BUILTIN_COLUMNS[("admissionregistration.k8s.io", _plural)] = _WEBHOOKS
DEFAULT_COLUMNS: tuple[list[Obj], Row] = (
    [NAME, _column("Created At", "date", AGE_DESCRIPTION)],
    lambda o: [_meta(o).get("name"), _created_at(o)],
)


def crd_columns(printer_columns: list[Obj]) -> tuple[list[Obj], Row]:
    """The Name column and a CRD version's additionalPrinterColumns (Age when there are none)."""
    columns = printer_columns or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    headers = [NAME]
    for col in columns:
        headers.append(
            _column(
                col["name"],
                col.get("type", "string"),
                col.get("description")
                or f"Custom resource definition column (in JSONPath format): {col['jsonPath']}",
                int(col.get("priority") or 0),
                col.get("format", ""),
            )
        )

    def row(obj: Obj) -> list[Any]:
        cells: list[Any] = [_meta(obj).get("name")]
        for col in columns:
            try:
                results = find_results(obj, col["jsonPath"])
            except JSONPathError:
                results = []
            if not results:
                cells.append(None)
            elif col.get("type", "string") == "string":
                cells.append(print_result(results[0]))
            else:
                cells.append(cell_for(col["type"], results[0]))
        return cells

    return headers, row


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def to_table(
    rtype: ResourceType,
    printer_columns: list[Obj] | None,
    objects: list[Obj],
    list_meta: Obj,
    include_object: str | None,
    *,
    no_headers: bool = False,
) -> Obj:
    if rtype.builtin:
        headers, row = BUILTIN_COLUMNS.get(rtype.key, DEFAULT_COLUMNS)
    else:
        headers, row = crd_columns(printer_columns or [])
    include = include_object or "Metadata"
    rows = []
    for obj in objects:
        entry: Obj = {"cells": row(obj)}
        row_object = _row_object(obj, include)
        if row_object is not None:
            entry["object"] = row_object
        rows.append(entry)
    table: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta}
    if not no_headers:
        table["columnDefinitions"] = headers
    table["rows"] = rows
    return table
