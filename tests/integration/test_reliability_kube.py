"""Kubernetes API faults and hostile edits: no lost update, convergence, no hot loop.

The in-process operator reaches the API emulator through :class:`KubeFaultProxy` (a
kubeconfig pointing at the proxy), which answers chosen requests with 409/500, cuts watch
streams, or makes the API unreachable. Its clock is a FakeClock: refreshes fall due and
retries come round when the test moves it. Real time is only what the HTTP traffic, kopf's
own watch reconnects and the proxy's outage take (each test says which). Figures go to
``$ROLECALL_FIGURES_DIR`` and into docs/reliability.md.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolecall import constants as c
from rolecall.clock import FakeClock
from rolecall.schedule import format_time, parse_time
from tests.harness.k8s import K8s
from tests.harness.kubeproxy import (
    KubeFaultProxy,
    Rule,
    Timeline,
    per_window,
    settle,
    step_through,
    write_figures,
)
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import Fault, STSFaultProxy
from tests.harness.wait import wait_for

ROLE = ROLE_PREFIX + "team-kube"
NAME = "s3"
EVERY_KEY = {
    c.KEY_ACCESS_KEY_ID,
    c.KEY_SECRET_ACCESS_KEY,
    c.KEY_SESSION_TOKEN,
    c.KEY_EXPIRATION,
    c.KEY_REGION,
    c.KEY_DEFAULT_REGION,
    c.KEY_CREDENTIALS,
    c.KEY_CONFIG,
    c.KEY_CREDENTIALS_JSON,
    c.KEY_TOKEN,
}


def ar_spec(**extra: Any) -> dict[str, Any]:
    return {
        "roleArn": ROLE,
        "subjects": [{"kind": "ServiceAccount", "name": "app"}],
        "region": "us-east-1",
        **extra,
    }


@pytest.fixture
def kube_proxy(kube_emulator: Any, operator_kubeconfig: Path, tmp_path: Path) -> Iterator[KubeFaultProxy]:
    proxy = KubeFaultProxy(kube_emulator.url).start()
    # the operator's own login (the chart's ServiceAccount), through the proxy
    proxy.kubeconfig = proxy.write_kubeconfig(operator_kubeconfig, tmp_path / "via-proxy.kubeconfig")  # type: ignore[attr-defined]
    yield proxy
    proxy.stop()


@pytest.fixture
def proxied(
    kube_proxy: KubeFaultProxy,
    start_operator: Any,
    k8s: K8s,
    namespace: str,
    policy: str,
    sts: STSFaultProxy,
    clock: FakeClock,
) -> Any:
    """An operator talking to the API through the proxy, with one Ready binding ``s3``."""
    op = start_operator(kubeconfig=str(kube_proxy.kubeconfig))  # type: ignore[attr-defined]
    k8s.create_ar(namespace, NAME, ar_spec())
    body = wait_for(lambda: ready_body(k8s, namespace, NAME), timeout=10, message="never Ready")
    settle(op, clock)
    return op, body


def ready_body(k8s: K8s, ns: str, name: str) -> dict[str, Any] | None:
    cnd = k8s.condition(ns, name)
    if cnd and cnd["status"] == "True" and cnd["reason"] == "CredentialsIssued":
        return k8s.get_ar(ns, name)
    return None


def assumes(sts: STSFaultProxy, role: str = ROLE) -> int:
    return len(sts.requests(action="AssumeRole", role_arn=role))


def consistent(k8s: K8s, ns: str, name: str) -> dict[str, str]:
    """The Secret is whole and agrees with itself and with the status; returns its data."""
    secret = k8s.secret(ns, name)
    assert secret is not None, "no Secret"
    data = k8s.secret_data(ns, name) or {}
    assert set(data) == EVERY_KEY, f"keys: {sorted(data)}"
    doc = json.loads(data[c.KEY_CREDENTIALS_JSON])
    ann = secret["metadata"]["annotations"]
    assert doc["Expiration"] == ann[c.ANN_EXPIRATION] == data[c.KEY_EXPIRATION]
    assert doc["AccessKeyId"] == data[c.KEY_ACCESS_KEY_ID]
    assert doc["SecretAccessKey"] == data[c.KEY_SECRET_ACCESS_KEY]
    assert doc["SessionToken"] == data[c.KEY_SESSION_TOKEN]
    assert f"aws_access_key_id = {doc['AccessKeyId']}" in data[c.KEY_CREDENTIALS]
    body = k8s.get_ar(ns, name) or {}
    refs = secret["metadata"].get("ownerReferences") or []
    assert any(r.get("uid") == body["metadata"]["uid"] for r in refs), "owner reference missing"
    status = body.get("status") or {}
    assert status.get("expiration") == ann[c.ANN_EXPIRATION], "status and Secret disagree"
    assert status.get("lastRefresh") == ann[c.ANN_ISSUED_AT]
    return data


def converge(k8s: K8s, ns: str, name: str, timeout: float = 10) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        try:
            return consistent(k8s, ns, name) if ready_body(k8s, ns, name) else None
        except (AssertionError, KeyError):
            return None

    return wait_for(check, timeout=timeout, message="the binding did not converge")


# --- 409 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("conflicts", [2, 5], ids=["absorbed", "exhausted"])
def test_conflicts_on_secret_writes_lose_no_update(
    conflicts: int,
    proxied: Any,
    kube_proxy: KubeFaultProxy,
    k8s: K8s,
    namespace: str,
    sts: STSFaultProxy,
    clock: FakeClock,
) -> None:
    op, body = proxied
    old = consistent(k8s, namespace, NAME)
    rule = kube_proxy.add_rule(
        Rule(
            method="PUT",
            path=rf"/namespaces/{namespace}/secrets/{NAME}$",
            status=409,
            reason="Conflict",
            times=conflicts,
        )
    )
    kube_proxy.clear()
    sts.clear()
    clock.set(parse_time(body["status"]["nextRefresh"]))
    settle(op, clock)
    # three attempts per write (re-reading the Secret between them); then backoff and retry
    timeline = Timeline()
    timeline.add(0, 0)
    step_through(op, clock, 60, step=1, sample=lambda: assumes(sts), timeline=timeline)
    data = converge(k8s, namespace, NAME)
    assert data[c.KEY_ACCESS_KEY_ID] != old[c.KEY_ACCESS_KEY_ID]
    puts = kube_proxy.requests(method="PUT", path=rf"/secrets/{NAME}$")
    assert kube_proxy.applied(rule) == conflicts
    assert len(puts) == conflicts + 1
    # the credentials STS issued are kept in memory until a write succeeds: one call, always
    expected_calls = 1
    assert assumes(sts) == expected_calls
    write_figures(
        f"kube-409-secret-{conflicts}",
        {
            "test": f"test_conflicts_on_secret_writes_lose_no_update[{'absorbed' if conflicts < 3 else 'exhausted'}]",
            "conflicts_injected": conflicts,
            "secret_put_attempts": len(puts),
            "secret_gets": len(kube_proxy.requests(method="GET", path=rf"/secrets/{NAME}$")),
            "sts_calls": assumes(sts),
            "sts_calls_per_simulated_minute": timeline.per_minute(),
            "credentials_lost": 0,
        },
    )


def test_conflicts_and_500s_on_status_writes_are_retried(
    proxied: Any, kube_proxy: KubeFaultProxy, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    op, body = proxied
    status_path = rf"/assumedroles/{NAME}/status$"
    kube_proxy.add_rule(Rule(method="PATCH", path=status_path, status=409, reason="Conflict", times=1))
    kube_proxy.add_rule(Rule(method="PATCH", path=status_path, status=500, times=2))
    kube_proxy.clear()
    sts.clear()
    t0 = parse_time(body["status"]["nextRefresh"])
    clock.set(t0)
    settle(op, clock)
    # the Secret is written; the status write fails: status still shows the old credentials
    assert assumes(sts) == 1
    stale = (k8s.get_ar(namespace, NAME) or {})["status"]
    fresh = (k8s.secret(namespace, NAME) or {})["metadata"]["annotations"]
    assert stale["lastRefresh"] == body["status"]["lastRefresh"] != fresh[c.ANN_ISSUED_AT]
    offset = step_through(op, clock, 120, step=5)
    data = converge(k8s, namespace, NAME)
    patches = kube_proxy.requests(method="PATCH", path=status_path)
    assert assumes(sts) == 1, "a failed status write must not cost another STS call"
    assert len(patches) == 4, [(p.status, p.fault) for p in patches]
    assert data[c.KEY_EXPIRATION] == (k8s.get_ar(namespace, NAME) or {})["status"]["expiration"]
    write_figures(
        "kube-409-500-status",
        {
            "test": "test_conflicts_and_500s_on_status_writes_are_retried",
            "status_faults_injected": 3,
            "status_patch_attempts": len(patches),
            "sts_calls": assumes(sts),
            "simulated_seconds_stepped": offset,
            "retry_interval_seconds": 30,
            "credentials_lost": 0,
        },
    )


# --- 500 ---------------------------------------------------------------------------------


def test_500s_on_secret_writes_back_off_and_converge(
    proxied: Any, kube_proxy: KubeFaultProxy, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    op, body = proxied
    old = consistent(k8s, namespace, NAME)
    rule = kube_proxy.add_rule(Rule(method="PUT", path=rf"/secrets/{NAME}$", status=500, times=None))
    kube_proxy.clear()
    sts.clear()
    clock.set(parse_time(body["status"]["nextRefresh"]))
    settle(op, clock)
    timeline = Timeline()
    timeline.add(0, assumes(sts))
    real_start = time.time()
    offset = step_through(op, clock, 60, step=1, sample=lambda: assumes(sts), timeline=timeline)
    offset = step_through(
        op, clock, 240, step=10, sample=lambda: assumes(sts), timeline=timeline, offset=offset
    )
    real_fault = time.time() - real_start
    # every attempt cost one STS call (new credentials that could not be stored): bounded by
    # the backoff, and the old credentials never moved
    assert (k8s.secret_data(namespace, NAME) or {}) == old
    during = kube_proxy.requests(since=real_start)
    per_second = per_window([r.time for r in during], 1.0)
    steps = timeline.steps_per_minute()
    assert steps[0] <= 6 and all(n <= 2 for n in steps[1:4]), steps
    puts = kube_proxy.requests(method="PUT", path=rf"/secrets/{NAME}$")
    kube_proxy.remove_rule(rule)
    cleared = offset
    while offset - cleared < 320 and not (
        (d := k8s.secret_data(namespace, NAME)) and d[c.KEY_ACCESS_KEY_ID] != old[c.KEY_ACCESS_KEY_ID]
    ):
        offset = step_through(op, clock, 10, step=10, offset=offset)
    data = converge(k8s, namespace, NAME)
    assert data[c.KEY_ACCESS_KEY_ID] != old[c.KEY_ACCESS_KEY_ID]
    write_figures(
        "kube-500-secret",
        {
            "test": "test_500s_on_secret_writes_back_off_and_converge",
            "simulated_seconds_failing": cleared,
            "sts_calls_during_fault": timeline.samples[-1][1],
            "sts_calls_per_simulated_minute": timeline.per_minute(),
            "secret_put_attempts_during_fault": len(puts),
            "api_requests_during_fault": len(during),
            "max_api_requests_in_any_real_second": per_second,
            "real_seconds_of_fault": round(real_fault, 1),
            "simulated_seconds_to_converge_after_clear": offset - cleared,
            "credentials_lost": 0,
        },
    )


# --- watch streams -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["after-each-event", "every-half-second"])
def test_dropped_watch_streams_lose_no_event(
    how: str,
    kube_proxy: KubeFaultProxy,
    k8s: K8s,
    namespace: str,
    policy: str,
    start_operator: Any,
    sts: STSFaultProxy,
    clock: FakeClock,
) -> None:
    if how == "after-each-event":  # the connection breaks mid-stream after every event
        rule = Rule(method="GET", path=r"watch=true", cut_after_events=1, times=None)
    else:  # the server ends every stream after 0.5 s (a short server-side watch timeout)
        rule = Rule(method="GET", path=r"watch=true", cut_after_seconds=0.5, graceful=True, times=None)
    kube_proxy.add_rule(rule)
    op = start_operator(kubeconfig=str(kube_proxy.kubeconfig))  # type: ignore[attr-defined]
    started = time.time()
    # a new binding, a hand-deleted Secret, a spec change: each must reach the operator
    k8s.create_ar(namespace, NAME, ar_spec())
    converge(k8s, namespace, NAME)
    k8s.core.delete_namespaced_secret(NAME, namespace)
    converge(k8s, namespace, NAME)
    k8s.patch_ar(namespace, NAME, {"spec": {"durationSeconds": 7200}})
    wait_for(
        lambda: (
            (b := k8s.get_ar(namespace, NAME))
            and (b.get("status") or {}).get("observedGeneration") == b["metadata"]["generation"] == 2
        ),
        timeout=10,
        message="the spec change was not seen",
    )
    converge(k8s, namespace, NAME)
    for i in range(5):  # more traffic on the watched resources
        k8s.create_ar(namespace, f"extra{i}", ar_spec())
    for i in range(5):
        converge(k8s, namespace, f"extra{i}")
    settle(op, clock)
    time.sleep(0.5)
    quiet = time.time()
    time.sleep(1.5)  # idle: the cuts must not turn into a reconnect loop
    elapsed = time.time() - started
    watches = kube_proxy.requests(watch=True, since=started)
    cut = [w for w in watches if w.fault == "cut"]
    idle = kube_proxy.requests(watch=True, since=quiet)
    assert cut, "no stream was cut"
    # one STS call per binding (6) and one for the spec change; the deleted Secret is
    # restored from the credentials the operator issued, which still hold (no STS call)
    assert assumes(sts) == 7, assumes(sts)
    write_figures(
        f"kube-watch-{how}",
        {
            "test": f"test_dropped_watch_streams_lose_no_event[{how}]",
            "real_seconds": round(elapsed, 1),
            "watch_requests": len(watches),
            "streams_cut": len(cut),
            "watch_requests_per_second": round(len(watches) / elapsed, 1),
            "max_watch_requests_in_any_second": per_window([w.time for w in watches], 1.0),
            "watch_requests_in_1.5s_idle": len(idle),
            "sts_calls": assumes(sts),
        },
    )
    if how == "after-each-event":
        assert len(idle) == 0, "watches reconnected without events: a reconnect loop"


# --- unreachable ---------------------------------------------------------------------------


def test_api_unreachable_for_two_minutes(
    proxied: Any, kube_proxy: KubeFaultProxy, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    """Two simulated minutes of outage: the FakeClock moves 120 s (in 5 s steps) while the
    proxy resets every connection; real time spent down is a few seconds (kopf's own watch
    retries run on real time, so only their first steps are exercised)."""
    op, body = proxied
    old = consistent(k8s, namespace, NAME)
    k8s.create_ar(namespace, "second", ar_spec())
    converge(k8s, namespace, "second")
    settle(op, clock)
    sts.clear()
    kube_proxy.set_down(True, mode="reset")
    down_at = time.time()
    due = parse_time(body["status"]["nextRefresh"])
    clock.set(due)  # the refresh falls due at the start of the outage
    offset = step_through(op, clock, 120, step=5)
    stepped = time.time()
    time.sleep(max(2.0, 4.0 - (stepped - down_at)))  # at least 4 real seconds down, 2 of them idle
    attempts = kube_proxy.connections(since=down_at)
    real_down = time.time() - down_at
    idle = [a for a in attempts if a[0] >= stepped]  # kopf's watch retries only (real-time backoff)
    idle_rate = len(idle) / (time.time() - stepped)
    assert idle_rate <= 5, f"{idle_rate:.1f} connection attempts per second while idle: a hot loop"
    stepping = len(attempts) - len(idle)
    # each reconcile tries 4 connections (urllib3 retries); 2 bindings, backing off from 1 s:
    # at most 8 reconciles each in 120 s
    assert stepping <= 2 * 8 * 4 + 20, f"{stepping} connection attempts in 120 simulated seconds"
    # the operator keeps the Secret it wrote (no GET per refresh): each due binding calls STS
    # and cannot store the result; the retries come every 30 s of its clock, not faster
    discarded = assumes(sts)
    assert discarded <= 2 * 5, f"{discarded} STS calls for 2 bindings in 120 simulated seconds"
    kube_proxy.set_down(False)
    up_at = time.time()
    # the operator retries on its own schedule (30 s of its clock after an API error)
    while not (
        (d := k8s.secret_data(namespace, NAME)) and d[c.KEY_ACCESS_KEY_ID] != old[c.KEY_ACCESS_KEY_ID]
    ):
        assert offset < 300, "no refresh after the API came back"
        offset = step_through(op, clock, 5, step=5, offset=offset)
    data = converge(k8s, namespace, NAME, timeout=15)
    converged_real = time.time() - up_at
    assert data[c.KEY_TOKEN] == old[c.KEY_TOKEN]
    converge(k8s, namespace, "second")
    # the watches are back: a hand edit is seen again
    k8s.core.patch_namespaced_secret(NAME, namespace, {"stringData": {"extra": "x"}})
    wait_for(
        lambda: "extra" not in (k8s.secret_data(namespace, NAME) or {}),
        timeout=15,
        message="watch not resumed",
    )
    write_figures(
        "kube-unreachable-2min",
        {
            "test": "test_api_unreachable_for_two_minutes",
            "simulated_seconds_down": 120,
            "real_seconds_down": round(real_down, 1),
            "connection_attempts_while_down": len(attempts),
            "connection_attempts_while_clock_stepped_120s": stepping,
            "connection_attempts_per_real_second_idle_kopf_only": round(idle_rate, 1),
            "sts_calls_while_down": discarded,
            "issued_credentials_discarded": discarded,
            "simulated_seconds_after_up_to_refresh": offset - 120,
            "real_seconds_after_up_to_converge": round(converged_real, 1),
            "credentials_lost": 0,
        },
    )


def test_unreachable_api_is_handled_as_a_kube_error(
    proxied: Any, kube_proxy: KubeFaultProxy, k8s: K8s, namespace: str, clock: FakeClock, log_capture: Any
) -> None:
    op, body = proxied
    kube_proxy.set_down(True, mode="refuse")
    clock.set(parse_time(body["status"]["nextRefresh"]))
    settle(op, clock)
    kube_proxy.set_down(False)
    text = log_capture.text()
    assert "failed unexpectedly" not in text, [x for x in text.splitlines() if "unexpectedly" in x][:2]


def test_secret_gone_between_read_and_write_is_written_with_one_sts_call(
    proxied: Any, kube_proxy: KubeFaultProxy, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    op, body = proxied
    kube_proxy.add_rule(
        Rule(
            method="PUT",
            path=rf"/secrets/{NAME}$",
            status=404,
            reason="NotFound",
            message="secrets not found",
        )
    )
    sts.clear()
    kube_proxy.clear()
    clock.set(parse_time(body["status"]["nextRefresh"]))
    settle(op, clock)
    step_through(op, clock, 10, step=1)
    converge(k8s, namespace, NAME)
    posts = kube_proxy.requests(method="POST", path=r"/secrets$")
    write_figures(
        "kube-secret-gone-before-write",
        {
            "test": "test_secret_gone_between_read_and_write_is_written_with_one_sts_call",
            "sts_calls": assumes(sts),
            "post_answers": [p.status for p in posts],
        },
    )
    assert all(p.status != 500 for p in posts), [p.status for p in posts]
    assert assumes(sts) == 1


# --- our own status event overtaking the PATCH answer ----------------------------------------


def test_own_status_event_arriving_before_the_patch_response_causes_no_extra_sts_call(
    proxied: Any, kube_proxy: KubeFaultProxy, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    _, body = proxied
    sts.add_fault(Fault(error="AccessDenied", action="AssumeRole", role_arn=ROLE, times=None))
    # the API server applies the status PATCH (and sends its watch event) at once but its
    # answer takes 0.3 s to arrive, as on a busy network
    kube_proxy.add_rule(Rule(method="PATCH", path=rf"/assumedroles/{NAME}/status$", hold=0.3, times=None))
    sts.clear()
    clock.set(parse_time(body["status"]["nextRefresh"]))
    time.sleep(2.0)  # the clock stands still: the next retry is 1-2 s of it away
    calls = assumes(sts)
    write_figures(
        "kube-own-status-event",
        {"test": "test_own_status_event_...", "sts_calls_in_2s_at_a_standstill": calls},
    )
    assert calls == 1, f"{calls} STS calls in 2 real seconds while the operator's clock stood still"


# --- hostile edits -------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_hostile_secret_edits_are_restored_without_sts(
    proxied: Any, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    op, _ = proxied
    original = consistent(k8s, namespace, NAME)
    secret = k8s.secret(namespace, NAME) or {}
    edits: dict[str, dict[str, Any]] = {
        "key-changed": {"data": {c.KEY_SECRET_ACCESS_KEY: _b64("hacked")}},
        "key-removed": {"data": {c.KEY_SESSION_TOKEN: None}},
        "data-added": {"data": {"AWS_PROFILE": _b64("attacker")}},
        "owner-reference-removed": {"metadata": {"ownerReferences": None}},
        "annotation-changed": {"metadata": {"annotations": {c.ANN_ROLE_ARN: ROLE_PREFIX + "team-other"}}},
        "expiration-key-changed": {"data": {c.KEY_EXPIRATION: _b64("2099-01-01T00:00:00Z")}},
    }
    restored: dict[str, float] = {}
    for what, patch in edits.items():
        started = time.time()
        k8s.core.patch_namespaced_secret(NAME, namespace, patch)

        def back() -> bool:
            now = k8s.secret(namespace, NAME) or {}
            meta = now.get("metadata", {})
            return (
                (k8s.secret_data(namespace, NAME) or {}) == original
                and bool(meta.get("ownerReferences"))
                and meta.get("labels", {}).get(c.LABEL_MANAGED_BY) == "rolecall"
                and meta.get("annotations", {}).get(c.ANN_ROLE_ARN) == ROLE
            )

        wait_for(back, timeout=10, message=f"{what}: not restored")
        restored[what] = round(time.time() - started, 3)
        settle(op, clock)
    assert assumes(sts) == 1, "restoring a hand-edited Secret must reuse the valid credentials"
    assert (k8s.secret(namespace, NAME) or {})["metadata"]["uid"] == secret["metadata"]["uid"]
    consistent(k8s, namespace, NAME)
    write_figures(
        "hostile-secret",
        {
            "test": "test_hostile_secret_edits_are_restored_without_sts",
            "edits": list(edits),
            "real_seconds_to_restore": restored,
            "sts_calls": assumes(sts) - 1,
        },
    )


def test_removed_managed_by_label_is_restored(
    proxied: Any, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    op, _ = proxied
    k8s.core.patch_namespaced_secret(NAME, namespace, {"metadata": {"labels": {c.LABEL_MANAGED_BY: None}}})
    time.sleep(0.5)
    settle(op, clock)
    labels = wait_for(
        lambda: ((k8s.secret(namespace, NAME) or {})["metadata"].get("labels") or {}).get(c.LABEL_MANAGED_BY),
        timeout=3,
        message="the managed-by label was not restored",
    )
    assert labels == "rolecall"


def test_unreadable_credentials_are_restored_without_sts(
    proxied: Any, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    op, _ = proxied
    original = consistent(k8s, namespace, NAME)
    k8s.core.patch_namespaced_secret(NAME, namespace, {"data": {c.KEY_CREDENTIALS_JSON: _b64("{not json")}})
    data = wait_for(
        lambda: (
            (d := k8s.secret_data(namespace, NAME))
            and d.get(c.KEY_CREDENTIALS_JSON, "").startswith("{\n")
            and d
        ),
        timeout=10,
        message="not repaired",
    )
    settle(op, clock)
    consistent(k8s, namespace, NAME)
    # the operator issued these credentials and they still hold: restored as they were
    assert data == original
    assert assumes(sts) == 1


def test_substituted_credentials_json_is_not_adopted(
    proxied: Any, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    op, _ = proxied
    original = consistent(k8s, namespace, NAME)
    doc = json.loads(original[c.KEY_CREDENTIALS_JSON])
    doc.update(
        AccessKeyId="ASIAATTACKER00000000", SecretAccessKey="attacker-secret", SessionToken="attacker-token"
    )
    k8s.core.patch_namespaced_secret(
        NAME, namespace, {"data": {c.KEY_CREDENTIALS_JSON: _b64(json.dumps(doc, indent=2))}}
    )
    time.sleep(1.0)
    settle(op, clock)
    data = wait_for(lambda: k8s.secret_data(namespace, NAME), timeout=5)
    assert "ASIAATTACKER00000000" not in data.values()
    assert data[c.KEY_ACCESS_KEY_ID] != "ASIAATTACKER00000000", (
        "the substituted keys were spread to every key"
    )


def test_hostile_status_is_restored(
    proxied: Any, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock, start_operator: Any
) -> None:
    op, body = proxied
    truth = body["status"]
    fake_expiry = "2099-01-01T00:00:00Z"
    started = time.time()
    k8s.custom.patch_namespaced_custom_object_status(
        "rolecall.dev",
        "v1alpha1",
        namespace,
        "assumedroles",
        NAME,
        {
            "status": {
                "expiration": fake_expiry,
                "nextRefresh": fake_expiry,
                "assumedRoleArn": "arn:aws:sts::123456789012:assumed-role/admin/x",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "CredentialsIssued",
                        "message": "all good, trust me",
                        "lastTransitionTime": format_time(datetime.datetime.now(datetime.UTC)),
                    }
                ],
            }
        },
    )
    restored = wait_for(
        lambda: (
            (b := k8s.get_ar(namespace, NAME)) and b["status"].get("expiration") == truth["expiration"] and b
        ),
        timeout=10,
        message="the hostile status was not rewritten",
    )
    seconds = time.time() - started
    status = restored["status"]
    assert status["nextRefresh"] == truth["nextRefresh"]
    assert status["assumedRoleArn"] == truth["assumedRoleArn"]
    ready = next(x for x in status["conditions"] if x["type"] == "Ready")
    assert ready["message"] != "all good, trust me"
    assert {x["type"] for x in status["conditions"]} == {"Ready", "RefreshFailing"}
    # a binding that is not Ready: someone claims it is
    k8s.create_ar(namespace, "bad", ar_spec(sessionPolicy="{not json"))
    wait_for(lambda: (x := k8s.condition(namespace, "bad")) and x["reason"] == "InvalidSpec", timeout=10)
    settle(op, clock)
    k8s.custom.patch_namespaced_custom_object_status(
        "rolecall.dev",
        "v1alpha1",
        namespace,
        "assumedroles",
        "bad",
        {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "CredentialsIssued", "message": "fine"}
                ],
                "expiration": fake_expiry,
            }
        },
    )
    wait_for(
        lambda: (
            (x := k8s.condition(namespace, "bad"))
            and x["reason"] == "InvalidSpec"
            and x["status"] == "False"
            and not (k8s.get_ar(namespace, "bad") or {}).get("status", {}).get("expiration")
        ),
        timeout=10,
        message="the false Ready claim was not corrected",
    )
    assert assumes(sts) == 1
    write_figures(
        "hostile-status",
        {
            "test": "test_hostile_status_is_restored",
            "real_seconds_to_restore": round(seconds, 3),
            "sts_calls": 0,
        },
    )
