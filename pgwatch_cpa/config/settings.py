"""Strict, frozen settings loaded from YAML, overridable by ``PGWATCH_*`` environment variables.

Every problem in a file is reported at once, each with its key path (``postgres[1].dsn``), in one ConfigError.
Secrets (DSN passwords, password files) are resolved here and never appear in messages.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pgwatch_cpa.config import reserved_metrics
from pgwatch_cpa.config.alerting import AlertingSettings
from pgwatch_cpa.config.base import Duration, Name, StrictModel, between, environ_of, read_secret
from pgwatch_cpa.config.query_file import CustomQuery, QueryFile, QueryFileError, read_query_file
from pgwatch_cpa.config.report import ReportSettings, receiver_problems
from pgwatch_cpa.config.shard import UNSHARDED, ShardSetting
from pgwatch_cpa.config.target_files import absolute_pattern, merge_target_files, name_origins
from pgwatch_cpa.config.yamlfile import YamlFileError, read_yaml
from pgwatch_cpa.errors import ConfigError
from pgwatch_cpa.secrets import REDACTOR, mask_dsn, mask_url

# Environment variables that configure tools around the daemon, not the daemon itself.
NON_CONFIG_ENV = {"PGWATCH_PG_BINDIR", "PGWATCH_REDIS_SERVER", "PGWATCH_REQUIRE_ALL", "PGWATCH_SANDBOX_USER"}
_ENV_PREFIX = "PGWATCH_"
_UNION_TAGS = {"webhook", "alertmanager"}
MAX_CONFIG_BYTES = 1024 * 1024

# Bounds of the intervals (documented in config.example.yaml): below 1 s a target is polled harder than any
# dashboard needs; above 1 h (1 d for a single collector) pg_up and the alerts describe the past.
TargetInterval = Annotated[Duration, between("1s", "1h")]
CollectorInterval = Annotated[Duration, between("1s", "1d")]


class CollectorSettings(StrictModel):
    enabled: bool = True
    interval: CollectorInterval | None = None


def _check_regex(value: str | None) -> str | None:
    """A regex of RE2's (Go's) syntax, the linear-time engine that matches it at run time (DiscoverSettings)."""
    if value is not None:
        if not isinstance(value, str):
            raise ValueError("expected a regular expression (a string)")
        compile_re2(value, "not a valid regular expression")
    return value


@functools.lru_cache(maxsize=64)
@functools.lru_cache(maxsize=256)  # discovery matches every database name every cycle
def compile_re2(pattern: str, what: str) -> Any:
    """``pattern`` anchored at both ends (as Prometheus anchors its regexes), compiled by RE2."""
    import re2

    options = re2.Options()
    options.log_errors = False  # the error is raised to us; RE2 would also print it to stderr
    try:
        return re2.compile(f"^(?:{pattern})$", options)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"{what}: {detail} (RE2 syntax: no backreferences or lookaround)") from None


Regex = Annotated[str, BeforeValidator(_check_regex)]


def _load_query_file(value: Any, info: ValidationInfo) -> QueryFile:
    """A ``custom_queries`` entry: a path (relative to the config file) or ``builtin:NAME``, read and checked."""
    from pgwatch_cpa import shipped

    if not isinstance(value, str) or not value:
        raise ValueError("expected the path of a query file (postgres_exporter's queries.yaml format) or "
                         "builtin:NAME")
    base = (info.context or {}).get("base_dir") or Path.cwd()
    path = shipped.resolve_builtin_queries(value) if shipped.is_builtin(value) else Path(base) / value
    try:
        return read_query_file(path, value)
    except QueryFileError as exc:
        raise ValueError(str(exc)) from None


# Custom SQL metrics (config.query_file): at the top level for every PostgreSQL target, or under one target.
QueryFiles = list[Annotated[QueryFile, PlainValidator(_load_query_file)]]


class DiscoverSettings(StrictModel):
    """Poll every connectable, non-template database whose name fully matches include and not exclude."""

    include: Regex = ".*"
    exclude: Regex | None = None

    def matches(self, database: str) -> bool:
        """True if ``database`` fully matches include and not exclude (RE2: linear time whatever the name)."""
        include = compile_re2(self.include, "include")
        exclude = compile_re2(self.exclude, "exclude") if self.exclude is not None else None
        return include.search(database) is not None and (exclude is None or exclude.search(database) is None)


class PostgresTarget(StrictModel):
    name: Name
    dsn: str | None = Field(default=None, repr=False)
    dsn_env: str | None = None
    password_file: Path | None = None
    interval: TargetInterval | None = None
    connect_timeout: Annotated[Duration, between("500ms", "1m")] = 5.0
    statement_timeout: Annotated[Duration, between("100ms", "10m")] = 5.0
    lock_timeout: Annotated[Duration, between("10ms", "1m")] = 0.1
    max_connections: Annotated[int, Field(ge=1, le=10)] = 2
    collectors: dict[str, CollectorSettings] = Field(default_factory=dict)
    # Databases for the per-database collectors (tables, indexes, table_size): a list, or discovery; neither
    # means the DSN's database only. Instance-wide collectors always run once, on the DSN's database.
    databases: list[Annotated[str, Field(min_length=1, max_length=63)]] | None = None
    discover: DiscoverSettings | None = None
    top_n: Annotated[int, Field(ge=1, le=10000)] = 100  # statements, tables, indexes exported per database
    application_top_n: Annotated[int, Field(ge=1, le=1000)] = 10  # application_name values, rest "other"
    # pg_stat_activity: non-idle query running longer than this
    long_query_threshold: Annotated[Duration, between("100ms", "1d")] = 300.0
    # pg_stat_activity: idle in transaction longer than this
    idle_in_transaction_threshold: Annotated[Duration, between("100ms", "1d")] = 300.0
    # pg_stat_statements: mean execution time above this
    slow_query_threshold: Annotated[Duration, between("1ms", "1h")] = 1.0
    # tables read mostly by sequential scans: seq_scan > idx_scan on tables of more than this many live rows
    seq_scan_min_live_rows: Annotated[int, Field(ge=0)] = 1000
    seq_scan_threshold: Annotated[int, Field(ge=0)] = 1000  # report: such a table is a warning from this many scans
    query_text: bool = False  # export normalised, truncated pg_stat_statements text (top-N) as an info metric
    query_text_max_length: Annotated[int, Field(ge=16, le=4096)] = 200
    custom_queries: QueryFiles = Field(default_factory=list, max_length=50)
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
    interval: TargetInterval | None = None
    timeout: Annotated[Duration, between("100ms", "1m")] = 2.0
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
    key_scan_budget: Annotated[Duration, between("0.1ms", "50ms")] = 0.002  # Redis time per cycle for SCAN work
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


def _absolute_pattern(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected the path or glob of a targets file")
    return absolute_pattern(value, Path((info.context or {}).get("base_dir") or Path.cwd()))


TargetFilePattern = Annotated[str, PlainValidator(_absolute_pattern)]


class Settings(StrictModel):
    listen: str = "127.0.0.1:9188"
    interval: TargetInterval = 15.0
    postgres: list[PostgresTarget] = Field(default_factory=list)
    redis: list[RedisTarget] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    custom_queries: QueryFiles = Field(default_factory=list, max_length=50)
    shard: ShardSetting = UNSHARDED  # "K/N": this replica watches shard K of N (pgwatch_cpa.daemon.sharding)
    # Target cycles collecting at once, across all targets (probes wait for none: an unreachable target holds none).
    max_concurrent_cycles: Annotated[int, Field(ge=1, le=1000)] = 16
    # Files of more targets (config.target_files), watched: a change applies as a reload (SIGHUP) does.
    postgres_files: list[TargetFilePattern] = Field(default_factory=list, max_length=100)
    redis_files: list[TargetFilePattern] = Field(default_factory=list, max_length=100)
    target_files_check_interval: Annotated[Duration, between("1s", "1h")] = 5.0

    def queries_for(self, target: PostgresTarget) -> tuple[CustomQuery, ...]:
        """The custom queries run on ``target``: the top-level files' and then its own."""
        return tuple(q for f in [*self.custom_queries, *target.custom_queries] for q in f.queries)

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


