"""Per-kind behaviour of the built-in resources: defaulting and validation."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from .errors import ApiError, FieldError, bad_request
from .patches import json_equal
from .resources import ResourceType

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)

_SERVICE_IPS = iter(range(10, 65000))


_COMMON_TOP = ("apiVersion", "kind", "metadata")
TOP_LEVEL_FIELDS: dict[tuple[str, str], frozenset[str]] = {
    key: frozenset((*_COMMON_TOP, *fields))
    for key, fields in {
        ("", "secrets"): ("data", "stringData", "type", "immutable"),
        ("", "configmaps"): ("data", "binaryData", "immutable"),
        ("", "namespaces"): ("spec", "status"),
        ("", "pods"): ("spec", "status"),
        ("", "services"): ("spec", "status"),
        ("", "serviceaccounts"): ("secrets", "imagePullSecrets", "automountServiceAccountToken"),
        ("", "events"): (
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "series",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        ),
        ("events.k8s.io", "events"): (
            "eventTime",
            "series",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
            "regarding",
            "related",
            "note",
            "type",
            "deprecatedSource",
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
        ),
        ("apps", "deployments"): ("spec", "status"),
        ("policy", "poddisruptionbudgets"): ("spec", "status"),
        ("networking.k8s.io", "networkpolicies"): ("spec",),
        ("rbac.authorization.k8s.io", "roles"): ("rules",),
        ("rbac.authorization.k8s.io", "clusterroles"): ("rules", "aggregationRule"),
        ("rbac.authorization.k8s.io", "rolebindings"): ("subjects", "roleRef"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"): ("subjects", "roleRef"),
        ("coordination.k8s.io", "leases"): ("spec",),
        ("apiextensions.k8s.io", "customresourcedefinitions"): ("spec", "status"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): ("webhooks",),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): ("webhooks",),
    }.items()
}


def prune_top_level(rtype: ResourceType, obj: dict[str, Any]) -> list[str]:
    """Drop the top-level fields a built-in kind does not have; returns their names."""
    allowed = TOP_LEVEL_FIELDS.get(rtype.key) if rtype.builtin else None
    if allowed is None:
        return []
    dropped = [key for key in obj if key not in allowed]
    for key in dropped:
        del obj[key]
    return dropped


def _is(rtype: ResourceType, group: str, plural: str) -> bool:
    return rtype.group == group and rtype.plural == plural


# --------------------------------------------------------------------------- defaulting


def prepare(rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Apply what the built-in strategies and defaulters do on create/update."""
    if not rtype.builtin:
        return
    if _is(rtype, "", "secrets"):
        _prepare_secret(obj)
    elif _is(rtype, "", "namespaces"):
        name = obj["metadata"].get("name")
        if name:
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        spec = obj.setdefault("spec", {})
        spec.setdefault("finalizers", ["kubernetes"])
    elif _is(rtype, "", "pods"):
        _prepare_pod(obj)
    elif _is(rtype, "", "services"):
        _prepare_service(obj, old)
    elif _is(rtype, "apps", "deployments"):
        _prepare_deployment(obj)
    elif rtype.group == "admissionregistration.k8s.io":
        _prepare_webhooks(obj, mutating=rtype.plural.startswith("mutating"))
    elif _is(rtype, "apiextensions.k8s.io", "customresourcedefinitions"):
        _prepare_crd(obj)


def initial_status(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """The status a real server gives to a new object of a kind with a status subresource."""
    if _is(rtype, "", "namespaces"):
        obj["status"] = {"phase": "Active"}
    elif _is(rtype, "", "pods"):
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj)}
    elif _is(rtype, "", "services"):
        obj["status"] = {"loadBalancer": {}}


def _prepare_secret(obj: dict[str, Any]) -> None:
    string_data = obj.pop("stringData", None)
    data = obj.get("data")
    if data is not None and not isinstance(data, dict):
        raise bad_request('Secret in version "v1" cannot be handled as a Secret: data must be a map')
    for key, value in (data or {}).items():
        if not isinstance(value, str):
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: data[{key}] must be a '
                "base64-encoded string"
            )
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data in data[{key}]'
            ) from None
    if string_data:
        merged = dict(data or {})
        for key, value in string_data.items():
            merged[key] = base64.b64encode(str(value).encode("utf-8")).decode("ascii")
        obj["data"] = merged
    obj.setdefault("type", "Opaque")


