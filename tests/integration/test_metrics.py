"""/metrics and /healthz, scraped over HTTP after issuing, refreshing and failing."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from rolecall.clock import FakeClock
from rolecall.schedule import parse_time
from tests.harness.k8s import K8s
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import Fault, STSFaultProxy
from tests.harness.wait import wait_for

ROLE = ROLE_PREFIX + "team-metrics"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_issue_refresh_and_failure(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy, clock: FakeClock
) -> None:
    op = start_operator()
    health = urllib.request.urlopen(f"http://127.0.0.1:{op.app.health_port}/healthz", timeout=5)
    assert health.status == 200
    port = op.app.metrics_port
    assert port != op.app.health_port  # /metrics names every binding: its own port, closable
    k8s.create_ar(namespace, "m", {"roleArn": ROLE})
    body = wait_for(
        lambda: (b := k8s.get_ar(namespace, "m")) and (b.get("status") or {}).get("nextRefresh") and b,
        timeout=10,
    )
    m = scrape(port)
    assert value(m, "rolecall_assume_role_requests_total", result="success", error_code="") == 1
    assert (
        value(m, "rolecall_credentials_expiration_timestamp_seconds", namespace=namespace, name="m")
        == parse_time(body["status"]["expiration"]).timestamp()
    )
    assert value(m, "rolecall_assumed_roles", ready="true") == 1
    assert value(m, "rolecall_assume_role_duration_seconds_count") == 1

    clock.set(parse_time(body["status"]["nextRefresh"]))
    wait_for(
        lambda: (
            value(scrape(port), "rolecall_assume_role_requests_total", result="success", error_code="") == 2
        ),
        timeout=10,
    )

    sts.add_fault(Fault(error="Throttling", action="AssumeRole", times=None))
    k8s.patch_ar(namespace, "m", {"spec": {"durationSeconds": 1800}})
    m = wait_for(
        lambda: (
            (s := scrape(port))
            and value(s, "rolecall_assume_role_requests_total", result="error", error_code="Throttling") >= 1
            and s
        ),
        timeout=10,
    )
    assert value(m, "rolecall_refresh_failures_total", reason="Throttled") >= 1
    # the old credentials still hold: still ready, and the gauge still shows their expiry
    assert value(m, "rolecall_assumed_roles", ready="true") == 1
