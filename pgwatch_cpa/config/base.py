"""The vocabulary every settings section shares: the strict base model, ``Duration`` and secret reading.

Validators get the environment from pydantic's validation context (``{"environ": ...}``), so a config checked
against an injected environment (tests, ``check-config``) never reads ``os.environ`` behind its back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

from pgwatch_cpa.durations import parse_config_duration
from pgwatch_cpa.secrets import REDACTOR

Duration = Annotated[float, BeforeValidator(parse_config_duration)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


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
            value = file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"{what}_file: cannot read {file}: {exc.strerror}") from None
    else:
        return None
    REDACTOR.add(value)
    return value
