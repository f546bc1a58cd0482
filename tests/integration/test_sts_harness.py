"""The local STS harness: moto behind the fault-injecting proxy, through real boto3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from tests.harness.sts import (
    ERRORS,
    STS_XMLNS,
    Fault,
    MotoSTS,
    ProxyControl,
    STSFaultProxy,
    parse_sigv4_credential,
    sts_client,
)
from tests.harness.sts_fixtures import FAKE_ACCESS_KEY_ID

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
ROLE_A = f"arn:aws:iam::{ACCOUNT}:role/team-a-reader"
ROLE_B = f"arn:aws:iam::{ACCOUNT}:role/team-b-writer"


@pytest.fixture
def client(sts: STSFaultProxy) -> Any:
    """STS client at the proxy with the fake base keys, one attempt per call (no retries)."""
    return sts_client(sts.url)


def assume(client: Any, role_arn: str = ROLE_A, session: str = "ns.name", **kw: Any) -> Any:
    return client.assume_role(RoleArn=role_arn, RoleSessionName=session, **kw)


def error_code(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    code: str = exc.value.response["Error"]["Code"]
    return code


# --- the happy path ---------------------------------------------------------------------------


def test_env_points_boto3_at_the_proxy(sts: STSFaultProxy, aws_env: dict[str, str]) -> None:
    assert aws_env["AWS_ENDPOINT_URL_STS"] == sts.url
    assert aws_env["AWS_ACCESS_KEY_ID"].startswith("AKIA")
    assert os.environ["AWS_ENDPOINT_URL_STS"] == sts.url
    default_client = boto3.client("sts")  # nothing passed: everything from the environment
    assert default_client.meta.endpoint_url == sts.url
    default_client.get_caller_identity()
    [record] = sts.requests()
    assert record.access_key_id == FAKE_ACCESS_KEY_ID
    assert record.region == "us-east-1"


def test_assume_role_records_the_request_and_the_credentials_work(sts: STSFaultProxy, client: Any) -> None:
    policy = json.dumps({"Version": "2012-10-17", "Statement": []})
    answer = assume(
        client,
        ROLE_A,
        "team-a.reader",
        DurationSeconds=1800,
        Tags=[
            {"Key": "kubernetes-namespace", "Value": "team-a"},
            {"Key": "rolecall-assumed-role", "Value": "reader"},
        ],
        TransitiveTagKeys=["kubernetes-namespace"],
        ExternalId="ext-123",
        SourceIdentity="rolecall",
        Policy=policy,
        PolicyArns=[{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}],
    )
    creds = answer["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assumed = sts_client(
        sts.url,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    identity = assumed.get_caller_identity()
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/team-a-reader/team-a.reader"

    [record] = sts.requests(action="AssumeRole")
    assert record.role_arn == ROLE_A
    assert record.session_name == "team-a.reader"
    assert record.duration_seconds == 1800
    assert record.tags == {"kubernetes-namespace": "team-a", "rolecall-assumed-role": "reader"}
    assert record.transitive_tag_keys == ["kubernetes-namespace"]
    assert record.external_id == "ext-123"
    assert record.source_identity == "rolecall"
    assert record.policy == policy
    assert record.policy_arns == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    assert record.region == "us-east-1"
    assert record.access_key_id == FAKE_ACCESS_KEY_ID
    assert (record.status, record.fault) == (200, None)
    assert abs(record.time - time.time()) < 60

    [whoami] = sts.requests(action="GetCallerIdentity")
    assert whoami.access_key_id == creds["AccessKeyId"]
    assert whoami.role_arn is None

    sts.clear()
    assert sts.requests() == []


def test_region_comes_from_the_signature(sts: STSFaultProxy) -> None:
    sts_client(sts.url, region="eu-west-3").get_caller_identity()
    [record] = sts.requests()
    assert record.region == "eu-west-3"


def test_parse_sigv4_credential() -> None:
    header = (
        "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261127/ap-south-1/sts/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )
    assert parse_sigv4_credential(header) == ("AKIAEXAMPLE", "ap-south-1")
    assert parse_sigv4_credential(None) == (None, None)
    assert parse_sigv4_credential("Bearer x") == (None, None)


# --- faults -----------------------------------------------------------------------------------


def test_third_assume_role_for_one_role_is_throttled(sts: STSFaultProxy, client: Any) -> None:
    sts.add_fault(Fault(error="Throttling", action="AssumeRole", role_arn=ROLE_A, nth=3, times=1))
    outcomes = []
    for _ in range(4):
        assume(client, ROLE_B)  # another role: never affected, never counted
        try:
            assume(client, ROLE_A)
            outcomes.append("ok")
        except botocore.exceptions.ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert outcomes == ["ok", "ok", "Throttling", "ok"]
    assert [r.status for r in sts.requests(role_arn=ROLE_A)] == [200, 200, 400, 200]
    assert [r.fault for r in sts.requests(role_arn=ROLE_A)] == [None, None, "Throttling", None]
    assert {r.status for r in sts.requests(role_arn=ROLE_B)} == {200}
    [fault] = sts.faults()
    assert (fault.seen, fault.applied, fault.exhausted) == (3, 1, True)  # stops counting


def test_fault_forever_with_a_glob(sts: STSFaultProxy, client: Any) -> None:
    sts.add_fault(Fault(error="AccessDenied", role_arn="arn:aws:iam::*:role/team-a-*", times=None))
    for _ in range(3):
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            assume(client, ROLE_A)
        assert error_code(exc) == "AccessDenied"
        assert ROLE_A in exc.value.response["Error"]["Message"]
    assume(client, ROLE_B)
    client.get_caller_identity()  # no role ARN: not matched by a role filter
    sts.clear_faults()
    assume(client, ROLE_A)


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_each_error_surfaces_in_boto3_with_its_code(sts: STSFaultProxy, client: Any, code: str) -> None:
    status = ERRORS[code][0]
    sts.add_fault(Fault(error=code, action="AssumeRole"))
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        assume(client)
    assert error_code(exc) == code
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert exc.value.response["ResponseMetadata"]["RequestId"]
    assert exc.value.operation_name == "AssumeRole"
    [record] = sts.requests()
    assert (record.status, record.fault) == (status, code)
    assume(client)  # times=1: the next call goes through


def test_custom_error_code_and_message(sts: STSFaultProxy, client: Any) -> None:
    sts.add_fault(Fault(error="IDPCommunicationError", status=400, message="try later"))
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        client.get_caller_identity()
    assert exc.value.response["Error"] == {
        "Type": "Sender",
        "Code": "IDPCommunicationError",
        "Message": "try later",
    }


def test_invalid_faults_are_refused() -> None:
    with pytest.raises(ValueError, match="needs"):
        Fault()
    with pytest.raises(ValueError, match="unknown STS error"):
        Fault(error="NoSuchThing")
    with pytest.raises(ValueError, match="1-based"):
        Fault(error="Throttling", nth=0)


@pytest.mark.parametrize("code", ["Throttling", "InternalFailure", "ServiceUnavailable"])
def test_botocore_retries_throttling_and_5xx_by_default(sts: STSFaultProxy, code: str) -> None:
    sts.add_fault(Fault(error=code, times=2))
    default_client = boto3.client("sts")  # standard retry mode: 3 attempts in all
    default_client.get_caller_identity()
    assert [r.fault for r in sts.requests()] == [code, code, None]


def test_botocore_does_not_retry_access_denied(sts: STSFaultProxy) -> None:
    sts.add_fault(Fault(error="AccessDenied", times=None))
    with pytest.raises(botocore.exceptions.ClientError):
        boto3.client("sts").get_caller_identity()
    assert len(sts.requests()) == 1


def test_max_attempts_1_means_one_retry(sts: STSFaultProxy) -> None:
    """botocore's client config ``max_attempts`` counts retries, not attempts."""
    from botocore.config import Config

    sts.add_fault(Fault(error="Throttling", times=None))
    one_retry = boto3.client("sts", config=Config(retries={"max_attempts": 1}))
    with pytest.raises(botocore.exceptions.ClientError):
        one_retry.get_caller_identity()
    assert len(sts.requests()) == 2


