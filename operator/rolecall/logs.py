"""Logging set-up: our messages never carry secrets, and libraries that would are capped.

botocore logs whole HTTP requests and responses at DEBUG (an AssumeRole response holds the
secret key and session token; every signed request holds a session token), and urllib3 logs
URLs. Those loggers stay at INFO or above even with ``--verbose``. As a second line, the
handlers installed here redact anything shaped like AWS secret material.
"""

from __future__ import annotations

import logging
import re

LIBRARY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "aiohttp.access")

# (pattern, replacement): each keeps the name of the field and drops its value
_RULES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"<(SecretAccessKey|SessionToken)>[^<]*</(SecretAccessKey|SessionToken)>"),
        r"<\1><redacted></\2>",
    ),
    (
        re.compile(
            r"(\"?(?:SecretAccessKey|SessionToken|Token|aws_secret_access_key|aws_session_token|"
            r"AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN)\"?\s*[:=]\s*)(\"[^\"]*\"|\S+)",
            re.IGNORECASE,
        ),
        r"\1<redacted>",
    ),
    (
        re.compile(r"(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[A-Za-z0-9+/=]+", re.IGNORECASE),
        r"\1<redacted>",
    ),
    (re.compile(r"(Authorization['\"]?\s*[:=]\s*b?['\"]?)[^'\",}]+", re.IGNORECASE), r"\1<redacted>"),
]


def redact(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class DenialsAtInfo(logging.Filter):
    """A refused AssumedRole is an answer, not an operator error: kopf logs every
    ``AdmissionError`` as "Webhook '…' failed permanently" at ERROR; ours go out at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "Webhook 'validate-assumedroles' failed permanently: " in str(
            record.msg
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_libraries(verbose: bool = False) -> None:
    """Cap the loggers that print request/response bodies (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("kopf").setLevel(logging.DEBUG if verbose else logging.INFO)
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, DenialsAtInfo) for f in objects.filters):
        objects.addFilter(DenialsAtInfo())


def setup(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    quiet_libraries(verbose)
