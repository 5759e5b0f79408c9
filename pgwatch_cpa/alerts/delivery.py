"""HTTP delivery of alert notifications: auth, Standard Webhooks signing, retries with backoff and jitter."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import time
import uuid
from dataclasses import dataclass

import aiohttp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to POST. Secrets are resolved by the config layer and never logged."""

    url: str
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    hmac_secret: str | None = None
    timeout: float = 10.0
    max_attempts: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


class PermanentFailure(Exception):
    """The receiver rejected the request (4xx other than 408/429): retrying cannot help."""


class DeliveryFailed(Exception):
    """Every attempt failed with a retryable error."""


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks signature: base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), version v1.

    A secret written as ``whsec_<base64>`` is decoded as the spec says; any other string is used as raw bytes.
    """
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _headers(endpoint: Endpoint, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "pgwatch-cpa"}
    if endpoint.bearer_token:
        headers["Authorization"] = f"Bearer {endpoint.bearer_token}"
    elif endpoint.basic_auth:
        raw = f"{endpoint.basic_auth[0]}:{endpoint.basic_auth[1]}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    if endpoint.hmac_secret:
        msg_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
        headers |= {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
                    "webhook-signature": sign(endpoint.hmac_secret, msg_id, timestamp, body)}
    return headers


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


async def post_with_retries(session: aiohttp.ClientSession, endpoint: Endpoint, body: bytes,
                            stop: asyncio.Event | None = None) -> int:
    """POST ``body``; retry timeouts, connection errors and 5xx with exponential backoff and full jitter.

    Returns the final HTTP status. Raises PermanentFailure on 4xx, DeliveryFailed when attempts run out.
    """
    delay = endpoint.backoff_initial
    last_error = "no attempt"
    for attempt in range(1, endpoint.max_attempts + 1):
        try:
            timeout = aiohttp.ClientTimeout(total=endpoint.timeout)
            async with session.post(endpoint.url, data=body, headers=_headers(endpoint, body),
                                    timeout=timeout) as response:
                await response.read()
                if response.status < 300:
                    return response.status
                if not _retryable(response.status):
                    raise PermanentFailure(f"HTTP {response.status}")
                last_error = f"HTTP {response.status}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            last_error = type(exc).__name__
        if attempt < endpoint.max_attempts:
            await _sleep(random.uniform(0, delay), stop)
            delay = min(delay * 2, endpoint.backoff_max)
    raise DeliveryFailed(f"{endpoint.max_attempts} attempts failed, last: {last_error}")


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
    else:
        await wait_event(stop, seconds)


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until the event is set or the time is up; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
