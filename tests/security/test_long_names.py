"""Names up to the Kubernetes maximum (issue 11, item 9).

An AssumedRole name may be 253 characters, a label value only 63: the Secret write used to
fail forever on the ``rolecall.dev/assumed-role`` label and no status was ever written. Now
a long name becomes a hash form in the label (never equal to a real name: it holds ``_``).
"""

from __future__ import annotations

from typing import Any

from rolecall import constants as c
from rolecall.render import binding_label_value
from tests.harness.k8s import K8s
from tests.harness.sts import STSFaultProxy
from tests.harness.wait import wait_for
from tests.security.helpers import ar_spec, cond


def test_a_253_character_name_is_ready_with_a_hash_label(
    k8s: K8s, namespace: str, grant: Any, start_operator: Any, sts: STSFaultProxy
) -> None:
    grant()
    start_operator()
    name = ("a" * 62 + ".") * 3 + "b" * 64  # 253 characters, a valid DNS subdomain
    assert len(name) == 253
    k8s.create_ar(namespace, name, ar_spec())
    got = wait_for(
        lambda: cond(k8s, namespace, name, "True", "CredentialsIssued"),
        timeout=10,
        message="a 253-character AssumedRole never became Ready",
    )
    assert got["observedGeneration"] == 1
    secret = k8s.secret(namespace, name)
    assert secret is not None, "the Secret (named after the AssumedRole) was not written"
    label = secret["metadata"]["labels"][c.LABEL_ASSUMED_ROLE]
    assert label == binding_label_value(name) and len(label) == 63 and "_" in label
    assert secret["metadata"]["ownerReferences"][0]["name"] == name
    [call] = sts.requests(action="AssumeRole")
    assert len(call.session_name or "") == 64 and (call.session_name or "").startswith(f"{namespace}.")
    assert call.tags[c.TAG_ASSUMED_ROLE] == name
    status = k8s.get_ar(namespace, name)["status"]  # type: ignore[index]
    assert status["secretName"] == name and status["expiration"]
