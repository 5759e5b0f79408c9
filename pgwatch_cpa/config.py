"""Strict, frozen settings loaded from YAML, overridable by ``PGWATCH_*`` environment variables.

Every problem in a file is reported at once, each with its key path (``postgres[1].dsn``), in one ConfigError.
Secrets (DSN passwords, password files) are resolved here and never appear in messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pgwatch_cpa.durations import parse_duration
from pgwatch_cpa.errors import ConfigError
from pgwatch_cpa.secrets import REDACTOR, mask_dsn, mask_url

Duration = Annotated[float, BeforeValidator(parse_duration)]
TargetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]

# Environment variables that configure tools around the daemon, not the daemon itself.
NON_CONFIG_ENV = {"PGWATCH_PG_BINDIR", "PGWATCH_REDIS_SERVER", "PGWATCH_REQUIRE_ALL", "PGWATCH_SANDBOX_USER"}
_ENV_PREFIX = "PGWATCH_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectorSettings(_Strict):
    enabled: bool = True
    interval: Duration | None = None


class PostgresTarget(_Strict):
    name: TargetName
    dsn: str | None = Field(default=None, repr=False)
    dsn_env: str | None = None
    password_file: Path | None = None
    interval: Duration | None = None
    connect_timeout: Duration = 5.0
    statement_timeout: Duration = 5.0
    lock_timeout: Duration = 0.1
    max_connections: Annotated[int, Field(ge=1, le=10)] = 2
    collectors: dict[str, CollectorSettings] = Field(default_factory=dict)
    _conninfo: str = PrivateAttr(default="")

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: str | None) -> str | None:
        return value if value is None else _pg_conninfo(value, None)

    @model_validator(mode="after")
    def _resolve_dsn(self, info: ValidationInfo) -> PostgresTarget:
        self._conninfo = _resolve_secret_source(self.dsn, self.dsn_env, self.password_file, "dsn", _pg_conninfo,
                                                _environ(info))
        return self

    @property
    def conninfo(self) -> str:
        """The full connection string, password included. Never log it."""
        return self._conninfo

    @property
    def safe_dsn(self) -> str:
        return mask_dsn(self._conninfo)


class RedisTarget(_Strict):
    name: TargetName
    url: str | None = Field(default=None, repr=False)
    url_env: str | None = None
    password_file: Path | None = None
    interval: Duration | None = None
    timeout: Duration = 2.0
    max_connections: Annotated[int, Field(ge=1, le=10)] = 2
    collectors: dict[str, CollectorSettings] = Field(default_factory=dict)
    _url: str = PrivateAttr(default="")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return value if value is None else _redis_url(value, None)

    @model_validator(mode="after")
    def _resolve_url(self, info: ValidationInfo) -> RedisTarget:
        self._url = _resolve_secret_source(self.url, self.url_env, self.password_file, "url", _redis_url,
                                           _environ(info))
        return self

    @property
    def resolved_url(self) -> str:
        """The full URL, password included. Never log it."""
        return self._url

    @property
    def safe_url(self) -> str:
        return mask_url(self._url)


class Settings(_Strict):
    listen: str = "127.0.0.1:9188"
    interval: Duration = 15.0
    postgres: list[PostgresTarget] = Field(default_factory=list)
    redis: list[RedisTarget] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen)


def parse_listen(address: str) -> tuple[str, int]:
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"listen address {address!r} must be HOST:PORT with a port in 1..65535")
    return host.strip("[]") or "0.0.0.0", int(port_text)


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    context = info.context or {}
    return context.get("environ", os.environ)


def _resolve_secret_source(inline, env_name, password_file, field, normalise, environ) -> str:
    sources = [s for s in (inline, env_name) if s]
    if len(sources) != 1:
        raise ValueError(f"{field}: exactly one of {field} or {field}_env must be set")
    value = inline if inline else environ.get(env_name or "")
    if value is None:
        raise ValueError(f"{field}_env: environment variable {env_name} is not set")
    password = None
    if password_file is not None:
        try:
            password = password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"password_file: cannot read {password_file}: {exc.strerror}") from None
    try:
        resolved = normalise(value, password)
    except ValueError as exc:
        raise ValueError(f"{field if inline else field + '_env'}: {exc}") from None
    REDACTOR.add(password)
    return resolved


def _pg_conninfo(dsn: str, password: str | None) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        # psycopg's message quotes the DSN, password included: never echo it.
        raise ValueError("not a valid PostgreSQL URI or key=value connection string") from None
    if "://" in dsn and not dsn.startswith(("postgresql://", "postgres://")):
        raise ValueError("URI scheme must be postgresql://")
    REDACTOR.add(str(params.get("password") or ""))
    if password is not None:
        return make_conninfo(dsn, password=password)
    return dsn


def _redis_url(url: str, password: str | None) -> str:
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("must start with redis://, rediss:// or unix://")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("invalid port") from None
    REDACTOR.add(parts.password)
    if password is None:
        return url
    hostport = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(parts.username or '')}:{quote(password, safe='')}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment and validate; raise ConfigError with every problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], source=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"], source=str(path)) from None
    return settings_from_mapping(raw, environ if environ is not None else os.environ, source=str(path))


def settings_from_mapping(raw: Any, environ: Mapping[str, str], source: str = "config") -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping of keys to values"], source=source)
    problems = apply_env_overrides(raw, environ)
    problems += _duplicate_names(raw)
    settings = None
    try:
        settings = Settings.model_validate(raw, context={"environ": environ})
    except ValidationError as exc:
        problems += [_format_error(err) for err in exc.errors()]
    if problems or settings is None:
        raise ConfigError(problems, source=source)
    return settings


def _format_error(err: Mapping[str, Any]) -> str:
    path = format_path(err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    # Model-level validators name the offending key as "key: message"; fold it into the path.
    keyed = re.match(r"^([a-z_]+): (.*)$", message, re.DOTALL)
    if keyed and err["type"] == "value_error":
        path, message = (f"{path}.{keyed[1]}" if path else keyed[1]), keyed[2]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{path}: {message}" if path else message


def format_path(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _duplicate_names(raw: dict[str, Any]) -> list[str]:
    problems = []
    for section in ("postgres", "redis"):
        seen: dict[str, int] = {}
        targets = raw.get(section)
        if not isinstance(targets, list):
            continue
        for index, target in enumerate(targets):
            name = target.get("name") if isinstance(target, dict) else None
            if not isinstance(name, str):
                continue
            if name in seen:
                problems.append(f"{section}[{index}].name: duplicate target name {name!r} "
                                f"(first used at {section}[{seen[name]}])")
            else:
                seen[name] = index
    return problems


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Apply PGWATCH_KEY and PGWATCH_<SECTION>__<TARGET>__<KEY> overrides in place; return problems."""
    problems = []
    for var in sorted(environ):
        if not var.startswith(_ENV_PREFIX) or var in NON_CONFIG_ENV:
            continue
        parts = var[len(_ENV_PREFIX):].lower().split("__")
        value = environ[var]
        if len(parts) == 1 and parts[0] in Settings.model_fields and parts[0] not in {"postgres", "redis"}:
            raw[parts[0]] = value
        elif len(parts) == 3 and parts[0] in {"postgres", "redis"}:
            target = _find_target(raw.get(parts[0]), parts[1])
            if target is None:
                problems.append(f"env {var}: no {parts[0]} target named {parts[1]!r}")
            else:
                target[parts[2]] = value
        else:
            problems.append(f"env {var}: not a known setting (use PGWATCH_<KEY> or "
                            "PGWATCH_<POSTGRES|REDIS>__<TARGET>__<KEY>)")
    return problems


def _find_target(targets: Any, wanted: str) -> dict[str, Any] | None:
    if not isinstance(targets, list):
        return None
    normalise = lambda s: re.sub(r"[^a-z0-9]", "_", s.lower())  # noqa: E731
    for target in targets:
        if isinstance(target, dict) and normalise(str(target.get("name", ""))) == normalise(wanted):
            return target
    return None
