"""Versioned SQL files: ``<name>_v<major>.sql``, chosen newest-first by server and extension version.

The version band in the file name is the lowest PostgreSQL major the file works on (``pg_stat_wal_v18.sql``
needs 18+). A file may also require an extension version with a header line::

    -- requires: pg_stat_statements >= 1.11

because an extension is not always updated with the server (after pg_upgrade, pg_stat_statements keeps its old
SQL interface until ``ALTER EXTENSION ... UPDATE``): the columns follow ``pg_extension.extversion``, not the
server version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

_FILE = re.compile(r"^(?P<name>[a-z0-9_]+)_v(?P<major>\d+)\.sql$")
_REQUIRES = re.compile(r"^--\s*requires:\s*(?P<ext>[a-z0-9_]+)\s*>=\s*(?P<version>[0-9.]+)\s*$", re.MULTILINE)


class NoSqlForVersion(LookupError):
    """No file of a query family supports this server / extension version."""


@dataclass(frozen=True)
class SqlFile:
    filename: str
    name: str
    min_server: int  # server_version_num, e.g. 170000
    requires: tuple[tuple[str, tuple[int, ...]], ...]  # (extension, minimum version)
    text: str

    def supports(self, server_version_num: int, extensions: Mapping[str, str]) -> bool:
        if server_version_num < self.min_server:
            return False
        for ext, minimum in self.requires:
            installed = extensions.get(ext)
            if installed is None or parse_version(installed) < minimum:
                return False
        return True


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.10"`` -> ``(1, 10)`` (numeric, so 1.10 > 1.9); junk after the numbers is ignored."""
    match = re.match(r"^\d+(?:\.\d+)*", text.strip())
    return tuple(int(p) for p in match[0].split(".")) if match else ()


def parse_file(filename: str, text: str) -> SqlFile | None:
    match = _FILE.match(filename)
    if match is None:
        return None
    requires = tuple((m["ext"], parse_version(m["version"])) for m in _REQUIRES.finditer(text))
    return SqlFile(filename, match["name"], int(match["major"]) * 10000, requires, text)


def choose(files: Iterable[SqlFile], name: str, server_version_num: int,
           extensions: Mapping[str, str] | None = None) -> SqlFile:
    """The newest file of family ``name`` that supports the server and the installed extensions."""
    extensions = extensions or {}
    candidates = sorted((f for f in files if f.name == name),
                        key=lambda f: (f.min_server, [v for _e, v in f.requires]), reverse=True)
    for candidate in candidates:
        if candidate.supports(server_version_num, extensions):
            return candidate
    if not candidates:
        raise NoSqlForVersion(f"no SQL files named {name}_v*.sql")
    wanted = ", ".join(f"{c.filename} (server {c.min_server // 10000}+"
                       + "".join(f", {e} >= {'.'.join(map(str, v))}" for e, v in c.requires) + ")"
                       for c in candidates)
    have = f"server {server_version_num}" + "".join(f", {e} {v}" for e, v in sorted(extensions.items())
                                                    if any(e == r for c in candidates for r, _ in c.requires))
    raise NoSqlForVersion(f"{name}: no query for {have}; available: {wanted}")


COLLECTORS_PACKAGE = "pgwatch_cpa.collectors.postgres"


@cache
def packaged_files(package: str = COLLECTORS_PACKAGE) -> tuple[SqlFile, ...]:
    """Every .sql file shipped in the ``sql`` directory of ``package`` (default: the collectors'), read once."""
    root = resources.files(package) / "sql"
    out = []
    for entry in root.iterdir():
        parsed = parse_file(entry.name, entry.read_text(encoding="utf-8")) if entry.name.endswith(".sql") else None
        if parsed is not None:
            out.append(parsed)
    return tuple(out)


def load(name: str, server_version_num: int, extensions: Mapping[str, str] | None = None,
         package: str = COLLECTORS_PACKAGE) -> SqlFile:
    return choose(packaged_files(package), name, server_version_num, extensions)
