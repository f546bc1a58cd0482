"""Every format of the managed Secret, and reading it back (no I/O)."""

from __future__ import annotations

import base64
import configparser
import datetime
import json
import re

from rolecall import constants as c
from rolecall import render
from rolecall.managed_secret import owned_by
from rolecall.model import Credentials, parse_assumed_role

EXP = datetime.datetime(2026, 11, 27, 23, 0, tzinfo=datetime.UTC)
ISSUED = EXP - datetime.timedelta(hours=1)
CREDS = Credentials("ASIAEXAMPLEKEY123456", "secret/+key", "token+/=session", EXP, "")
OWNER = {
    "apiVersion": c.API_VERSION,
    "kind": "AssumedRole",
    "metadata": {"name": "s3-reader", "namespace": "team-a", "uid": "uid-1"},
}


def spec(**extra: object):  # type: ignore[no-untyped-def]
    return parse_assumed_role("team-a", "s3-reader", {"roleArn": "arn:aws:iam::123456789012:role/r", **extra})


def test_env_keys_hold_plain_values() -> None:
    data = render.secret_data(CREDS, spec(), "eu-west-1", "t" * 43)
    assert data[c.KEY_ACCESS_KEY_ID] == "ASIAEXAMPLEKEY123456"
    assert data[c.KEY_SECRET_ACCESS_KEY] == "secret/+key"
    assert data[c.KEY_SESSION_TOKEN] == "token+/=session"
    assert data[c.KEY_EXPIRATION] == "2026-11-27T23:00:00Z"
    assert data[c.KEY_REGION] == data[c.KEY_DEFAULT_REGION] == "eu-west-1"
    assert data[c.KEY_TOKEN] == "t" * 43


def test_no_region_keys_without_a_region() -> None:
    data = render.secret_data(CREDS, spec(), "", "t" * 43)
    assert c.KEY_REGION not in data and c.KEY_DEFAULT_REGION not in data
    assert "region" not in data[c.KEY_CONFIG]


def test_credentials_ini_is_a_profile_botocore_can_read() -> None:
    data = render.secret_data(CREDS, spec(profile="prod"), "", "t" * 43)
    ini = configparser.ConfigParser()
    ini.read_string(data[c.KEY_CREDENTIALS])
    assert ini["prod"]["aws_access_key_id"] == CREDS.access_key_id
    assert ini["prod"]["aws_secret_access_key"] == CREDS.secret_access_key
    assert ini["prod"]["aws_session_token"] == CREDS.session_token


def test_config_runs_credential_process_from_the_mount_path() -> None:
    default = configparser.ConfigParser()
    default.read_string(render.secret_data(CREDS, spec(), "us-east-1", "x" * 43)[c.KEY_CONFIG])
    assert default["default"]["credential_process"] == f"cat '{c.DEFAULT_MOUNT_PATH}/credentials.json'"
    assert default["default"]["region"] == "us-east-1"
    named = configparser.ConfigParser()
    named.read_string(
        render.secret_data(CREDS, spec(profile="prod", mountPath="/aws/"), "", "x" * 43)[c.KEY_CONFIG]
    )
    assert named["profile prod"]["credential_process"] == "cat '/aws/credentials.json'"


def test_every_path_in_config_is_one_quoted_shell_word() -> None:
    """Defence in depth behind the mountPath rule: even a hostile path stays one word."""
    import shlex

    hostile = "/x'; touch /tmp/pwned; echo '$(id)`id`"
    line = render.config_ini("default", hostile, "").splitlines()[1]
    command = line.split(" = ", 1)[1]
    assert shlex.split(command) == ["cat", hostile + "/credentials.json"]


def test_label_value_of_long_names_is_a_hash_form() -> None:
    assert render.binding_label_value("s3-reader") == "s3-reader"
    assert render.binding_label_value("a" * 63) == "a" * 63
    long_a, long_b = "a" * 200 + "x", "a" * 200 + "y"
    value = render.binding_label_value(long_a)
    assert (
        len(value) == 63 and value.startswith("a" * 50 + "_") and value != render.binding_label_value(long_b)
    )
    assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value)
    owner = {**OWNER, "metadata": {**OWNER["metadata"], "name": long_a}}  # type: ignore[dict-item]
    body = render.build_secret(
        namespace="team-a",
        owner=owner,
        spec=spec(secretName="creds"),
        creds=CREDS,
        issued_at=ISSUED,
        spec_hash="abc",
        region="",
        token="k" * 43,
    )
    assert body["metadata"]["labels"][c.LABEL_ASSUMED_ROLE] == value
    assert render.owner_name(body["metadata"]) == long_a
    assert owned_by(body, owner["metadata"]["uid"])
    body["metadata"]["ownerReferences"] = []
    assert render.owner_name(body["metadata"]) is None  # a hash form names no object


