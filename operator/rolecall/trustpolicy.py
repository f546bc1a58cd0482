"""``rolecall trust-policy -f FILE``: the trust policy an AssumedRole's IAM role needs.

Built from the exact AssumeRole request the operator would send (:func:`model.build_assume_request`):

- the principal is whoever calls AssumeRole: the operator's role (``--operator-role``), or for
  a chained binding (``spec.source.assumedRoleRef``) the role of the source binding, or for
  ``spec.source.secretRef`` the IAM identity of those keys;
- the actions: ``sts:AssumeRole``, ``sts:TagSession`` when session tags are sent (the
  automatic ones are, by default), ``sts:SetSourceIdentity`` when ``spec.sourceIdentity`` is set;
- the conditions pin what the AssumedRolePolicy enforces in the cluster on the AWS side too:
  the automatic ``kubernetes-namespace`` (and ``kubernetes-cluster-name``) session tags, the
  external ID and the source identity.

Pure: no AWS and no cluster is contacted; the CLI reads the file and prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rolecall import constants as c
from rolecall.model import AssumedRoleSpec, build_assume_request, parse_assumed_role

PLACEHOLDER_OPERATOR = "arn:aws:iam::<ACCOUNT-ID>:role/<ROLECALL-OPERATOR-ROLE>"


@dataclass(frozen=True)
class Binding:
    namespace: str
    name: str
    spec: AssumedRoleSpec


def bindings(documents: Iterable[Any]) -> list[Binding]:
    """Every AssumedRole of a YAML stream, validated as the operator would."""
    found = []
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == c.KIND_ASSUMED_ROLE:
            meta = doc.get("metadata") or {}
            namespace = meta.get("namespace") or "default"
            name = meta.get("name") or "assumedrole"
            found.append(Binding(namespace, name, parse_assumed_role(namespace, name, doc.get("spec"))))
    if not found:
        raise ValueError("the file holds no AssumedRole (kind: AssumedRole)")
    return found


def principal(binding: Binding, others: list[Binding], operator_role: str | None) -> tuple[str, str | None]:
    """The ARN that calls AssumeRole for this binding, and a note when it is a placeholder."""
    source = binding.spec.source
    if source.assumed_role_name:
        for other in others:
            if other.namespace == binding.namespace and other.name == source.assumed_role_name:
                return other.spec.role_arn, None
        return (
            f"arn:aws:iam::<ACCOUNT-ID>:role/<ROLE OF ASSUMEDROLE {source.assumed_role_name}>",
            f"spec.source.assumedRoleRef: the principal is the role of AssumedRole "
            f"{binding.namespace}/{source.assumed_role_name}; put it in the same file, or replace the placeholder",
        )
    if source.secret_name:
        return (
            "arn:aws:iam::<ACCOUNT-ID>:user/<OWNER OF THE KEYS>",
            f"spec.source.secretRef: the principal is the IAM user or role of the keys in Secret "
            f"{binding.namespace}/{source.secret_name}; replace the placeholder "
            "(`aws sts get-caller-identity` with those keys prints it)",
        )
    if operator_role:
        return operator_role, None
    return (
        PLACEHOLDER_OPERATOR,
        "the principal is the operator's own AWS identity: pass --operator-role ARN "
        "(the IRSA or Pod Identity role, or the IAM user of its static keys)",
    )


def statement(
    binding: Binding, principal_arn: str, *, cluster_name: str = "", session_tags: bool = True
) -> dict[str, Any]:
    request = build_assume_request(
        binding.namespace,
        binding.name,
        binding.spec,
        default_region="us-east-1",
        cluster_name=cluster_name,
        automatic_tags=session_tags,
    )
    actions = ["sts:AssumeRole"]
    if request.tags:
        actions.append("sts:TagSession")
    if request.source_identity:
        actions.append("sts:SetSourceIdentity")
    equals: dict[str, str] = {}
    sent = dict(request.tags)
    for key in (c.TAG_NAMESPACE, c.TAG_CLUSTER):
        if key in sent:
            equals[f"aws:RequestTag/{key}"] = sent[key]
    if request.external_id:
        equals["sts:ExternalId"] = request.external_id
    if request.source_identity:
        equals["sts:SourceIdentity"] = request.source_identity
    sid = "".join(
        part.capitalize() for part in f"rolecall {binding.namespace} {binding.name}".replace("-", " ").split()
    )
    body: dict[str, Any] = {
        "Sid": "".join(ch for ch in sid if ch.isalnum())[:100],
        "Effect": "Allow",
        "Principal": {"AWS": principal_arn},
        "Action": actions,
    }
    if equals:
        body["Condition"] = {"StringEquals": equals}
    return body


def trust_policy(
    documents: Iterable[Any],
    *,
    operator_role: str | None = None,
    cluster_name: str = "",
    session_tags: bool = True,
) -> tuple[dict[str, Any], list[str]]:
    """The trust policy for the first AssumedRole of the documents, and notes for the user."""
    found = bindings(documents)
    first = found[0]
    arn, note = principal(first, found, operator_role)
    policy = {
        "Version": "2012-10-17",
        "Statement": [statement(first, arn, cluster_name=cluster_name, session_tags=session_tags)],
    }
    notes = [note] if note else []
    if session_tags and not cluster_name:
        notes.append(
            "with clusterName set on the operator, pass --cluster-name too: the policy then also "
            "pins aws:RequestTag/kubernetes-cluster-name"
        )
    notes.append(f"attach it to {first.spec.role_arn} (IAM → Roles → Trust relationships)")
    return policy, notes


def render(policy: dict[str, Any]) -> str:
    return json.dumps(policy, indent=2) + "\n"


# --- the command line (registered by cli.py) --------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "trust-policy",
        help="print the trust policy the IAM role of an AssumedRole manifest needs",
        description="Print the trust policy JSON that the IAM role of the first AssumedRole in "
        "FILE needs, so that the operator may assume it (paste it into the role's trust relationships).",
    )
    p.add_argument("-f", "--file", required=True, help="a YAML file with an AssumedRole")
    p.add_argument(
        "--operator-role",
        default=None,
        metavar="ARN",
        help="the operator's AWS identity (IRSA / Pod Identity role, or IAM user of its keys)",
    )
    p.add_argument("--cluster-name", default="", help="the operator's clusterName, if set")
    p.add_argument("--no-session-tags", action="store_true", help="the operator runs with sessionTags=false")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import yaml

    from rolecall.model import SpecError

    try:
        with open(args.file, encoding="utf-8") as fh:
            policy, notes = trust_policy(
                yaml.safe_load_all(fh),
                operator_role=args.operator_role,
                cluster_name=args.cluster_name,
                session_tags=not args.no_session_tags,
            )
    except (SpecError, ValueError, OSError, yaml.YAMLError) as exc:
        print(f"rolecall trust-policy: {args.file}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(policy))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
