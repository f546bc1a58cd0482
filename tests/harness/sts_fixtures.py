"""pytest fixtures for the local STS (moto behind the fault-injecting proxy).

Load with ``pytest_plugins = ["tests.harness.sts_fixtures"]``
(or ``-p tests.harness.sts_fixtures`` on the command line).

- ``moto_sts`` (session): the moto server subprocess.
- ``sts_proxy`` (session): the proxy in front of it, checking SigV4 signatures (the fake base
  keys are registered; tests using other static keys call ``register_keys``).
- ``aws_env`` (session): env vars pointing clients at the proxy with fake base credentials;
  also applied to ``os.environ`` for the session (and restored afterwards).
- ``sts`` (function): the proxy, with no faults, not down and an empty request log.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from tests.harness.sts import MotoSTS, STSFaultProxy

FAKE_ACCESS_KEY_ID = "AKIAFAKEROLECALLTEST"
FAKE_SECRET_ACCESS_KEY = "fake-secret-access-key-for-rolecall-tests"
REGION = "us-east-1"

# Variables that would make a client use something else than the fake base credentials and
# the local endpoint; removed from os.environ while the session runs.
_CLEARED = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_CA_BUNDLE",
    "AWS_RETRY_MODE",
    "AWS_MAX_ATTEMPTS",
)


@pytest.fixture(scope="session")
def moto_sts() -> Iterator[MotoSTS]:
    with MotoSTS() as moto:
        yield moto


@pytest.fixture(scope="session")
def sts_proxy(moto_sts: MotoSTS) -> Iterator[STSFaultProxy]:
    """The proxy, checking SigV4 signatures as AWS does: the fake base keys are known, as is
    everything STS issues; a test that uses other static keys registers them."""
    with STSFaultProxy(moto_sts.url, verify_signatures=True) as proxy:
        proxy.register_keys(FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY)
        yield proxy


@pytest.fixture(scope="session")
def aws_env(sts_proxy: STSFaultProxy) -> Iterator[dict[str, str]]:
    """Env for the operator and clients: STS at the proxy, fake ``AKIA...`` base keys."""
    with tempfile.TemporaryDirectory(prefix="rolecall-aws-") as home:
        env = {
            "AWS_ENDPOINT_URL_STS": sts_proxy.url,
            "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            # a developer's ~/.aws must not leak in (profiles, regions, endpoints, retries)
            "AWS_CONFIG_FILE": os.path.join(home, "config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "credentials"),
        }
        saved = {k: os.environ.get(k) for k in (*env, *_CLEARED)}
        for key in _CLEARED:
            os.environ.pop(key, None)
        os.environ.update(env)
        try:
            yield dict(env)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def sts(sts_proxy: STSFaultProxy, aws_env: dict[str, str]) -> Iterator[STSFaultProxy]:
    """The proxy, clean for this test (no faults, up, empty request log, signatures checked)."""
    sts_proxy.reset()
    sts_proxy.verify_signatures = True
    yield sts_proxy
    sts_proxy.reset()
