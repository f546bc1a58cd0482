"""Authentication and RBAC authorization, as kube-apiserver does them.

Authentication (:meth:`Auth.authenticate`): a bearer token names a user and groups — static
tokens (the emulator's admin token is in ``system:masters``), or ServiceAccount tokens issued by
the TokenRequest subresource ``POST .../serviceaccounts/<name>/token`` (``kubectl create
token``), valid while that ServiceAccount (same uid) exists and the token has not expired.
A ServiceAccount user is ``system:serviceaccount:<ns>:<name>`` in the groups
``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and ``system:authenticated``.
An unknown token answers 401. Without a token: 401 with ``require_auth``; on the plain-http
listener the request is otherwise the old insecure port's ``system:unsecured`` in
``system:masters`` (kubectl and helm never send credentials over plain http, so this keeps them
working); over TLS it is ``system:anonymous`` in ``system:unauthenticated``, for RBAC to judge.
``Impersonate-User``/``Impersonate-Group`` headers are honoured after an ``impersonate`` check.

Authorization (:meth:`Auth.authorize`): ``system:masters`` may do anything; everyone else gets
what the rules of the Roles and ClusterRoles bound to them grant (verbs, apiGroups, resources
with ``<resource>/<subresource>`` and ``*/<subresource>``, resourceNames, nonResourceURLs with a
trailing ``*``, ``*`` wildcards), evaluated on request attributes parsed from the URL the way
the API server's RequestInfo does (``get``/``list``/``watch``/``create``/``update``/``patch``/
``delete``/``deletecollection``, ``metadata.name`` field selectors naming the object, the
namespace of ``/api/v1/namespaces/<ns>`` being ``<ns>``). A denial is the API server's 403
``Forbidden`` Status, word for word. Aggregated ClusterRoles (``aggregationRule``) get their
rules filled in from the ClusterRoles their selectors match, as the aggregation controller does
(here synchronously, before the next request). The bootstrap roles a fresh cluster has are
created at start: ``cluster-admin``, ``admin``/``edit``/``view`` (aggregated; their
``system:aggregate-to-*`` parts cover the resources this emulator serves), ``system:discovery``,
``system:basic-user``, ``system:public-info-viewer``, bound as on a real cluster.

Reviews: authorization.k8s.io/v1 SelfSubjectAccessReview, SubjectAccessReview,
LocalSubjectAccessReview, SelfSubjectRulesReview (``kubectl auth can-i [--list]``) and
authentication.k8s.io/v1 SelfSubjectReview (``kubectl auth whoami``) and TokenReview (the
operator authenticates ``/metrics`` scrapers with it).

Not modelled: escalation and bind checks on writing roles and bindings, legacy token Secrets,
the Node authorizer, webhook authorizers.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from . import errors
from .errors import ApiError, FieldError
from .resources import ResourceType
from .selectors import label_selector_object_matcher
from .store import SA_KEY, Store, now_iso

Obj = dict[str, Any]

GROUP = "rbac.authorization.k8s.io"
AUTHZ_GROUP = "authorization.k8s.io"
AUTHN_GROUP = "authentication.k8s.io"
ROLE_KEY = (GROUP, "roles")
ROLE_BINDING_KEY = (GROUP, "rolebindings")
CLUSTER_ROLE_KEY = (GROUP, "clusterroles")
CLUSTER_ROLE_BINDING_KEY = (GROUP, "clusterrolebindings")
RBAC_KEYS = (ROLE_KEY, ROLE_BINDING_KEY, CLUSTER_ROLE_KEY, CLUSTER_ROLE_BINDING_KEY)

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
UNSECURED = "system:unsecured"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"

NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
TOKEN_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
TOKEN_DEFAULT_SECONDS = 3600
TOKEN_MIN_SECONDS = 600


# --------------------------------------------------------------------------- users


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    def info(self) -> Obj:
        info: Obj = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            info["uid"] = self.uid
        return info


def service_account_username(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def service_account_user(namespace: str, name: str, uid: str = "") -> User:
    groups = (SA_GROUP, f"{SA_GROUP}:{namespace}", AUTHENTICATED)
    return User(service_account_username(namespace, name), groups, uid)


def parse_service_account_username(username: str) -> tuple[str, str] | None:
    if not username.startswith(SA_PREFIX):
        return None
    namespace, sep, name = username[len(SA_PREFIX) :].partition(":")
    return (namespace, name) if sep and namespace and name and ":" not in name else None


def static_user(name: str, groups: Iterable[str] = ()) -> User:
    """A user of a static token: its groups plus ``system:authenticated``."""
    found = [g for g in groups if g != AUTHENTICATED]
    return User(name, (*found, AUTHENTICATED))


@dataclasses.dataclass(frozen=True)
class ServiceAccountToken:
    namespace: str
    name: str
    uid: str  # the ServiceAccount's uid: the token dies with it
    expires: float
    audiences: tuple[str, ...]


# --------------------------------------------------------------------------- request attributes


@dataclasses.dataclass(frozen=True)
class Attributes:
    """What RBAC decides on (k8s.io/apiserver authorizer.Attributes)."""

    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "t")


def request_attributes(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """The authorization attributes of a request, parsed like the API server's RequestInfo."""
    parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
    verb = METHOD_VERBS.get(method.upper(), "")
    if len(parts) < 3 or parts[0] not in ("api", "apis") or (parts[0] == "apis" and len(parts) < 4):
        return Attributes(verb=method.lower(), resource_request=False, path=path)
    if parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    else:
        group, version, rest = parts[1], parts[2], parts[3:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if _truthy(query.get("watch")) else "list"
        name = _exact_name(query.get("fieldSelector") or "")
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb, True, path, group, version, namespace, resource, subresource, name)


