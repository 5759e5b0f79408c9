"""The vocabulary every settings section shares: the strict base model, ``Duration`` and secret reading.

Validators get the environment from pydantic's validation context (``{"environ": ...}``), so a config checked
against an injected environment (tests, ``check-config``) never reads ``os.environ`` behind its back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

from pgwatch_cpa.durations import format_duration, parse_config_duration
from pgwatch_cpa.secrets import REDACTOR

# A finite, non-negative number of seconds; every duration setting also states its bounds with between().
Duration = Annotated[float, BeforeValidator(parse_config_duration)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
MAX_SECRET_BYTES = 64 * 1024  # a password, token or key file; /dev/zero is not read to the end


def between(low: str, high: str) -> AfterValidator:
    """Bounds of a Duration setting, written in the config's grammar (``between("1s", "1h")``), both included."""
    lo, hi = parse_config_duration(low), parse_config_duration(high)

    def check(seconds: float) -> float:
        if not lo <= seconds <= hi:
            raise ValueError(f"must be between {format_duration(lo)} and {format_duration(hi)}, "
                             f"got {format_duration(seconds)}")
        return seconds

    return AfterValidator(check)


class StrictModel(BaseModel):
    """Unknown keys are errors; settings never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def environ_of(info: ValidationInfo) -> Mapping[str, str]:
    """The environment the config is validated against (the process's unless the caller injected one)."""
    return (info.context or {}).get("environ", os.environ)


def read_secret(env_name: str | None, file: Path | None, what: str, environ: Mapping[str, str]) -> str | None:
    """A secret from an environment variable or a file (at most one of them), registered for log redaction.

    ValueError messages name the key (``<what>_env`` / ``<what>_file``), never the secret.
    """
    if env_name and file:
        raise ValueError(f"{what}: set {what}_env or {what}_file, not both")
    if env_name:
        value = environ.get(env_name)
        if value is None:
            raise ValueError(f"{what}_env: environment variable {env_name} is not set")
    elif file:
        try:
            with file.open("rb") as f:
                data = f.read(MAX_SECRET_BYTES + 1)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(f"{what}_file: cannot read {file}: {reason}") from None
        if len(data) > MAX_SECRET_BYTES:
            raise ValueError(f"{what}_file: {file} is larger than {MAX_SECRET_BYTES // 1024} KiB")
        try:
            value = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ValueError(f"{what}_file: {file} is not valid UTF-8") from None
    else:
        return None
    REDACTOR.add(value)
    return value
