"""Operator settings, from command-line flags with environment fallbacks."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any


def _env_json(name: str) -> dict[str, Any] | None:
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


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    kubeconfig: str | None = None
    context: str | None = None
    # STS
    default_region: str = field(
        default_factory=lambda: (
            os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
    )
    sts_endpoint_url: str | None = None  # None: botocore's own resolution (AWS_ENDPOINT_URL_STS)
    sts_rate: float = 10.0  # AssumeRole calls per second, whole operator
    sts_burst: int = 20
    sts_concurrency: int = 8
    workers: int = 16
    # policy and identity
    enforce_access: bool = True
    session_tags: bool = True
    cluster_name: str = ""
    operator_keys_secret: str | None = None  # "namespace/name" of a Secret with static keys
    # pods
    default_injection_mode: str = "sidecar"
    sidecar_image: str = "ghcr.io/rolecall/rolecall:0.1.0"
    sidecar_port: int = 9911
    # the sidecar's resources (JSON), e.g. from the Helm value sidecar.resources
    sidecar_resources: dict[str, Any] | None = field(
        default_factory=lambda: _env_json("ROLECALL_SIDECAR_RESOURCES")
    )
    uninjected_check_seconds: float = 300.0
    # endpoints
    health_host: str = "0.0.0.0"
    health_port: int = 8080  # /healthz and /metrics
    webhook_enabled: bool = False
    webhook_host: str = "0.0.0.0"
    webhook_port: int = 9443
    webhook_cert: str | None = None
    webhook_key: str | None = None
    webhook_service: str | None = None  # "namespace/name" of the Service in front of the webhooks
    webhook_url_host: str | None = None  # dev: register https://<host>:<port> (self-signed)
    webhook_failure_policy: str = "Ignore"
    webhook_configuration_name: str = "rolecall.dev"
    # high availability
    ha: str = "lease"  # lease | none
    lease_namespace: str = field(default_factory=lambda: os.environ.get("POD_NAMESPACE", "default"))
    lease_name: str = "rolecall-leader"
    lease_seconds: float = 15.0
    identity: str = field(
        default_factory=lambda: os.environ.get("POD_NAME") or os.uname().nodename + f"-{os.getpid()}"
    )
    verbose: bool = False
