"""The operator's own webhook CA: issuing, renewal rules (time passed in) and what gets written."""

from __future__ import annotations

import base64
import datetime

import pytest

from rolecall import tls, webhookcerts
from rolecall.config import Settings

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
TARGET = webhookcerts.Target("rolecall-system", "rolecall-webhook-tls", "rolecall", "rolecall")
HOSTS = webhookcerts.hosts_for(TARGET, [])


@pytest.fixture(scope="module")
def fresh() -> webhookcerts.Material:
    material, why = webhookcerts.plan(None, HOSTS, NOW)
    assert material is not None and why == "no CA yet"
    return material


def test_first_issue_is_a_ca_and_a_serving_certificate_for_the_service(fresh: webhookcerts.Material) -> None:
    assert tls.verifies(fresh.ca_bundle, fresh.serving.cert_pem)
    [cert] = tls.load_bundle(fresh.serving.cert_pem)
    assert tls.covers(cert, ["rolecall.rolecall-system.svc", "rolecall.rolecall-system.svc.cluster.local"])
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == tls.SERVING_LIFETIME
    [ca] = tls.load_bundle(fresh.ca_bundle)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == tls.CA_LIFETIME


@pytest.mark.parametrize(
    ("age", "why"),
    [
        (DAY, None),
        (200 * DAY, None),
        (250 * DAY, "the serving certificate is past 67% of its lifetime"),
        (366 * DAY, "the serving certificate has expired"),
    ],
    ids=[
        "leaves a day-old certificate alone",
        "leaves a 200-day-old certificate alone",
        "renews the serving certificate after two thirds of a year",
        "renews an expired serving certificate",
    ],
)
def test_serving_renewal(fresh: webhookcerts.Material, age: datetime.timedelta, why: str | None) -> None:
    wanted, reason = webhookcerts.plan(fresh, HOSTS, NOW + age)
    if why is None:
        assert (wanted, reason) == (None, None)
        return
    assert wanted is not None and reason is not None and reason.startswith(why)
    assert wanted.ca == fresh.ca and wanted.ca_bundle == fresh.ca_bundle, "the CA stays"
    assert wanted.serving != fresh.serving
    assert tls.verifies(fresh.ca_bundle, wanted.serving.cert_pem)


def test_ca_renewal_keeps_the_old_ca_trusted_until_it_expires(fresh: webhookcerts.Material) -> None:
    later = NOW + 2500 * DAY  # past two thirds of ten years
    wanted, why = webhookcerts.plan(fresh, HOSTS, later)
    assert wanted is not None and why and why.startswith("the CA is past 67%")
    assert wanted.ca != fresh.ca
    cas = tls.load_bundle(wanted.ca_bundle)
    assert len(cas) == 2 and cas[1] == tls.load_bundle(fresh.ca_bundle)[0]
    # a replica still serving the old certificate is trusted, and so is the new one
    assert tls.verifies(wanted.ca_bundle, fresh.serving.cert_pem)
    assert tls.verifies(wanted.ca_bundle, wanted.serving.cert_pem)
    assert not tls.verifies(fresh.ca_bundle, wanted.serving.cert_pem)
    # once the old CA has expired it leaves the bundle
    after_old = NOW + 3651 * DAY
    again, _ = webhookcerts.plan(wanted, HOSTS, after_old)
    assert again is not None and tls.load_bundle(again.ca_bundle) == cas[:1]
    # the bundle alone is reason enough to rewrite
    current = webhookcerts.Material(again.ca, wanted.ca_bundle, again.serving)
    assert webhookcerts.plan(current, HOSTS, after_old)[1] == "the CA bundle holds an expired CA"


def test_a_new_host_gets_a_new_serving_certificate(fresh: webhookcerts.Material) -> None:
    config = {"webhooks": [{"clientConfig": {"url": "https://127.0.0.1:9443/validate-assumedroles"}}]}
    hosts = webhookcerts.hosts_for(TARGET, [config, None])
    assert hosts[-1] == "127.0.0.1"
    wanted, why = webhookcerts.plan(fresh, hosts, NOW + DAY)
    assert wanted is not None and why and "does not cover" in why
    assert tls.covers(tls.load_bundle(wanted.serving.cert_pem)[0], hosts)


def test_a_secret_that_is_not_ours_is_replaced_by_a_new_ca() -> None:
    cert, key = tls.generate_self_signed(["elsewhere"], now=NOW)
    foreign = {
        "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}
    }
    assert webhookcerts.material_from_secret(foreign) is None
    wanted, why = webhookcerts.plan(webhookcerts.material_from_secret(foreign), HOSTS, NOW)
    assert wanted is not None and why == "no CA yet"


def test_secret_round_trip(fresh: webhookcerts.Material) -> None:
    body = webhookcerts.secret_body(TARGET, fresh, "42")
    assert body["type"] == "kubernetes.io/tls" and body["metadata"]["resourceVersion"] == "42"
    assert set(body["data"]) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    assert webhookcerts.material_from_secret(body) == fresh


def test_configuration_gets_the_bundle_and_the_annotated_failure_policy(fresh: webhookcerts.Material) -> None:
    config = {
        "metadata": {"name": "rolecall", "annotations": {webhookcerts.ANN_FAILURE_POLICY: "Fail"}},
        "webhooks": [
            {"name": "validate-assumedroles.rolecall.dev", "failurePolicy": "Ignore", "clientConfig": {}}
        ],
    }
    changed = webhookcerts.configured(config, fresh.ca_bundle)
    assert changed is not None
    [hook] = changed["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == fresh.ca_bundle
    assert config["webhooks"][0]["failurePolicy"] == "Ignore", "the input is not modified"
    assert webhookcerts.configured(changed, fresh.ca_bundle) is None, "nothing to write the second time"
    # without the annotation the failurePolicy is left as it is
    plain = {"metadata": {"name": "x"}, "webhooks": [{"name": "h", "failurePolicy": "Ignore"}]}
    assert webhookcerts.configured(plain, fresh.ca_bundle)["webhooks"][0]["failurePolicy"] == "Ignore"  # type: ignore[index]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"webhook_enabled": True, "webhook_service": "rolecall-system/rolecall"}, TARGET),
        (
            {
                "webhook_enabled": True,
                "webhook_service": "rolecall-system/rolecall",
                "webhook_cert": "/tls/tls.crt",
            },
            None,
        ),
        ({"webhook_enabled": True}, None),
        ({"webhook_enabled": False, "webhook_service": "rolecall-system/rolecall"}, None),
    ],
    ids=["self-issued behind a Service", "provided files", "development", "webhooks off"],
)
def test_when_the_operator_issues_its_own(overrides: dict[str, object], expected: object) -> None:
    settings = Settings()
    for key, value in overrides.items():
        setattr(settings, key, value)
    assert webhookcerts.target_for(settings) == expected


def test_bad_service_names_the_flag() -> None:
    settings = Settings(webhook_enabled=True, webhook_service="rolecall")
    with pytest.raises(
        ValueError, match=r"--webhook-service: invalid value 'rolecall': must be NAMESPACE/NAME"
    ):
        webhookcerts.target_for(settings)
