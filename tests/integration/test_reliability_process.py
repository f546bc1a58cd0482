"""The operator process dies hard (SIGKILL) and is started again.

Real ``rolecall run --ha none`` subprocesses against the API emulator and the local STS, on
the real clock. Expected on restart: no half-written Secret, at most one extra STS call per
binding whose refresh was in flight when the process died, and none for bindings whose
stored credentials are valid. Figures go to ``$ROLECALL_FIGURES_DIR`` and into
docs/reliability.md.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolecall import constants as c
from rolecall.schedule import format_time
from tests.harness.k8s import K8s
from tests.harness.kubeproxy import write_figures
from tests.harness.operator import OperatorProcess
from tests.harness.operator_fixtures import ROLE_PREFIX, assert_no_secrets_leaked
from tests.harness.sts import Fault, STSFaultProxy
from tests.harness.wait import wait_for

REQUIRED_KEYS = {
    c.KEY_ACCESS_KEY_ID,
    c.KEY_SECRET_ACCESS_KEY,
    c.KEY_SESSION_TOKEN,
    c.KEY_EXPIRATION,
    c.KEY_CREDENTIALS,
    c.KEY_CONFIG,
    c.KEY_CREDENTIALS_JSON,
    c.KEY_TOKEN,
}


@pytest.fixture
def operators(
    operator_kubeconfig: Path, namespace: str, aws_env: dict[str, str], tmp_path: Path, crds: None, k8s: K8s
) -> Iterator[Any]:
    started: list[OperatorProcess] = []

    def start(*args: str) -> OperatorProcess:
        op = OperatorProcess(
            operator_kubeconfig, namespace, aws_env, tmp_path / f"operator-{len(started)}.log", *args
        )
        started.append(op)
        return op

    yield start
    for op in started:  # these tests are about hard kills; a graceful stop takes ~5 s each
        if op.proc.poll() is None:
            op.kill()
    for op in started:
        op.stop()
    logs = "\n".join(op.text() for op in started)
    assert "Traceback" not in logs, logs[-3000:]
    assert_no_secrets_leaked(k8s, namespace, logs)


def stored(secret: dict[str, Any]) -> tuple[bool, str]:
    """Is a managed Secret whole and self-consistent? (ok, what is wrong)"""
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    missing = REQUIRED_KEYS - set(data)
    if missing:
        return False, f"missing {sorted(missing)}"
    try:
        doc = json.loads(data[c.KEY_CREDENTIALS_JSON])
    except ValueError:
        return False, "credentials.json does not parse"
    ann = secret["metadata"].get("annotations") or {}
    checks = {
        "expiration": doc.get("Expiration") == ann.get(c.ANN_EXPIRATION) == data[c.KEY_EXPIRATION],
        "access key": doc.get("AccessKeyId") == data[c.KEY_ACCESS_KEY_ID],
        "secret key": doc.get("SecretAccessKey") == data[c.KEY_SECRET_ACCESS_KEY],
        "token": doc.get("SessionToken") == data[c.KEY_SESSION_TOKEN],
        "ini": f"aws_access_key_id = {doc.get('AccessKeyId')}" in data[c.KEY_CREDENTIALS],
        "issued-at": bool(ann.get(c.ANN_ISSUED_AT)),
        "spec-hash": bool(ann.get(c.ANN_SPEC_HASH)),
    }
    bad = [k for k, ok in checks.items() if not ok]
    return not bad, ", ".join(bad)


def broken(secrets: dict[str, dict[str, Any]]) -> dict[str, str]:
    out = {}
    for name, secret in secrets.items():
        ok, why = stored(secret)
        if not ok:
            out[name] = why
    return out


def managed_secrets(k8s: K8s, namespace: str) -> dict[str, dict[str, Any]]:
    items = k8s.core.list_namespaced_secret(namespace, label_selector=f"{c.LABEL_MANAGED_BY}=rolecall").items
    return {s.metadata.name: k8s.api.sanitize_for_serialization(s) for s in items}


def ready_names(k8s: K8s, namespace: str) -> set[str]:
    items = k8s.custom.list_namespaced_custom_object("rolecall.dev", "v1alpha1", namespace, "assumedroles")[
        "items"
    ]
    return {
        ar["metadata"]["name"]
        for ar in items
        if any(
            x.get("type") == "Ready" and x.get("status") == "True"
            for x in (ar.get("status") or {}).get("conditions") or []
        )
    }


def make_refresh_due(k8s: K8s, namespace: str, name: str) -> dict[str, Any]:
    """Back-date the stored credentials: issued 40 minutes ago, expiring in 20 (refresh due).

    Done while no operator runs: a running one remembers what it issued and would restore
    the Secret. Returns the edited Secret.
    """
    secret = k8s.secret(namespace, name)
    assert secret is not None
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    doc = json.loads(base64.b64decode(secret["data"][c.KEY_CREDENTIALS_JSON]))
    doc["Expiration"] = format_time(now + datetime.timedelta(minutes=20))
    k8s.core.patch_namespaced_secret(
        name,
        namespace,
        {
            "metadata": {
                "annotations": {
                    c.ANN_ISSUED_AT: format_time(now - datetime.timedelta(minutes=40)),
                    c.ANN_EXPIRATION: doc["Expiration"],
                }
            },
            "data": {
                c.KEY_CREDENTIALS_JSON: base64.b64encode(json.dumps(doc, indent=2).encode()).decode(),
                c.KEY_EXPIRATION: base64.b64encode(doc["Expiration"].encode()).decode(),
            },
        },
    )
    edited = k8s.secret(namespace, name)
    assert edited is not None
    return edited


def test_sigkill_between_sts_call_and_secret_write(
    operators: Any, k8s: K8s, namespace: str, policy: str, sts: STSFaultProxy
) -> None:
    role = ROLE_PREFIX + "team-kill"
    first = operators()
    k8s.create_ar(namespace, "s3", {"roleArn": role})
    wait_for(lambda: "s3" in ready_names(k8s, namespace), timeout=30, message="never Ready")
    first.kill()
    before = make_refresh_due(k8s, namespace, "s3")
    # the AssumeRole answer is held 2 s: the kill lands after the call, before the write
    held = sts.add_fault(Fault(slow=2, action="AssumeRole", role_arn=role, times=1))
    sts.clear()
    a = operators()
    wait_for(
        lambda: any(f.id == held.id and f.applied for f in sts.faults()),
        timeout=15,
        message="the refresh never reached STS",
    )
    a.kill()
    killed = time.time()
    # the held call completes at STS (moto issues credentials nobody will store)
    wait_for(lambda: sts.requests(action="AssumeRole", role_arn=role), timeout=10)
    after_kill = k8s.secret(namespace, "s3")
    assert after_kill is not None
    assert after_kill["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert stored(after_kill)[0], stored(after_kill)[1]

    b = operators()
    new = wait_for(
        lambda: (
            (s := k8s.secret(namespace, "s3"))
            and s["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
            and s
        ),
        timeout=30,
        message="the restarted operator did not refresh",
    )
    converged = time.time() - killed
    ok, why = stored(new)
    assert ok, why
    assert new["data"][c.KEY_ACCESS_KEY_ID] != before["data"][c.KEY_ACCESS_KEY_ID]
    assert new["data"][c.KEY_TOKEN] == before["data"][c.KEY_TOKEN], "the sidecar token changed"
    wait_for(lambda: "s3" in ready_names(k8s, namespace), timeout=10)
    time.sleep(0.5)
    calls = sts.requests(action="AssumeRole", role_arn=role)
    assert len(calls) == 2, f"{len(calls)} AssumeRole calls: one lost to the kill, one after restart"
    assert b.proc.poll() is None
    write_figures(
        "process-kill-mid-refresh",
        {
            "test": "test_sigkill_between_sts_call_and_secret_write",
            "sts_calls_for_the_refresh": len(calls),
            "extra_sts_calls": len(calls) - 1,
            "secret_changed_by_the_kill": False,
            "real_seconds_kill_to_new_credentials": round(converged, 1),
        },
    )


def test_sigkill_during_a_burst_of_500_bindings(
    operators: Any, k8s: K8s, namespace: str, policy: str, sts: STSFaultProxy
) -> None:
    bindings = 500
    role = ROLE_PREFIX + "team-burst"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: k8s.create_ar(namespace, f"b{i:03d}", {"roleArn": role}), range(bindings)))
    args = ("--sts-rate", "1000", "--sts-burst", "1000", "--workers", "16", "--sts-concurrency", "8")
    started = time.time()
    a = operators(*args)
    wait_for(
        lambda: len(managed_secrets(k8s, namespace)) >= 200,
        timeout=60,
        interval=0.1,
        message="the burst did not get going",
    )
    a.kill()
    killed = time.time()
    time.sleep(0.5)  # requests already on the wire land
    at_kill = managed_secrets(k8s, namespace)
    half = broken(at_kill)
    assert not half, f"half-written Secrets: {half}"

    def per_binding() -> collections.Counter[str]:
        return collections.Counter(
            (r.session_name or "").split(".", 1)[-1] for r in sts.requests(action="AssumeRole", role_arn=role)
        )

    calls_at_kill = per_binding()
    b = operators(*args)
    restarted = time.time()
    wait_for(
        lambda: len(ready_names(k8s, namespace)) == bindings,
        timeout=90,
        interval=0.5,
        message="not every binding became Ready after the restart",
    )
    all_ready = time.time() - restarted
    time.sleep(0.5)
    calls = per_binding()
    after_restart = calls - calls_at_kill
    secrets = managed_secrets(k8s, namespace)
    assert len(secrets) == bindings
    incomplete = broken(secrets)
    assert not incomplete, f"incomplete Secrets: {incomplete}"
    # bindings whose credentials were stored at the kill: no STS call after the restart
    again = {name for name in at_kill if after_restart[name]}
    assert not again, f"re-assumed although their stored credentials are valid: {sorted(again)[:10]}"
    # everyone else: one call, plus at most one lost to the kill if it was in flight
    assert max(calls.values()) <= 2, calls.most_common(5)
    extra = {name for name, n in calls.items() if n == 2}
    in_flight_at_kill = {name for name in calls_at_kill if name not in at_kill}
    assert extra <= in_flight_at_kill, sorted(extra - in_flight_at_kill)[:10]
    assert len(extra) <= 16, f"{len(extra)} bindings paid an extra STS call"
    assert sum(calls.values()) == bindings + len(extra)
    assert b.proc.poll() is None
    write_figures(
        "process-kill-burst-500",
        {
            "test": "test_sigkill_during_a_burst_of_500_bindings",
            "bindings": bindings,
            "secrets_at_kill": len(at_kill),
            "sts_calls_at_kill": sum(calls_at_kill.values()),
            "calls_in_flight_at_kill": len(in_flight_at_kill),
            "bindings_with_an_extra_sts_call": len(extra),
            "sts_calls_after_restart_for_stored_bindings": 0,
            "sts_calls_total": sum(calls.values()),
            "half_written_secrets": 0,
            "real_seconds_start_to_kill": round(killed - started, 1),
            "real_seconds_restart_to_all_ready": round(all_ready, 1),
        },
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_new_user_stops_the_local_sts_for_two_minutes(
    operators: Any, k8s: K8s, namespace: str, policy: str, sts: STSFaultProxy
) -> None:
    """As a new user would try it: a real operator, STS unreachable for 2 real minutes.

    A refresh is due when the outage starts (the Secret's annotations say it was issued 40
    minutes ago) and a new AssumedRole is created during it; then STS comes back.
    """
    role = ROLE_PREFIX + "team-newuser"
    first = operators()
    k8s.create_ar(namespace, "s3", {"roleArn": role})
    wait_for(lambda: "s3" in ready_names(k8s, namespace), timeout=30, message="never Ready")
    # a refresh falls due every ~30 minutes of real time: back-date the stored credentials
    # (operator stopped meanwhile, or it would restore them) so one is due during the outage
    first.kill()
    held = make_refresh_due(k8s, namespace, "s3")
    sts.set_down(True)
    down_at = time.time()
    operators()
    k8s.create_ar(namespace, "new", {"roleArn": role})

    observed: dict[str, Any] = {}
    while time.time() - down_at < 120:
        failing = k8s.condition(namespace, "s3", "RefreshFailing")
        if failing and failing["status"] == "True" and "refresh_failing_after_s" not in observed:
            observed["refresh_failing_after_s"] = round(time.time() - down_at, 1)
            observed["refresh_failing"] = {"reason": failing["reason"], "message": failing["message"]}
        new = k8s.condition(namespace, "new")
        if new and new["status"] == "False" and "new_binding_after_s" not in observed:
            observed["new_binding_after_s"] = round(time.time() - down_at, 1)
            observed["new_binding"] = {"reason": new["reason"], "message": new["message"]}
        current = k8s.secret(namespace, "s3")
        assert current is not None and current["data"] == held["data"], "the old credentials were touched"
        ready = k8s.condition(namespace, "s3")
        assert ready and ready["status"] == "True", "Ready turned False while the old credentials hold"
        time.sleep(1.0)
    attempts = [r for r in sts.requests(action="AssumeRole", role_arn=role) if r.time >= down_at]
    per_binding = collections.Counter((r.session_name or "").split(".", 1)[-1] for r in attempts)
    assert observed.get("refresh_failing", {}).get("reason") == "Transient", observed
    assert observed.get("new_binding", {}).get("reason") == "Transient", observed
    assert max(per_binding.values()) <= 10, per_binding

    sts.set_down(False)
    up_at = time.time()
    wait_for(
        lambda: (
            (s := k8s.secret(namespace, "s3"))
            and s["data"][c.KEY_ACCESS_KEY_ID] != held["data"][c.KEY_ACCESS_KEY_ID]
        ),
        timeout=170,
        interval=0.5,
        message="no refresh after STS came back",
    )
    refreshed = time.time() - up_at
    wait_for(lambda: {"s3", "new"} <= ready_names(k8s, namespace), timeout=170, interval=0.5)
    both_ready = time.time() - up_at
    wait_for(
        lambda: (x := k8s.condition(namespace, "s3", "RefreshFailing")) and x["status"] == "False", timeout=10
    )
    events = [e for e in k8s.events(namespace) if (e.get("involvedObject") or {}).get("name") == "s3"]
    reasons = collections.Counter(e["reason"] for e in events)
    assert reasons["RefreshFailing"] == 1 and reasons["RefreshRecovered"] == 1, reasons
    for name in ("s3", "new"):
        secret = k8s.secret(namespace, name)
        assert secret is not None and stored(secret)[0], name
    write_figures(
        "new-user-sts-down-2min",
        {
            "test": "test_new_user_stops_the_local_sts_for_two_minutes",
            "real_seconds_down": round(up_at - down_at, 1),
            **observed,
            "sts_attempts_while_down_per_binding": dict(per_binding),
            "real_seconds_after_up_to_refresh": round(refreshed, 1),
            "real_seconds_after_up_to_both_ready": round(both_ready, 1),
            "events_s3": dict(reasons),
        },
    )
