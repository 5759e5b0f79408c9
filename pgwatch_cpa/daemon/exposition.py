"""/metrics rendering: the snapshot store rendered once per change, and only what changed.

Rendering tens of thousands of series costs tens of milliseconds in Python, so it happens when a snapshot
changes (in a worker thread), not on every scrape; scrapes serve the cached bytes plus a few live self-metrics.
A scrape that arrives while a render is under way gets the previous render at once instead of waiting for it
(Prometheus's default format, OpenMetrics, is kept rendered too once it has been asked for).
Each (target, collector) result is rendered family by family when it is new and kept; a render joins the kept
lines under one HELP/TYPE header per family name. So a cycle costs the rendering of the collectors that ran,
not of every series of every target (a fleet's cost would otherwise grow with the square of its size).

A sample that cannot be rendered (a label value that is not a string: a collector bug) never makes /metrics
answer 500: that render is redone family by family, the samples that fail are left out, logged once per family
and counted in ``pgwatch_render_dropped_samples_total``.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from pgwatch_cpa import __version__
from pgwatch_cpa.daemon.malloc import release_free_memory
from pgwatch_cpa.daemon.snapshot import SnapshotKey, SnapshotStore

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = openmetrics.CONTENT_TYPE_LATEST
_EOF = b"# EOF\n"

log = logging.getLogger(__name__)

BUILD_INFO_KEY: SnapshotKey = ("", "build_info")  # no target is named ""
# *_created series double the self-metrics and no dashboard or rule of ours reads them.
disable_created_metrics()


def build_info() -> Metric:
    build = GaugeMetricFamily("pgwatch_build_info", "pgwatch-cpa build information (always 1).",
                              labels=["version", "python_version"])
    build.add_metric([__version__, platform.python_version()], 1.0)
    return build


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _generate(registry: CollectorRegistry, openmetrics_format: bool) -> bytes:
    if openmetrics_format:
        return openmetrics.generate_latest(registry).removesuffix(_EOF)
    return generate_latest(registry)


def _generate_families(families: Iterable[Metric], openmetrics_format: bool) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return _generate(registry, openmetrics_format)


@dataclass(frozen=True)
class RenderedFamily:
    """One family of one result: its HELP/TYPE(/UNIT) lines and its sample lines, apart so results can share
    one header."""

    name: str
    header: bytes
    samples: bytes


def _split(name: str, body: bytes) -> RenderedFamily:
    lines = body.splitlines(keepends=True)
    cut = next((i for i, line in enumerate(lines) if not line.startswith(b"#")), len(lines))
    return RenderedFamily(name, b"".join(lines[:cut]), b"".join(lines[cut:]))


def _join(results: Iterable[tuple[RenderedFamily, ...]]) -> bytes:
    """One header per family name (the first result's), then every result's samples of that name."""
    headers: dict[str, bytes] = {}
    samples: dict[str, list[bytes]] = {}
    for rendered in results:
        for family in rendered:
            if family.name not in headers:
                headers[family.name], samples[family.name] = family.header, []
            samples[family.name].append(family.samples)
    return b"".join(headers[name] + b"".join(parts) for name, parts in samples.items())


class Exposition:
    """Caches the rendered snapshot per format, keyed by the store version."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self._build_info = (build_info(),)
        self.live_registry = CollectorRegistry()
        ProcessCollector(registry=self.live_registry)
        self.scrapes = Counter("pgwatch_scrapes_total", "Requests served on /metrics.",
                               registry=self.live_registry)
        self.render_seconds = Histogram("pgwatch_render_duration_seconds",
                                        "Time to render the snapshot for /metrics.",
                                        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                        registry=self.live_registry)
        self.dropped_samples = Counter("pgwatch_render_dropped_samples",
                                       "Samples left out of /metrics because they could not be rendered (a bug).",
                                       registry=self.live_registry)
        self._cache: dict[bool, tuple[int, bytes]] = {}
        # per format: (target, collector) -> (the families rendered, what they rendered to)
        self._parts: dict[bool, dict[SnapshotKey, tuple[tuple[Metric, ...], tuple[RenderedFamily, ...]]]] = {
            False: {}, True: {}}
        self._lock = asyncio.Lock()
        self._formats = {False}  # the formats refresh_forever keeps rendered: text, and OpenMetrics once asked for
        self._logged_unrenderable: set[str] = set()

    async def refresh_forever(self) -> None:
        """Re-render every format scraped so far (the text format from the start) whenever the store changes
        (debounced), so scrapes find it ready."""
        seen = 0
        while True:
            seen = await self.store.wait_changed(seen)
            await asyncio.sleep(0.05)  # let the rest of a poll cycle land first
            for openmetrics_format in sorted(self._formats):
                await self._rendered(openmetrics_format)

    async def _rendered(self, openmetrics_format: bool) -> bytes:
        cached = self._cache.get(openmetrics_format)
        if cached and cached[0] == self.store.version:
            return cached[1]
        async with self._lock:
            version = self.store.version
            cached = self._cache.get(openmetrics_format)
            if cached and cached[0] == version:
                return cached[1]
            # taken on the loop, so the thread renders a consistent view; the build info is kept like a result
            results = {BUILD_INFO_KEY: self._build_info, **self.store.results()}
            with self.render_seconds.time():
                body = await asyncio.to_thread(self._render, results, openmetrics_format)
            self._cache[openmetrics_format] = (version, body)
            return body

    def _render(self, results: dict[SnapshotKey, tuple[Metric, ...]], openmetrics_format: bool) -> bytes:
        parts = self._parts[openmetrics_format]
        for key in parts.keys() - results.keys():
            del parts[key]
        for key, families in results.items():
            kept = parts.get(key)
            if kept is None or kept[0] is not families:
                parts[key] = (families, tuple(self._render_family(f, openmetrics_format) for f in families))
        body = _join(rendered for _families, rendered in parts.values())
        release_free_memory()  # what this render and the results it replaced freed
        return body

    def _render_family(self, family: Metric, openmetrics_format: bool) -> RenderedFamily:
        try:
            return _split(family.name, _generate_families([family], openmetrics_format))
        except Exception as exc:  # a sample that cannot be rendered must not take every other one down with it
            clean = self._salvaged_family(family, exc, openmetrics_format)
            return _split(family.name, _generate_families([clean], openmetrics_format))

    def _salvaged_family(self, family: Metric, error: Exception, openmetrics_format: bool) -> Metric:
        clean = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            one = Metric(family.name, family.documentation, family.type, family.unit)
            one.samples.append(sample)
            try:
                _generate_families([one], openmetrics_format)
            except Exception:
                self.dropped_samples.inc()
                continue
            clean.samples.append(sample)
        if family.name not in self._logged_unrenderable:
            self._logged_unrenderable.add(family.name)
            log.error("/metrics: samples of %s cannot be rendered (%s: %s) and are left out; this is a bug of the "
                      "collector that wrote them", family.name, type(error).__name__, str(error)[:200])
        return clean

    async def render(self, accept: str | None) -> tuple[bytes, str]:
        """The /metrics body and content type for a request's Accept header."""
        use_openmetrics = _wants_openmetrics(accept)
        self.scrapes.inc()
        self._formats.add(use_openmetrics)
        cached = self._cache.get(use_openmetrics)
        if cached is not None and self._lock.locked():
            body = cached[1]  # a render is under way: the previous one now, not that one in some milliseconds
        else:
            body = await self._rendered(use_openmetrics)
        if use_openmetrics:
            return body + openmetrics.generate_latest(self.live_registry), OPENMETRICS
        return body + generate_latest(self.live_registry), TEXT


def _wants_openmetrics(accept: str | None) -> bool:
    # prometheus_client's own negotiation (it honours the OpenMetrics version parameter).
    _encoder, content_type = choose_encoder(accept or "")
    return content_type.startswith("application/openmetrics-text")