def test_credentials_json_is_the_credential_process_format() -> None:
    doc = json.loads(render.secret_data(CREDS, spec(), "", "x" * 43)[c.KEY_CREDENTIALS_JSON])
    assert doc == {
        "Version": 1,
        "AccessKeyId": CREDS.access_key_id,
        "SecretAccessKey": CREDS.secret_access_key,
        "SessionToken": CREDS.session_token,
        "Expiration": "2026-11-27T23:00:00Z",
    }


def test_secret_metadata_and_round_trip() -> None:
    s = spec(secretName="aws-creds")
    body = render.build_secret(
        namespace="team-a",
        owner=OWNER,
        spec=s,
        creds=CREDS,
        issued_at=ISSUED,
        spec_hash="abc",
        region="",
        token="k" * 43,
    )
    meta = body["metadata"]
    assert meta["name"] == "aws-creds"
    assert meta["labels"][c.LABEL_MANAGED_BY] == "rolecall"
    assert meta["annotations"] == {
        c.ANN_EXPIRATION: "2026-11-27T23:00:00Z",
        c.ANN_ISSUED_AT: "2026-11-27T22:00:00Z",
        c.ANN_ROLE_ARN: "arn:aws:iam::123456789012:role/r",
        c.ANN_SPEC_HASH: "abc",
    }
    assert meta["ownerReferences"][0]["uid"] == "uid-1" and meta["ownerReferences"][0]["controller"] is True
    assert base64.b64decode(body["data"][c.KEY_ACCESS_KEY_ID]).decode() == CREDS.access_key_id
    stored, creds, token = render.read_stored(body)
    assert stored is not None and stored.complete and stored.spec_hash == "abc" and stored.expiration == EXP
    assert creds == CREDS and token == "k" * 43


def test_hand_edited_secret_reads_as_incomplete() -> None:
    body = render.build_secret(
        namespace="team-a",
        owner=OWNER,
        spec=spec(),
        creds=CREDS,
        issued_at=ISSUED,
        spec_hash="abc",
        region="",
        token="k" * 43,
    )
    body["data"][c.KEY_CREDENTIALS_JSON] = base64.b64encode(b"not json").decode()
    stored, creds, _ = render.read_stored(body)
    assert stored is not None and not stored.complete and creds is None
    body["metadata"]["annotations"].pop(c.ANN_EXPIRATION)
    assert render.read_stored(body)[0] is None


def test_ownership() -> None:
    body = render.build_secret(
        namespace="team-a",
        owner=OWNER,
        spec=spec(),
        creds=CREDS,
        issued_at=ISSUED,
        spec_hash="abc",
        region="",
        token="k" * 43,
    )
    assert owned_by(body, OWNER["metadata"]["uid"])
    assert not owned_by(body, "uid-2")
    foreign = {"metadata": {"name": "s3-reader", "labels": {}}}
    assert not owned_by(foreign, OWNER["metadata"]["uid"])
    # owner reference removed by hand, rolecall's labels kept: labels can be forged, so only the
    # Secret object this process wrote (its UID) is still recognised as ours
    body["metadata"]["ownerReferences"] = []
    body["metadata"]["uid"] = "secret-uid-1"
    assert not owned_by(body, OWNER["metadata"]["uid"])
    assert owned_by(body, OWNER["metadata"]["uid"], known_secret_uid="secret-uid-1")


def test_credentials_repr_hides_secrets() -> None:
    text = repr(CREDS) + str(CREDS)
    assert "secret/+key" not in text and "token+/=session" not in text
    assert "ASIAEXAMPLEKEY123456" in text


def test_condition_keeps_transition_time_while_status_holds() -> None:
    t1 = ISSUED
    first = render.condition("Ready", True, "CredentialsIssued", "ok", t1, None, 1)
    later = render.condition(
        "Ready", True, "CredentialsIssued", "ok again", t1 + datetime.timedelta(hours=1), [first], 2
    )
    assert later["lastTransitionTime"] == first["lastTransitionTime"]
    flipped = render.condition(
        "Ready", False, "AccessDenied", "no", t1 + datetime.timedelta(hours=2), [later], 2
    )
    assert flipped["lastTransitionTime"] == "2026-11-28T00:00:00Z"
