"""Command injection through ``mountPath`` (issue 11, item 8).

``mountPath`` lands in the Secret's ``config`` as ``credential_process = cat <path>/...``;
the JavaScript SDK runs that line through ``sh -c``, so shell characters in it ran commands
in every bound pod. Now the field is limited to a safe character set (CRD pattern, webhook,
reconciler) and the path is written single-quoted. The quoting is tested with real SDKs on a
config whose path holds shell syntax — and, as a control, the old unquoted line is shown to
run the injected command in the same harness.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from rolecall import render
from rolecall.admission import review_assumed_role
from rolecall.model import Credentials, SpecError, parse_assumed_role, parse_policy
from tests.harness import sdk
from tests.harness.k8s import K8s
from tests.harness.sts import STSFaultProxy, sts_client
from tests.security.helpers import ROLE, ar_spec

ROOT = Path(__file__).resolve().parents[2]


def js_node() -> str:
    """node with the JS SDK v3 installed (on first use), or a failure saying why not."""
    try:
        sdk.node_modules()
    except sdk.PrerequisiteError as exc:
        pytest.fail(f"the AWS SDK for JavaScript v3 is not available: {exc}", pytrace=False)
    return sdk.node()


HOSTILE = ["/x;touch${IFS}/tmp/pwned", "/x$(id)", "/x`id`", "/x'y", "/x y", "/x\nregion=evil", "/x|sh"]


@pytest.mark.parametrize("path", HOSTILE)
def test_a_hostile_mount_path_is_refused_by_every_layer(k8s: K8s, namespace: str, path: str) -> None:
    with pytest.raises(ApiException) as exc:
        k8s.create_ar(namespace, "inject", ar_spec(mountPath=path))
    assert exc.value.status == 422 and "spec.mountPath" in json.loads(exc.value.body)["message"]
    with pytest.raises(SpecError, match=r"spec\.mountPath: invalid value"):
        parse_assumed_role(namespace, "inject", ar_spec(mountPath=path))
    review = review_assumed_role(
        {"metadata": {"name": "inject", "namespace": namespace}, "spec": ar_spec(mountPath=path)},
        operation="CREATE",
        namespace=namespace,
        policies=[parse_policy("all", {"namespaces": ["*"], "roleArns": [ROLE]})],
        namespace_labels={},
    )
    assert not review.allowed and "spec.mountPath" in review.message


def _credentials(sts: STSFaultProxy) -> Credentials:
    raw = sts_client(sts.url).assume_role(RoleArn=ROLE, RoleSessionName="ns.inject")["Credentials"]
    return Credentials(
        raw["AccessKeyId"],
        raw["SecretAccessKey"],
        raw["SessionToken"],
        datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(hours=1),
    )


def _run(cmd: list[str], config: Path) -> subprocess.CompletedProcess[str]:
    env = sdk.environment_without_credentials()
    env["AWS_CONFIG_FILE"] = str(config)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("client", ["js", "boto3"])
def test_quoting_holds_for_real_sdks(sts: STSFaultProxy, tmp_path: Path, client: str) -> None:
    node = js_node()
    marker = tmp_path / "pwned"
    # a directory whose path is shell syntax: unquoted, it runs `touch <marker>`
    hostile = tmp_path / f"a;touch {marker};b"
    hostile.mkdir(parents=True)
    creds = _credentials(sts)
    (hostile / "credentials.json").write_text(render.credentials_json(creds))
    config = tmp_path / "config"
    cmd = (
        [node, str(sdk.JS_CALLER_IDENTITY), "--provider", "ini"]
        if client == "js"
        else [sys.executable, str(sdk.PY_CALLER_IDENTITY)]
    )

    config.write_text(render.config_ini("default", str(hostile), "us-east-1"))
    done = _run(cmd, config)
    record = json.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {}
    assert record.get("ok"), f"the SDK could not read the quoted path: {done.stdout} {done.stderr[-2000:]}"
    assert record.get("accessKeyId") in (None, creds.access_key_id)
    assert not marker.exists(), "the quoted config ran the injected command"

    if client == "js":  # control: the old unquoted line runs it (the JS SDK uses sh -c)
        config.write_text(
            f"[default]\ncredential_process = cat {hostile}/credentials.json\nregion = us-east-1\n"
        )
        _run(cmd, config)
        assert marker.exists(), "control failed: the unquoted line should have run the command"


def test_quoting_holds_for_a_quote_in_the_path(sts: STSFaultProxy, tmp_path: Path) -> None:
    node = js_node()
    hostile = tmp_path / "it's here"
    hostile.mkdir()
    creds = _credentials(sts)
    (hostile / "credentials.json").write_text(render.credentials_json(creds))
    config = tmp_path / "config"
    config.write_text(render.config_ini("default", str(hostile), "us-east-1"))
    done = _run([node, str(sdk.JS_CALLER_IDENTITY), "--provider", "ini"], config)
    record: dict[str, Any] = json.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {}
    assert record.get("ok"), f"{done.stdout} {done.stderr[-2000:]}"