def _refuse_ambiguous_userinfo(url: str) -> None:
    """A URI whose authority holds more than one '@' is read differently by libpq (first '@': the password's
    tail becomes the host, and is logged as such) and by urllib (last '@'): refuse it, never guess."""
    from urllib.parse import urlsplit

    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return  # the caller's parser reports it
    if netloc.count("@") > 1:
        raise ValueError("more than one '@' before the host: percent-encode '@' in the user name or password "
                         "as %40 (e.g. postgresql://user:p%40ss@host/db)")


def _pg_conninfo(dsn: str, password: str | None) -> str:
    from urllib.parse import unquote, urlsplit

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if "://" in dsn:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("URI scheme must be postgresql://")
        _refuse_ambiguous_userinfo(dsn)
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        # psycopg's message quotes the DSN, password included: never echo it.
        raise ValueError("not a valid PostgreSQL URI or key=value connection string") from None
    REDACTOR.add(str(params.get("password") or ""))
    if "://" in dsn:
        try:
            raw_password = urlsplit(dsn).password  # as written: percent-encoded
        except ValueError:
            raw_password = None
        REDACTOR.add(raw_password)
        REDACTOR.add(unquote(raw_password or ""))
    if password is not None:
        return make_conninfo(dsn, password=password)
    return dsn


