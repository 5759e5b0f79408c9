"""Collector registry: a new metric family is one new file plus one entry in a tuple below."""

from __future__ import annotations

from pgwatch_cpa.collectors.base import Collector

POSTGRES_COLLECTORS: tuple[type[Collector], ...] = ()
REDIS_COLLECTORS: tuple[type[Collector], ...] = ()
