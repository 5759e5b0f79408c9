"""``pgwatch-cpa report``: build the report once and write it as Markdown, JSON or HTML.

Exit codes: 0 with a report; 2 on bad input (config, unknown target, a ``--previous`` that is not a report, an
output path that cannot be written), with a one-line message; 1 when no target could be read (the report is still
written, and says which and why).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Literal

from pgwatch_cpa.config import load_settings
from pgwatch_cpa.errors import PgwatchError
from pgwatch_cpa.report.build import UnknownTargetError, build_report, target_names
from pgwatch_cpa.report.html import render_html
from pgwatch_cpa.report.markdown import render_markdown
from pgwatch_cpa.report.model import Report, report_from_json
from pgwatch_cpa.report.store import atomic_write

EXIT_OK, EXIT_UNREADABLE, EXIT_INVALID = 0, 1, 2
Format = Literal["md", "json", "html"]
FORMATS: tuple[Format, ...] = ("md", "json", "html")


class ReportInputError(PgwatchError):
    """Bad input to the report command; the message is one line and names the file or value."""


def render(report: Report, fmt: Format, history: tuple[Report, ...] = ()) -> bytes:
    if fmt == "json":
        return report.to_json()
    if fmt == "html":
        return render_html(report, history).encode()
    return render_markdown(report).encode()


def read_previous(path: Path) -> Report:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReportInputError(f"--previous {path}: cannot read: {exc.strerror or exc}") from None
    try:
        return report_from_json(data, source=f"--previous {path}")
    except PgwatchError as exc:
        raise ReportInputError(" ".join(str(exc).split())) from None


def write_output(path: Path | None, body: bytes) -> None:
    """To stdout, or to ``path`` atomically (a reader never sees half a report)."""
    if path is None:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    atomic_write(path, body)


def _check_output(path: Path | None) -> None:
    if path is None:
        return
    parent = path.parent
    if path.is_dir():
        raise ReportInputError(f"--output {path}: is a directory")
    if not parent.is_dir():
        raise ReportInputError(f"--output {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportInputError(f"--output {path}: directory {parent} is not writable")


def report_command(config: Path, *, target: str | None = None, fmt: Format = "md", output: Path | None = None,
                   previous: Path | None = None) -> int:
    """Run the command; ConfigError propagates (the CLI prints every problem and exits 2)."""
    settings = load_settings(config)
    try:
        if not target_names(settings):
            raise ReportInputError(f"{config}: no postgres or redis target to report on")
        last = read_previous(previous) if previous is not None else None
        _check_output(output)
        report = asyncio.run(build_report(settings, target=target, previous=last))
    except (ReportInputError, UnknownTargetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        write_output(output, render(report, fmt, (last,) if last is not None else ()))
    except OSError as exc:
        print(f"error: --output {output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    # Each unreadable target was logged (WARNING) with the reason, which the report also holds.
    read = [t for t in report.targets if t.error is None]
    return EXIT_OK if read else EXIT_UNREADABLE
