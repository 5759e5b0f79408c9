"""Which targets a replica watches: rendezvous (highest-random-weight) hashing of the targets over N shards.

Every replica computes the same split from the same config, without talking to the others. A target belongs to
the shard of highest weight blake2b(shard number, target); a shard's weights do not depend on N, so when shard
N+1 joins, a target moves only if the newcomer outweighs all N others (probability 1/(N+1)), and only to the
newcomer. blake2b, not hash(): Python salts str hashes per process, and every replica must agree.
"""

from __future__ import annotations

import hashlib

from pgwatch_cpa.config import Settings


def target_key(kind: str, name: str) -> str:
    """What is hashed: names are unique per kind only, so a PostgreSQL and a Redis target may share one."""
    return f"{kind}/{name}"


def _weight(shard: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{shard}\x00{key}".encode(), digest_size=8).digest(), "big")


def shard_of(key: str, shards: int) -> int:
    """The shard (1..``shards``) that watches the target of ``key``."""
    return max(range(1, shards + 1), key=lambda shard: _weight(shard, key))


def settings_for_shard(settings: Settings) -> Settings:
    """``settings`` keeping only the targets of its ``shard`` (all of them unsharded, 1/1)."""
    number, count = settings.shard.number, settings.shard.count
    return settings.model_copy(update={
        "postgres": [t for t in settings.postgres if shard_of(target_key("postgres", t.name), count) == number],
        "redis": [t for t in settings.redis if shard_of(target_key("redis", t.name), count) == number],
    })


def shard_sizes(settings: Settings) -> list[int]:
    """How many targets each shard 1..N of ``settings.shard`` watches."""
    count = settings.shard.count
    sizes = [0] * count
    for kind, targets in (("postgres", settings.postgres), ("redis", settings.redis)):
        for target in targets:
            sizes[shard_of(target_key(kind, target.name), count) - 1] += 1
    return sizes


def shard_summary(settings: Settings, mine: Settings, limit: int = 20) -> str:
    """``shard 2/3 watches 3 of 9 targets: postgres a, postgres b, redis c`` (names only, the first ``limit``)."""
    total = len(settings.postgres) + len(settings.redis)
    names = [f"{kind} {t.name}" for kind, targets in (("postgres", mine.postgres), ("redis", mine.redis))
             for t in targets]
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"shard {settings.shard} watches {len(names)} of {total} targets" + (f": {shown}" if names else "")
