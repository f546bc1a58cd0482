"""Names that form rolecall's public contract, in one place.

The API group, labels, annotations, Secret keys, condition types and reasons are read by
users, by IAM trust policies and by other tools; changing one is a breaking change.
"""

from __future__ import annotations

from enum import StrEnum

GROUP = "rolecall.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

KIND_ASSUMED_ROLE = "AssumedRole"
PLURAL_ASSUMED_ROLE = "assumedroles"
KIND_POLICY = "AssumedRolePolicy"
PLURAL_POLICY = "assumedrolepolicies"

# --- labels and annotations -------------------------------------------------------------
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "rolecall"
LABEL_ASSUMED_ROLE = f"{GROUP}/assumed-role"  # on the Secret: the owning AssumedRole's name

ANN_EXPIRATION = f"{GROUP}/expiration"
ANN_ISSUED_AT = f"{GROUP}/issued-at"
ANN_ROLE_ARN = f"{GROUP}/role-arn"
ANN_SPEC_HASH = f"{GROUP}/spec-hash"

# pod annotations read by the injection webhook
ANN_POD_ASSUMED_ROLE = f"{GROUP}/assumed-role"
ANN_POD_INJECT = f"{GROUP}/inject"
ANN_POD_SKIP_CONTAINERS = f"{GROUP}/skip-containers"
ANN_POD_MODE = f"{GROUP}/mode"
ANN_POD_EC2_METADATA = f"{GROUP}/ec2-metadata"  # "allow": no AWS_EC2_METADATA_DISABLED
ANN_POD_INJECTED = f"{GROUP}/injected"

# --- the Secret's keys (README: The Secret) -------------------------------------------------------
KEY_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
KEY_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
KEY_SESSION_TOKEN = "AWS_SESSION_TOKEN"
KEY_EXPIRATION = "AWS_CREDENTIAL_EXPIRATION"
KEY_REGION = "AWS_REGION"
KEY_DEFAULT_REGION = "AWS_DEFAULT_REGION"
KEY_CREDENTIALS = "credentials"
KEY_CONFIG = "config"
KEY_CREDENTIALS_JSON = "credentials.json"
KEY_TOKEN = "token"

# --- defaults ----------------------------------------------------------------------------
DEFAULT_MOUNT_PATH = "/var/run/secrets/rolecall.dev/aws"
DEFAULT_DURATION_SECONDS = 3600
DEFAULT_PROFILE = "default"
SIDECAR_PORT = 9911
MIN_DURATION_SECONDS = 900
MAX_DURATION_SECONDS = 43200
CHAINED_MAX_DURATION_SECONDS = 3600

# automatic session tags (docs/security.md)
TAG_NAMESPACE = "kubernetes-namespace"
TAG_CLUSTER = "kubernetes-cluster-name"
TAG_ASSUMED_ROLE = "rolecall-assumed-role"

# --- status --------------------------------------------------------------------------------
COND_READY = "Ready"
COND_REFRESH_FAILING = "RefreshFailing"


class Reason(StrEnum):
    """Condition reasons. ``Ready`` uses all of them; ``RefreshFailing`` the error ones."""

    CREDENTIALS_ISSUED = "CredentialsIssued"
    NOT_PERMITTED = "NotPermitted"
    ACCESS_DENIED = "AccessDenied"
    INVALID_SPEC = "InvalidSpec"
    MALFORMED_POLICY = "MalformedPolicy"
    PACKED_POLICY_TOO_LARGE = "PackedPolicyTooLarge"
    REGION_DISABLED = "RegionDisabled"
    THROTTLED = "Throttled"
    SOURCE_UNAVAILABLE = "SourceUnavailable"
    TRANSIENT = "Transient"
    SECRET_CONFLICT = "SecretConflict"
    CREDENTIALS_EXPIRED = "CredentialsExpired"
    SUSPENDED = "Suspended"
    REFRESHING = "Refreshing"
    REFRESH_SUCCEEDED = "RefreshSucceeded"
