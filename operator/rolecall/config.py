"""Operator settings: one table from which the flags, the environment variables, the
``Settings`` object and the settings reference in docs/settings.md are all generated.

Each field of :class:`Settings` carries its flag, its environment variable (if any), its kind
and its documentation in the field's metadata. ``rolecall run``'s argument parser is built by
:func:`add_arguments`; :func:`from_args` turns parsed arguments back into ``Settings``; the
docs table is rendered by :func:`markdown_table` (``make manifests`` writes it, ``make
verify`` fails when it is stale). A setting is added in exactly one place: here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class InjectionMode(StrEnum):
    SIDECAR = "sidecar"
    FILE = "file"
    ENV = "env"


class HAMode(StrEnum):
    LEASE = "lease"
    NONE = "none"


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_json(name: str) -> dict[str, Any] | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"{name}: invalid value {value[:60]!r}: must be a JSON object ({exc})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{name}: invalid value {value[:60]!r}: must be a JSON object")
    return parsed


def _setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    flag: str | None = None,
    env: str | None = None,
    kind: str = "str",
    choices: tuple[str, ...] = (),
    short: str | None = None,
    factory: Callable[[], Any] | None = None,
    shown_default: str | None = None,
) -> Any:
    """A Settings field with its flag, environment variable, kind and doc.

    ``kind``: str, int, float, bool (``--flag`` switch), truefalse (``--flag=true|false``),
    list (repeatable), json (environment only), optional (str or None).
    """
    meta = {
        "doc": doc,
        "flag": flag,
        "env": env,
        "kind": kind,
        "choices": choices,
        "short": short,
        "shown_default": shown_default,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _region_default() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@dataclass
class Settings:
    # what to watch, how to reach the API server
    namespaces: tuple[str, ...] = _setting(
        (),
        flag="--namespace",
        short="-n",
        kind="list",
        doc="namespace (or glob) to watch; repeat; default: all",
    )
    kubeconfig: str | None = _setting(
        None,
        flag="--kubeconfig",
        env="ROLECALL_KUBECONFIG",
        kind="optional",
        doc="kubeconfig file (default: in-cluster, then ~/.kube/config)",
    )
    context: str | None = _setting(None, flag="--context", kind="optional", doc="kubeconfig context")
    # STS
    default_region: str = _setting(
        flag="--region",
        factory=_region_default,
        shown_default="AWS_REGION, AWS_DEFAULT_REGION or us-east-1",
        doc="default STS region (a binding's spec.region wins)",
    )
    sts_endpoint_url: str | None = _setting(
        None, kind="optional", doc="STS endpoint (default: botocore's resolution, e.g. AWS_ENDPOINT_URL_STS)"
    )
    sts_rate: float = _setting(
        10.0,
        flag="--sts-rate",
        env="ROLECALL_STS_RATE",
        kind="float",
        doc="AssumeRole calls per second, whole operator",
    )
    sts_burst: int = _setting(
        20, flag="--sts-burst", env="ROLECALL_STS_BURST", kind="int", doc="token-bucket burst"
    )
    sts_concurrency: int = _setting(
        8, flag="--sts-concurrency", kind="int", doc="AssumeRole calls in flight at once"
    )
    workers: int = _setting(
        16,
        flag="--workers",
        kind="int",
        doc="bindings reconciled at once (STS calls wait in their own fair lane)",
    )
    # policy and identity
    enforce_access: bool = _setting(
        True,
        flag="--enforce-access",
        env="ROLECALL_ENFORCE_ACCESS",
        kind="truefalse",
        doc="deny bindings no AssumedRolePolicy admits (false only for single-tenant clusters)",
    )
    session_tags: bool = _setting(
        True,
        flag="--session-tags",
        env="ROLECALL_SESSION_TAGS",
        kind="truefalse",
        doc="send the automatic session tags (kubernetes-namespace, …)",
    )
    cluster_name: str = _setting(
        "",
        flag="--cluster-name",
        env="ROLECALL_CLUSTER_NAME",
        doc="value of the kubernetes-cluster-name session tag",
    )
    operator_keys_secret: str | None = _setting(
        None,
        flag="--operator-keys-secret",
        env="ROLECALL_OPERATOR_KEYS_SECRET",
        kind="optional",
        doc="namespace/name of a Secret with the operator's static AWS keys (default: the AWS SDK chain)",
    )
    token_key_secret: str = _setting(
        "",
        flag="--token-key-secret",
        env="ROLECALL_TOKEN_KEY_SECRET",
        shown_default="<lease namespace>/rolecall-token-key",
        doc="namespace/name of the Secret holding the key sidecar tokens are derived from "
        "(created if absent; '-': random tokens)",
    )
    # pods
    default_injection_mode: str = _setting(
        InjectionMode.SIDECAR.value,
        flag="--default-injection-mode",
        choices=tuple(m.value for m in InjectionMode),
        doc="how pods get credentials unless the AssumedRole or the pod says otherwise",
    )
    sidecar_image: str = _setting(
        "ghcr.io/rolecall/rolecall:0.1.0",
        flag="--sidecar-image",
        env="ROLECALL_SIDECAR_IMAGE",
        doc="image of the injected credentials sidecar",
    )
    sidecar_port: int = _setting(9911, kind="int", doc="port of the sidecar on the pod's loopback")
    sidecar_resources: dict[str, Any] | None = _setting(
        env="ROLECALL_SIDECAR_RESOURCES",
        kind="json",
        factory=lambda: env_json("ROLECALL_SIDECAR_RESOURCES"),
        shown_default="none",
        doc="the sidecar's resources (JSON), e.g. from the Helm value sidecar.resources",
    )
    # endpoints
    health_host: str = _setting("0.0.0.0", flag="--health-host", doc="address of /healthz")
    health_port: int = _setting(
        8080, flag="--health-port", kind="int", doc="port of /healthz (0: any free port, -1: off)"
    )
    metrics_host: str = _setting("0.0.0.0", flag="--metrics-host", doc="address of /metrics")
    metrics_port: int = _setting(
        8081,
        flag="--metrics-port",
        kind="int",
        doc="port of /metrics, apart from /healthz (0: any free port, -1: off; the health port: served there)",
    )
    metrics_auth: bool = _setting(
        False,
        flag="--metrics-auth",
        env="ROLECALL_METRICS_AUTH",
        kind="truefalse",
        doc="serve /metrics only to bearer tokens allowed to get the /metrics non-resource URL "
        "(TokenReview + SubjectAccessReview)",
    )
    webhook_enabled: bool = _setting(
        False, flag="--webhook", env="ROLECALL_WEBHOOK", kind="bool", doc="serve the admission webhooks"
    )
    webhook_host: str = _setting("0.0.0.0", flag="--webhook-host", doc="address of the webhook server")
    webhook_port: int = _setting(9443, flag="--webhook-port", kind="int", doc="port of the webhook server")
    webhook_cert: str | None = _setting(
        None,
        flag="--webhook-cert",
        kind="optional",
        doc="TLS certificate file (default: self-signed, development only)",
    )
    webhook_key: str | None = _setting(None, flag="--webhook-key", kind="optional", doc="TLS key file")
    webhook_client_ca: str | None = _setting(
        None,
        flag="--webhook-client-ca",
        kind="optional",
        doc="CA file: accept webhook calls only with a client certificate it signed (an API server "
        "configured with an admission kubeconfig presents one)",
    )
    webhook_service: str | None = _setting(
        None,
        flag="--webhook-service",
        kind="optional",
        doc="namespace/name of the webhook Service (production)",
    )
    webhook_url_host: str | None = _setting(
        None,
        flag="--webhook-url-host",
        kind="optional",
        doc="development: register the webhooks at https://HOST:PORT",
    )
    webhook_failure_policy: str = _setting(
        "Ignore",
        flag="--webhook-failure-policy",
        choices=("Ignore", "Fail"),
        doc="failurePolicy of the pod webhook the operator registers (development)",
    )
    webhook_configuration_name: str = _setting(
        "rolecall.dev", doc="name of the webhook configurations the operator registers (development)"
    )
    # high availability
    ha: str = _setting(
        HAMode.LEASE.value,
        flag="--ha",
        env="ROLECALL_HA",
        choices=tuple(m.value for m in HAMode),
        doc="lease: several replicas, one active; none: single replica",
    )
    lease_namespace: str = _setting(
        flag="--lease-namespace",
        factory=lambda: os.environ.get("POD_NAMESPACE", "default"),
        shown_default="POD_NAMESPACE or default",
        doc="namespace of the leader Lease",
    )
    lease_name: str = _setting("rolecall-leader", flag="--lease-name", doc="name of the leader Lease")
    lease_seconds: float = _setting(
        15.0,
        flag="--lease-seconds",
        kind="float",
        doc="lease duration; a standby takes over within ~1.3 times this",
    )
    identity: str = _setting(
        factory=lambda: os.environ.get("POD_NAME") or os.uname().nodename + f"-{os.getpid()}",
        shown_default="POD_NAME or host-pid",
        doc="this replica's name in the Lease",
    )
    verbose: bool = _setting(False, flag="--verbose", short="-v", kind="bool", doc="debug logging")


def settings_fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Settings))


def _env_default(f: dataclasses.Field[Any], default: Any) -> Any:
    env = f.metadata.get("env")
    kind = f.metadata["kind"]
    if not env or kind == "json":
        return default
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    if kind in ("bool", "truefalse"):
        return env_bool(env, bool(default))
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every setting with a flag, as an argparse option (defaults follow the environment)."""
    defaults = Settings()
    for f in settings_fields():
        flag = f.metadata.get("flag")
        if not flag:
            continue
        names = [flag] + ([f.metadata["short"]] if f.metadata.get("short") else [])
        default = _env_default(f, getattr(defaults, f.name))
        kind = f.metadata["kind"]
        doc = f.metadata["doc"] + " (default: %(default)s)"
        kwargs: dict[str, Any] = {"dest": f.name, "help": doc}
        if kind == "list":
            kwargs.update(action="append", default=[])
            kwargs["help"] = f.metadata["doc"]
        elif kind == "bool":
            kwargs.update(action="store_true", default=default)
        elif kind == "truefalse":
            kwargs.update(default="true" if default else "false", choices=["true", "false"])
        elif kind in ("int", "float"):
            kwargs.update(type=int if kind == "int" else float, default=default)
        else:
            kwargs.update(default=default)
            if f.metadata.get("choices"):
                kwargs["choices"] = list(f.metadata["choices"])
        parser.add_argument(*names, **kwargs)


