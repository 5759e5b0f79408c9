"""The HTML report in a real browser: Debian's headless Chromium renders it, screenshots it and dumps its DOM."""

from __future__ import annotations

import html
import os
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from pgwatch_cpa.report.html import render_html
from tests.conftest import require_tool
from tests.unit.test_report_render import SCRIPT, Page, finding, realistic_reports

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT = 1200, 2000
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    result = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                            timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return result


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows of pixel bytes) of an 8-bit, non-interlaced, non-palette PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + chunk) == struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0 and colour in (0, 2, 4, 6), (depth, colour, interlace)
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    assert len(raw) == height * (stride + 1)
    rows, previous = [], bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + previous[i]) // 2) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left, up_left = (line[i - bpp], previous[i - bpp]) if i >= bpp else (0, 0)
                line[i] = (line[i] + _paeth(left, previous[i], up_left)) & 0xFF
        else:
            assert kind == 0, f"bad PNG filter {kind}"
        rows.append(previous := bytes(line))
    return width, height, bpp, rows


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    binary = require_tool("chromium")
    current, history = realistic_reports()
    # hostile data rides along: a <script> in a finding's title and evidence must show as text, never run
    current.targets[1].findings.append(finding("hostile", "info", SCRIPT, 1.0, target="reporting",
                                               title=f"Table {SCRIPT} has no primary key",
                                               evidence={SCRIPT: SCRIPT}))
    page = tmp_path / "report.html"
    page.write_text(render_html(current, history), encoding="utf-8")
    url = page.resolve().as_uri()

    png = tmp_path / "report.png"
    chromium(binary, tmp_path, f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", url)
    assert png.is_file() and png.stat().st_size > 0
    width, height, bpp, rows = decode_png(png.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    colours = {row[i:i + bpp] for row in rows[::4] for i in range(0, len(row), 4 * bpp)}
    assert len(colours) > 50, f"a blank page: {len(colours)} colours"
    assert len(set(rows)) > HEIGHT // 10, "most rows alike: nothing rendered"

    dom = chromium(binary, tmp_path, "--dump-dom", url).stdout.decode()
    rendered = Page(dom)
    assert "script" not in rendered.tags, "a <script> element made it into the DOM"
    headings = rendered.headings
    assert headings[0] == "Performance report, 2026-11-30 09:00 UTC"
    for heading in ("main (postgres) critical", "reporting (postgres) warning", "cache (redis) warning",
                    "archive (postgres) unreachable", "Summary", "Trends", "Findings", "Critical (1)",
                    "Warning (2)", "Info (1)", "Changes since 2026-11-23 09:00 UTC", "New (2)", "Resolved (1)",
                    "Worse (2)", "Better (1)"):
        assert heading in headings, f"{heading!r} not among the rendered headings {headings}"
    for f in current.findings:
        assert html.unescape(f.title) in headings, f.title
    assert rendered.tags.count("svg") == 18 and rendered.tags.count("polyline") == 18
    text = "".join(rendered.text)
    assert "connection refused (127.0.0.1:5433)" in text and SCRIPT in text