def _qos_class(pod: dict[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    if any(
        (c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits")
        for c in containers
    ):
        return "Burstable"
    return "BestEffort"


def _prepare_container(container: dict[str, Any]) -> None:
    image = str(container.get("image", ""))
    tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
    latest = not tagged or image.endswith(":latest")
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def _prepare_pod_spec(spec: dict[str, Any]) -> None:
    """The defaults of a pod spec, in a pod or in a template."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for field in ("containers", "initContainers"):
        for container in spec.get(field) or []:
            if isinstance(container, dict):
                _prepare_container(container)


def _prepare_pod(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    # what the ServiceAccount and Priority admission plugins add to a new pod
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = account
    spec["serviceAccount"] = account
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    _prepare_pod_spec(spec)


def _prepare_deployment(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        if isinstance(template.setdefault("spec", {}), dict):
            _prepare_pod_spec(template["spec"])


def _prepare_service(obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if old is not None and (old.get("spec") or {}).get("clusterIP"):
        spec["clusterIP"] = old["spec"]["clusterIP"]
    elif "clusterIP" not in spec:
        n = next(_SERVICE_IPS)
        spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
    if spec.get("clusterIP") and spec["clusterIP"] != "None":
        spec["clusterIPs"] = [spec["clusterIP"]]
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])


def _prepare_webhooks(obj: dict[str, Any], *, mutating: bool) -> None:
    webhooks = obj.get("webhooks")
    if not isinstance(webhooks, list):
        if webhooks is None:
            obj.pop("webhooks", None)
        return
    for hook in webhooks:
        if not isinstance(hook, dict):
            continue
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        hook.setdefault("timeoutSeconds", 10)
        for key in ("namespaceSelector", "objectSelector"):
            if hook.get(key) is None:
                hook[key] = {}
        if mutating:
            hook.setdefault("reinvocationPolicy", "Never")
        for rule in hook.get("rules") or []:
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")


def _prepare_crd(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    spec.setdefault("conversion", {"strategy": "None"})


def crd_status(crd: dict[str, Any], now: str) -> dict[str, Any]:
    spec = crd.get("spec") or {}
    storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    previous = ((crd.get("status") or {}).get("storedVersions")) or []
    stored = list(dict.fromkeys([*previous, *storage]))
    return {
        "acceptedNames": dict(spec.get("names") or {}),
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now,
            },
        ],
        "storedVersions": stored,
    }


# --------------------------------------------------------------------------- validation


def validate_metadata(rtype: ResourceType, obj: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        errors.append(FieldError.required("metadata.name", "name or generateName is required"))
    else:
        label_names = _is(rtype, "", "namespaces")
        dns1035 = _is(rtype, "", "services")
        if dns1035:
            if len(name) > 63 or not DNS1035_LABEL.match(name):
                errors.append(FieldError.invalid("metadata.name", name, DNS1035_MSG))
        elif label_names:
            if len(name) > 63 or not DNS1123_LABEL.match(name):
                errors.append(FieldError.invalid("metadata.name", name, LABEL_MSG))
        elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            errors.append(FieldError.invalid("metadata.name", name, SUBDOMAIN_MSG))
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        errors.append(FieldError.invalid("metadata.labels", labels, "must be a map"))
        labels = {}
    for key, value in labels.items():
        prefix, _, short = key.rpartition("/")
        if (
            not short
            or len(short) > 63
            or not QUALIFIED_NAME.match(short)
            or (prefix and not DNS1123_SUBDOMAIN.match(prefix))
        ):
            errors.append(
                FieldError.invalid(
                    "metadata.labels",
                    key,
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and "
                    "must start and end with an alphanumeric character",
                )
            )
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            errors.append(FieldError.invalid("metadata.labels", value, LABEL_VALUE_MSG))
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        errors.append(FieldError.invalid("metadata.annotations", annotations, "must be a map of strings"))
    controllers = 0
    for ref in meta.get("ownerReferences") or []:
        if not isinstance(ref, dict):
            errors.append(FieldError.invalid("metadata.ownerReferences", ref, "must be an object"))
            continue
        for field in ("apiVersion", "kind", "name"):
            if not ref.get(field):
                errors.append(
                    FieldError.invalid(f"metadata.ownerReferences.{field}", "", f"{field} must not be empty")
                )
        if not ref.get("uid"):
            errors.append(FieldError.invalid("metadata.ownerReferences.uid", "", "uid must not be empty"))
        if ref.get("controller"):
            controllers += 1
    if controllers > 1:
        errors.append(
            FieldError.invalid(
                "metadata.ownerReferences",
                meta.get("ownerReferences"),
                "Only one reference can have Controller set to true",
            )
        )
    finalizers = meta.get("finalizers") or []
    if not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers):
        errors.append(FieldError.invalid("metadata.finalizers", finalizers, "must be a list of strings"))
    return errors


def validate(rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors = validate_metadata(rtype, obj)
    if not rtype.builtin:
        return errors
    if _is(rtype, "", "pods"):
        errors.extend(_validate_pod(obj, old))
    elif _is(rtype, "", "configmaps"):
        for key, value in (obj.get("data") or {}).items():
            if not isinstance(value, str):
                errors.append(FieldError.invalid(f"data[{key}]", value, "must be a string"))
    elif rtype.group == "admissionregistration.k8s.io":
        errors.extend(_validate_webhooks(obj))
    elif _is(rtype, "apps", "deployments"):
        errors.extend(_validate_deployment(obj))
    elif rtype.group == "rbac.authorization.k8s.io" and rtype.plural.endswith("bindings"):
        errors.extend(_validate_binding(obj, old))
    elif _is(rtype, "apiextensions.k8s.io", "customresourcedefinitions"):
        errors.extend(_validate_crd(obj, old))
    return errors


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _validate_pod(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    spec = obj.get("spec") or {}
    containers = spec.get("containers")
    if not containers:
        errors.append(FieldError.required("spec.containers", ""))
    for field in ("containers", "initContainers"):
        seen: set[str] = set()
        for n, container in enumerate(spec.get(field) or []):
            path = f"spec.{field}[{n}]"
            if not isinstance(container, dict):
                errors.append(FieldError.invalid(path, container, "must be an object"))
                continue
            name = container.get("name")
            if not name:
                errors.append(FieldError.required(f"{path}.name", ""))
            elif not DNS1123_LABEL.match(name) or len(name) > 63:
                errors.append(FieldError.invalid(f"{path}.name", name, LABEL_MSG))
            elif name in seen:
                errors.append(FieldError.duplicate(f"{path}.name", name))
            seen.add(name or "")
            if not container.get("image"):
                errors.append(FieldError.required(f"{path}.image", ""))
    if old is not None:

        def strip(s: dict[str, Any]) -> dict[str, Any]:
            s = {k: v for k, v in s.items() if k not in _POD_MUTABLE}
            for field in ("containers", "initContainers"):
                if isinstance(s.get(field), list):
                    s[field] = [
                        {k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c
                        for c in s[field]
                    ]
            return s

        if not json_equal(strip(spec), strip(old.get("spec") or {})):
            errors.append(
                FieldError.forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                    "`spec.tolerations` (only additions to existing tolerations),"
                    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                    "previously negative)",
                )
            )
    return errors


def _validate_deployment(obj: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        errors.append(FieldError.required("spec.selector", ""))
    elif any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        errors.append(
            FieldError.invalid(
                "spec.template.metadata.labels", labels, "`selector` does not match template `labels`"
            )
        )
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
    if not containers:
        errors.append(FieldError.required("spec.template.spec.containers", ""))
    return errors


def _validate_binding(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    ref = obj.get("roleRef")
    if not isinstance(ref, dict) or not ref.get("kind") or not ref.get("name"):
        errors.append(FieldError.required("roleRef", "kind and name are required"))
    elif ref.get("kind") not in ("Role", "ClusterRole"):
        errors.append(FieldError.not_supported("roleRef.kind", ref.get("kind"), ["ClusterRole", "Role"]))
    if old is not None and not json_equal(old.get("roleRef"), ref):
        errors.append(FieldError.invalid("roleRef", ref, "cannot change roleRef"))
    for n, subject in enumerate(obj.get("subjects") or []):
        if not isinstance(subject, dict) or not subject.get("kind") or not subject.get("name"):
            errors.append(FieldError.required(f"subjects[{n}]", "kind and name are required"))
    return errors


def _validate_webhooks(obj: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    names: set[str] = set()
    for n, hook in enumerate(obj.get("webhooks") or []):
        path = f"webhooks[{n}]"
        if not isinstance(hook, dict):
            errors.append(FieldError.invalid(path, hook, "must be an object"))
            continue
        name = hook.get("name")
        if not name:
            errors.append(FieldError.required(f"{path}.name", ""))
        elif name in names:
            errors.append(FieldError.duplicate(f"{path}.name", name))
        names.add(name or "")
        side_effects = hook.get("sideEffects")
        if side_effects is None:
            errors.append(FieldError.required(f"{path}.sideEffects", ""))
        elif side_effects not in ("None", "NoneOnDryRun"):
            errors.append(
                FieldError.not_supported(f"{path}.sideEffects", side_effects, ["None", "NoneOnDryRun"])
            )
        versions = hook.get("admissionReviewVersions")
        if not versions:
            errors.append(FieldError.required(f"{path}.admissionReviewVersions", ""))
        elif "v1" not in versions and "v1beta1" not in versions:
            errors.append(
                FieldError.invalid(
                    f"{path}.admissionReviewVersions", versions, "must include at least one of v1, v1beta1"
                )
            )
        client = hook.get("clientConfig") or {}
        if bool(client.get("url")) == bool(client.get("service")):
            errors.append(
                FieldError.required(f"{path}.clientConfig", "exactly one of url or service is required")
            )
        if hook.get("failurePolicy") not in ("Ignore", "Fail"):
            errors.append(
                FieldError.not_supported(
                    f"{path}.failurePolicy", hook.get("failurePolicy"), ["Fail", "Ignore"]
                )
            )
        timeout = hook.get("timeoutSeconds")
        if not isinstance(timeout, int) or not 1 <= timeout <= 30:
            errors.append(
                FieldError.invalid(
                    f"{path}.timeoutSeconds", timeout, "the timeout value must be between 1 and 30 seconds"
                )
            )
    return errors


def _validate_crd(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group")
    plural = names.get("plural")
    if not group:
        errors.append(FieldError.required("spec.group", ""))
    if not plural:
        errors.append(FieldError.required("spec.names.plural", ""))
    if not names.get("kind"):
        errors.append(FieldError.required("spec.names.kind", ""))
    name = (obj.get("metadata") or {}).get("name")
    if group and plural and name != f"{plural}.{group}":
        errors.append(FieldError.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errors.append(FieldError.not_supported("spec.scope", spec.get("scope"), ["Cluster", "Namespaced"]))
    versions = spec.get("versions") or []
    if not versions:
        errors.append(
            FieldError.required("spec.versions", "must have exactly one version marked as storage version")
        )
    elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        errors.append(
            FieldError.invalid(
                "spec.versions", versions, "must have exactly one version marked as storage version"
            )
        )
    for n, version in enumerate(versions):
        if not isinstance(version, dict) or not version.get("name"):
            errors.append(FieldError.required(f"spec.versions[{n}].name", ""))
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if not isinstance(schema, dict):
            errors.append(
                FieldError.required(f"spec.versions[{n}].schema.openAPIV3Schema", "schemas are required")
            )
    if old is not None:
        old_spec = old.get("spec") or {}
        if old_spec.get("group") != group:
            errors.append(FieldError.invalid("spec.group", group, "field is immutable"))
        if old_spec.get("scope") != spec.get("scope"):
            errors.append(FieldError.invalid("spec.scope", spec.get("scope"), "field is immutable"))
    return errors


def check_body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
    meta = body.get("metadata")
    if meta is None:
        body["metadata"] = {}
    elif not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    return body
