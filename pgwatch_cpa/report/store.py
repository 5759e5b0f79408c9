"""Reports kept on disk: ``report-<UTC time>.json`` in one directory, written atomically, the oldest pruned.

The newest file is the next report's ``previous``; the last few are the HTML's history. Blocking file I/O: the
daemon calls these in a worker thread.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pgwatch_cpa.errors import PgwatchError
from pgwatch_cpa.report.model import Report, report_from_json

log = logging.getLogger(__name__)

_NAME = re.compile(r"^report-\d{8}T\d{6}Z\.json$")


def report_filename(report: Report) -> str:
    return "report-" + datetime.fromtimestamp(report.generated_at, UTC).strftime("%Y%m%dT%H%M%SZ") + ".json"


def atomic_write(path: Path, body: bytes) -> None:
    """Write through a temporary file in the same directory, fsync, rename: a reader sees all of it or nothing."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report_files(directory: Path) -> list[Path]:
    """The directory's report files, oldest first (the UTC time in the name sorts)."""
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def save_report(directory: Path, report: Report, keep: int) -> Path:
    """Save as JSON; then delete all but the newest ``keep`` report files. Returns the new file."""
    path = directory / report_filename(report)
    atomic_write(path, report.to_json())
    for old in report_files(directory)[:-keep]:
        try:
            old.unlink()
        except OSError as exc:
            log.warning("cannot prune old report %s: %s", old, exc.strerror or exc)
    return path


def load_reports(directory: Path, keep: int) -> list[Report]:
    """The newest ``keep`` readable reports, oldest first; an unreadable file is skipped with a warning."""
    reports = []
    for path in report_files(directory)[-keep:]:
        try:
            reports.append(report_from_json(path.read_bytes(), source=str(path)))
        except OSError as exc:
            log.warning("ignoring report %s: %s", path, exc.strerror or exc)
        except PgwatchError as exc:
            log.warning("ignoring report %s", exc)
    return reports
