"""The `alerting:` section of the config: rule files, state, receivers. Secrets only from env or files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from pgwatch_cpa import shipped
from pgwatch_cpa.config.base import Duration, Name, StrictModel, between, environ_of, read_secret


def check_http_url(url: str) -> str:
    """An absolute http:// or https:// URL with a host. The URL is not echoed: webhook URLs often carry a token."""
    from urllib.parse import urlsplit

    if not url or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("must be an http:// or https:// URL without spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("not a valid URL (malformed host or port)") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://hooks.example.com/pgwatch")
    if parts.netloc.count("@") > 1:
        raise ValueError("more than one '@' before the host: percent-encode '@' in the user name or password "
                         "as %40")
    return url


HttpUrl = Annotated[str, AfterValidator(check_http_url)]


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
    timeout: Annotated[Duration, between("500ms", "5m")] = 10.0  # one HTTP attempt
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
    url: HttpUrl
    group_by: tuple[str, ...] = ("alertname", "target")
    group_wait: Annotated[Duration, between("0s", "1h")] = 30.0
    group_interval: Annotated[Duration, between("1s", "1d")] = 300.0
    repeat_interval: Annotated[Duration, between("1s", "30d")] = 4 * 3600.0
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
    urls: Annotated[list[HttpUrl], Field(min_length=1)]
    resend_delay: Annotated[Duration, between("1s", "1h")] = 60.0


Receiver = Annotated[WebhookReceiverSettings | AlertmanagerReceiverSettings, Field(discriminator="type")]


class AlertingSettings(StrictModel):
    rules: list[Path] = Field(default_factory=list)
    evaluation_interval: Annotated[Duration, between("1s", "1h")] | None = None  # default: the global interval
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
        missing = [str(p) for p in resolved if not _is(Path.is_file, p)]
        if missing:
            raise ValueError(f"rule file not found: {', '.join(missing)}")
        return resolved

    @field_validator("state_file")
    @classmethod
    def _state_file_directory(cls, path: Path | None) -> Path | None:
        # The daemon writes the state at run time: a directory that does not exist would only show as a warning
        # on every save, and `for` timers would be lost on the next restart.
        if path is None:
            return None
        if str(path).strip() in {"", "."}:
            raise ValueError("must name a file")
        if _is(Path.is_dir, path):
            raise ValueError(f"{path} is a directory; name a file in it")
        if not _is(Path.is_dir, path.parent):
            raise ValueError(f"directory {path.parent} does not exist")
        return path

    @field_validator("external_url")
    @classmethod
    def _check_external_url(cls, url: str) -> str:
        return url and check_http_url(url)


def _is(test: Callable[[Path], bool], path: Path) -> bool:
    """Path.is_file / is_dir, a path the OS refuses (too long, NUL byte) being neither."""
    try:
        return test(path)
    except (OSError, ValueError):
        return False