def _redis_url(url: str, password: str | None) -> str:
    from urllib.parse import quote, unquote, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("not a valid URL") from None  # urllib's message may quote the URL: never echo it
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("must start with redis://, rediss:// or unix://")
    _refuse_ambiguous_userinfo(url)
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("invalid port") from None
    REDACTOR.add(parts.password)
    REDACTOR.add(unquote(parts.password or ""))
    if password is None:
        return url
    hostport = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(parts.username or '')}:{quote(password, safe='')}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment and validate; raise ConfigError with every problem.

    The file is refused whole if it is larger than 1 MiB, not UTF-8, not YAML, has a duplicate key or is
    nested more than 50 levels deep (see config.yamlfile).
    """
    path = Path(path)
    try:
        raw = read_yaml(path, MAX_CONFIG_BYTES, "config file") or {}
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror or exc}"], source=str(path)) from None
    except YamlFileError as exc:
        raise ConfigError([str(exc)], source=str(path)) from None
    return settings_from_mapping(raw, environ if environ is not None else os.environ, source=str(path),
                                 base_dir=path.parent)


def settings_from_mapping(raw: Any, environ: Mapping[str, str], source: str = "config",
                          base_dir: Path | None = None) -> Settings:
    """Validate a parsed config. Relative paths in it (rule files) are relative to ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping of keys to values"], source=source)
    base_dir = base_dir or Path.cwd()
    problems, origins = merge_target_files(raw, base_dir)  # before the overrides, which may name their targets
    problems += apply_env_overrides(raw, environ)
    problems += _duplicate_names(raw)
    problems += receiver_problems(raw)
    settings = None
    try:
        settings = Settings.model_validate(raw, context={"environ": environ, "base_dir": base_dir})
    except ValidationError as exc:
        problems += [_format_error(err) for err in exc.errors()]
    if settings is not None:
        problems += custom_query_problems(settings)
    if problems or settings is None:
        raise ConfigError([name_origins(p, origins) for p in problems], source=source)
    return settings


def custom_query_problems(settings: Settings) -> list[str]:
    """Custom queries that would export a name twice: a key or metric name of two files (top level and each
    target's), or a name of the daemon or of a built-in collector enabled on the target."""
    shared = _query_name_clashes(settings.custom_queries, None)
    problems = [f"custom_queries: {p}" for p in shared]
    for index, target in enumerate(settings.postgres):
        disabled = frozenset(name for name, c in target.collectors.items() if not c.enabled)
        found = _query_name_clashes([*settings.custom_queries, *target.custom_queries], disabled)
        problems += [f"postgres[{index}].custom_queries: {p}" for p in found if p not in shared]
    return problems


def _query_name_clashes(files: list[QueryFile], disabled: frozenset[str] | None) -> list[str]:
    """Keys and metric names used twice in ``files`` and, unless ``disabled`` is None, names taken by the
    daemon or by a built-in collector not in ``disabled``."""
    problems = []
    keys: dict[str, str] = {}
    names: dict[str, tuple[str, str]] = {}
    for file in files:
        for query in file.queries:
            if query.key in keys:
                problems.append(f"{file.source}: key {query.key} is also defined in {keys[query.key]}")
                continue
            keys[query.key] = file.source
            for column in query.values:
                name = query.metric_name(column)
                owner = None if disabled is None else reserved_metrics.owner(name, disabled)
                if name in names:
                    other_file, other_key = names[name]
                    problems.append(f"{file.source}: metric {name} (key {query.key}) is also exported by key "
                                    f"{other_key} of {other_file}")
                elif owner is not None:
                    hint = (f"; rename the key, or disable the collector (collectors: {{{owner.split()[1]}: "
                            "{enabled: false}})" if owner.startswith("collector") else "; rename the key")
                    problems.append(f"{file.source}: metric {name} (key {query.key}) is already exported by "
                                    f"{owner}{hint}")
                names[name] = (file.source, query.key)
    return problems


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
        value = env_value(environ[var])
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


def env_value(text: str) -> Any:
    """An override's value as the file would hold it: a YAML number if it is spelled as one (so that
    ``PGWATCH_INTERVAL=0`` means what ``interval: 0`` means and both are refused alike), otherwise the string
    verbatim (a DSN is never YAML-parsed: '#' or ': ' in a password must survive)."""
    tag = yaml.resolver.Resolver().resolve(yaml.ScalarNode, text, (True, False))  # SafeLoader's resolver
    if tag in {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}:
        try:
            return yaml.safe_load(text)
        except (yaml.YAMLError, ValueError):
            return text
    return text


def _find_target(targets: Any, wanted: str) -> dict[str, Any] | None:
    if not isinstance(targets, list):
        return None
    normalise = lambda s: re.sub(r"[^a-z0-9]", "_", s.lower())  # noqa: E731
    for target in targets:
        if isinstance(target, dict) and normalise(str(target.get("name", ""))) == normalise(wanted):
            return target
    return None
