"""Typed AssumedRole / AssumedRolePolicy specs, parsed from the API objects and validated.

The CRD schema rejects what it can, but the operator must not rely on it (an old CRD, an
emulator, a cluster with validation off) nor on STS (local STS implementations accept almost
anything). Every rule lives here once and every violation names the field, the value and the
rule, so the same message reaches `kubectl apply` (webhook) and the object's status.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rolecall import constants as c

ARN_ROLE_RE = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}):role/((?:[\x21-\x7e]{1,510}/)?[\w+=,.@-]{1,64})$"
)
ARN_POLICY_RE = re.compile(r"^arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}|aws):policy/[\x21-\x7e]{1,1000}$")
SESSION_NAME_RE = re.compile(r"^[\w+=,.@-]{1,64}$", re.ASCII)
EXTERNAL_ID_RE = re.compile(r"^[\w+=,.@:/-]{2,1224}$", re.ASCII)
SOURCE_IDENTITY_RE = re.compile(r"^[\w+=,.@-]{2,64}$", re.ASCII)
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
TAG_KEY_RE = re.compile(r"^[\w .:/=+@-]{1,128}$")
TAG_VALUE_RE = re.compile(r"^[\w .:/=+@-]{0,256}$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PROFILE_RE = re.compile(r"^[\w+.@-]{1,64}$", re.ASCII)
SESSION_NAME_BAD_CHARS = re.compile(r"[^\w+=,.@-]", re.ASCII)
# mountPath lands in the pod spec and, quoted, in the config file's credential_process: only
# characters no shell, ini parser or SDK gives a meaning to
MOUNT_PATH_RE = re.compile(r"^(/[A-Za-z0-9._-]+)+/?$")
MAX_MOUNT_PATH_CHARS = 1024
# policy patterns: * and ? (within one part), ** (anything), {namespace} (the binding's namespace)
PLACEHOLDER = "{namespace}"
NAMESPACE_PATTERN_RE = re.compile(r"^[a-z0-9*?-]{1,63}$")
MAX_PATTERN_CHARS = 2048
DEFAULT_SOURCE_IDENTITIES = (PLACEHOLDER, PLACEHOLDER + ".*")
MAX_POLICY_ITEMS = 256

MAX_POLICY_ARNS = 10
MAX_SUBJECTS = 64
MAX_SESSION_TAGS = 50
MAX_INLINE_POLICY_CHARS = 2048
INJECTION_MODES = ("sidecar", "file", "env")
RESERVED_TAG_KEYS = frozenset(k.lower() for k in (c.TAG_NAMESPACE, c.TAG_CLUSTER, c.TAG_ASSUMED_ROLE))
# tag keys that rolecall, EKS Pod Identity or AWS set themselves: trust policies key on them
RESERVED_TAG_PREFIXES = ("aws:", "kubernetes-", "rolecall-", "eks-")


def _show(value: Any) -> str:
    """A value as it appears in an error message: JSON-ish, cut to stay readable."""
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class FieldError:
    """One violated rule: which field, which value, which rule."""

    field: str
    value: Any
    rule: str

    def __str__(self) -> str:
        if self.value is _MISSING:
            return f"{self.field}: required: {self.rule}"
        return f"{self.field}: invalid value {_show(self.value)}: {self.rule}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


class SpecError(ValueError):
    """The spec breaks one or more rules; ``errors`` lists each with its field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class Subject:
    kind: str
    name: str


@dataclass(frozen=True)
class Source:
    """Where the base credentials for AssumeRole come from; neither set: the operator's own."""

    secret_name: str | None = None
    assumed_role_name: str | None = None


@dataclass(frozen=True)
class AssumedRoleSpec:
    role_arn: str
    subjects: tuple[Subject, ...] = ()
    session_name: str = ""
    duration_seconds: int = c.DEFAULT_DURATION_SECONDS
    region: str = ""
    external_id: str = ""
    session_policy: str = ""
    policy_arns: tuple[str, ...] = ()
    session_tags: tuple[tuple[str, str], ...] = ()
    transitive_tag_keys: tuple[str, ...] = ()
    source_identity: str = ""
    automatic_session_tags: bool = True
    source: Source = field(default_factory=Source)
    secret_name: str = ""
    profile: str = c.DEFAULT_PROFILE
    mount_path: str = c.DEFAULT_MOUNT_PATH
    injection_mode: str = ""
    suspend: bool = False


