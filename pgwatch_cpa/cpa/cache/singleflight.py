"""In-process single flight: concurrent callers for one key share one execution.

The first caller (the leader) runs the work inline, with no task or future unless someone joins; joiners
await a future the leader resolves. If the leader is cancelled, joiners are told to retry rather than being
cancelled themselves; one of them becomes the next leader. Results are shared objects: treat them as read-only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Retry(Exception):
    pass


class _Flight:
    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] | None = None


class SingleFlight:
    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[Any, _Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def in_flight(self, key: Any) -> bool:
        return key in self._flights

    async def do(self, key: Any, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(result, shared): shared is True when this caller joined another caller's execution."""
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, work), False
            if flight.future is None:
                flight.future = asyncio.get_running_loop().create_future()
            try:
                return await asyncio.shield(flight.future), True
            except _Retry:
                continue

    async def _lead(self, key: Any, work: Callable[[], Awaitable[T]]) -> T:
        flight = _Flight()
        self._flights[key] = flight
        try:
            result = await work()
        except asyncio.CancelledError:
            self._finish(key, flight, exc=_Retry())
            raise
        except BaseException as exc:
            self._finish(key, flight, exc=exc)
            raise
        self._finish(key, flight, result=result)
        return result

    def _finish(self, key: Any, flight: _Flight, result: Any = None, exc: BaseException | None = None) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        future = flight.future
        if future is None or future.done():
            return
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)
            future.exception()  # mark retrieved: joiners may all have been cancelled meanwhile