def test_slow_then_forward(sts: STSFaultProxy, client: Any) -> None:
    sts.add_fault(Fault(slow=0.4, action="AssumeRole"))
    started = time.monotonic()
    assume(client)
    assert time.monotonic() - started >= 0.4
    [record] = sts.requests()
    assert (record.status, record.fault) == (200, "slow")


def test_slow_beyond_the_read_timeout_times_out(sts: STSFaultProxy) -> None:
    sts.add_fault(Fault(slow=2.0))
    impatient = sts_client(sts.url, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        impatient.get_caller_identity()
    assert time.monotonic() - started < 1.5
    impatient.get_caller_identity()  # a new connection, no fault left


def test_slow_then_error(sts: STSFaultProxy, client: Any) -> None:
    sts.add_fault(Fault(slow=0.2, error="ServiceUnavailable"))
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        client.get_caller_identity()
    assert error_code(exc) == "ServiceUnavailable"


def test_drop_closes_the_connection_without_an_answer(sts: STSFaultProxy, client: Any) -> None:
    sts.add_fault(Fault(drop=True, action="AssumeRole"))
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        assume(client)
    [record] = sts.requests()
    assert (record.status, record.fault, record.role_arn) == (None, "drop", ROLE_A)
    assume(client)


def test_down_refuses_every_call_until_switched_back(sts: STSFaultProxy, client: Any) -> None:
    sts.set_down(True)
    assert sts.down
    for _ in range(3):
        with pytest.raises(
            (
                botocore.exceptions.ConnectionClosedError,
                botocore.exceptions.EndpointConnectionError,
            )
        ):
            assume(client)
    # the control API still answers while STS is "down"
    assert ProxyControl(sts.url).faults() == []
    assert [r.fault for r in sts.requests()] == ["down"] * 3
    sts.set_down(False)
    assume(client)


# --- control API, CLI, load -------------------------------------------------------------------


def _http(method: str, url: str, data: Any = None) -> tuple[int, Any]:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_control_api_from_a_separate_http_client(sts: STSFaultProxy, client: Any) -> None:
    base = f"{sts.url}/__proxy"
    fault = {"error": "Throttling", "action": "AssumeRole", "role_arn": ROLE_A, "nth": 2}
    status, added = _http("POST", f"{base}/faults", fault)
    assert status == 201
    assert added["error"] == "Throttling" and added["id"]
    assert _http("GET", f"{base}/faults")[1][0]["id"] == added["id"]

    assume(client, ROLE_A)
    with pytest.raises(botocore.exceptions.ClientError):
        assume(client, ROLE_A)
    assume(client, ROLE_B)
    status, records = _http("GET", f"{base}/requests?role_arn={ROLE_A}")
    assert status == 200
    assert [r["status"] for r in records] == [200, 400]
    assert records[1]["fault"] == "Throttling"
    assert records[0]["access_key_id"] == FAKE_ACCESS_KEY_ID
    assert len(_http("GET", f"{base}/requests?action=AssumeRole")[1]) == 3

    assert _http("POST", f"{base}/down", {"down": True}) == (200, {"down": True})
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        client.get_caller_identity()
    assert _http("GET", f"{base}/down") == (200, {"down": True})
    assert _http("POST", f"{base}/down", {"down": False}) == (200, {"down": False})
    client.get_caller_identity()

    assert _http("DELETE", f"{base}/faults")[0] == 200
    assert sts.faults() == []
    assert _http("DELETE", f"{base}/requests")[0] == 200
    assert sts.requests() == []

    assert _http("POST", f"{base}/faults", {"error": "Nope"})[0] == 400
    assert _http("POST", f"{base}/faults", {"bogus": 1})[0] == 400
    assert _http("POST", f"{base}/down", {"down": "yes"})[0] == 400
    assert _http("GET", f"{base}/nothing")[0] == 404


def test_proxy_control_client(sts: STSFaultProxy, client: Any) -> None:
    control = ProxyControl(sts.url)
    added = control.add_fault(Fault(error="AccessDenied", action="AssumeRole", times=None))
    assert sts.faults()[0].id == added["id"]
    with pytest.raises(botocore.exceptions.ClientError):
        assume(client)
    [record] = control.requests(action="AssumeRole")
    assert record.fault == "AccessDenied" and record.tags == {}
    control.clear_faults()
    control.set_down(True)
    assert sts.down
    control.reset()
    assert not sts.down and sts.requests() == [] and sts.faults() == []


def test_concurrent_clients(sts: STSFaultProxy) -> None:
    """8 threads x 40 AssumeRole: every request answered and recorded."""
    errors: list[BaseException] = []
    per_thread = 40

    def work(n: int) -> None:
        own = sts_client(sts.url)
        try:
            for i in range(per_thread):
                assume(own, f"arn:aws:iam::{ACCOUNT}:role/load-{n}", f"s{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.monotonic() - started
    assert errors == []
    records = sts.requests(action="AssumeRole")
    assert len(records) == 8 * per_thread
    assert {r.status for r in records} == {200}
    assert len(sts.requests(role_arn="arn:aws:iam::*:role/load-3")) == per_thread
    print(f"{len(records) / elapsed:.0f} AssumeRole/s through the proxy with 8 threads")


def test_moto_reset(moto_sts: MotoSTS, sts: STSFaultProxy) -> None:
    iam = boto3.client("iam", endpoint_url=moto_sts.url)
    iam.create_role(RoleName="to-be-forgotten", AssumeRolePolicyDocument="{}")
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == ["to-be-forgotten"]
    moto_sts.reset()
    assert iam.list_roles()["Roles"] == []


def test_error_document_shape(sts: STSFaultProxy) -> None:
    sts.verify_signatures = False  # an unsigned request, to see the fault's document
    sts.add_fault(Fault(error="Throttling"))
    request = urllib.request.Request(
        sts.url, data=b"Action=GetCallerIdentity&Version=2011-06-15", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(request, timeout=10)
    with exc.value as answer:
        body = answer.read().decode()
        assert answer.code == 400
        assert answer.headers["Content-Type"] == "text/xml"
    assert body.startswith(f'<ErrorResponse xmlns="{STS_XMLNS}"><Error><Type>Sender</Type>')
    assert "<Code>Throttling</Code>" in body and "<RequestId>" in body


@pytest.fixture
def cli() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.sts", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield process, json.loads(line)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_cli_serves_until_sigterm(
    cli: tuple[subprocess.Popen[str], dict[str, str]], aws_env: dict[str, str]
) -> None:
    process, urls = cli
    assert set(urls) == {"url", "moto_url"}
    remote = sts_client(urls["url"])
    control = ProxyControl(urls["url"])
    control.add_fault(Fault(error="RegionDisabledException"))
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        assume(remote)
    assert error_code(exc) == "RegionDisabledException"
    assume(remote)
    assert [r.status for r in control.requests()] == [403, 200]

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{urls['moto_url']}/moto-api/", timeout=2)


# --- the SigV4-checking front --------------------------------------------------------------------


def test_front_accepts_known_keys_and_issued_credentials(sts: STSFaultProxy, client: Any) -> None:
    assert sts.verify_signatures, "the fixtures check signatures for the whole suite"
    creds = assume(client)["Credentials"]
    issued = sts_client(
        sts.url,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    assert issued.get_caller_identity()["Arn"].endswith("/ns.name")
    sts.register_keys("AKIATENANTKEYS000001", "tenant-secret")
    tenant = sts_client(
        sts.url, aws_access_key_id="AKIATENANTKEYS000001", aws_secret_access_key="tenant-secret"
    )
    tenant.get_caller_identity()


@pytest.mark.parametrize(
    ("credentials", "code"),
    [
        (
            {"aws_access_key_id": FAKE_ACCESS_KEY_ID, "aws_secret_access_key": "garbage"},
            "SignatureDoesNotMatch",
        ),
        ({"aws_access_key_id": "AKIAUNKNOWN000000001", "aws_secret_access_key": "x"}, "InvalidClientTokenId"),
        (
            {
                "aws_access_key_id": FAKE_ACCESS_KEY_ID,
                "aws_secret_access_key": "fake-secret-access-key-for-rolecall-tests",
                "aws_session_token": "not-ours",
            },
            "InvalidClientTokenId",
        ),
    ],
    ids=["known key id, other secret", "unknown key id", "static key with a session token"],
)
def test_front_refuses_what_aws_refuses(sts: STSFaultProxy, credentials: dict[str, str], code: str) -> None:
    bad = sts_client(sts.url, **credentials)
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        assume(bad)
    assert error_code(exc) == code
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    record = sts.requests(action="AssumeRole")[-1]
    assert (record.status, record.fault) == (403, code)


def test_front_refuses_a_stolen_key_id_with_a_token_of_another_session(
    sts: STSFaultProxy, client: Any
) -> None:
    one, two = assume(client)["Credentials"], assume(client, session="ns.other")["Credentials"]
    mixed = sts_client(
        sts.url,
        aws_access_key_id=one["AccessKeyId"],
        aws_secret_access_key=one["SecretAccessKey"],
        aws_session_token=two["SessionToken"],
    )
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        mixed.get_caller_identity()
    assert error_code(exc) == "InvalidClientTokenId"


def test_front_refuses_unsigned_and_tampered_requests(sts: STSFaultProxy, client: Any) -> None:
    unsigned = urllib.request.Request(
        sts.url, data=b"Action=GetCallerIdentity&Version=2011-06-15", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(unsigned, timeout=10)
    with exc.value as answer:
        assert answer.code == 403 and b"<Code>MissingAuthenticationToken</Code>" in answer.read()

    def tamper(request: Any, **_: Any) -> None:  # change the body after signing
        request.body = request.body.replace("ns.name", "ns.evil")

    client.meta.events.register_first("before-send.sts.AssumeRole", tamper)
    with pytest.raises(botocore.exceptions.ClientError) as bad:
        assume(client)
    assert error_code(bad) == "SignatureDoesNotMatch"


def test_front_can_be_switched_off_and_driven_from_another_process(sts: STSFaultProxy) -> None:
    control = ProxyControl(sts.url)
    control.register_keys("AKIAOTHERPROCESS0001", "s3cr3t")
    sts_client(
        sts.url, aws_access_key_id="AKIAOTHERPROCESS0001", aws_secret_access_key="s3cr3t"
    ).get_caller_identity()
    control.set_verify_signatures(False)
    sts_client(sts.url, aws_access_key_id="AKIAANYTHING", aws_secret_access_key="x").get_caller_identity()
    assert not sts.verify_signatures