@dataclass(frozen=True)
class AssumeRequest:
    """Everything STS AssumeRole is called with, plus the region of the endpoint."""

    role_arn: str
    session_name: str
    duration_seconds: int
    region: str = ""
    external_id: str = ""
    policy: str = ""
    policy_arns: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    transitive_tag_keys: tuple[str, ...] = ()
    source_identity: str = ""


@dataclass(frozen=True)
class Credentials:
    """Temporary credentials. The secret parts never appear in repr or str."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime.datetime
    assumed_role_arn: str = ""


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class PolicySpec:
    """One AssumedRolePolicy: which namespaces may bind which roles, for how long."""

    name: str
    namespaces: tuple[str, ...] = ()
    namespace_selector: LabelSelector | None = None
    role_arns: tuple[str, ...] = ()
    max_duration_seconds: int | None = None
    # what a namespace may choose about attribution (README: The AssumedRole; default: nothing but the
    # source identities tied to the namespace)
    allow_automatic_tag_opt_out: bool = False
    session_tag_keys: tuple[str, ...] = ()
    source_identities: tuple[str, ...] | None = None  # None: DEFAULT_SOURCE_IDENTITIES
    external_ids: tuple[str, ...] = ()


# --- parsing helpers ---------------------------------------------------------------------


class _Collector:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, path: str, value: Any, rule: str) -> None:
        self.errors.append(FieldError(path, value, rule))

    def string(self, spec: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
        value = spec.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            self.add(path, value, "must be a string")
            return default
        return value

    def integer(self, spec: Mapping[str, Any], key: str, path: str, default: int) -> int:
        value = spec.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(path, value, "must be an integer")
            return default
        return value

    def boolean(self, spec: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = spec.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.add(path, value, "must be true or false")
            return default
        return value

    def mapping(self, spec: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = spec.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(path, value, "must be an object")
            return {}
        return value

    def sequence(self, spec: Mapping[str, Any], key: str, path: str) -> Sequence[Any]:
        value = spec.get(key)
        if value is None:
            return ()
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            self.add(path, value, "must be a list")
            return ()
        return value


def _check_policy_json(col: _Collector, text: str) -> None:
    path = "spec.sessionPolicy"
    if len(text) > MAX_INLINE_POLICY_CHARS:
        col.add(
            path,
            f"<{len(text)} characters>",
            f"must be at most {MAX_INLINE_POLICY_CHARS} characters (the STS limit for an inline session policy)",
        )
        return
    if any(not (ch in "\t\n\r" or "\x20" <= ch <= "\xff") for ch in text):
        col.add(
            path,
            text,
            "may contain only tab, newline, carriage return and characters U+0020 to U+00FF",
        )
        return
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        col.add(path, text, f"must be a JSON IAM policy document ({exc.msg} at position {exc.pos})")
        return
    if not isinstance(doc, dict) or "Statement" not in doc:
        col.add(path, text, "must be a JSON object with a Statement (an IAM policy document)")


def parse_assumed_role(namespace: str, name: str, spec: Any) -> AssumedRoleSpec:
    """Validate an AssumedRole's ``spec`` and return it typed; raise :class:`SpecError`.

    One parser per field group, all on one collector, so every violation is reported at once.
    """
    col = _Collector()
    if not isinstance(spec, Mapping):
        raise SpecError([FieldError("spec", spec, "must be an object")])
    role_arn = _parse_role_arn(col, spec)
    subjects = _parse_subjects(col, spec, namespace)
    duration = col.integer(spec, "durationSeconds", "spec.durationSeconds", c.DEFAULT_DURATION_SECONDS)
    if not c.MIN_DURATION_SECONDS <= duration <= c.MAX_DURATION_SECONDS:
        col.add(
            "spec.durationSeconds",
            duration,
            f"must be between {c.MIN_DURATION_SECONDS} and {c.MAX_DURATION_SECONDS}",
        )
    region = col.string(spec, "region", "spec.region")
    if region and not REGION_RE.fullmatch(region):
        col.add("spec.region", region, "must be an AWS region name such as us-east-1")
    session_policy, policy_arns = _parse_session_policies(col, spec)
    attribution = _parse_attribution(col, spec)
    source = _parse_source(col, spec, namespace, name, duration)
    secret_name, profile, mount_path, mode = _parse_delivery(col, spec, name)
    suspend = col.boolean(spec, "suspend", "spec.suspend", False)
    if col.errors:
        raise SpecError(col.errors)
    return AssumedRoleSpec(
        role_arn=role_arn,
        subjects=subjects,
        duration_seconds=duration,
        region=region,
        session_policy=session_policy,
        policy_arns=policy_arns,
        source=source,
        secret_name=secret_name,
        profile=profile,
        mount_path=mount_path,
        injection_mode=mode,
        suspend=suspend,
        **attribution,
    )


def _parse_role_arn(col: _Collector, spec: Mapping[str, Any]) -> str:
    role_arn = col.string(spec, "roleArn", "spec.roleArn")
    if "roleArn" not in spec or spec.get("roleArn") in (None, ""):
        col.add("spec.roleArn", _MISSING, "an IAM role ARN such as arn:aws:iam::123456789012:role/NAME")
    elif role_arn and (len(role_arn) > 2048 or not ARN_ROLE_RE.fullmatch(role_arn)):
        col.add(
            "spec.roleArn",
            role_arn,
            "must be an IAM role ARN arn:<aws|aws-cn|aws-us-gov>:iam::<12-digit account>:role/<name>",
        )
    return role_arn


def _parse_subjects(col: _Collector, spec: Mapping[str, Any], namespace: str) -> tuple[Subject, ...]:
    subjects: list[Subject] = []
    raw_subjects = col.sequence(spec, "subjects", "spec.subjects")
    if len(raw_subjects) > MAX_SUBJECTS:
        col.add("spec.subjects", f"<{len(raw_subjects)} items>", f"must have at most {MAX_SUBJECTS} items")
        return ()
    for i, raw in enumerate(raw_subjects):
        path = f"spec.subjects[{i}]"
        if not isinstance(raw, Mapping):
            col.add(path, raw, "must be an object with kind and name")
            continue
        kind = raw.get("kind", "ServiceAccount")
        sname = raw.get("name")
        if kind != "ServiceAccount":
            col.add(f"{path}.kind", kind, "must be ServiceAccount")
        if not isinstance(sname, str) or not sname:
            col.add(f"{path}.name", sname if sname is not None else _MISSING, "a ServiceAccount name")
        elif len(sname) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(sname):
            col.add(f"{path}.name", sname, "must be a DNS subdomain name (lower case, 1-253 characters)")
        sns = raw.get("namespace")
        if sns not in (None, "", namespace):
            col.add(
                f"{path}.namespace",
                sns,
                f"subjects must be ServiceAccounts of the AssumedRole's own namespace {namespace!r}",
            )
        if isinstance(sname, str) and kind == "ServiceAccount":
            subjects.append(Subject("ServiceAccount", sname))
    return tuple(subjects)


def _parse_session_policies(col: _Collector, spec: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    session_policy = col.string(spec, "sessionPolicy", "spec.sessionPolicy")
    if session_policy:
        _check_policy_json(col, session_policy)
    policy_arns: list[str] = []
    raw_arns = col.sequence(spec, "policyArns", "spec.policyArns")
    if len(raw_arns) > MAX_POLICY_ARNS:
        col.add(
            "spec.policyArns",
            f"<{len(raw_arns)} items>",
            f"must have at most {MAX_POLICY_ARNS} items",
        )
        return session_policy, ()
    for i, arn in enumerate(raw_arns):
        if not isinstance(arn, str) or len(arn) > 1040 or not ARN_POLICY_RE.fullmatch(arn):
            col.add(
                f"spec.policyArns[{i}]",
                arn,
                "must be an IAM managed policy ARN arn:<partition>:iam::<account|aws>:policy/<name>"
                " (at most 2048 characters)",
            )
        else:
            policy_arns.append(arn)
    return session_policy, tuple(policy_arns)


def _parse_attribution(col: _Collector, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Session name, external id, tags and source identity: what CloudTrail and trust
    policies see. Which values a namespace may use is the access policy's call (access.py);
    here only the forms STS accepts."""
    session_name = col.string(spec, "sessionName", "spec.sessionName")
    if session_name and not SESSION_NAME_RE.fullmatch(session_name):
        col.add(
            "spec.sessionName",
            session_name,
            r"must be 1-64 characters of [A-Za-z0-9_+=,.@-] (it replaces only the part after '<namespace>.')",
        )
    external_id = col.string(spec, "externalId", "spec.externalId")
    if external_id and not EXTERNAL_ID_RE.fullmatch(external_id):
        col.add("spec.externalId", external_id, r"must be 2-1224 characters of [A-Za-z0-9_+=,.@:/-]")
    automatic_tags = col.boolean(spec, "automaticSessionTags", "spec.automaticSessionTags", True)
    tags = _parse_session_tags(col, spec, automatic_tags)
    transitive: list[str] = []
    allowed_transitive = {k.lower() for k, _ in tags} | RESERVED_TAG_KEYS
    raw_transitive = col.sequence(spec, "transitiveTagKeys", "spec.transitiveTagKeys")
    if len(raw_transitive) > MAX_SESSION_TAGS:
        col.add(
            "spec.transitiveTagKeys",
            f"<{len(raw_transitive)} items>",
            f"must have at most {MAX_SESSION_TAGS} items",
        )
        raw_transitive = ()
    for i, key in enumerate(raw_transitive):
        if not isinstance(key, str) or key.lower() not in allowed_transitive:
            col.add(f"spec.transitiveTagKeys[{i}]", key, "must name a key of spec.sessionTags")
        else:
            transitive.append(key)
    source_identity = col.string(spec, "sourceIdentity", "spec.sourceIdentity")
    if source_identity and (
        not SOURCE_IDENTITY_RE.fullmatch(source_identity) or source_identity.lower().startswith("aws:")
    ):
        col.add(
            "spec.sourceIdentity",
            source_identity,
            r"must be 2-64 characters of [A-Za-z0-9_+=,.@-] and not start with aws:",
        )
    return {
        "session_name": session_name,
        "external_id": external_id,
        "session_tags": tags,
        "transitive_tag_keys": tuple(transitive),
        "source_identity": source_identity,
        "automatic_session_tags": automatic_tags,
    }


