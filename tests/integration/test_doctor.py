"""`rolecall doctor` and `rolecall trust-policy` as a user runs them, against the emulator and a
running operator: what is fine is said, what is wrong is named with its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness.k8s import K8s
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import free_port
from tests.harness.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]


def rolecall(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rolecall.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else dict(os.environ),
    )


def test_doctor_reports_a_working_install_and_the_binding_that_is_not(
    start_operator: Any, k8s: K8s, namespace: str, policy: str, kubeconfig_path: Path
) -> None:
    name = "rolecall.dev"  # the name the chart lets the operator manage (rbac.yaml)
    start_operator(
        webhook_enabled=True,
        webhook_host="127.0.0.1",
        webhook_port=free_port(),
        webhook_url_host="127.0.0.1",
        webhook_configuration_name=name,
    )
    try:
        wait_for(
            lambda: (
                "validate-assumedroles" in rolecall("doctor", "--kubeconfig", str(kubeconfig_path)).stdout
            ),
            timeout=20,
        )
        k8s.create_ar(namespace, "good", {"roleArn": ROLE_PREFIX + "team-a-s3"})
        # the policy admits team-*, and the webhook refuses what it does not: make a binding the
        # reconciler reports instead, whose Secret name is taken by someone else
        k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "taken"}, "data": {}})
        k8s.create_ar(namespace, "clash", {"roleArn": ROLE_PREFIX + "team-a-s3", "secretName": "taken"})
        wait_for(lambda: (k8s.condition(namespace, "good") or {}).get("status") == "True", timeout=20)
        wait_for(
            lambda: (k8s.condition(namespace, "clash") or {}).get("reason") == "SecretConflict", timeout=20
        )

        done = rolecall("doctor", "--kubeconfig", str(kubeconfig_path), "-n", namespace)
        out = done.stdout
        assert done.returncode == 1, out + done.stderr
        assert "[ok  ] CRD: assumedroles.rolecall.dev is served" in out
        assert f"validate-assumedroles.{name} ({name}): caBundle verifies the serving certificate" in out
        assert f"validate-assumedroles.{name} ({name}): answers at https://127.0.0.1:" in out
        assert "[ok  ] operator identity: works: 1 of 2 bindings have credentials" in out
        assert f"[FAIL] AssumedRole {namespace}/clash: not Ready (SecretConflict)" in out
        assert "fix: a Secret of that name exists and is not rolecall's" in out
        assert f"AssumedRole {namespace}/good" not in out
        assert out.rstrip().endswith("1 problem(s) found")
    finally:
        from kubernetes.client import AdmissionregistrationV1Api

        adm = AdmissionregistrationV1Api(k8s.api)
        adm.delete_mutating_webhook_configuration(name)
        adm.delete_validating_webhook_configuration(name)


def test_trust_policy_command_prints_pasteable_json() -> None:
    done = rolecall(
        "trust-policy",
        "-f",
        str(ROOT / "deploy" / "samples" / "team-a.yaml"),
        "--operator-role",
        "arn:aws:iam::111122223333:role/rolecall-operator",
    )
    assert done.returncode == 0, done.stderr
    policy = json.loads(done.stdout)
    assert policy["Statement"][0]["Principal"] == {"AWS": "arn:aws:iam::111122223333:role/rolecall-operator"}
    assert "attach it to arn:aws:iam::123456789012:role/team-a-s3-reader" in done.stderr


def test_cli_errors_say_what_to_do(tmp_path: Path) -> None:
    bare = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"}
    done = rolecall("assume", "-f", str(ROOT / "deploy" / "samples" / "team-a.yaml"), env=bare)
    assert done.returncode == 2
    assert (
        "set AWS_PROFILE" in done.stderr
        and "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in done.stderr
    )
    done = rolecall("trust-policy", "-f", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and "missing.yaml" in done.stderr
    done = rolecall("doctor", "--kubeconfig", str(tmp_path / "nope"), env=bare)
    assert done.returncode == 2 and "pass --kubeconfig or set KUBECONFIG" in done.stderr
