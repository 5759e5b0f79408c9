"""The files shipped with the code: the alert rules (alerts.yml), the Grafana dashboards and provisioning, and
the least-privilege setup of the monitoring accounts (monitoring_role.sql, redis_acl.txt).

The top-level ``alerts.yml`` and ``grafana/`` of the repository are the single source. This package holds
git-tracked symlinks to them (``alerts.yml``, ``grafana/dashboards``, ``grafana/provisioning``); building the
wheel copies what they point at as package data, so an installed wheel and a source checkout read them the same
way, through importlib.resources. monitoring_role.sql and redis_acl.txt live here (they are part of the package).

A config names the shipped rules as ``builtin:alerts.yml`` (:data:`BUILTIN_PREFIX`), and the shipped custom query
files (``queries/*.yaml``, postgres_exporter's format) as ``builtin:cpa_business.yaml``; ``pgwatch-cpa export-assets
--to DIR`` writes everything out for Prometheus and Grafana (:func:`export`).
"""

from __future__ import annotations

import atexit
import contextlib
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

BUILTIN_PREFIX = "builtin:"
RULES = "alerts.yml"
PRIVILEGES_SQL = "monitoring_role.sql"
REDIS_ACL = "redis_acl.txt"
QUERIES = "queries"
_ROOT = files(__name__)
_extracted = contextlib.ExitStack()  # a zipped install: the files extracted once, removed at exit
atexit.register(_extracted.close)


class MissingAssetError(LookupError):
    """A shipped file is not there: a broken install (or a checkout without its symlinks)."""


def builtin_names() -> list[str]:
    """What ``builtin:NAME`` may name: the shipped rule files."""
    return [RULES]


def is_builtin(reference: str | Path) -> bool:
    return str(reference).startswith(BUILTIN_PREFIX)


def resolve_builtin(reference: str | Path) -> Path:
    """``builtin:alerts.yml`` -> the path of the shipped file; ValueError for a name that is not shipped."""
    name = str(reference)[len(BUILTIN_PREFIX):]
    if name not in builtin_names():
        raise ValueError(f"unknown shipped rule file {str(reference)!r}; shipped: "
                         + ", ".join(BUILTIN_PREFIX + n for n in builtin_names()))
    return rules_path()


def builtin_query_files() -> list[str]:
    """What ``builtin:NAME`` may name in ``custom_queries``: the shipped query files."""
    return sorted(f.name for f in _files(_ROOT / QUERIES) if f.name.endswith(".yaml"))


def resolve_builtin_queries(reference: str) -> Path:
    """``builtin:cpa_business.yaml`` -> the path of the shipped query file; ValueError for one not shipped."""
    name = reference[len(BUILTIN_PREFIX):]
    if name not in builtin_query_files():
        raise ValueError(f"unknown shipped query file {reference!r}; shipped: "
                         + ", ".join(BUILTIN_PREFIX + n for n in builtin_query_files()))
    return _path(_ROOT / QUERIES / name)


def rules_path() -> Path:
    """The shipped alerts.yml as a file on disk (Prometheus's format; the daemon and Prometheus load it as is)."""
    return _path(_ROOT / RULES)


def privileges_script() -> Path:
    """monitoring_role.sql: the PostgreSQL role the daemon connects as (pg_monitor, CONNECTION LIMIT 5)."""
    return _path(_ROOT / PRIVILEGES_SQL)


def redis_acl_rule() -> str:
    """The ``ACL SETUSER pgwatch ...`` line of redis_acl.txt (its password is the placeholder ``CHANGE-ME``)."""
    lines = [ln for ln in (_ROOT / REDIS_ACL).read_text(encoding="utf-8").splitlines() if ln.startswith("ACL ")]
    if len(lines) != 1:
        raise MissingAssetError(f"{REDIS_ACL} holds {len(lines)} ACL lines instead of one")
    return lines[0]


def dashboards() -> dict[str, Traversable]:
    """The Grafana dashboards, by file name (``pgwatch-cpa-overview.json``, ...)."""
    folder = _ROOT / "grafana" / "dashboards"
    found = {f.name: f for f in _files(folder) if f.name.endswith(".json")} if folder.is_dir() else {}
    if not found:
        raise MissingAssetError(f"the shipped Grafana dashboards are missing ({folder})")
    return dict(sorted(found.items()))


def provisioning() -> dict[str, Traversable]:
    """Grafana provisioning files by relative path (``dashboards/pgwatch-cpa.yaml``, ``datasources/...``)."""
    folder = _ROOT / "grafana" / "provisioning"
    found = dict(_walk(folder, "")) if folder.is_dir() else {}
    if not found:
        raise MissingAssetError(f"the shipped Grafana provisioning files are missing ({folder})")
    return dict(sorted(found.items()))


def export(dest: Path) -> list[Path]:
    """Write alerts.yml, monitoring_role.sql, redis_acl.txt, grafana/dashboards/*.json and
    grafana/provisioning/** under ``dest`` (created if missing; files of the same names are replaced). Returns
    the files written."""
    items: list[tuple[str, Traversable]] = [(name, _ROOT / name) for name in (RULES, PRIVILEGES_SQL, REDIS_ACL)]
    items += [(f"grafana/dashboards/{name}", f) for name, f in dashboards().items()]
    items += [(f"grafana/provisioning/{rel}", f) for rel, f in provisioning().items()]
    written = []
    for rel, source in items:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(source.read_bytes())
        tmp.replace(target)
        written.append(target)
    return written


def _path(resource: Traversable) -> Path:
    if not resource.is_file():
        raise MissingAssetError(f"the shipped file {resource.name} is missing ({resource})")
    if isinstance(resource, Path):
        return resource
    return _extracted.enter_context(as_file(resource))


def _files(folder: Traversable) -> list[Traversable]:
    return [f for f in folder.iterdir() if f.is_file()]


def _walk(folder: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    out: list[tuple[str, Traversable]] = []
    for entry in folder.iterdir():
        if entry.is_dir():
            out += _walk(entry, f"{prefix}{entry.name}/")
        elif entry.is_file() and not entry.name.startswith("."):
            out.append((prefix + entry.name, entry))
    return out

