"""Strict, frozen settings loaded from YAML, overridable by ``PGWATCH_*`` environment variables.

Every problem in a file is reported at once, each with its key path (``postgres[1].dsn``), in one ConfigError.
Secrets (DSN passwords, password files) are resolved here and never appear in messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pgwatch_cpa.config.alerting import AlertingSettings
from pgwatch_cpa.config.base import Duration, Name, StrictModel, environ_of, read_secret
from pgwatch_cpa.config.report import ReportSettings, receiver_problems
from pgwatch_cpa.errors import ConfigError
from pgwatch_cpa.secrets import REDACTOR, mask_dsn, mask_url

# Environment variables that configure tools around the daemon, not the daemon itself.
NON_CONFIG_ENV = {"PGWATCH_PG_BINDIR", "PGWATCH_REDIS_SERVER", "PGWATCH_REQUIRE_ALL", "PGWATCH_SANDBOX_USER"}
_ENV_PREFIX = "PGWATCH_"
_UNION_TAGS = {"webhook", "alertmanager"}


class CollectorSettings(StrictModel):
    enabled: bool = True
    interval: Duration | None = None


def _check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Regex = Annotated[str, BeforeValidator(_check_regex)]


class DiscoverSettings(StrictModel):
    """Poll every connectable, non-template database whose name fully matches include and not exclude."""

    include: Regex = ".*"
    exclude: Regex | None = None


class PostgresTarget(StrictModel):
    name: Name
    dsn: str | None = Field(default=None, repr=False)
    dsn_env: str | None = None
    password_file: Path | None = None
    interval: Duration | None = None
    connect_timeout: Duration = 5.0
    statement_timeout: Duration = 5.0
    lock_timeout: Duration = 0.1
    max_connections: Annotated[int, Field(ge=1, le=10)] = 2
    collectors: dict[str, CollectorSettings] = Field(default_factory=dict)
    # Databases for the per-database collectors (tables, indexes, table_size): a list, or discovery; neither
    # means the DSN's database only. Instance-wide collectors always run once, on the DSN's database.
    databases: list[Annotated[str, Field(min_length=1, max_length=63)]] | None = None
    discover: DiscoverSettings | None = None
    top_n: Annotated[int, Field(ge=1, le=10000)] = 100  # statements, tables, indexes exported per database
    application_top_n: Annotated[int, Field(ge=1, le=1000)] = 10  # application_name values, rest "other"
    long_query_threshold: Duration = 300.0  # pg_stat_activity: non-idle query running longer than this
    idle_in_transaction_threshold: Duration = 300.0  # pg_stat_activity: idle in transaction longer than this
    slow_query_threshold: Duration = 1.0  # pg_stat_statements: mean execution time above this
    seq_scan_threshold: Annotated[int, Field(ge=0)] = 1000  # tables: seq_scan > idx_scan and >= this
    query_text: bool = False  # export normalised, truncated pg_stat_statements text (top-N) as an info metric
    query_text_max_length: Annotated[int, Field(ge=16, le=4096)] = 200
    _conninfo: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _check_databases(self) -> PostgresTarget:
        if self.databases is not None and self.discover is not None:
            raise ValueError("databases: set either databases or discover, not both")
        return self

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: str | None) -> str | None:
        return value if value is None else _pg_conninfo(value, None)

    @model_validator(mode="after")
    def _resolve_dsn(self, info: ValidationInfo) -> PostgresTarget:
        self._conninfo = _resolve_secret_source(self.dsn, self.dsn_env, self.password_file, "dsn", _pg_conninfo,
                                                environ_of(info))
        return self

    @property
    def conninfo(self) -> str:
        """The full connection string, password included. Never log it."""
        return self._conninfo

    @property
    def safe_dsn(self) -> str:
        return mask_dsn(self._conninfo)


# Key families of the Redis key-family collector: family label -> key patterns. A pattern is a key prefix in
# which "*" stands for one key segment (any run of characters without ":"); the most specific pattern (most
# literal characters) wins, and keys that match none count as "other". The CPA caching service
# (pgwatch_cpa.cpa.cache.keys) writes cpa:v1:d:<org>:<family code>:...; the bare prefixes are the platform's
# legacy layout (cpa-database-performance-guide, CACHE_KEYS), which the benchmark catalog also uses. The family
# names are the caching service's, so redis_key_family_* and cpa_cache_* join on the family label.
DEFAULT_KEY_FAMILIES: dict[str, tuple[str, ...]] = {
    "user_profile": ("cpa:v1:d:*:up:", "user:"),
    "client_list": ("cpa:v1:d:*:cl:", "client:"),
    "dashboard_metrics": ("cpa:v1:d:*:dm:", "dashboard:"),
    "document_list": ("cpa:v1:d:*:dl:", "document:"),
    "task_list": ("cpa:v1:d:*:tl:", "task:"),
    "invoice_list": ("cpa:v1:d:*:il:", "invoice:"),
    "quickbooks_data": ("cpa:v1:d:*:qb:", "qb:"),
    "report_data": ("cpa:v1:d:*:rp:", "report:"),
    "session": ("cpa:v1:d:*:ss:", "session:"),
    "cache_generation": ("cpa:v1:g:",),  # per-org and per-family generation counters (no TTL by design)
    "cache_lock": ("cpa:v1:l:",),  # cross-process load locks
    "cache_stats": ("cpa:stats:",),  # the app instances' published cache statistics
}
FamilyName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
KeyPrefix = Annotated[str, Field(min_length=1, max_length=256)]


class RedisTarget(StrictModel):
    name: Name
    url: str | None = Field(default=None, repr=False)
    url_env: str | None = None
    password_file: Path | None = None
    interval: Duration | None = None
    timeout: Duration = 2.0
    max_connections: Annotated[int, Field(ge=1, le=10)] = 2
    collectors: dict[str, CollectorSettings] = Field(default_factory=dict)
    # info: commands exported by name in redis_commands_*{cmd} (the rest is cmd="other"); same for errors.
    top_commands: Annotated[int, Field(ge=1, le=200)] = 30
    top_errors: Annotated[int, Field(ge=1, le=50)] = 10
    # slowlog: entries read per cycle (SLOWLOG GET n); their arguments are never exported.
    slowlog_entries: Annotated[int, Field(ge=1, le=128)] = 32
    # key_families: key patterns per family (see DEFAULT_KEY_FAMILIES), and the incremental SCAN counting them.
    key_families: dict[FamilyName, Annotated[list[KeyPrefix], Field(min_length=1, max_length=16)]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_KEY_FAMILIES.items()}, max_length=64)
    key_scan_budget: Annotated[Duration, Field(gt=0, le=0.05)] = 0.002  # Redis time per cycle for SCAN work
    key_scan_count: Annotated[int, Field(ge=10, le=10_000)] = 1000  # largest COUNT of one SCAN call
    key_scan_max_keys: Annotated[int, Field(ge=10, le=1_000_000)] = 50_000  # hard cap of keys scanned per cycle
    key_memory_samples: Annotated[int, Field(ge=0, le=1000)] = 32  # MEMORY USAGE samples per family per pass
    _url: str = PrivateAttr(default="")

    @field_validator("key_families")
    @classmethod
    def _check_families(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if "other" in value:
            raise ValueError("'other' is reserved for keys that match no family")
        owner: dict[str, str] = {}
        for family, prefixes in value.items():
            for prefix in prefixes:
                if not prefix.replace("*", ""):
                    raise ValueError(f"pattern {prefix!r} of {family!r} has no literal characters")
                if prefix in owner:
                    raise ValueError(f"pattern {prefix!r} is listed under both {owner[prefix]!r} and {family!r}")
                owner[prefix] = family
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return value if value is None else _redis_url(value, None)

    @model_validator(mode="after")
    def _resolve_url(self, info: ValidationInfo) -> RedisTarget:
        self._url = _resolve_secret_source(self.url, self.url_env, self.password_file, "url", _redis_url,
                                           environ_of(info))
        return self

    @property
    def resolved_url(self) -> str:
        """The full URL, password included. Never log it."""
        return self._url

    @property
    def safe_url(self) -> str:
        return mask_url(self._url)


class Settings(StrictModel):
    listen: str = "127.0.0.1:9188"
    interval: Duration = 15.0
    postgres: list[PostgresTarget] = Field(default_factory=list)
    redis: list[RedisTarget] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)

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


def _resolve_secret_source(inline: str | None, env_name: str | None, password_file: Path | None, field: str,
                           normalise: Callable[[str, str | None], str], environ: Mapping[str, str]) -> str:
    """The DSN or URL, from the file or the environment, with the password of ``password_file`` put in."""
    if bool(inline) == bool(env_name):
        raise ValueError(f"{field}: exactly one of {field} or {field}_env must be set")
    value = inline or read_secret(env_name, None, field, environ) or ""
    password = read_secret(None, password_file, "password", environ)
    try:
        return normalise(value, password)
    except ValueError as exc:
        raise ValueError(f"{field if inline else field + '_env'}: {exc}") from None


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
    return settings_from_mapping(raw, environ if environ is not None else os.environ, source=str(path),
                                 base_dir=path.parent)


def settings_from_mapping(raw: Any, environ: Mapping[str, str], source: str = "config",
                          base_dir: Path | None = None) -> Settings:
    """Validate a parsed config. Relative paths in it (rule files) are relative to ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping of keys to values"], source=source)
    problems = apply_env_overrides(raw, environ)
    problems += _duplicate_names(raw)
    problems += receiver_problems(raw)
    settings = None
    try:
        settings = Settings.model_validate(raw, context={"environ": environ, "base_dir": base_dir or Path.cwd()})
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
    for index, part in enumerate(loc):
        if part in _UNION_TAGS and index and isinstance(loc[index - 1], int):
            continue  # pydantic puts the discriminator's value in the path; users never wrote it
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
