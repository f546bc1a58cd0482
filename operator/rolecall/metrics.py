"""Prometheus metrics (docs/install.md), in a registry per operator instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.assume_requests = Counter(
            "rolecall_assume_role_requests",
            "STS AssumeRole calls by result and error code.",
            ["result", "error_code"],
            registry=self.registry,
        )
        self.assume_duration = Histogram(
            "rolecall_assume_role_duration_seconds",
            "Latency of STS AssumeRole calls.",
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.expiration = Gauge(
            "rolecall_credentials_expiration_timestamp_seconds",
            "Expiration of the credentials currently stored for each AssumedRole.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.assumed_roles = Gauge(
            "rolecall_assumed_roles",
            "AssumedRoles known to the operator, by readiness.",
            ["ready"],
            registry=self.registry,
        )
        self.refresh_failures = Counter(
            "rolecall_refresh_failures",
            "Failed attempts to obtain credentials, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.pod_injections = Counter(
            "rolecall_pod_injections",
            "Pod admission decisions by mode and result.",
            ["mode", "result"],
            registry=self.registry,
        )
        self.uninjected_pods = Gauge(
            "rolecall_uninjected_pods",
            "Running pods of bound ServiceAccounts that were not injected.",
            ["namespace", "name"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
