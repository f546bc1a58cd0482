"""Kubernetes ``Status`` errors, shaped like a real API server's."""

from __future__ import annotations

import json
from typing import Any

CAUSE_TYPES = {
    "Required value": "FieldValueRequired",
    "Invalid value": "FieldValueInvalid",
    "Unsupported value": "FieldValueNotSupported",
    "Too long": "FieldValueTooLong",
    "Too many": "FieldValueTooMany",
    "Forbidden": "FieldValueForbidden",
    "Duplicate value": "FieldValueDuplicate",
    "Not found": "FieldValueNotFound",
}


class ApiError(Exception):
    """An error answered to the client as a ``kind: Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(name: str | None, group: str, kind: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    details.update(extra)
    return details


def qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(plural, group)} "{name}" not found',
        _details(name, group, plural),
    )


def no_such_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(plural, group)} "{name}" already exists',
        _details(name, group, plural),
    )


def conflict(plural: str, group: str, name: str, why: str | None = None) -> ApiError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version and try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
        _details(name, group, plural),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        {},
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"application/json-patch+json, application/merge-patch+json, "
        f"application/apply-patch+yaml (got {content_type!r})",
        {},
    )


def not_acceptable(accept: str) -> ApiError:
    return ApiError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: application/json, application/yaml (got {accept!r})",
        {},
    )


def forbidden(plural: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        403,
        "Forbidden",
        f'{qualified(plural, group)} "{name}" is forbidden: {why}',
        _details(name, group, plural),
    )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def service_unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message, {})


def internal(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def unprocessable(message: str) -> ApiError:
    """What a real server answers when a JSON patch cannot be applied (e.g. a failed test)."""
    return ApiError(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": message}]},
    )


def format_value(value: Any) -> str:
    """Render a bad value the way Kubernetes' field errors do (Go's %v / %q / JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class FieldError:
    """One field violation, as in k8s.io/apimachinery/pkg/util/validation/field."""

    def __init__(self, field: str, kind: str, body: str) -> None:
        self.field = field
        self.kind = kind  # "Invalid value", "Required value", ...
        self.body = body  # everything after "<field>: "

    @classmethod
    def required(cls, field: str, detail: str = "") -> FieldError:
        return cls(field, "Required value", "Required value" + (f": {detail}" if detail else ""))

    @classmethod
    def invalid(cls, field: str, value: Any, detail: str) -> FieldError:
        text = f"Invalid value: {format_value(value)}"
        return cls(field, "Invalid value", text + (f": {detail}" if detail else ""))

    @classmethod
    def type_invalid(cls, field: str, value: Any, detail: str) -> FieldError:
        err = cls.invalid(field, value, detail)
        err.kind = "Invalid type"
        return err

    @classmethod
    def not_supported(cls, field: str, value: Any, allowed: list[Any]) -> FieldError:
        rendered = ", ".join(json.dumps(a) if isinstance(a, str) else format_value(a) for a in allowed)
        return cls(
            field,
            "Unsupported value",
            f"Unsupported value: {format_value(value)}: supported values: {rendered}",
        )

    @classmethod
    def too_long(cls, field: str, limit: int) -> FieldError:
        return cls(field, "Too long", f"Too long: may not be more than {limit} bytes")

    @classmethod
    def too_many(cls, field: str, actual: int, limit: int) -> FieldError:
        return cls(field, "Too many", f"Too many: {actual}: must have at most {limit} items")

    @classmethod
    def forbidden(cls, field: str, detail: str) -> FieldError:
        return cls(field, "Forbidden", f"Forbidden: {detail}")

    @classmethod
    def duplicate(cls, field: str, value: Any) -> FieldError:
        return cls(field, "Duplicate value", f"Duplicate value: {format_value(value)}")

    def cause(self) -> dict[str, str]:
        reason = (
            "FieldValueTypeInvalid"
            if self.kind == "Invalid type"
            else CAUSE_TYPES.get(self.kind, "FieldValueInvalid")
        )
        return {"reason": reason, "message": self.body, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.body}" if self.field else self.body

    def __repr__(self) -> str:
        return f"FieldError({self!s})"


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    qualified_kind = f"{kind}.{group}" if group else kind
    summary = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{qualified_kind} "{name}" is invalid: {summary}',
        {
            **_details(name, group, kind),
            "causes": [e.cause() for e in errors],
        },
    )
