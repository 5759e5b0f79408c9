"""The `alerting:` section of the config: rule files, state, receivers. Secrets only from env or files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from pgwatch_cpa import shipped
from pgwatch_cpa.config.base import Duration, Name, StrictModel, environ_of, read_secret


class BasicAuth(StrictModel):
    username: str
    password_env: str | None = None
    password_file: Path | None = None
    _password: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> BasicAuth:
        self._password = read_secret(self.password_env, self.password_file, "password", environ_of(info)) or ""
        return self

    @property
    def password(self) -> str:
        return self._password


class _HttpReceiver(StrictModel):
    name: Name
    bearer_token_env: str | None = None
    bearer_token_file: Path | None = None
    basic_auth: BasicAuth | None = None
    timeout: Duration = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    _bearer_token: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve_token(self, info: ValidationInfo) -> _HttpReceiver:
        if self.basic_auth and (self.bearer_token_env or self.bearer_token_file):
            raise ValueError("basic_auth: use either a bearer token or basic auth")
        self._bearer_token = read_secret(self.bearer_token_env, self.bearer_token_file, "bearer_token",
                                         environ_of(info))
        return self

    @property
    def bearer_token(self) -> str | None:
        return self._bearer_token


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
    _hmac_secret: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve_hmac(self, info: ValidationInfo) -> WebhookReceiverSettings:
        self._hmac_secret = read_secret(self.hmac_secret_env, self.hmac_secret_file, "hmac_secret",
                                        environ_of(info))
        return self

    @property
    def hmac_secret(self) -> str | None:
        return self._hmac_secret


class AlertmanagerReceiverSettings(_HttpReceiver):
    """Direct push to every Alertmanager replica's /api/v2/alerts, re-sent like Prometheus does."""

    type: Literal["alertmanager"]
    urls: Annotated[list[str], Field(min_length=1)]
    resend_delay: Duration = 60.0


Receiver = Annotated[WebhookReceiverSettings | AlertmanagerReceiverSettings, Field(discriminator="type")]


class AlertingSettings(StrictModel):
    rules: list[Path] = Field(default_factory=list)
    evaluation_interval: Duration | None = None  # default: the global interval
    state_file: Path | None = None  # keeps `for` timers and firing state across restarts
    external_url: str = ""  # base of generatorURL and externalURL in notifications
    inhibit_when_target_down: bool = True
    receivers: list[Receiver] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _relative_to_config(cls, paths: list[Path], info: ValidationInfo) -> list[Path]:
        # Like Prometheus's rule_files: relative paths are relative to the config file. ``builtin:alerts.yml``
        # names the rule file shipped in the package (pgwatch_cpa.shipped), wherever it is installed.
        base = (info.context or {}).get("base_dir") or Path.cwd()
        resolved = [shipped.resolve_builtin(p) if shipped.is_builtin(p) else p if p.is_absolute() else Path(base) / p
                    for p in paths]
        missing = [str(p) for p in resolved if not p.is_file()]
        if missing:
            raise ValueError(f"rule file not found: {', '.join(missing)}")
        return resolved
