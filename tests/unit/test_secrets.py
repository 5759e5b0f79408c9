"""Credential masking in DSNs and URLs, and the log filter that redacts registered secrets."""

from __future__ import annotations

import logging
import secrets

import pytest

from pgwatch_cpa.secrets import MASK, RedactingFilter, mask_dsn, mask_url


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://app:s3cret@db:5432/cpa?sslmode=require", "postgresql://app:****@db:5432/cpa?sslmode=require"),
    ("postgres://app:p%40ss%20w@db/cpa", "postgres://app:****@db/cpa"),
    ("postgresql://app:p@ss w:rd@db/cpa", "postgresql://app:****@db/cpa"),  # raw '@', ' ' and ':' in the password
    ("postgresql://u:s3cret@[::1]:5432/db", "postgresql://u:****@[::1]:5432/db"),
    ("postgresql://db/cpa?sslmode=require&password=s3cret", "postgresql://db/cpa?sslmode=require&password=****"),
    ("redis://:hunter22@cache:6379/0", "redis://:****@cache:6379/0"),
    ("rediss://default:hunter22@cache:6380", "rediss://default:****@cache:6380"),
    ("unix:///run/redis.sock?password=hunter22&db=0", "unix:///run/redis.sock?password=****"),
])
def test_mask_url_replaces_only_the_password(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize("url", [
    "redis://cache:6379/0",
    "rediss://cache:6380",
    "postgresql://app@db:5432/cpa?sslmode=require",
    "postgresql:///cpa?host=/run/postgresql",
])
def test_mask_url_leaves_urls_without_a_password_unchanged(url):
    assert mask_url(url) == url


def test_mask_url_of_an_unparseable_url_reveals_nothing():
    assert mask_url("postgresql://u:s3cret@[::1/db") == MASK


@pytest.mark.parametrize(("dsn", "masked"), [
    ("host=db user=app password=s3cret dbname=cpa", "host=db user=app password=**** dbname=cpa"),
    ("host=db password='my s3cret @pass' dbname=cpa", "host=db password=**** dbname=cpa"),
    (r"password='it\'s s3cret' host=db", "password=**** host=db"),
    ("host=db PASSWORD = s3cret port=5432", "host=db PASSWORD = **** port=5432"),
    ("host=db password='' dbname=cpa", "host=db password=**** dbname=cpa"),
    ("postgresql://app:s3cret@db/cpa", "postgresql://app:****@db/cpa"),
    ("postgresql://app:p@ss@db/cpa", "postgresql://app:****@db/cpa"),
    ("host=db user=app dbname=cpa", "host=db user=app dbname=cpa"),
])
def test_mask_dsn_in_keyword_and_uri_form(dsn, masked):
    assert mask_dsn(dsn) == masked


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logger_with(request: pytest.FixtureRequest):
    """A private logger whose one handler carries the given filter; yields (logger, collected lines)."""
    created: list[tuple[logging.Logger, logging.Handler]] = []

    def make(redactor: RedactingFilter) -> tuple[logging.Logger, list[str]]:
        logger = logging.getLogger(f"test.secrets.{request.node.name}.{len(created)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        handler = Collect()
        handler.addFilter(redactor)
        logger.addHandler(handler)
        created.append((logger, handler))
        return logger, handler.lines

    yield make
    for logger, handler in created:
        logger.removeHandler(handler)


def test_redacting_filter_masks_secrets_in_the_message_and_its_args(logger_with):
    secret = "pw-" + secrets.token_hex(6)
    redactor = RedactingFilter()
    redactor.add(secret)
    logger, lines = logger_with(redactor)

    logger.warning("connecting with %s to %s", f"password={secret}", "db")
    logger.warning(f"literal {secret} in the format string")
    logger.warning("mapping args: %(dsn)s", {"dsn": f"postgresql://app:{secret}@db/cpa"})
    logger.warning("nothing to hide in %s", "this one")

    assert lines == [
        "connecting with password=**** to db",
        "literal **** in the format string",
        "mapping args: postgresql://app:****@db/cpa",
        "nothing to hide in this one",
    ]


def test_redacting_filter_keeps_records_and_leaves_clean_ones_untouched():
    redactor = RedactingFilter()
    clean = logging.LogRecord("x", logging.INFO, __file__, 1, "value %s", ("fine",), None)
    assert redactor.filter(clean) is True, "no secrets registered: records pass as they are"
    redactor.add("hunter22")
    assert redactor.filter(clean) is True
    assert clean.args == ("fine",), "a record without a secret keeps its args"
    dirty = logging.LogRecord("x", logging.INFO, __file__, 1, "value %s", ("hunter22",), None)
    assert redactor.filter(dirty) is True, "a record with a secret is redacted, never dropped"
    assert dirty.getMessage() == "value ****"


def test_redacting_filter_ignores_empty_and_too_short_secrets():
    redactor = RedactingFilter()
    for short in (None, "", "a", "ab"):
        redactor.add(short)
    assert redactor.secrets() == ()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "table ab has a %s", ("b-tree",), None)
    redactor.filter(record)
    assert record.getMessage() == "table ab has a b-tree"
    redactor.add("abc")
    assert redactor.secrets() == ("abc",)


def test_redacting_filter_masks_a_secret_that_contains_another_one_whole():
    redactor = RedactingFilter()
    token = secrets.token_hex(4)
    # Many pairs, so the outcome does not depend on the string hash seed: each pair alone leaks half the time.
    longs = []
    for i in range(24):
        short = f"pw{i}-{token}"
        redactor.add(short)
        longs.append(f"{short}-leak{i}")
        redactor.add(longs[-1])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "auth failed: %s", (" ".join(longs),), None)
    redactor.filter(record)
    assert "leak" not in record.getMessage()
