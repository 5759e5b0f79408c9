"""Masking of credentials in DSNs and URLs, and a log filter that redacts known secrets."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

MASK = "****"
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Replace the password of a URL-style DSN (postgresql://, redis://) with a mask."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.scheme or "@" not in parts.netloc:
        return _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    netloc = f"{user}:{MASK}@{hostport}" if has_password else parts.netloc
    query = _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_dsn(dsn: str) -> str:
    """Mask the password of a PostgreSQL DSN in either URI or keyword/value form."""
    if "://" in dsn:
        return mask_url(dsn)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, dsn)


class RedactingFilter(logging.Filter):
    """Replaces every registered secret in a log record's final message (defence in depth)."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 3:
            self._secrets.add(secret)

    def secrets(self) -> tuple[str, ...]:
        """Longest first, so a secret that contains another is masked whole, not around the shorter one."""
        return tuple(sorted(self._secrets, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self.secrets():
            redacted = redacted.replace(secret, MASK)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


REDACTOR = RedactingFilter()


def describe(exc: BaseException | None) -> str:
    """A one-line, secret-free description of an error for logs, reports and HTTP answers."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in REDACTOR.secrets():
        text = text.replace(secret, MASK)
    return f"{type(exc).__name__}: {text[:300]}"