def from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed arguments; fields without a flag keep their defaults."""
    values: dict[str, Any] = {}
    for f in settings_fields():
        if not f.metadata.get("flag") or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        kind = f.metadata["kind"]
        if kind == "list":
            value = tuple(value)
        elif kind == "truefalse":
            value = value == "true"
        values[f.name] = value
    return Settings(**values)


def markdown_table() -> str:
    """The settings reference as a Markdown table (docs/settings.md)."""
    defaults = Settings.__dataclass_fields__
    rows = ["| flag | environment | default | what it does |", "|---|---|---|---|"]
    for f in defaults.values():
        flag = f.metadata.get("flag")
        env = f.metadata.get("env")
        if not flag and not env:
            continue
        if f.metadata.get("shown_default"):
            shown = f.metadata["shown_default"]
        elif f.default is dataclasses.MISSING:
            shown = ""
        else:
            shown = f.default
            if isinstance(shown, bool):
                shown = "true" if shown else "false"
            elif shown in (None, (), ""):
                shown = "—"
        doc = f.metadata["doc"]
        if f.metadata.get("choices"):
            doc += " (" + " \\| ".join(f.metadata["choices"]) + ")"
        flag_text = f"`{flag}`" if flag else "—"
        env_text = f"`{env}`" if env else "—"
        rows.append(f"| {flag_text} | {env_text} | `{shown}` | {doc} |".replace("`—`", "—"))
    return "\n".join(rows) + "\n"
