"""The built wheel, installed alone in a fresh virtualenv, is a complete daemon: the shipped alerts.yml, the Grafana
dashboards and provisioning are inside it (issue 15: before, they existed only beside an editable checkout).

The wheel is built with ``pip wheel`` from a copy of the source tree (so the test never writes build/ into the
checkout, and the copy's relative symlinks under pgwatch_cpa/shipped/ are what the build follows), installed with
``--no-deps --no-index`` into a new virtualenv, and used from a directory outside the repository.

Dependencies: the new virtualenv gets the third-party packages of the project's .venv through one ``.pth`` line
(a plain directory line: the .venv's own .pth files, among them the editable install's import hook, are not
run). That keeps the test offline and fast (resolving and installing psycopg, aiohttp, pydantic... from the index
takes minutes); it cannot hide a missing file, because ``pgwatch_cpa`` itself is imported from the new
virtualenv's site-packages (asserted), never from the checkout, and ``pip check`` in the new environment checks
the wheel's declared dependencies against what is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "pgwatch_cpa" / "shipped"
PRIVILEGES = ("monitoring_role.sql", "redis_acl.txt")
SOURCES = ("pyproject.toml", "setup.py", "README.md", "alerts.yml", "pgwatch_cpa", "grafana/dashboards",
           "grafana/provisioning")


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """(the new virtualenv, an environment for it, a working directory outside the repository)."""
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    src = root / "src"
    for rel in SOURCES:
        source = REPO / rel
        if source.is_dir():
            shutil.copytree(source, src / rel, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / rel)
    dist = root / "dist"
    ok(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], root, env))
    (wheel,) = dist.glob("pgwatch_cpa-*.whl")

    venv = root / "venv"
    ok(run([sys.executable, "-m", "venv", str(venv)], root, env))
    python = venv / "bin" / "python"
    site = Path(ok(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root,
                       env)).stdout.strip())
    (site / "_pgwatch_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    ok(run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], root, env))
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return venv, env, elsewhere


def test_the_package_comes_from_the_wheel_not_the_checkout(installed: tuple[Path, dict[str, str], Path]) -> None:
    venv, env, cwd = installed
    out = ok(run([str(venv / "bin" / "python"), "-c", "import pgwatch_cpa; print(pgwatch_cpa.__file__)"], cwd, env))
    assert Path(out.stdout.strip()).is_relative_to(venv), out.stdout
    check = run([str(venv / "bin" / "python"), "-m", "pip", "check"], cwd, env)
    assert "pgwatch-cpa" not in check.stdout.lower(), f"the wheel's dependencies are not satisfied:\n{check.stdout}"


def shipped_rule_count() -> int:
    """The rules of the checkout's alerts.yml, which the wheel ships."""
    return sum(len(g["rules"]) for g in yaml.safe_load((REPO / "alerts.yml").read_text())["groups"])


def test_check_config_with_the_shipped_rules(installed: tuple[Path, dict[str, str], Path]) -> None:
    venv, env, cwd = installed
    config = cwd / "config.yaml"
    config.write_text("redis: [{name: cache, url: 'redis://127.0.0.1:6379/0'}]\n"
                      "alerting: {rules: ['builtin:alerts.yml']}\n")
    out = ok(run([str(venv / "bin" / "pgwatch-cpa"), "check-config", str(config)], cwd, env))
    assert f"{shipped_rule_count()} alert rules" in out.stdout, out.stdout

    config.write_text("custom_queries: ['builtin:cpa_business.yaml']\n")  # the shipped query file is in the wheel
    ok(run([str(venv / "bin" / "pgwatch-cpa"), "check-config", str(config)], cwd, env))

    config.write_text("alerting: {rules: ['builtin:nope.yml']}\n")
    bad = run([str(venv / "bin" / "pgwatch-cpa"), "check-config", str(config)], cwd, env)
    assert bad.returncode == 2 and "builtin:alerts.yml" in bad.stderr, bad.stderr


def test_export_assets_writes_rules_promtool_accepts_and_the_dashboards(
        installed: tuple[Path, dict[str, str], Path]) -> None:
    promtool = require_tool("promtool")
    venv, env, cwd = installed
    out = cwd / "assets"
    ok(run([str(venv / "bin" / "pgwatch-cpa"), "export-assets", "--to", str(out)], cwd, env))
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    sources = {"alerts.yml": REPO / "alerts.yml", **{name: SHIPPED / name for name in PRIVILEGES},
               **{str(p.relative_to(REPO)): p for p in (REPO / "grafana" / "dashboards").glob("*.json")},
               **{str(p.relative_to(REPO)): p for p in (REPO / "grafana" / "provisioning").rglob("*") if p.is_file()}}
    assert written == sorted(sources)
    for rel in written:
        assert (out / rel).read_bytes() == sources[rel].read_bytes(), f"{rel} differs from the repository's"
    result = ok(run([promtool, "check", "rules", str(out / "alerts.yml")], cwd, env))
    assert f"SUCCESS: {shipped_rule_count()} rules found" in result.stdout + result.stderr


def test_the_installed_package_exposes_the_dashboards(installed: tuple[Path, dict[str, str], Path]) -> None:
    venv, env, cwd = installed
    code = ("import json; from pgwatch_cpa import shipped; "
            "print(json.dumps({'rules': str(shipped.rules_path()), "
            "'dashboards': {n: json.loads(f.read_text())['title'] for n, f in shipped.dashboards().items()}, "
            "'provisioning': sorted(shipped.provisioning()), 'acl': shipped.redis_acl_rule(), "
            "'sql': shipped.privileges_script().read_text()}))")
    found = json.loads(ok(run([str(venv / "bin" / "python"), "-c", code], cwd, env)).stdout)
    assert Path(found["rules"]).is_relative_to(venv)
    assert sorted(found["dashboards"]) == sorted(p.name for p in (REPO / "grafana" / "dashboards").glob("*.json"))
    assert all(found["dashboards"].values())
    assert found["provisioning"] == ["dashboards/pgwatch-cpa.yaml", "datasources/pgwatch-cpa.yaml"]
    assert found["acl"].startswith("ACL SETUSER pgwatch ") and "CONNECTION LIMIT 5" in found["sql"]
