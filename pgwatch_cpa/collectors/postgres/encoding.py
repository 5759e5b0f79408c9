"""Text from a monitored server is hostile: decode it leniently, and know which values were not valid.

A database created with ``ENCODING 'SQL_ASCII'`` stores any bytes, and a client connected to it with the default
client encoding gets ``bytes`` from psycopg, not ``str``. A name that is not valid UTF-8 (a database, table or role
created from such a database) reaches a UTF-8 client byte for byte, and psycopg's strict decoder fails the whole
query on it. So every connection to a monitored server asks for UTF8 (the server converts any other database
encoding), decodes text with U+FFFD replacement characters, and a value that needed them is a :class:`LossyText`,
so that a collector can tell a name it must not use (to connect to, or as a label) from one that merely contains
U+FFFD. A SQL_ASCII database is the exception: the server cannot convert its bytes, and it checks what it sends a
UTF8 client, failing the whole query on one invalid byte; there the client encoding is SQL_ASCII (the bytes as
they are), decoded as UTF-8 with replacement.

The daemon's connections (``daemon/pg_connections.py``) and any other code reading a monitored server (the
report) do both, in autocommit mode::

    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, client_encoding=CLIENT_ENCODING, ...)
    await use_lenient_text(conn)   # under the caller's deadline: one round trip on a SQL_ASCII database
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # psycopg is imported only by the targets that use it
    from psycopg import AsyncConnection
    from psycopg.abc import AdaptContext, Buffer

CLIENT_ENCODING = "UTF8"
RAW_ENCODING = b"SQL_ASCII"  # a server_encoding with no conversion: its bytes are taken as they are
# The types psycopg's TextLoader handles, in text and binary format; in text format it also loads the unknown oid
# 0, that is any type without a loader of its own (regclass, ...).
TEXT_TYPES = ("text", "varchar", "name", "bpchar", '"char"')
UNKNOWN_OID = 0


class LossyText(str):
    """A value that was not valid in the connection's encoding, decoded with U+FFFD replacement characters.

    It is not the server's value: a database of that name cannot be connected to, and two different names may
    decode to the same LossyText. Operations on it (slicing, joining) give plain ``str``: test the value as read.
    """

    __slots__ = ()


def lossy(*values: Any) -> bool:
    """True if any of ``values`` was decoded with replacement characters."""
    return any(isinstance(value, LossyText) for value in values)


def _decoder_for(encoding: str | None) -> str:
    # SQL_ASCII ("ascii" to psycopg) means "no encoding": psycopg returns bytes for it. Its bytes are most
    # likely UTF-8 (or a single-byte encoding, which then shows as U+FFFD).
    return "utf-8" if not encoding or encoding == "ascii" else encoding


@cache
def _loaders() -> tuple[type[Any], type[Any]]:
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    class LenientTextLoader(Loader):
        """psycopg's TextLoader, but an invalid byte sequence becomes U+FFFD (a LossyText) instead of an error,
        and SQL_ASCII text is decoded as UTF-8 instead of returned as bytes."""

        def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
            super().__init__(oid, context)
            self._encoding = _decoder_for(self.connection.info.encoding if self.connection else None)

        def load(self, data: Buffer) -> str:
            try:
                return str(data, self._encoding)
            except UnicodeDecodeError:
                return LossyText(str(data, self._encoding, "replace"))

    class LenientTextBinaryLoader(LenientTextLoader):
        format = Format.BINARY

    return LenientTextLoader, LenientTextBinaryLoader


async def use_lenient_text(conn: AsyncConnection[Any]) -> None:
    """Prepare a connection opened with ``client_encoding=CLIENT_ENCODING`` (autocommit) to read hostile text.

    Text then arrives in UTF-8, converted by the server from the database's encoding, except in a SQL_ASCII
    database, whose bytes arrive as they are (a UTF8 client would get an error for the whole query instead); both
    decode leniently (:func:`register_lenient_text`). A name that another database wrote into a shared catalog
    (pg_database, pg_roles) is decoded the same way.
    """
    register_lenient_text(conn)
    if conn.pgconn.parameter_status(b"server_encoding") == RAW_ENCODING:
        await conn.execute("SET client_encoding TO 'SQL_ASCII'")


def register_lenient_text(context: AdaptContext) -> None:
    """Make every text-like column read through ``context`` (a connection or cursor, sync or async) decode with
    replacement characters instead of failing, and never come back as ``bytes``: SQL_ASCII text is decoded as
    UTF-8. Use :func:`use_lenient_text` on a new connection: it also chooses the client encoding.
    """
    text_loader, binary_loader = _loaders()
    adapters = context.adapters
    adapters.register_loader(UNKNOWN_OID, text_loader)
    for name in TEXT_TYPES:
        adapters.register_loader(name, text_loader)
        adapters.register_loader(name, binary_loader)