def _exact_name(selector: str) -> str:
    """``metadata.name=<name>`` (or ``==``) in a field selector names the object."""
    for term in selector.split(","):
        if "!=" in term:
            continue
        key, sep, value = term.partition("=")
        if sep and key.strip() == "metadata.name":
            return value.removeprefix("=").strip()
    return ""


def forbidden_message(user: User, attrs: Attributes) -> str:
    """The authorizer's part of a Forbidden message (responsewriters.forbiddenMessage)."""
    if not attrs.resource_request:
        return f'User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'User "{user.name}" cannot {attrs.verb} resource "{attrs.combined_resource}" '
        f'in API group "{attrs.api_group}" {where}'
    )


def forbidden(user: User, attrs: Attributes, reason: str = "") -> ApiError:
    """The 403 Status the API server answers for a request RBAC does not allow."""
    message = forbidden_message(user, attrs)
    if reason:
        message = f"{message}: {reason}"
    if not attrs.resource_request:
        return ApiError(403, "Forbidden", f"forbidden: {message}", {})
    qualified = errors.qualified(attrs.resource, attrs.api_group)
    head = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    details: Obj = {}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.api_group:
        details["group"] = attrs.api_group
    details["kind"] = attrs.resource
    return ApiError(403, "Forbidden", f"{head} is forbidden: {message}", details)


# --------------------------------------------------------------------------- rule evaluation


def _has(values: Iterable[str] | None, wanted: str) -> bool:
    values = values or ()
    return "*" in values or wanted in values


def rule_allows(attrs: Attributes, rule: Mapping[str, Any]) -> bool:
    """rbac.RuleAllows: does one PolicyRule allow the request?"""
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        for url in rule.get("nonResourceURLs") or ():
            if url == "*" or url == attrs.path or (url.endswith("*") and attrs.path.startswith(url[:-1])):
                return True
        return False
    if not _has(rule.get("apiGroups"), attrs.api_group):
        return False
    combined = attrs.combined_resource
    resources = rule.get("resources") or ()
    if not any(
        r in ("*", combined) or (attrs.subresource and r == f"*/{attrs.subresource}") for r in resources
    ):
        return False
    names = rule.get("resourceNames") or ()
    return not names or attrs.name in names


def _applies(subject: Mapping[str, Any], user: User, namespace: str) -> bool:
    kind = subject.get("kind")
    name = subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        sa_namespace = subject.get("namespace") or namespace
        return bool(sa_namespace) and user.name == service_account_username(sa_namespace, str(name))
    return False