def _parse_session_tags(
    col: _Collector, spec: Mapping[str, Any], automatic_tags: bool
) -> tuple[tuple[str, str], ...]:
    tags: list[tuple[str, str]] = []
    raw_tags = col.mapping(spec, "sessionTags", "spec.sessionTags")
    if len(raw_tags) + (3 if automatic_tags else 0) > MAX_SESSION_TAGS:
        col.add(
            "spec.sessionTags",
            f"<{len(raw_tags)} tags>",
            f"at most {MAX_SESSION_TAGS} session tags in all, including rolecall's automatic tags (up to 3)",
        )
        return ()
    seen: set[str] = set()
    for key, value in raw_tags.items():
        path = f"spec.sessionTags[{key!r}]" if isinstance(key, str) else "spec.sessionTags"
        if not isinstance(key, str) or not TAG_KEY_RE.fullmatch(key):
            col.add(
                path,
                key,
                r"tag keys must be 1-128 characters of letters, digits, spaces and _.:/=+-@",
            )
            continue
        if key.lower().startswith("aws:"):
            col.add(path, key, "tag keys must not start with aws:")
            continue
        if key.lower() in RESERVED_TAG_KEYS:
            col.add(
                path,
                key,
                "is set by rolecall itself (automatic session tag) and cannot be given in spec",
            )
            continue
        if key.lower().startswith(RESERVED_TAG_PREFIXES):
            col.add(
                path,
                key,
                "tag keys starting with "
                + ", ".join(RESERVED_TAG_PREFIXES)
                + " are reserved (set by rolecall, EKS Pod Identity or AWS, trusted by trust policies)",
            )
            continue
        if key.lower() in seen:
            col.add(path, key, "tag keys must be unique, ignoring case")
            continue
        seen.add(key.lower())
        if not isinstance(value, str) or not TAG_VALUE_RE.fullmatch(value):
            col.add(
                path,
                value,
                r"tag values must be strings of 0-256 letters, digits, spaces and _.:/=+-@",
            )
            continue
        tags.append((key, value))
    return tuple(tags)


