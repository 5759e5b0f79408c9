"""The `alerting:` section of the config: rule files, state, receivers. Secrets only from env or files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pgwatch_cpa.durations import parse_duration
from pgwatch_cpa.secrets import REDACTOR

Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret(env: str | None, file: Path | None, what: str) -> str | None:
    if env and file:
        raise ValueError(f"{what}: set {what}_env or {what}_file, not both")
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"{what}_env: environment variable {env} is not set")
    elif file:
        try:
            value = file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"{what}_file: cannot read {file}: {exc.strerror}") from None
    else:
        return None
    REDACTOR.add(value)
    return value


class BasicAuth(_Strict):
    username: str
    password_env: str | None = None
    password_file: Path | None = None

    @property
    def password(self) -> str:
        return _secret(self.password_env, self.password_file, "password") or ""


class _HttpReceiver(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    bearer_token_env: str | None = None
    bearer_token_file: Path | None = None
    basic_auth: BasicAuth | None = None
    timeout: Duration = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5

    @model_validator(mode="after")
    def _check_secrets(self) -> _HttpReceiver:
        if self.basic_auth and (self.bearer_token_env or self.bearer_token_file):
            raise ValueError("basic_auth: use either a bearer token or basic auth")
        _secret(self.bearer_token_env, self.bearer_token_file, "bearer_token")
        if self.basic_auth:
            _ = self.basic_auth.password
        return self

    @property
    def bearer_token(self) -> str | None:
        return _secret(self.bearer_token_env, self.bearer_token_file, "bearer_token")


class WebhookReceiverSettings(_HttpReceiver):
    """Alertmanager webhook v4 payloads, grouped like Alertmanager's route."""

    type: Literal["webhook"]
    url: str
    group_by: tuple[str, ...] = ("alertname", "target")
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 4 * 3600.0
    send_resolved: bool = True
    hmac_secret_env: str | None = None
    hmac_secret_file: Path | None = None

    @model_validator(mode="after")
    def _check_hmac(self) -> WebhookReceiverSettings:
        _secret(self.hmac_secret_env, self.hmac_secret_file, "hmac_secret")
        return self

    @property
    def hmac_secret(self) -> str | None:
        return _secret(self.hmac_secret_env, self.hmac_secret_file, "hmac_secret")


class AlertmanagerReceiverSettings(_HttpReceiver):
    """Direct push to every Alertmanager replica's /api/v2/alerts, re-sent like Prometheus does."""

    type: Literal["alertmanager"]
    urls: Annotated[list[str], Field(min_length=1)]
    resend_delay: Duration = 60.0


Receiver = Annotated[WebhookReceiverSettings | AlertmanagerReceiverSettings, Field(discriminator="type")]


class AlertingSettings(_Strict):
    rules: list[Path] = Field(default_factory=list)
    evaluation_interval: Duration | None = None  # default: the global interval
    state_file: Path | None = None  # keeps `for` timers and firing state across restarts
    external_url: str = ""  # base of generatorURL and externalURL in notifications
    inhibit_when_target_down: bool = True
    receivers: list[Receiver] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _relative_to_config(cls, paths: list[Path], info: ValidationInfo) -> list[Path]:
        # Like Prometheus's rule_files: relative paths are relative to the config file.
        base = (info.context or {}).get("base_dir") or Path.cwd()
        resolved = [p if p.is_absolute() else Path(base) / p for p in paths]
        missing = [str(p) for p in resolved if not p.is_file()]
        if missing:
            raise ValueError(f"rule file not found: {', '.join(missing)}")
        return resolved