def describe_subject(subject: Mapping[str, Any], binding_namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return f'ServiceAccount "{subject.get("name")}/{namespace}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


@dataclasses.dataclass
class Source:
    """Where a rule came from, worded as the RBAC authorizer's allow reason."""

    binding: Obj
    subject: Mapping[str, Any]

    def __str__(self) -> str:
        meta = self.binding["metadata"]
        ref = self.binding.get("roleRef") or {}
        namespace = meta.get("namespace") or ""
        if namespace:
            return (
                f'RoleBinding "{meta["name"]}/{namespace}" of {ref.get("kind")} "{ref.get("name")}" '
                f"to {describe_subject(self.subject, namespace)}"
            )
        return (
            f'ClusterRoleBinding "{meta["name"]}" of {ref.get("kind")} "{ref.get("name")}" '
            f"to {describe_subject(self.subject, '')}"
        )


@dataclasses.dataclass
class Decision:
    allowed: bool
    reason: str


@dataclasses.dataclass
class Denial:
    """A request RBAC refused (kept for tests: an operator's 403s fail its test)."""

    user: str
    groups: tuple[str, ...]
    verb: str
    method: str
    path: str
    message: str


def _aggregate(errs: list[str]) -> str:
    return errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]"


# --------------------------------------------------------------------------- resource types


class CreateOnlyType(ResourceType):
    """A resource that is only POSTed (reviews): discovery says so."""

    def discovery(self) -> list[dict[str, Any]]:
        entry = super().discovery()[0]
        entry["verbs"] = ["create"]
        return [entry]


class ServiceAccountType(ResourceType):
    """ServiceAccounts with the TokenRequest subresource ``serviceaccounts/token``."""

    def discovery(self) -> list[dict[str, Any]]:
        entries = [e for e in super().discovery() if e["name"] != "serviceaccounts/token"]
        entries.append(
            {
                "name": "serviceaccounts/token",
                "singularName": "",
                "namespaced": True,
                "group": AUTHN_GROUP,
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }
        )
        return entries


REVIEWS = {
    (AUTHZ_GROUP, "selfsubjectaccessreviews"): "SelfSubjectAccessReview",
    (AUTHZ_GROUP, "subjectaccessreviews"): "SubjectAccessReview",
    (AUTHZ_GROUP, "localsubjectaccessreviews"): "LocalSubjectAccessReview",
    (AUTHZ_GROUP, "selfsubjectrulesreviews"): "SelfSubjectRulesReview",
    (AUTHN_GROUP, "selfsubjectreviews"): "SelfSubjectReview",
    (AUTHN_GROUP, "tokenreviews"): "TokenReview",
}
NAMESPACED_REVIEWS = frozenset({"localsubjectaccessreviews"})


def register_types(store: Store) -> None:
    """Register RBAC, the review resources and ``serviceaccounts/token`` (kept here, in one
    place; a type the store already has from elsewhere is left as it is)."""
    rbac = [
        ResourceType(GROUP, ["v1"], "roles", "role", "Role", True, return_deleted=False),
        ResourceType(GROUP, ["v1"], "rolebindings", "rolebinding", "RoleBinding", True),
        ResourceType(GROUP, ["v1"], "clusterroles", "clusterrole", "ClusterRole", False),
        ResourceType(GROUP, ["v1"], "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", False),
    ]
    for (group, plural), kind in REVIEWS.items():
        singular = kind.lower()
        rbac.append(CreateOnlyType(group, ["v1"], plural, singular, kind, plural in NAMESPACED_REVIEWS))
    for rtype in rbac:
        if rtype.key not in store.types:
            store.register(rtype)
    sa = store.types[SA_KEY]
    if not isinstance(sa, ServiceAccountType):
        fields = {f.name: getattr(sa, f.name) for f in dataclasses.fields(sa)}
        fields["extra_subresources"] = (*sa.extra_subresources, "token")
        store.register(ServiceAccountType(**fields))


# --------------------------------------------------------------------------- bootstrap policy

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def _cluster_role(name: str, rules: list[Obj], labels: dict[str, str] | None = None, **extra: Any) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {**_BOOTSTRAP_LABELS, **(labels or {})},
            "annotations": _AUTOUPDATE,
        },
        "rules": rules,
        **extra,
    }


