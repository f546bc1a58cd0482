"""kopf's admission server, answering only well-formed AdmissionReviews.

Anyone who reaches the webhook port can POST to it, not only the API server. kopf answers
malformed bodies with its exception text and hands anything that parses as JSON to the
handlers. This server first checks the shape the API server always sends — an
``admission.k8s.io/v1`` ``AdmissionReview`` with a request UID, an operation, the user and
the object, for a resource rolecall serves — and answers anything else with a bare 400 that
reveals nothing. Restricting who may reach the port at all is the chart's NetworkPolicy
(``networkPolicy.webhookFrom``) and, where the API server presents a client certificate,
``--webhook-client-ca`` (kopf verifies it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp.web
import kopf

MAX_BODY_BYTES = 3 * 1024 * 1024  # the API server's own request limit is 3 MiB
SERVED = {("", "pods"), ("rolecall.dev", "assumedroles")}
OPERATIONS = {"CREATE", "UPDATE", "DELETE", "CONNECT"}


def well_formed(review: Any) -> bool:
    """Does this look like what an API server sends for a resource rolecall serves?"""
    if not isinstance(review, Mapping):
        return False
    if review.get("apiVersion") != "admission.k8s.io/v1" or review.get("kind") != "AdmissionReview":
        return False
    request = review.get("request")
    if not isinstance(request, Mapping):
        return False
    resource = request.get("resource")
    if not isinstance(resource, Mapping) or (resource.get("group"), resource.get("resource")) not in SERVED:
        return False
    return (
        isinstance(request.get("uid"), str)
        and bool(request.get("uid"))
        and request.get("operation") in OPERATIONS
        and isinstance(request.get("userInfo"), Mapping)
        and isinstance(request.get("object") or request.get("oldObject"), Mapping)
    )


class CheckedWebhookServer(kopf.WebhookServer):
    @staticmethod
    async def _serve(fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return aiohttp.web.Response(status=413, text="request too large\n")
        try:
            text = await request.text()
            review = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            return aiohttp.web.Response(status=400, text="not an AdmissionReview\n")
        if not well_formed(review):
            return aiohttp.web.Response(status=400, text="not an AdmissionReview\n")
        return await kopf.WebhookServer._serve(fn, request)