def _parse_source(
    col: _Collector, spec: Mapping[str, Any], namespace: str, name: str, duration: int
) -> Source:
    source = Source()
    raw_source = col.mapping(spec, "source", "spec.source")
    secret_ref = raw_source.get("secretRef")
    role_ref = raw_source.get("assumedRoleRef")
    if secret_ref is not None and role_ref is not None:
        col.add("spec.source", dict(raw_source), "set at most one of secretRef and assumedRoleRef")
    for key, path in (
        ("secretRef", "spec.source.secretRef"),
        ("assumedRoleRef", "spec.source.assumedRoleRef"),
    ):
        ref = raw_source.get(key)
        if ref is None:
            continue
        if not isinstance(ref, Mapping):
            col.add(path, ref, "must be an object with a name")
            continue
        rname = ref.get("name")
        if not isinstance(rname, str) or not DNS_SUBDOMAIN_RE.fullmatch(rname) or len(rname) > 253:
            col.add(
                f"{path}.name",
                rname if rname is not None else _MISSING,
                "must be the name of an object in this namespace",
            )
            continue
        if ref.get("namespace") not in (None, "", namespace):
            col.add(
                f"{path}.namespace",
                ref.get("namespace"),
                f"must be this AssumedRole's own namespace {namespace!r}: other namespaces cannot be used",
            )
            continue
        if key == "secretRef":
            source = Source(secret_name=rname)
        elif rname == name:
            col.add(f"{path}.name", rname, "an AssumedRole cannot chain through itself")
        else:
            source = Source(assumed_role_name=rname)
            if duration > c.CHAINED_MAX_DURATION_SECONDS:
                col.add(
                    "spec.durationSeconds",
                    duration,
                    f"role chaining (source.assumedRoleRef) is capped by AWS at {c.CHAINED_MAX_DURATION_SECONDS} seconds",
                )
    return source