def _aggregated(name: str, label: str, labels: dict[str, str] | None = None) -> Obj:
    selector = {"matchLabels": {f"{GROUP}/aggregate-to-{label}": "true"}}
    return _cluster_role(name, [], labels, aggregationRule={"clusterRoleSelectors": [selector]})


def _binding(name: str, role: str, groups: list[str]) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(_BOOTSTRAP_LABELS), "annotations": _AUTOUPDATE},
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups],
    }


def bootstrap_policy() -> list[Obj]:
    """The RBAC objects a fresh cluster has, for the resources this emulator serves."""
    public_urls = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
    discovery_urls = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", *public_urls]
    to_admin = {f"{GROUP}/aggregate-to-admin": "true"}
    to_edit = {f"{GROUP}/aggregate-to-edit": "true"}
    to_view = {f"{GROUP}/aggregate-to-view": "true"}
    return [
        _cluster_role(
            "cluster-admin",
            [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        ),
        _cluster_role("system:discovery", [{"nonResourceURLs": discovery_urls, "verbs": ["get"]}]),
        _cluster_role("system:public-info-viewer", [{"nonResourceURLs": public_urls, "verbs": ["get"]}]),
        _cluster_role(
            "system:basic-user",
            [
                {
                    "apiGroups": [AUTHZ_GROUP],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                },
                {"apiGroups": [AUTHN_GROUP], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ],
        ),
        _aggregated("admin", "admin"),
        _aggregated("edit", "edit", to_admin),
        _aggregated("view", "view", to_edit),
        _cluster_role(
            "system:aggregate-to-admin",
            [
                {"apiGroups": [AUTHZ_GROUP], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
                {"apiGroups": [GROUP], "resources": ["rolebindings", "roles"], "verbs": [*_WRITE, *_READ]},
            ],
            to_admin,
        ),
        _cluster_role(
            "system:aggregate-to-edit",
            [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": _READ},
                {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": _WRITE},
                {
                    "apiGroups": [""],
                    "resources": ["configmaps", "events", "secrets", "serviceaccounts", "services"],
                    "verbs": _WRITE,
                },
                {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
            ],
            to_edit,
        ),
        _cluster_role(
            "system:aggregate-to-view",
            [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps", "pods", "serviceaccounts", "services", "services/status"],
                    "verbs": _READ,
                },
                {
                    "apiGroups": [""],
                    "resources": ["events", "pods/status", "namespaces/status"],
                    "verbs": _READ,
                },
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": _READ},
            ],
            to_view,
        ),
        _binding("cluster-admin", "cluster-admin", [MASTERS]),
        _binding("system:discovery", "system:discovery", [AUTHENTICATED]),
        _binding("system:basic-user", "system:basic-user", [AUTHENTICATED]),
        _binding("system:public-info-viewer", "system:public-info-viewer", [AUTHENTICATED, UNAUTHENTICATED]),
    ]


# --------------------------------------------------------------------------- validation


def validate(rtype: ResourceType, obj: Obj, old: Obj | None) -> list[FieldError]:
    """What the API server's validation says about RBAC objects (the parts tests meet)."""
    if rtype.group != GROUP:
        return []
    found: list[FieldError] = []
    if rtype.plural in ("roles", "clusterroles"):
        for i, rule in enumerate(obj.get("rules") or []):
            at = f"rules[{i}]"
            if not rule.get("verbs"):
                found.append(FieldError.required(f"{at}.verbs", "verbs must contain at least one value"))
            if rule.get("nonResourceURLs"):
                if rtype.plural == "roles":
                    found.append(
                        FieldError.invalid(
                            f"{at}.nonResourceURLs",
                            rule["nonResourceURLs"],
                            "namespaced rules cannot apply to non-resource URLs",
                        )
                    )
                if rule.get("resources") or rule.get("apiGroups"):
                    found.append(
                        FieldError.invalid(
                            f"{at}.nonResourceURLs",
                            rule["nonResourceURLs"],
                            "rules cannot apply to both regular resources and non-resource URLs",
                        )
                    )
            elif not rule.get("resources"):
                found.append(
                    FieldError.required(f"{at}.resources", "resource rules must supply at least one resource")
                )
            elif rule.get("apiGroups") is None:
                found.append(
                    FieldError.required(
                        f"{at}.apiGroups", "resource rules must supply at least one api group"
                    )
                )
        return found
    ref = obj.get("roleRef") or {}
    kinds = ["Role", "ClusterRole"] if rtype.plural == "rolebindings" else ["ClusterRole"]
    if ref.get("apiGroup") != GROUP:
        found.append(FieldError.not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [GROUP]))
    if ref.get("kind") not in kinds:
        found.append(FieldError.not_supported("roleRef.kind", ref.get("kind", ""), kinds))
    if not ref.get("name"):
        found.append(FieldError.required("roleRef.name"))
    if old is not None and (old.get("roleRef") or {}) != ref:
        found.append(FieldError.invalid("roleRef", ref, "cannot change roleRef"))
    for i, subject in enumerate(obj.get("subjects") or []):
        at = f"subjects[{i}]"
        kind = subject.get("kind")
        if kind not in ("User", "Group", "ServiceAccount"):
            found.append(FieldError.not_supported(f"{at}.kind", kind, ["ServiceAccount", "User", "Group"]))
        if not subject.get("name"):
            found.append(FieldError.required(f"{at}.name"))
        if (
            kind == "ServiceAccount"
            and rtype.plural == "clusterrolebindings"
            and not subject.get("namespace")
        ):
            found.append(FieldError.required(f"{at}.namespace"))
    return found


# --------------------------------------------------------------------------- the authenticator/authorizer


class Auth:
    """Tokens, users, RBAC decisions and the review/token endpoints; lives on the emulator's loop."""

    def __init__(self, store: Store, tokens: Mapping[str, User], *, require_auth: bool) -> None:
        self.store = store
        self.tokens: dict[str, User] = dict(tokens)
        self.sa_tokens: dict[str, ServiceAccountToken] = {}
        self.require_auth = require_auth
        self.denials: collections.deque[Denial] = collections.deque(maxlen=10000)
        self.denial_count = 0
        self._signing_key = secrets.token_bytes(32)
        self._fingerprint: tuple[Any, ...] | None = None
        self._rules_cache: dict[
            tuple[str, tuple[str, ...], str], list[tuple[Source | None, Obj | None, str]]
        ] = {}

    # ----------------------------------------------------------------- authentication

    def authenticate(self, headers: Mapping[str, str], *, secure: bool) -> User:
        header = headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            user = self.user_for_token(token.strip()) if scheme.lower() == "bearer" else None
            if user is None:
                raise errors.unauthorized()
        elif self.require_auth:
            raise errors.unauthorized()
        elif secure:
            user = User(ANONYMOUS, (UNAUTHENTICATED,))
        else:
            user = User(UNSECURED, (MASTERS, AUTHENTICATED))
        return self._impersonate(user, headers)

    def user_for_token(self, token: str) -> User | None:
        user = self.tokens.get(token)
        if user is not None:
            return user
        issued = self.sa_tokens.get(token)
        if issued is None:
            return None
        account = self.store.get(SA_KEY, issued.namespace, issued.name)
        if account is None or account["metadata"]["uid"] != issued.uid or time.time() >= issued.expires:
            return None
        return service_account_user(issued.namespace, issued.name, issued.uid)

    def _impersonate(self, user: User, headers: Any) -> User:
        name = headers.get("Impersonate-User")
        groups = list(headers.getall("Impersonate-Group", [])) if hasattr(headers, "getall") else []
        if not name:
            if groups:
                raise errors.bad_request("requested Impersonate-Group without impersonating a user")
            return user
        account = parse_service_account_username(name)
        if account is not None:
            check = Attributes(
                "impersonate", True, "", "", "v1", account[0], "serviceaccounts", "", account[1]
            )
        else:
            check = Attributes("impersonate", True, "", "", "v1", "", "users", "", name)
        checks = [check] + [
            Attributes("impersonate", True, "", "", "v1", "", "groups", "", g) for g in groups
        ]
        for attrs in checks:
            decision = self.decide(user, attrs)
            if not decision.allowed:
                raise forbidden(user, attrs, decision.reason)
        if account is not None and not groups:
            return service_account_user(*account)
        if name != ANONYMOUS and AUTHENTICATED not in groups:
            groups.append(AUTHENTICATED)
        return User(name, tuple(groups))

    # ----------------------------------------------------------------- authorization

    def authorize(self, user: User, method: str, attrs: Attributes) -> None:
        """Raise the Forbidden Status when RBAC does not allow the request."""
        self.sync()  # before anything is read or decided: aggregated roles are up to date
        decision = self.decide(user, attrs)
        if decision.allowed:
            return
        error = forbidden(user, attrs, decision.reason)
        self.denial_count += 1
        self.denials.append(Denial(user.name, user.groups, attrs.verb, method, attrs.path, error.message))
        raise error

    def decide(self, user: User, attrs: Attributes) -> Decision:
        if MASTERS in user.groups:
            return Decision(True, "")
        errs: list[str] = []
        for source, rule, error in self._rules_for(user, attrs.namespace):
            if rule is not None and rule_allows(attrs, rule):
                return Decision(True, f"RBAC: allowed by {source}")
            if error:
                errs.append(error)
        return Decision(False, f"RBAC: {_aggregate(errs)}" if errs else "")

    def _rules_for(self, user: User, namespace: str) -> list[tuple[Source | None, Obj | None, str]]:
        self.sync()
        key = (user.name, user.groups, namespace)
        cached = self._rules_cache.get(key)
        if cached is None:
            cached = list(self._visit(user, namespace))
            self._rules_cache[key] = cached
        return cached

    def _visit(self, user: User, namespace: str) -> Iterator[tuple[Source | None, Obj | None, str]]:
        """VisitRulesFor: ClusterRoleBindings, then the RoleBindings of the namespace."""
        bindings = sorted(self.store.iter_objects(CLUSTER_ROLE_BINDING_KEY, None), key=_name)
        if namespace:
            bindings += sorted(self.store.iter_objects(ROLE_BINDING_KEY, namespace), key=_name)
        for binding in bindings:
            binding_ns = binding["metadata"].get("namespace") or ""
            subject = next((s for s in binding.get("subjects") or [] if _applies(s, user, binding_ns)), None)
            if subject is None:
                continue
            rules, error = self._role_rules(binding.get("roleRef") or {}, binding_ns)
            if error:
                yield None, None, error
                continue
            source = Source(binding, subject)
            for rule in rules:
                yield source, rule, ""

    def _role_rules(self, ref: Mapping[str, Any], namespace: str) -> tuple[list[Obj], str]:
        name = str(ref.get("name") or "")
        if ref.get("kind") == "Role":
            role = self.store.get(ROLE_KEY, namespace, name) if namespace else None
            qualified = f'role.{GROUP} "{name}" not found'
        else:
            role = self.store.get(CLUSTER_ROLE_KEY, None, name)
            qualified = f'clusterrole.{GROUP} "{name}" not found'
        if role is None:
            return [], qualified
        return list(role.get("rules") or []), ""

    # ----------------------------------------------------------------- aggregation

    def sync(self) -> None:
        """Keep the caches and the aggregated ClusterRoles in step with the RBAC objects."""
        fingerprint = self._current_fingerprint()
        if fingerprint == self._fingerprint:
            return
        for _ in range(10):  # aggregated roles may select aggregated roles (admin ⊇ edit ⊇ view)
            if not self._aggregate_cluster_roles():
                break
        self._fingerprint = self._current_fingerprint()
        self._rules_cache.clear()

    def _current_fingerprint(self) -> tuple[Any, ...]:
        marks: list[Any] = []
        for key in RBAC_KEYS:
            history = self.store.history.get(key)
            marks.append(history[-1].rv if history else None)
            marks.append(self.store.type_counts.get(key, 0))
        return tuple(marks)

    def _aggregate_cluster_roles(self) -> bool:
        """One pass of the aggregation controller; True when it changed a role."""
        rtype = self.store.types.get(CLUSTER_ROLE_KEY)
        if rtype is None:
            return False
        changed = False
        roles = sorted(self.store.iter_objects(CLUSTER_ROLE_KEY, None), key=_name)
        for role in roles:
            aggregation = role.get("aggregationRule")
            if not isinstance(aggregation, dict):
                continue
            matchers = [
                label_selector_object_matcher(s) for s in aggregation.get("clusterRoleSelectors") or []
            ]
            rules: list[Obj] = []
            for other in roles:
                if other is role or not any(m(other["metadata"].get("labels") or {}) for m in matchers):
                    continue
                for rule in other.get("rules") or []:
                    if rule not in rules:
                        rules.append(json.loads(json.dumps(rule)))
            if rules != (role.get("rules") or []):
                updated = {**role, "metadata": dict(role["metadata"]), "rules": rules}
                self.store.put(rtype, updated, role)
                changed = True
        return changed

    # ----------------------------------------------------------------- served endpoints

    @staticmethod
    def is_served_here(method: str, attrs: Attributes) -> bool:
        """Requests this module answers itself (reviews, TokenRequest)."""
        if not attrs.resource_request:
            return False
        if (attrs.api_group, attrs.resource) in REVIEWS:
            return True
        return attrs.api_group == "" and attrs.resource == "serviceaccounts" and attrs.subresource == "token"

    def serve(self, method: str, attrs: Attributes, user: User, body: Any) -> tuple[Obj, int]:
        if method != "POST":
            raise errors.method_not_allowed()
        if not isinstance(body, dict):
            raise errors.bad_request("the body must be a JSON object")
        if attrs.resource == "serviceaccounts":
            return self._token_request(attrs, body), 201
        if attrs.api_version != "v1":
            raise errors.no_such_path()
        kind = REVIEWS[(attrs.api_group, attrs.resource)]
        if body.get("kind") not in (None, "", kind):
            raise errors.bad_request(
                f"the kind in the data ({body['kind']}) does not match the expected kind ({kind})"
            )
        spec: Obj = body["spec"] if isinstance(body.get("spec"), dict) else {}
        result: Obj = {
            "kind": kind,
            "apiVersion": f"{attrs.api_group}/v1",
            "metadata": {**(body.get("metadata") or {}), "creationTimestamp": None},
        }
        if kind == "SelfSubjectReview":
            result["status"] = {"userInfo": user.info()}
            return result, 201
        if kind == "TokenReview":  # who is this bearer token? (the authenticator's answer)
            reviewed = self.user_for_token(str(spec.get("token") or ""))
            result["spec"] = {"audiences": []}
            result["status"] = (
                {"authenticated": True, "user": reviewed.info(), "audiences": []}
                if reviewed is not None
                else {"authenticated": False, "user": {}, "error": "invalid bearer token"}
            )
            return result, 201
        if kind == "SelfSubjectRulesReview":
            namespace = str(spec.get("namespace") or "")
            result["spec"] = {"namespace": namespace} if namespace else {}
            result["status"] = self._rules_review(user, namespace)
            return result, 201
        if kind == "SubjectAccessReview" or kind == "LocalSubjectAccessReview":
            subject = self._review_subject(spec)
        else:
            subject = user
        review_attrs = self._review_attributes(kind, spec, attrs)
        decision = self.decide(subject, review_attrs)
        result["spec"] = spec
        status: Obj = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        result["status"] = status
        return result, 201

    @staticmethod
    def _review_subject(spec: Mapping[str, Any]) -> User:
        name = str(spec.get("user") or "")
        groups = tuple(str(g) for g in spec.get("groups") or [])
        if not name and not groups:
            raise errors.invalid(
                "SubjectAccessReview",
                AUTHZ_GROUP,
                "",
                [FieldError.invalid("spec.user", "", "at least one of user or group must be specified")],
            )
        return User(name, groups, str(spec.get("uid") or ""))

    @staticmethod
    def _review_attributes(kind: str, spec: Mapping[str, Any], attrs: Attributes) -> Attributes:
        resource = spec.get("resourceAttributes")
        non_resource = spec.get("nonResourceAttributes")
        if bool(resource) == bool(non_resource):
            raise errors.invalid(
                kind,
                AUTHZ_GROUP,
                "",
                [
                    FieldError.invalid(
                        "spec.resourceAttributes",
                        resource or non_resource or None,
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )
                ],
            )
        if isinstance(non_resource, dict):
            return Attributes(str(non_resource.get("verb") or ""), False, str(non_resource.get("path") or ""))
        if not isinstance(resource, dict):
            raise errors.bad_request("spec.resourceAttributes: must be an object")
        namespace = str(resource.get("namespace") or "")
        if kind == "LocalSubjectAccessReview" and namespace != attrs.namespace:
            raise errors.bad_request(
                f"spec.resourceAttributes.namespace must match namespace: {attrs.namespace}"
            )
        return Attributes(
            verb=str(resource.get("verb") or ""),
            resource_request=True,
            api_group=str(resource.get("group") or ""),
            api_version=str(resource.get("version") or ""),
            namespace=namespace,
            resource=str(resource.get("resource") or ""),
            subresource=str(resource.get("subresource") or ""),
            name=str(resource.get("name") or ""),
        )

    def _rules_review(self, user: User, namespace: str) -> Obj:
        if MASTERS in user.groups:
            return {
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": False,
            }
        resource_rules: list[Obj] = []
        non_resource_rules: list[Obj] = []
        errs: list[str] = []
        for _source, rule, error in self._rules_for(user, namespace):
            if error:
                errs.append(error)
            elif rule is not None and rule.get("nonResourceURLs"):
                non_resource_rules.append(
                    {"verbs": rule["verbs"], "nonResourceURLs": rule["nonResourceURLs"]}
                )
            elif rule is not None:
                entry = {
                    k: rule[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if rule.get(k)
                }
                resource_rules.append(entry)
        status: Obj = {
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": bool(errs),
        }
        if errs:
            status["evaluationError"] = _aggregate(errs)
        return status

    # ----------------------------------------------------------------- tokens

    def _token_request(self, attrs: Attributes, body: Mapping[str, Any]) -> Obj:
        if body.get("kind") not in (None, "", "TokenRequest"):
            raise errors.bad_request(
                f"the kind in the data ({body['kind']}) does not match the expected kind (TokenRequest)"
            )
        spec: Obj = body["spec"] if isinstance(body.get("spec"), dict) else {}
        seconds = spec.get("expirationSeconds", TOKEN_DEFAULT_SECONDS)
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise errors.bad_request(f"spec.expirationSeconds: must be an integer, got {seconds!r}")
        if seconds < TOKEN_MIN_SECONDS:
            raise errors.invalid(
                "TokenRequest",
                AUTHN_GROUP,
                attrs.name,
                [
                    FieldError.invalid(
                        "spec.expirationSeconds", seconds, "may not specify a duration less than 10 minutes"
                    )
                ],
            )
        if seconds > 2**32:
            raise errors.invalid(
                "TokenRequest",
                AUTHN_GROUP,
                attrs.name,
                [FieldError.too_long("spec.expirationSeconds", 2**32)],
            )
        audiences = [str(a) for a in spec.get("audiences") or []] or [TOKEN_AUDIENCE]
        token, expires = self.issue_service_account_token(attrs.namespace, attrs.name, seconds, audiences)
        out_spec: Obj = {"audiences": audiences, "expirationSeconds": seconds}
        if spec.get("boundObjectRef"):
            out_spec["boundObjectRef"] = spec["boundObjectRef"]
        return {
            "kind": "TokenRequest",
            "apiVersion": f"{AUTHN_GROUP}/v1",
            "metadata": {"name": attrs.name, "namespace": attrs.namespace, "creationTimestamp": now_iso()},
            "spec": out_spec,
            "status": {
                "token": token,
                "expirationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
            },
        }

    def issue_service_account_token(
        self,
        namespace: str,
        name: str,
        seconds: int = TOKEN_DEFAULT_SECONDS,
        audiences: list[str] | None = None,
    ) -> tuple[str, float]:
        """A token for an existing ServiceAccount (JWT-shaped, like a real bound token)."""
        account = self.store.get(SA_KEY, namespace, name)
        if account is None:
            raise errors.not_found("serviceaccounts", "", name)
        now = time.time()
        expires = now + seconds
        uid = account["metadata"]["uid"]
        audiences = audiences or [TOKEN_AUDIENCE]
        claims = {
            "aud": audiences,
            "exp": int(expires),
            "iat": int(now),
            "iss": TOKEN_AUDIENCE,
            "jti": secrets.token_hex(16),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
            "nbf": int(now),
            "sub": service_account_username(namespace, name),
        }
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        token = f"{header}.{payload}.{signature}"
        self.sa_tokens[token] = ServiceAccountToken(namespace, name, uid, expires, tuple(audiences))
        return token, expires


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])
