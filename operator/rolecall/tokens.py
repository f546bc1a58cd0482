"""The sidecar token of a binding: stable for the AssumedRole's whole life.

Older SDKs read the token once, from ``AWS_CONTAINER_AUTHORIZATION_TOKEN``, when the container
starts, and keep sending it for the life of the pod. So a binding's token must never change
while the AssumedRole lives — not on refresh, not when its Secret is deleted and restored, not
after an operator restart or a suspend/resume. It is derived from the AssumedRole's UID with a
key only the operator holds (a Secret in the operator's namespace): the same binding always
gets the same token, and nobody without the key can compute it. Pure: the key comes in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

KEY_BYTES = 32
_CONTEXT = b"rolecall.dev/sidecar-token/v1\x00"


def derive(key: bytes, assumed_role_uid: str) -> str:
    """43 URL-safe characters (256 bits), the same for the same key and UID."""
    digest = hmac.new(key, _CONTEXT + assumed_role_uid.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