def _parse_delivery(col: _Collector, spec: Mapping[str, Any], name: str) -> tuple[str, str, str, str]:
    """secretName, profile, mountPath and injection mode: where the credentials land."""
    secret_name = col.string(spec, "secretName", "spec.secretName") or name
    if len(secret_name) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(secret_name):
        col.add(
            "spec.secretName",
            secret_name,
            "must be a DNS subdomain name (lower case, 1-253 characters)",
        )
    profile = col.string(spec, "profile", "spec.profile", c.DEFAULT_PROFILE) or c.DEFAULT_PROFILE
    if not PROFILE_RE.fullmatch(profile):
        col.add("spec.profile", profile, r"must be 1-64 characters of [A-Za-z0-9_+.@-]")
    mount_path = col.string(spec, "mountPath", "spec.mountPath", c.DEFAULT_MOUNT_PATH) or c.DEFAULT_MOUNT_PATH
    if (
        len(mount_path) > MAX_MOUNT_PATH_CHARS
        or not MOUNT_PATH_RE.fullmatch(mount_path)
        or any(part in (".", "..") for part in mount_path.split("/"))
    ):
        col.add(
            "spec.mountPath",
            mount_path,
            f"must be an absolute path of letters, digits and . _ - / only (no '.' or '..' part, "
            f"at most {MAX_MOUNT_PATH_CHARS} characters): it is written into the config file's "
            "credential_process, which SDKs run through a shell",
        )
    injection = col.mapping(spec, "injection", "spec.injection")
    mode = col.string(injection, "mode", "spec.injection.mode")
    if mode and mode not in INJECTION_MODES:
        col.add("spec.injection.mode", mode, "must be one of sidecar, file, env")
    return secret_name, profile, mount_path.rstrip("/") or "/", mode


