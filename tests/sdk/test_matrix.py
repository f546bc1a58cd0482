"""Every AWS SDK release at the edges of support gets the assumed role in every mode.

Each case is a pod as a cluster would run it (``tests/harness/sdk/pod.py``): the webhook's
real patch, the Secret of a real AssumeRole laid out as the kubelet mounts it, the container
env resolved as the kubelet does (``secretKeyRef`` included), a real ``rolecall sidecar``
behind its startup probe, and instance metadata that answers with the node's role. A client
passes only with the assumed role's ARN (and, where it says which key it signed with, the
Secret's key); the node's role, an error or anything else fails it.

The ``without_*`` cases take back one variable of the patch and show that the variable is
what makes the old release work (so the matrix can fail): they pin the minimum versions the
README gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.sdk import clients
from tests.harness.sdk.clients import Client, Identity
from tests.harness.sdk.imds import NodeMetadata
from tests.harness.sdk.pod import EXPECTED_ARN, NODE_ARN_PREFIX
from tests.harness.sts import STSFaultProxy
from tests.sdk.conftest import Pods, pod_env, prepared

# the first run installs every release (pip, npm); the calls themselves take seconds
pytestmark = pytest.mark.timeout(900)

MODES = ("sidecar", "file", "env")
TOKEN_VAR = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
METADATA_VAR = "AWS_EC2_METADATA_DISABLED"


def check_assumed_role(client: Client, identity: Identity, expected_key: str) -> None:
    assert identity.ok, f"{client.name}: {identity.error}"
    assert identity.arn == EXPECTED_ARN, f"{client.name} acted as {identity.arn}"
    assert identity.access_key_id in (None, expected_key)
    if client.expected_version is not None:
        assert identity.sdk == client.expected_version, f"{client.name} ran {identity.sdk}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("client", clients.CLIENTS, ids=lambda c: c.name)
def test_every_client_gets_the_assumed_role(
    client: Client, mode: str, pods: Pods, home: Path, node_metadata: NodeMetadata, sts_proxy: STSFaultProxy
) -> None:
    prepared(client)
    pod = pods.get(mode)
    identity = client.call(sts_proxy.url, pod_env(pod, home, node_metadata))
    check_assumed_role(client, identity, pod.creds.access_key_id)


# releases that read only AWS_CONTAINER_AUTHORIZATION_TOKEN, not the _FILE variant
BEFORE_TOKEN_FILE = ("botocore-1.31", "aws-cli-v1-1.29", "js-v2-2.1549", "js-v3-3.502")
# the first releases that read the _FILE variant
TOKEN_FILE_SINCE = ("botocore-1.32", "js-v2-2.1550", "js-v3-3.504")


@pytest.mark.parametrize("name", BEFORE_TOKEN_FILE)
def test_without_the_token_variable_an_older_release_gets_nothing(
    name: str, pods: Pods, home: Path, node_metadata: NodeMetadata, sts_proxy: STSFaultProxy
) -> None:
    """The patch before issue 12: only ``..._TOKEN_FILE``. The sidecar refuses (401)."""
    client = prepared(clients.BY_NAME[name])
    env = pod_env(pods.get("sidecar"), home, node_metadata, drop=(TOKEN_VAR,))
    identity = client.call(sts_proxy.url, env)
    assert not identity.ok, f"{name} got {identity.arn} without {TOKEN_VAR}: update BEFORE_TOKEN_FILE"


@pytest.mark.parametrize("name", TOKEN_FILE_SINCE)
def test_from_these_releases_the_token_file_alone_works(
    name: str, pods: Pods, home: Path, node_metadata: NodeMetadata, sts_proxy: STSFaultProxy
) -> None:
    client = prepared(clients.BY_NAME[name])
    pod = pods.get("sidecar")
    identity = client.call(sts_proxy.url, pod_env(pod, home, node_metadata, drop=(TOKEN_VAR,)))
    check_assumed_role(client, identity, pod.creds.access_key_id)


def test_without_metadata_disabled_an_old_js_v2_silently_acts_as_the_node(
    pods: Pods, home: Path, node_metadata: NodeMetadata, sts_proxy: STSFaultProxy
) -> None:
    """What AWS_EC2_METADATA_DISABLED prevents: the 401 makes JS v2 move on to the node's role."""
    client = prepared(clients.BY_NAME["js-v2-2.1549"])
    env = pod_env(pods.get("sidecar"), home, node_metadata, drop=(TOKEN_VAR, METADATA_VAR))
    served = node_metadata.credentials_served
    identity = client.call(sts_proxy.url, env)
    assert identity.ok and identity.arn is not None, identity.error
    assert identity.arn.startswith(NODE_ARN_PREFIX), identity.arn
    assert node_metadata.credentials_served > served


def test_file_mode_needs_sdk_load_config_for_js_v2(
    pods: Pods, home: Path, node_metadata: NodeMetadata, sts_proxy: STSFaultProxy
) -> None:
    client = prepared(clients.BY_NAME["js-v2-2.1550"])
    env = pod_env(pods.get("file"), home, node_metadata, drop=("AWS_SDK_LOAD_CONFIG",))
    identity = client.call(sts_proxy.url, env)
    assert not identity.ok, f"JS v2 read AWS_CONFIG_FILE without AWS_SDK_LOAD_CONFIG: {identity.arn}"
