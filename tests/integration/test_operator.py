"""The core operator over HTTP: AssumedRole → STS → Secret → status, refresh and failures.

The real operator (kopf, its watches, the kubernetes client, boto3) runs against the API
emulator and the local STS behind the fault proxy. Only the clock is injected: refresh
timing is tested by moving a FakeClock, never by waiting.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from rolecall import constants as c
from rolecall.clock import FakeClock
from rolecall.schedule import parse_time
from tests.harness.k8s import K8s
from tests.harness.kubeproxy import settle
from tests.harness.operator_fixtures import ROLE_PREFIX, ROOT
from tests.harness.sts import Fault, STSFaultProxy
from tests.harness.wait import wait_for

ROLE = ROLE_PREFIX + "team-a-s3-reader"
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


def ready(
    k8s: K8s, ns: str, name: str, reason: str = "CredentialsIssued", status: str = "True"
) -> dict[str, Any] | None:
    cond = k8s.condition(ns, name)
    if cond and cond["status"] == status and cond["reason"] == reason:
        return k8s.get_ar(ns, name)
    return None


def assumes(sts: STSFaultProxy, role: str = ROLE) -> list[Any]:
    return [r for r in sts.requests(action="AssumeRole", role_arn=role) if r.status == 200]


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "roleArn": ROLE,
        "subjects": [{"kind": "ServiceAccount", "name": "app"}],
        "region": "us-east-1",
        **extra,
    }


@pytest.fixture
def bound(k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy) -> Any:
    """An operator with one Ready AssumedRole 's3' in the test namespace."""
    op = start_operator()
    k8s.create_ar(namespace, "s3", spec())
    body = wait_for(lambda: ready(k8s, namespace, "s3"), timeout=10, message="AssumedRole never became Ready")
    return op, body


def test_sample_yields_a_secret_in_every_format_that_sdks_accept(
    bound: Any, k8s: K8s, namespace: str, sts: STSFaultProxy, tmp_path: Path
) -> None:
    _, body = bound
    data = k8s.secret_data(namespace, "s3")
    assert data is not None and set(data) == EVERY_KEY
    secret = k8s.secret(namespace, "s3")
    assert secret is not None
    meta = secret["metadata"]
    assert meta["labels"][c.LABEL_MANAGED_BY] == "rolecall"
    assert meta["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert meta["annotations"][c.ANN_ROLE_ARN] == ROLE
    assert meta["annotations"][c.ANN_EXPIRATION] == data[c.KEY_EXPIRATION]
    assert len(meta["annotations"][c.ANN_SPEC_HASH]) == 16
    assert len(data[c.KEY_TOKEN]) >= 43

    # status tells the truth
    status = body["status"]
    assert (
        status["assumedRoleArn"] == f"arn:aws:sts::123456789012:assumed-role/team-a-s3-reader/{namespace}.s3"
    )
    assert status["secretName"] == "s3" and status["observedGeneration"] == body["metadata"]["generation"]
    expiration, nxt = parse_time(status["expiration"]), parse_time(status["nextRefresh"])
    issued = parse_time(status["lastRefresh"])
    assert 27 * 60 <= (nxt - issued).total_seconds() <= 30 * 60 + 1
    assert abs((expiration - issued).total_seconds() - 3600) <= 2

    # one STS call, with the session name CloudTrail will show
    calls = assumes(sts)
    assert (
        len(calls) == 1 and calls[0].session_name == f"{namespace}.s3" and calls[0].duration_seconds == 3600
    )

    # boto3 through credential_process (the rendered credentials.json) acts as the role
    (tmp_path / "credentials.json").write_text(data[c.KEY_CREDENTIALS_JSON])
    (tmp_path / "config").write_text(
        f"[profile rc]\ncredential_process = cat {tmp_path}/credentials.json\nregion = us-east-1\n"
    )
    env_backup = os.environ.get("AWS_CONFIG_FILE")
    os.environ["AWS_CONFIG_FILE"] = str(tmp_path / "config")
    try:
        ident = boto3.session.Session(profile_name="rc").client("sts").get_caller_identity()
    finally:
        os.environ["AWS_CONFIG_FILE"] = env_backup or ""
    assert ident["Arn"] == status["assumedRoleArn"]
    assert sts.requests(action="GetCallerIdentity")[-1].access_key_id == data[c.KEY_ACCESS_KEY_ID]


def test_refresh_happens_at_the_scheduled_time_and_not_before(
    bound: Any, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    op, body = bound
    first = k8s.secret_data(namespace, "s3")
    assert first is not None
    nxt = parse_time(body["status"]["nextRefresh"])
    clock.set(nxt - datetime.timedelta(seconds=5))
    settle(op, clock)  # everything due 5 s before the refresh point has run
    assert len(assumes(sts)) == 1, "refreshed before its time"
    clock.set(nxt)
    wait_for(lambda: len(assumes(sts)) == 2, timeout=10, message="no refresh at nextRefresh")
    second = wait_for(
        lambda: (
            (d := k8s.secret_data(namespace, "s3"))
            and d[c.KEY_ACCESS_KEY_ID] != first[c.KEY_ACCESS_KEY_ID]
            and d
        ),
        timeout=10,
    )
    assert second[c.KEY_TOKEN] == first[c.KEY_TOKEN], "the sidecar token must stay stable"
    status = wait_for(
        lambda: (
            (b := k8s.get_ar(namespace, "s3"))
            and b["status"]["nextRefresh"] != body["status"]["nextRefresh"]
            and b["status"]
        ),
        timeout=10,
    )
    assert parse_time(status["nextRefresh"]) > nxt
    assert len(assumes(sts)) == 2


def test_spec_change_re_assumes_at_once(bound: Any, k8s: K8s, namespace: str, sts: STSFaultProxy) -> None:
    k8s.patch_ar(namespace, "s3", {"spec": {"durationSeconds": 7200}})
    call = wait_for(
        lambda: [r for r in assumes(sts) if r.duration_seconds == 7200],
        timeout=10,
        message="no re-assume after the spec change",
    )
    assert len(call) == 1
    wait_for(
        lambda: (
            (b := k8s.get_ar(namespace, "s3"))
            and b["status"]["observedGeneration"] == b["metadata"]["generation"] == 2
        ),
        timeout=10,
    )


def test_restart_with_valid_credentials_makes_no_sts_call(
    bound: Any, k8s: K8s, namespace: str, sts: STSFaultProxy, start_operator: Any
) -> None:
    op, body = bound
    before = k8s.secret(namespace, "s3")
    op.stop()
    sts.clear()
    again = start_operator()
    key = (namespace, "s3")
    due = wait_for(
        lambda: again.call(lambda: again.app.scheduler.due_at(key)),
        timeout=10,
        message="the restarted operator never scheduled the binding",
    )
    assert due == parse_time(body["status"]["nextRefresh"])
    assert sts.requests(action="AssumeRole") == []
    after = k8s.secret(namespace, "s3")
    assert after is not None and before is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "the Secret was rewritten on restart"
    )


def test_failed_refresh_keeps_credentials_backs_off_and_recovers(
    bound: Any, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    op, body = bound
    old = k8s.secret_data(namespace, "s3")
    sts.add_fault(Fault(error="AccessDenied", action="AssumeRole", role_arn=ROLE, times=None))
    clock.set(parse_time(body["status"]["nextRefresh"]))
    failing = wait_for(
        lambda: (cnd := k8s.condition(namespace, "s3", "RefreshFailing")) and cnd["status"] == "True" and cnd,
        timeout=10,
    )
    assert (
        failing["reason"] == "AccessDenied" and "trust policy must allow sts:AssumeRole" in failing["message"]
    )
    assert "sts:TagSession" in failing["message"], (
        "session tags are on: the message must say TagSession is needed"
    )
    ready_cond = k8s.condition(namespace, "s3")
    assert ready_cond and ready_cond["status"] == "True", "old credentials still hold: Ready must stay True"
    assert k8s.secret_data(namespace, "s3") == old, "credentials were touched by a failure"
    # AccessDenied cannot be fixed by retrying: during 10 simulated minutes retries grow apart
    # from a minute (30-60 s, 60-120 s, 120-240 s, ...), so a namespace of broken trust
    # policies does not spend the STS budget; the operator settles after every step
    attempts_before = len(sts.requests(action="AssumeRole"))
    for _ in range(60):
        clock.advance(10)
        settle(op, clock)
    attempts = len(sts.requests(action="AssumeRole")) - attempts_before
    assert 2 <= attempts <= 5, f"{attempts} STS calls in 10 minutes of AccessDenied"
    warnings = [e for e in k8s.events(namespace) if e.get("reason") == "RefreshFailing"]
    assert len(warnings) == 1, "one event for the transition, none per retry"
    # the fault goes away: recovery without a restart, at the retry time the status shows
    sts.clear_faults()
    retry_at = parse_time(k8s.get_ar(namespace, "s3")["status"]["nextRefresh"])
    assert retry_at > clock.now()
    clock.set(retry_at)
    wait_for(
        lambda: (cnd := k8s.condition(namespace, "s3", "RefreshFailing")) and cnd["status"] == "False",
        timeout=10,
    )
    new = k8s.secret_data(namespace, "s3")
    assert new and old and new[c.KEY_ACCESS_KEY_ID] != old[c.KEY_ACCESS_KEY_ID]


def test_expired_credentials_turn_credentials_expired_and_stay(
    bound: Any, k8s: K8s, namespace: str, sts: STSFaultProxy, clock: FakeClock
) -> None:
    _, body = bound
    old = k8s.secret_data(namespace, "s3")
    sts.add_fault(Fault(error="ServiceUnavailable", action="AssumeRole", times=None))
    clock.set(parse_time(body["status"]["expiration"]))
    cond = wait_for(
        lambda: ready(k8s, namespace, "s3", "CredentialsExpired", "False"),
        timeout=10,
        message="never CredentialsExpired",
    )
    assert "expired at" in cond["status"]["conditions"][0]["message"]
    assert k8s.secret_data(namespace, "s3") == old, (
        "expired values must stay (apps fail with ExpiredToken, not another identity)"
    )


def test_conflicting_secret_is_never_touched(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    k8s.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "taken"}, "stringData": {"mine": "do-not-touch"}}
    )
    start_operator()
    k8s.create_ar(namespace, "s3", spec(secretName="taken"))
    cond = wait_for(lambda: ready(k8s, namespace, "s3", "SecretConflict", "False"), timeout=10)
    assert "never overwrites" in cond["status"]["conditions"][0]["message"]
    assert k8s.secret_data(namespace, "taken") == {"mine": "do-not-touch"}
    assert assumes(sts) == []


def test_deleted_secret_is_restored(bound: Any, k8s: K8s, namespace: str) -> None:
    k8s.core.delete_namespaced_secret("s3", namespace)
    restored = wait_for(
        lambda: k8s.secret_data(namespace, "s3"), timeout=10, message="the deleted Secret was not restored"
    )
    assert set(restored) == EVERY_KEY


def test_hand_edited_secret_is_restored_without_sts(
    bound: Any, k8s: K8s, namespace: str, sts: STSFaultProxy
) -> None:
    original = k8s.secret_data(namespace, "s3")
    assert original
    k8s.core.patch_namespaced_secret(
        "s3",
        namespace,
        {
            "stringData": {c.KEY_ACCESS_KEY_ID: "AKIAHACKED", "extra": "x"},
            "metadata": {"ownerReferences": None},
        },
    )
    wait_for(
        lambda: (
            (k8s.secret_data(namespace, "s3") or {}).get(c.KEY_ACCESS_KEY_ID) == original[c.KEY_ACCESS_KEY_ID]
        ),
        timeout=10,
        message="not restored",
    )
    secret = k8s.secret(namespace, "s3")
    assert secret and secret["metadata"]["ownerReferences"], "owner reference restored"
    assert len(assumes(sts)) == 1, "a restore must reuse the valid credentials"


def test_suspend_removes_the_secret_and_resume_restores_it(bound: Any, k8s: K8s, namespace: str) -> None:
    k8s.patch_ar(namespace, "s3", {"spec": {"suspend": True}})
    wait_for(lambda: ready(k8s, namespace, "s3", "Suspended", "False"), timeout=10)
    wait_for(lambda: k8s.secret(namespace, "s3") is None, timeout=10, message="Secret kept while suspended")
    k8s.patch_ar(namespace, "s3", {"spec": {"suspend": False}})
    wait_for(lambda: ready(k8s, namespace, "s3"), timeout=10)


def test_deleting_the_assumed_role_removes_the_secret(bound: Any, k8s: K8s, namespace: str) -> None:
    k8s.delete_ar(namespace, "s3")
    wait_for(
        lambda: k8s.secret(namespace, "s3") is None, timeout=10, message="Secret outlived its AssumedRole"
    )


def test_invalid_spec_is_reported_and_others_keep_being_served(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    start_operator()
    # the emulator enforces the CRD schema like a real API server; a spec the schema accepts
    # but the operator must refuse (bad session policy JSON) reaches the reconciler
    k8s.create_ar(namespace, "bad", spec(sessionPolicy="{not json"))
    k8s.create_ar(namespace, "good", spec())
    cond = wait_for(lambda: ready(k8s, namespace, "bad", "InvalidSpec", "False"), timeout=10)
    assert (
        "spec.sessionPolicy: invalid value '{not json': must be a JSON IAM policy document"
        in cond["status"]["conditions"][0]["message"]
    )
    wait_for(lambda: ready(k8s, namespace, "good"), timeout=10)
    assert len(assumes(sts)) == 1


def test_assume_command_prints_working_credentials_in_each_format(
    sts: STSFaultProxy, aws_env: dict[str, str], tmp_path: Path
) -> None:
    sample = ROOT / "deploy" / "samples" / "team-a.yaml"
    outputs = {}
    for fmt in ("env", "json", "ini"):
        done = subprocess.run(
            [sys.executable, "-m", "rolecall.cli", "assume", "-f", str(sample), "--format", fmt],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **aws_env},
        )
        assert done.returncode == 0, done.stderr
        outputs[fmt] = done.stdout
    doc = json.loads(outputs["json"])
    assert (doc["Version"] == 1 and doc["AccessKeyId"].startswith("ASIA")) or doc["AccessKeyId"]
    assert "export AWS_SESSION_TOKEN=" in outputs["env"] and "export AWS_REGION=us-east-1" in outputs["env"]
    assert "[default]" in outputs["ini"] and "aws_session_token = " in outputs["ini"]
    ident = boto3.client(
        "sts",
        aws_access_key_id=doc["AccessKeyId"],
        aws_secret_access_key=doc["SecretAccessKey"],
        aws_session_token=doc["SessionToken"],
    ).get_caller_identity()
    assert ident["Arn"] == "arn:aws:sts::123456789012:assumed-role/team-a-s3-reader/team-a.s3-reader"
    tags = sts.requests(action="AssumeRole")[-1].tags
    assert tags["kubernetes-namespace"] == "team-a" and tags["cost-center"] == "1234"
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: AssumedRole\nmetadata: {name: x}\nspec: {roleArn: nope, durationSeconds: 5}\n")
    done = subprocess.run(
        [sys.executable, "-m", "rolecall.cli", "assume", "-f", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        done.returncode == 2
        and "spec.roleArn: invalid value 'nope'" in done.stderr
        and "spec.durationSeconds" in done.stderr
    )


def test_sidecar_token_outlives_lost_secrets_restarts_and_suspension(
    k8s: K8s, namespace: str, policy: str, start_operator: Any
) -> None:
    """Older SDKs read AWS_CONTAINER_AUTHORIZATION_TOKEN once, at container start: the token
    must stay the same for the AssumedRole's life, whatever happens to its Secret."""
    op = start_operator(token_key_secret=f"{namespace}/rolecall-token-key")
    k8s.create_ar(namespace, "s3", spec())
    first = wait_for(lambda: (k8s.secret_data(namespace, "s3") or {}).get(c.KEY_TOKEN), timeout=10)
    op.stop()
    # lost while no operator ran: nothing in memory, nothing in the Secret
    k8s.core.delete_namespaced_secret("s3", namespace)
    start_operator(token_key_secret=f"{namespace}/rolecall-token-key")
    again = wait_for(lambda: (k8s.secret_data(namespace, "s3") or {}).get(c.KEY_TOKEN), timeout=10)
    assert again == first, "a restored Secret got a new sidecar token"
    k8s.patch_ar(namespace, "s3", {"spec": {"suspend": True}})
    wait_for(lambda: k8s.secret(namespace, "s3") is None, timeout=10)
    k8s.patch_ar(namespace, "s3", {"spec": {"suspend": False}})
    resumed = wait_for(lambda: (k8s.secret_data(namespace, "s3") or {}).get(c.KEY_TOKEN), timeout=10)
    assert resumed == first, "suspend and resume changed the sidecar token"
    key = k8s.secret(namespace, "rolecall-token-key")
    assert key is not None and "key" in key["data"]