def session_name_for(namespace: str, name: str, given: str = "") -> str:
    """The STS session name: always ``<namespace>.`` then ``given`` (default the name).

    The namespace prefix is never the tenant's choice: a given ``spec.sessionName`` only
    replaces the part after it (a value that already starts with ``<namespace>.`` is taken as
    the whole name). Made safe for STS (``[\\w+=,.@-]``, 2-64 characters); when it must be
    cut, the end is replaced by a short hash of the full name, so two long names that share a
    prefix still get distinct sessions. Namespaces are DNS labels (no dots), so no namespace
    can produce another's ``<namespace>.`` prefix; only namespaces longer than 54 characters
    lose the dot (``<first 55 characters>-<hash>``).
    """
    suffix = given[len(namespace) + 1 :] if given.startswith(namespace + ".") else given
    full = f"{namespace}.{suffix or name}"
    clean = SESSION_NAME_BAD_CHARS.sub("-", full)
    if len(clean) > 64:
        digest = hashlib.sha256(full.encode()).hexdigest()[:8]
        clean = f"{clean[:55]}-{digest}"
    return clean.ljust(2, "-")


def default_session_name(namespace: str, name: str) -> str:
    """``<namespace>.<name>`` made safe for STS (see :func:`session_name_for`)."""
    return session_name_for(namespace, name)


def build_assume_request(
    namespace: str,
    name: str,
    spec: AssumedRoleSpec,
    *,
    default_region: str = "",
    cluster_name: str = "",
    automatic_tags: bool = True,
) -> AssumeRequest:
    """The exact AssumeRole call for a binding, automatic session tags included."""
    tags: list[tuple[str, str]] = []
    transitive: list[str] = list(spec.transitive_tag_keys)
    if automatic_tags and spec.automatic_session_tags:
        auto = [(c.TAG_NAMESPACE, namespace)]
        if cluster_name:
            auto.append((c.TAG_CLUSTER, cluster_name[:256]))
        auto.append((c.TAG_ASSUMED_ROLE, name[:256]))
        tags.extend(auto)
        transitive.extend(k for k, _ in auto if k not in transitive)
    tags.extend(spec.session_tags)
    return AssumeRequest(
        role_arn=spec.role_arn,
        session_name=session_name_for(namespace, name, spec.session_name),
        duration_seconds=spec.duration_seconds,
        region=spec.region or default_region,
        external_id=spec.external_id,
        policy=spec.session_policy,
        policy_arns=spec.policy_arns,
        tags=tuple(tags),
        transitive_tag_keys=tuple(transitive),
        source_identity=spec.source_identity,
    )


