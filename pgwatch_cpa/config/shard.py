"""The ``shard: "K/N"`` setting: this replica is number K of N, each watching its own share of the targets.

Which targets fall to which shard is the daemon's business (pgwatch_cpa.daemon.sharding); here the value is
only read and bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

MAX_SHARDS = 1000  # far beyond any fleet of replicas; keeps N (and the hashing per target) bounded
_SHAPE = re.compile(r"([0-9]{1,6})/([0-9]{1,6})")


@dataclass(frozen=True)
class Shard:
    number: int  # K, 1-based
    count: int  # N

    def __str__(self) -> str:
        return f"{self.number}/{self.count}"


UNSHARDED = Shard(1, 1)


def parse_shard(value: Any) -> Shard:
    """``"K/N"`` with 1 <= K <= N <= MAX_SHARDS, as a Shard; ValueError says what is wrong with it."""
    match = _SHAPE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected K/N, this replica's number K of N replicas (e.g. \"2/3\"), got {value!r}")
    number, count = int(match[1]), int(match[2])
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"{value!r}: the number of shards N must be between 1 and {MAX_SHARDS}")
    if not 1 <= number <= count:
        raise ValueError(f"{value!r}: the shard number K must be between 1 and N ({count})")
    return Shard(number, count)


ShardSetting = Annotated[Shard, PlainValidator(parse_shard), PlainSerializer(str)]  # dumped as written: "K/N"
