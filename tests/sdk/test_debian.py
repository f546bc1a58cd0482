"""Opt-in (``make test-sdks``): Go SDK v1 and v2, Ruby and the AWS CLI v2 from Debian 12.

The same pods as ``test_matrix.py`` (the webhook's real patch, the kubelet's Secret volume, a
real sidecar, instance metadata that answers with the node's role). Debian 12 ships releases
from 2022: Go v1 1.44.133, Go v2 1.17.1, Ruby aws-sdk-core 3.168.1, AWS CLI 2.9.19. Ruby 3.168
does not know ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` at all, so sidecar mode cannot serve it;
with ``AWS_EC2_METADATA_DISABLED=true`` it fails loudly instead of acting as the node.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.sdk.debian import DEBIAN_CLIENTS, RUBY, DebianClient
from tests.harness.sdk.imds import NodeMetadata
from tests.harness.sdk.pod import NODE_ARN_PREFIX, NODE_ROLE_NAME, node_credentials
from tests.harness.sts import STSFaultProxy
from tests.sdk.conftest import Pods, pod_env, prepared
from tests.sdk.test_matrix import METADATA_VAR, MODES, TOKEN_VAR, check_assumed_role

pytestmark = [pytest.mark.debian_sdks, pytest.mark.timeout(900)]

# (client, mode) pairs that cannot work: the release lacks the mechanism
UNSUPPORTED = {("ruby", "sidecar")}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("client", DEBIAN_CLIENTS, ids=lambda c: c.name)
def test_debian_client(
    client: DebianClient,
    mode: str,
    pods: Pods,
    home: Path,
    node_metadata: NodeMetadata,
    sts_proxy: STSFaultProxy,
) -> None:
    prepared(client)
    pod = pods.get(mode)
    identity = client.call(sts_proxy.url, pod_env(pod, home, node_metadata))
    if (client.name, mode) in UNSUPPORTED:
        assert not identity.ok, f"{client.name} now works in {mode} mode ({identity.arn}): update the docs"
        return
    check_assumed_role(client, identity, pod.creds.access_key_id)


@pytest.mark.parametrize("client", [c for c in DEBIAN_CLIENTS if c.name != "ruby"], ids=lambda c: c.name)
def test_debian_releases_need_the_token_variable(
    client: DebianClient, pods: Pods, home: Path, node_metadata: NodeMetadata, sts_proxy: STSFaultProxy
) -> None:
    prepared(client)
    env = pod_env(pods.get("sidecar"), home, node_metadata, drop=(TOKEN_VAR,))
    identity = client.call(sts_proxy.url, env)
    assert not identity.ok, f"{client.name} read the token file ({identity.arn}): update the docs"


def test_ruby_in_sidecar_mode_fails_loudly(
    pods: Pods, home: Path, node_metadata: NodeMetadata, sts_proxy: STSFaultProxy
) -> None:
    prepared(RUBY)
    identity = RUBY.call(sts_proxy.url, pod_env(pods.get("sidecar"), home, node_metadata))
    assert not identity.ok and "MissingCredentials" in identity.error, identity


def test_without_metadata_disabled_ruby_silently_acts_as_the_node(
    pods: Pods, home: Path, sts_proxy: STSFaultProxy
) -> None:
    """Ruby 3.168 reaches instance metadata only on port 80: this case binds 127.0.0.1:80."""
    prepared(RUBY)
    try:
        imds = NodeMetadata(NODE_ROLE_NAME, node_credentials(sts_proxy.url), port=80)
    except OSError as exc:
        pytest.fail(f"binding 127.0.0.1:80 for Ruby's instance metadata failed ({exc}); run as root")
    with imds:
        env = pod_env(pods.get("sidecar"), home, imds, drop=(METADATA_VAR,))
        identity = RUBY.call(sts_proxy.url, env)
    assert identity.ok and identity.arn and identity.arn.startswith(NODE_ARN_PREFIX), identity