def spec_hash(request: AssumeRequest, source: Source) -> str:
    """A short stable digest of what the credentials depend on; stored on the Secret."""
    payload = {
        "request": {
            "roleArn": request.role_arn,
            "sessionName": request.session_name,
            "duration": request.duration_seconds,
            "region": request.region,
            "externalId": request.external_id,
            "policy": request.policy,
            "policyArns": list(request.policy_arns),
            "tags": [list(t) for t in request.tags],
            "transitive": list(request.transitive_tag_keys),
            "sourceIdentity": request.source_identity,
        },
        "source": {"secret": source.secret_name, "assumedRole": source.assumed_role_name},
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def parse_policy(name: str, spec: Any) -> PolicySpec:
    """Validate an AssumedRolePolicy's ``spec``; raise :class:`SpecError`."""
    col = _Collector()
    if not isinstance(spec, Mapping):
        raise SpecError([FieldError("spec", spec, "must be an object")])
    namespaces = _parse_patterns(
        col,
        spec,
        "namespaces",
        placeholder=False,
        form=NAMESPACE_PATTERN_RE,
        form_rule="a namespace name or pattern: lower-case letters, digits, '-', '*' and '?', "
        "at most 63 characters",
    )
    selector: LabelSelector | None = None
    raw_sel = spec.get("namespaceSelector")
    if raw_sel is not None:
        selector = _parse_selector(col, raw_sel, "spec.namespaceSelector")
    if not namespaces and selector is None:
        col.add("spec.namespaces", _MISSING, "give spec.namespaces or spec.namespaceSelector (or both)")
    role_arns = _parse_patterns(
        col,
        spec,
        "roleArns",
        form=re.compile(r"^arn:.*$", re.DOTALL),
        form_rule="must be a role ARN or a pattern starting with arn:",
    )
    if not role_arns and not any(e.field.startswith("spec.roleArns") for e in col.errors):
        col.add(
            "spec.roleArns",
            _MISSING,
            "at least one role ARN or pattern such as arn:aws:iam::123456789012:role/team-a/*",
        )
    max_duration: int | None = None
    if spec.get("maxDurationSeconds") is not None:
        max_duration = col.integer(spec, "maxDurationSeconds", "spec.maxDurationSeconds", 0)
        if not c.MIN_DURATION_SECONDS <= max_duration <= c.MAX_DURATION_SECONDS:
            col.add(
                "spec.maxDurationSeconds",
                max_duration,
                f"must be between {c.MIN_DURATION_SECONDS} and {c.MAX_DURATION_SECONDS}",
            )
    opt_out = col.boolean(spec, "allowAutomaticTagOptOut", "spec.allowAutomaticTagOptOut", False)
    tag_keys = _parse_patterns(col, spec, "sessionTagKeys")
    source_identities: tuple[str, ...] | None = None
    if spec.get("sourceIdentities") is not None:
        source_identities = _parse_patterns(col, spec, "sourceIdentities")
    external_ids = _parse_patterns(col, spec, "externalIds")
    if col.errors:
        raise SpecError(col.errors)
    return PolicySpec(
        name=name,
        namespaces=namespaces,
        namespace_selector=selector,
        role_arns=role_arns,
        max_duration_seconds=max_duration,
        allow_automatic_tag_opt_out=opt_out,
        session_tag_keys=tag_keys,
        source_identities=source_identities,
        external_ids=external_ids,
    )


def _parse_patterns(
    col: _Collector,
    spec: Mapping[str, Any],
    key: str,
    *,
    placeholder: bool = True,
    form: re.Pattern[str] | None = None,
    form_rule: str = "",
) -> tuple[str, ...]:
    """A list of policy patterns: ``*``/``?`` within one part, ``**`` across parts and, where
    ``placeholder``, ``{namespace}``; any other brace is an error (a typo would never match)."""
    path = f"spec.{key}"
    raw = col.sequence(spec, key, path)
    if len(raw) > MAX_POLICY_ITEMS:
        col.add(path, f"<{len(raw)} items>", f"must have at most {MAX_POLICY_ITEMS} items")
        return ()
    out: list[str] = []
    for i, pattern in enumerate(raw):
        ipath = f"{path}[{i}]"
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
            col.add(ipath, pattern, f"must be a non-empty string of at most {MAX_PATTERN_CHARS} characters")
            continue
        rest = pattern.replace(PLACEHOLDER, "") if placeholder else pattern
        if "{" in rest or "}" in rest:
            col.add(
                ipath,
                pattern,
                "the only placeholder is {namespace}" if placeholder else "placeholders are not allowed here",
            )
            continue
        if form is not None and not form.fullmatch(pattern):
            col.add(ipath, pattern, form_rule)
            continue
        out.append(pattern)
    return tuple(out)


def _parse_selector(col: _Collector, raw: Any, path: str) -> LabelSelector | None:
    if not isinstance(raw, Mapping):
        col.add(path, raw, "must be a label selector object")
        return None
    labels = []
    for k, v in col.mapping(raw, "matchLabels", f"{path}.matchLabels").items():
        if not isinstance(v, str):
            col.add(f"{path}.matchLabels[{k!r}]", v, "must be a string")
        else:
            labels.append((str(k), v))
    exprs = []
    for i, e in enumerate(col.sequence(raw, "matchExpressions", f"{path}.matchExpressions")):
        epath = f"{path}.matchExpressions[{i}]"
        if not isinstance(e, Mapping) or not isinstance(e.get("key"), str):
            col.add(epath, e, "must have a key and an operator")
            continue
        op = e.get("operator")
        values = e.get("values") or []
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            col.add(f"{epath}.operator", op, "must be one of In, NotIn, Exists, DoesNotExist")
            continue
        if op in ("In", "NotIn") and not values:
            col.add(f"{epath}.values", values, f"must be non-empty for operator {op}")
            continue
        exprs.append((e["key"], op, tuple(str(v) for v in values)))
    return LabelSelector(match_labels=tuple(labels), match_expressions=tuple(exprs))
