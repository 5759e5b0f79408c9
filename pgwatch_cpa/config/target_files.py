"""Targets kept in files of their own (``postgres_files``, ``redis_files``), watched and re-read at run time.

Prometheus's file_sd_configs reads files holding ``[{targets: ["host:port"], labels: {...}}]``; an address and
labels are not enough to watch a database (credentials, timeouts, discovery), so here each file holds a list of
target objects of the config's own schema: a ``postgres_files`` file is a list of what ``postgres:`` lists.
Like file_sd, a pattern may be a glob (``targets/*.yml``) matching no file, and YAML or JSON (JSON is YAML)
are both read. The file's targets join the config's before validation, so every rule applies to them (unique
names, secrets from env or files); their problems are reported with the file's path and the entry's index.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any

from pgwatch_cpa.config.yamlfile import YamlFileError, read_yaml

MAX_TARGET_FILE_BYTES = 1024 * 1024
MAX_FILES_PER_PATTERN = 1000
FILE_KEYS = {"postgres": "postgres_files", "redis": "redis_files"}
Origins = dict[tuple[str, int], str]  # (section, index in the merged list) -> "FILE[i]"
Fingerprint = tuple[tuple[str, int, int], ...]


def absolute_pattern(pattern: str, base_dir: Path) -> str:
    """``pattern`` relative to the config file's directory (an absolute one unchanged)."""
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(pattern)))


def matching_files(pattern: str) -> list[Path]:
    """The files a pattern names, sorted; a plain path must exist, a glob may match nothing (as in file_sd)."""
    if not glob.has_magic(pattern):
        if not os.path.isfile(pattern):
            raise ValueError(f"{pattern}: no such file")
        return [Path(pattern)]
    found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    if len(found) > MAX_FILES_PER_PATTERN:
        raise ValueError(f"{pattern}: matches more than {MAX_FILES_PER_PATTERN} files")
    return [Path(p) for p in found]


def merge_target_files(raw: dict[str, Any], base_dir: Path) -> tuple[list[str], Origins]:
    """Append the targets of every file named in ``raw`` to its section, in place. Returns the problems found
    reading the files, and where each appended target came from (to name it in later problems)."""
    problems: list[str] = []
    origins: Origins = {}
    for section, key in FILE_KEYS.items():
        patterns = raw.get(key)
        if patterns is None:
            continue
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            continue  # the model reports the type error
        inline = raw.get(section, [])
        if not isinstance(inline, list):
            continue  # the model reports the type error
        merged: list[Any] = inline
        for pattern in patterns:
            try:
                files = matching_files(absolute_pattern(pattern, base_dir))
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
                continue
            for path in files:
                entries, problem = _read_targets(path)
                if problem:
                    problems.append(f"{path}: {problem}")
                for index, entry in enumerate(entries):
                    origins[(section, len(merged))] = f"{path}[{index}]"
                    merged.append(entry)
        raw[section] = merged
    return problems, origins


def _read_targets(path: Path) -> tuple[list[Any], str | None]:
    try:
        entries = read_yaml(path, MAX_TARGET_FILE_BYTES, "targets file")
    except OSError as exc:
        return [], f"cannot read: {exc.strerror or exc}"
    except YamlFileError as exc:
        return [], str(exc)
    if entries is None:
        return [], None  # an empty file: no targets (a file being written, or emptied on purpose)
    if not isinstance(entries, list):
        return [], "expected a list of targets (each one as in the config's target list)"
    return entries, None


def name_origins(problem: str, origins: Origins) -> str:
    """``postgres[3].dsn: ...`` -> ``/etc/pgwatch/targets.yml[0].dsn: ...`` where target 3 came from a file."""
    if not origins:
        return problem

    def origin(match: re.Match[str]) -> str:
        return origins.get((match[1], int(match[2])), match[0])

    return re.sub(r"\b(postgres|redis)\[(\d+)\]", origin, problem)


def fingerprint(patterns: list[str]) -> Fingerprint:
    """What the watcher compares: every matching file's path, mtime and size (a broken pattern: nothing)."""
    seen = []
    for pattern in patterns:
        try:
            files = matching_files(pattern)
        except ValueError:
            seen.append((pattern, -1, -1))
            continue
        for path in files:
            try:
                stat = path.stat()
            except OSError:
                seen.append((str(path), -1, -1))
                continue
            seen.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(seen)
