"""Masking of credentials in DSNs and URLs, and a log filter that redacts known secrets."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

MASK = "****"
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# scheme://user:PASSWORD@ anywhere in a text, up to the last '@' before the path (so an unencoded '@' in the
# password is masked whole). Bounded and anchored at the start of a scheme: linear on any log line.
_URL_PASSWORD = re.compile(r"((?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s:/?#@]{0,256}:)[^\s/?#]{0,1024}@")
# Registered secrets shorter than this are not masked as plain substrings of every log line: a password "p"
# or "42" would turn every "p" or "42" of the logs into ****, mangling them and spelling out the secret by
# where the masks fall. They are masked where they can be recognised as passwords: by mask_credentials.
MIN_SUBSTRING_SECRET = 3


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


def mask_credentials(text: str) -> str:
    """Mask every password in credential position in a free text: ``scheme://user:PASSWORD@`` and
    ``password=PASSWORD``, whatever its length and whether or not it was registered."""
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)
    if "assword" in text or "ASSWORD" in text:
        text = _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    return text


def mask_dsn(dsn: str) -> str:
    """Mask the password of a PostgreSQL DSN in either URI or keyword/value form."""
    if "://" in dsn:
        return mask_url(dsn)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, dsn)


class RedactingFilter(logging.Filter):
    """Masks passwords in a log record's final message (defence in depth): every registered secret of at least
    MIN_SUBSTRING_SECRET characters wherever it appears, and any password in credential position
    (mask_credentials), which covers the shorter ones."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._short: set[str] = set()

    def add(self, secret: str | None) -> None:
        """Register a secret, parsed from where it is used (a DSN's password, not the text around it)."""
        if not secret:
            return
        (self._secrets if len(secret) >= MIN_SUBSTRING_SECRET else self._short).add(secret)

    def secrets(self) -> tuple[str, ...]:
        """The secrets masked as substrings, longest first, so a secret that contains another is masked whole."""
        return tuple(sorted(self._secrets, key=len, reverse=True))

    def short_secrets(self) -> frozenset[str]:
        """Registered secrets too short to be masked as substrings (mask_credentials masks them)."""
        return frozenset(self._short)

    def redact(self, text: str) -> str:
        text = mask_credentials(text)
        for secret in self.secrets():
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
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
    text = REDACTOR.redact(" ".join(str(exc).split()) or type(exc).__name__)
    return f"{type(exc).__name__}: {text[:300]}"
