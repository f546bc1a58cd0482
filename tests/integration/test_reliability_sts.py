"""STS faults during refresh: old credentials stay, status and events explain, retries back off,
the global rate limit holds, and the binding recovers by itself once the fault is gone.

The in-process operator talks to moto through the STS fault proxy; its clock is a FakeClock
that the tests move — in 1 s steps through the first simulated minute of retries, then 10 s
steps — settling the operator after each step, so backoff is measured in simulated minutes
without real waiting (except the 10 s read timeout, which is real and costs one call).
Figures go to ``$ROLECALL_FIGURES_DIR`` (see ``tests/harness/kubeproxy.py``) and into
docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from rolecall import constants as c
from rolecall.clock import FakeClock
from rolecall.schedule import parse_time
from tests.harness.k8s import K8s
from tests.harness.kubeproxy import Timeline, per_window, settle, step_through, write_figures
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import Fault, STSFaultProxy
from tests.harness.wait import wait_for


def ar_spec(role: str) -> dict[str, Any]:
    return {"roleArn": role, "subjects": [{"kind": "ServiceAccount", "name": "app"}], "region": "us-east-1"}


def condition(k8s: K8s, ns: str, name: str, ctype: str) -> dict[str, Any] | None:
    return k8s.condition(ns, name, ctype)


def events_for(k8s: K8s, ns: str, name: str) -> list[dict[str, Any]]:
    return [e for e in k8s.events(ns) if (e.get("involvedObject") or {}).get("name") == name]


@dataclasses.dataclass
class Row:
    """One STS fault scenario."""

    id: str
    faults: list[Fault]  # added when the refresh falls due (role_arn is filled in)
    reason: str  # RefreshFailing's reason while failing
    message: str  # a piece of RefreshFailing's message
    fail_minutes: float  # simulated minutes to step through while failing
    clear: bool  # remove the faults after fail_minutes (False: they run out by themselves)
    max_first_minute: int  # STS calls allowed in the first simulated minute
    max_later_minute: int  # ... and in any later one
    extra_reasons: tuple[str, ...] = ()  # a second reason the condition may move to
    # recovery after the fault goes away: within one capped backoff (5 min for failures a
    # retry may fix; failures it cannot fix back off from 1 min to 30 min, see schedule.py)
    recover_within: float = 320


ROWS = [
    Row(
        "throttling-burst",
        [Fault(error="Throttling", action="AssumeRole", times=4)],
        "Throttled",
        "Throttling: Rate exceeded",
        fail_minutes=2,
        clear=False,
        max_first_minute=6,
        max_later_minute=1,
    ),
    Row(
        "5xx",
        [
            Fault(error="InternalFailure", action="AssumeRole", times=3),
            Fault(error="ServiceUnavailable", action="AssumeRole", times=3),
        ],
        "Transient",
        "STS AssumeRole for",
        fail_minutes=3,
        clear=False,
        max_first_minute=6,
        max_later_minute=2,
    ),
    Row(
        "timeout-and-drop",
        # one read timeout (10 s of real time: the adapter's read timeout), then two dropped
        # connections
        [
            Fault(slow=11, action="AssumeRole", times=1),
            Fault(drop=True, action="AssumeRole", times=2),
        ],
        "Transient",
        "STS AssumeRole for",
        fail_minutes=2,
        clear=False,
        max_first_minute=6,
        max_later_minute=1,
    ),
    Row(
        "access-denied-fixed-later",
        [Fault(error="AccessDenied", action="AssumeRole", times=None)],
        "AccessDenied",
        "trust policy must allow sts:AssumeRole, sts:TagSession",
        fail_minutes=12,
        clear=True,
        max_first_minute=6,
        max_later_minute=2,
        recover_within=1000,  # attempt 5 of a permanent failure waits 8-16 min
    ),
    Row(
        "base-credentials-expired",
        [
            Fault(error="ExpiredToken", action="AssumeRole", times=5),
            Fault(error="InvalidClientTokenId", action="AssumeRole", times=None),
        ],
        "SourceUnavailable",
        "base credentials (the operator's own AWS identity) were rejected",
        fail_minutes=6,
        clear=True,
        max_first_minute=6,
        max_later_minute=2,
    ),
    Row(
        "region-disabled",
        [Fault(error="RegionDisabledException", action="AssumeRole", times=None)],
        "RegionDisabled",
        "Activate STS in region us-east-1 or set spec.region",
        fail_minutes=6,
        clear=True,
        max_first_minute=6,
        max_later_minute=2,
        recover_within=1000,  # a disabled region cannot be fixed by retrying: long backoff
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_sts_fault_keeps_credentials_backs_off_and_recovers(
    row: Row,
    k8s: K8s,
    namespace: str,
    policy: str,
    start_operator: Any,
    sts: STSFaultProxy,
    clock: FakeClock,
) -> None:
    role = ROLE_PREFIX + f"team-{row.id}"
    name = "app-creds"
    op = start_operator()
    k8s.create_ar(namespace, name, ar_spec(role))
    body = wait_for(
        lambda: (
            (cnd := k8s.condition(namespace, name))
            and cnd["status"] == "True"
            and k8s.get_ar(namespace, name)
        ),
        timeout=10,
        message="never Ready",
    )
    settle(op, clock)
    old = k8s.secret_data(namespace, name)
    old_rv = (k8s.secret(namespace, name) or {})["metadata"]["resourceVersion"]
    assert old
    events_before = {e["metadata"]["uid"] for e in events_for(k8s, namespace, name)}

    def calls() -> int:
        return len(sts.requests(action="AssumeRole", role_arn=role))

    assert calls() == 1
    added = [sts.add_fault(dataclasses.replace(f, role_arn=role)) for f in row.faults]

    # the refresh falls due: the first attempt fails
    timeline = Timeline()
    timeline.add(0, 0)
    real_start = time.monotonic()
    due = parse_time(body["status"]["nextRefresh"])
    clock.set(due)
    settle(op, clock)
    failing = wait_for(
        lambda: (
            (cnd := condition(k8s, namespace, name, "RefreshFailing")) and cnd["status"] == "True" and cnd
        ),
        timeout=15,
        message="RefreshFailing never turned True",
    )
    assert failing["reason"] in (row.reason, *row.extra_reasons), failing
    assert row.message in failing["message"], failing["message"]
    ready = condition(k8s, namespace, name, "Ready")
    assert ready and ready["status"] == "True" and ready["reason"] == "CredentialsIssued", ready
    assert "replacing them is failing (see RefreshFailing)" in ready["message"]
    reasons_seen = {failing["reason"]}

    # step through the backoff: 1 s steps for the first minute, then 10 s steps
    timeline.add(0, calls() - 1)
    unchanged_during_fault = True
    recovered: list[float] = []

    def sample() -> int:
        cnd = condition(k8s, namespace, name, "RefreshFailing")
        if cnd and cnd["status"] == "True":
            reasons_seen.add(cnd["reason"])
        elif cnd and not recovered:
            recovered.append((clock.now() - due).total_seconds())
        return calls() - 1

    offset = step_through(op, clock, 60, step=1, sample=sample, timeline=timeline)
    if row.fail_minutes > 1:
        offset = step_through(
            op, clock, (row.fail_minutes - 1) * 60, step=10, sample=sample, timeline=timeline, offset=offset
        )
    if row.clear:
        # while the fault lasted, nothing touched the stored credentials
        unchanged_during_fault = k8s.secret_data(namespace, name) == old
        assert unchanged_during_fault, "a failing refresh touched the stored credentials"
        for fault in added:
            sts.remove_fault(fault.id)
    fault_calls = calls() - 1
    per_minute = timeline.per_minute()
    # calls at distinct clock steps: each step runs what the backoff made due. A call beyond one
    # per step is a retry outside the backoff (as the operator's own status echo once caused:
    # test_reliability_kube.py::test_own_status_event_arriving_before_the_patch_response_...)
    per_minute_steps = timeline.steps_per_minute()

    # recovery without a restart: at most one capped backoff away
    cleared_at = offset
    recovered_at: float | None = recovered[0] if recovered else None
    while recovered_at is None and offset - cleared_at <= row.recover_within:
        offset = step_through(op, clock, 10, step=10, sample=sample, timeline=timeline, offset=offset)
        recovered_at = recovered[0] if recovered else None
    assert recovered_at is not None, "never recovered after the fault went away"
    real_seconds = time.monotonic() - real_start
    new = wait_for(
        lambda: (d := k8s.secret_data(namespace, name)) and d != old and d,
        timeout=10,
        message="the Secret was not refreshed after recovery",
    )
    assert new[c.KEY_TOKEN] == old[c.KEY_TOKEN], "the sidecar token changed"
    assert new[c.KEY_ACCESS_KEY_ID] != old[c.KEY_ACCESS_KEY_ID]
    ready = condition(k8s, namespace, name, "Ready")
    assert ready and ready["status"] == "True" and ready["reason"] == "CredentialsIssued"
    assert "replacing them is failing" not in ready["message"]

    # events: one per transition (one per distinct failing reason, one recovery), none per retry
    evs = [e for e in events_for(k8s, namespace, name) if e["metadata"]["uid"] not in events_before]
    failing_events = [e for e in evs if e["reason"] == "RefreshFailing"]
    recovered_events = [e for e in evs if e["reason"] == "RefreshRecovered"]
    assert len(failing_events) == len(reasons_seen), (
        f"{len(failing_events)} RefreshFailing events for {len(reasons_seen)} reasons {reasons_seen}"
    )
    assert all(e["type"] == "Warning" for e in failing_events)
    assert len(recovered_events) == 1 and recovered_events[0]["type"] == "Normal", [
        (e["reason"], e["message"][:80]) for e in evs
    ]

    # bounded, backing-off retries
    assert per_minute_steps[0] <= row.max_first_minute, per_minute_steps
    assert all(n <= row.max_later_minute for n in per_minute_steps[1 : int(row.fail_minutes)]), (
        per_minute_steps
    )
    assert per_minute == per_minute_steps, f"{per_minute} vs {per_minute_steps}: retries outside the backoff"
    secret_writes = (k8s.secret(namespace, name) or {})["metadata"]["resourceVersion"] != old_rv

    write_figures(
        f"sts-{row.id}",
        {
            "test": f"test_sts_fault_keeps_credentials_backs_off_and_recovers[{row.id}]",
            "reasons": sorted(reasons_seen),
            "sts_calls_during_fault": fault_calls,
            "sts_calls_per_simulated_minute": per_minute,
            "calls_outside_the_backoff_schedule": sum(per_minute) - sum(per_minute_steps),
            "simulated_seconds_failing": cleared_at,
            "simulated_seconds_to_recover_after_clear": (recovered_at - cleared_at) if row.clear else None,
            "simulated_seconds_until_recovered": recovered_at,
            "real_seconds": round(real_seconds, 1),
            "credentials_lost": 0 if unchanged_during_fault else 1,
            "events": {"RefreshFailing": len(failing_events), "RefreshRecovered": len(recovered_events)},
            "secret_rewritten_on_recovery": secret_writes,
        },
    )


def rate_excess(times: list[float], rate: float, burst: int) -> float:
    """How far the calls exceed a token bucket: max over windows of calls - (burst + rate*w)."""
    return max(per_window(times, w) - (burst + rate * w) for w in (0.25, 0.5, 1.0, 2.0, 4.0))


def test_global_sts_rate_limit_holds_when_many_bindings_fall_due(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy, clock: FakeClock
) -> None:
    rate, burst, bindings = 4.0, 2, 10
    op = start_operator(sts_rate=rate, sts_burst=burst, workers=16, sts_concurrency=8)
    role = ROLE_PREFIX + "team-rate"

    def issued() -> list[Any]:
        return [r for r in sts.requests(action="AssumeRole", role_arn=role) if r.status == 200]

    # phase 1: a cold operator, every binding created at once
    started = time.time()
    for i in range(bindings):
        k8s.create_ar(namespace, f"b{i}", ar_spec(role))
    wait_for(lambda: len(issued()) == bindings, timeout=30, message="not every binding got credentials")
    cold = sorted(r.time for r in issued())
    cold_seconds = time.time() - started
    bodies = [
        wait_for(
            lambda i=i: (
                (cnd := k8s.condition(namespace, f"b{i}"))
                and cnd["status"] == "True"
                and k8s.get_ar(namespace, f"b{i}")
            ),
            timeout=10,
        )
        for i in range(bindings)
    ]
    settle(op, clock)

    # phase 2: every refresh falls due at the same moment
    sts.clear()
    clock.set(max(parse_time(b["status"]["nextRefresh"]) for b in bodies))
    wait_for(lambda: len(issued()) == bindings, timeout=30, message="not every binding was refreshed")
    warm = sorted(r.time for r in issued())
    span = warm[-1] - warm[0]
    # a token bucket of `burst` tokens refilled at `rate`/s: in any window of w seconds at
    # most burst + rate*w calls (+1 for the window edges)
    assert rate_excess(warm, rate, burst) <= 1, f"the rate limit was exceeded: {warm}"
    assert span >= (bindings - burst) / rate - 0.5, f"{bindings} calls in {span:.2f}s"
    write_figures(
        "sts-rate-limit",
        {
            "test": "test_global_sts_rate_limit_holds_when_many_bindings_fall_due",
            "sts_rate": rate,
            "sts_burst": burst,
            "bindings_due_at_once": bindings,
            "refresh_burst_real_seconds_first_to_last_call": round(span, 2),
            "refresh_burst_calls_per_second": round((bindings - 1) / span, 2) if span else None,
            "refresh_burst_max_calls_in_any_1s_window": per_window(warm, 1.0),
            "refresh_burst_excess_over_bucket": rate_excess(warm, rate, burst),
            "cold_start_max_calls_in_any_1s_window": per_window(cold, 1.0),
            "cold_start_max_calls_in_any_0.25s_window": per_window(cold, 0.25),
            "cold_start_excess_over_bucket": rate_excess(cold, rate, burst),
            "cold_start_seconds_to_all_issued": round(cold_seconds, 2),
        },
    )
