"""The house's rules, checked on the source: which room may import which.

cli -> demo -> daemon -> report / collectors / alerts -> shared vocabulary; the application (cpa/) imports nothing
above it, and everything outside cpa/ and demo/ reaches it only through its wire-format modules (cache and archive
statistics).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pgwatch_cpa"
SHARED = {"config", "errors", "secrets", "logs", "durations"}
# How the application publishes its statistics to the daemon: the cache's and the archiver's.
WIRE_FORMATS = {"pgwatch_cpa.cpa.cache.stats", "pgwatch_cpa.cpa.archive.stats"}

# room -> rooms it must never import
FORBIDDEN = {
    "cpa": {"daemon", "collectors", "alerts", "demo", "cli", "sandbox", "report", *SHARED},
    "sandbox": {"daemon", "collectors", "alerts", "demo", "cli", "cpa", "config"},
    "collectors": {"daemon", "demo", "cli", "alerts"},
    "alerts": {"daemon", "demo", "cli", "collectors", "cpa"},
    "daemon": {"demo", "cli"},
    "report": {"daemon", "demo", "cli"},
    **{room: {"daemon", "collectors", "alerts", "demo", "cli", "cpa"} for room in SHARED},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.startswith("pgwatch_cpa.")}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violations(modules: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in sorted(modules.items()):
        own = room(module)
        for name in sorted(imported):
            if room(name) in FORBIDDEN.get(own, set()):
                found.append(f"{module} imports {name}")
            elif room(name) == "cpa" and own not in {"cpa", "demo", "cli"} and name not in WIRE_FORMATS:
                found.append(f"{module} reaches the application through {name}, not {sorted(WIRE_FORMATS)}")
    return found


def package_modules() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_imports_flow_one_way() -> None:
    assert violations(package_modules()) == []


@pytest.mark.parametrize(("module", "imported"), [
    ("pgwatch_cpa.cpa.workload", "pgwatch_cpa.daemon.snapshot"),
    ("pgwatch_cpa.collectors.redis.cpa_cache_stats", "pgwatch_cpa.cpa.cache.service"),
    ("pgwatch_cpa.config.settings", "pgwatch_cpa.alerts.rules"),
    ("pgwatch_cpa.daemon.lifecycle", "pgwatch_cpa.demo.run"),
    ("pgwatch_cpa.report.build", "pgwatch_cpa.daemon.poller"),
    ("pgwatch_cpa.report.redis", "pgwatch_cpa.cpa.cache.service"),
    ("pgwatch_cpa.collectors.redis.cpa_archive_stats", "pgwatch_cpa.cpa.archive.archiver"),
    ("pgwatch_cpa.collectors.redis.cpa_archive_stats", "pgwatch_cpa.cpa.archive"),
    ("pgwatch_cpa.cpa.archive.archiver", "pgwatch_cpa.collectors.base"),
])
def test_a_wrong_way_import_is_reported(module: str, imported: str) -> None:
    assert violations({module: {imported}}), f"{module} -> {imported} should be refused"


def test_the_package_root_holds_only_shared_modules_and_the_entry_points() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "cli", "sandbox", *SHARED - {"config"}}
