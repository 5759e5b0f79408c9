"""Files holding secrets that other users of the host can read.

Every ``*_file`` key of the settings that names a secret (``password_file`` of a target or of basic_auth,
``bearer_token_file``, ``hmac_secret_file``, a TLS ``key_file``) is checked once at startup: a file readable or
writable by its group or by others (``mode & 0o077``) is logged as one WARNING naming the key and the file, never
its content. The daemon still starts: the operator may share a group on purpose.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

SECRET_FILE_KEYS = ("password_file", "token_file", "secret_file", "key_file")
GROUP_OR_OTHERS = 0o077

log = logging.getLogger("pgwatch_cpa.config")


def secret_files(settings: BaseModel) -> Iterator[tuple[str, Path]]:
    """(config path such as ``postgres[0].password_file``, file) of every secret file the settings name."""
    yield from _walk(settings, "")


def exposed_secret_files(settings: BaseModel) -> list[tuple[str, Path, int]]:
    """(config path, file, permission bits) of the secret files their group or others may access."""
    out = []
    for where, path in secret_files(settings):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except (OSError, ValueError):
            continue  # unreadable files were already refused when the settings were loaded
        if mode & GROUP_OR_OTHERS:
            out.append((where, path, mode))
    return out


def warn_exposed_secret_files(settings: BaseModel) -> int:
    """One WARNING per secret file readable by group or others; returns how many."""
    exposed = exposed_secret_files(settings)
    for where, path, mode in exposed:
        who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if mode & bits)
        log.warning("%s: the secret file %s is accessible by %s (mode %04o): chmod 600 it (or 640 with a "
                    "dedicated group)", where, path, who, mode)
    return len(exposed)


def _walk(value: object, where: str) -> Iterator[tuple[str, Path]]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            item = getattr(value, name, None)
            path = f"{where}.{name}" if where else name
            if isinstance(item, Path) and name.endswith(SECRET_FILE_KEYS):
                yield path, item
            else:
                yield from _walk(item, path)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{where}.{key}")
