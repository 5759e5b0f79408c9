"""Config: strict, frozen, every problem reported at once with its path, secrets never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pgwatch_cpa.cli import main
from pgwatch_cpa.config import load_settings, settings_from_mapping
from pgwatch_cpa.durations import parse_config_duration
from pgwatch_cpa.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Sup3rS3cretPw"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems_of(raw: dict, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(raw, environ or {})
    return info.value.problems


def test_example_config_is_valid():
    settings = load_settings(ROOT / "config.example.yaml", environ={})
    assert [t.name for t in settings.postgres] == ["main"]
    assert settings.interval == 15.0
    assert settings.postgres[0].lock_timeout == pytest.approx(0.1)


def test_check_config_exit_codes(tmp_path, capsys):
    assert main(["check-config", str(ROOT / "config.example.yaml")]) == 0
    bad = write(tmp_path, "interval: 15x\nlisten: 127.0.0.1:9188\nunknown_key: 1\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "interval: invalid duration '15x'" in err
    assert "unknown_key: unknown key" in err


def test_every_problem_reported_with_its_path():
    problems = problems_of({
        "interval": "soon",
        "postgres": [
            {"name": "main", "dsn": "postgresql://m@db/cpa"},
            {"name": "main", "dsn": "host=db user", "colectors": {}},
        ],
        "redis": [{"name": "cache", "url": "http://cache:6379"}, {"name": "r2"}],
    })
    text = "\n".join(problems)
    assert "interval: invalid duration" in text
    assert "postgres[1].name: duplicate target name 'main'" in text
    assert "postgres[1].dsn: not a valid PostgreSQL" in text
    assert "postgres[1].colectors: unknown key" in text
    assert "redis[0].url: must start with redis://" in text
    assert "redis[1].url: exactly one of url or url_env must be set" in text
    assert len(problems) == 6


def test_wrong_types_and_bad_listen():
    text = "\n".join(problems_of({"listen": "nowhere", "postgres": "main",
                                  "redis": [{"name": "c", "url": "redis://x", "max_connections": "many"}]}))
    assert "listen: listen address 'nowhere' must be HOST:PORT" in text
    assert "postgres: Input should be a valid list" in text
    assert "redis[0].max_connections:" in text


def test_settings_are_frozen():
    settings = settings_from_mapping({"postgres": [{"name": "a", "dsn": "postgresql://m@db/cpa"}]}, {})
    with pytest.raises(ValidationError):
        settings.postgres[0].name = "b"  # type: ignore[misc]


def test_env_overrides_file_values():
    raw = {"interval": "15s", "postgres": [{"name": "main-db", "dsn": "postgresql://m@db/cpa"}]}
    env = {"PGWATCH_INTERVAL": "30s", "PGWATCH_POSTGRES__MAIN_DB__DSN": "postgresql://other@db2/cpa",
           "PGWATCH_PG_BINDIR": "/usr/lib/postgresql/15/bin"}
    settings = settings_from_mapping(raw, env)
    assert settings.interval == 30.0
    assert settings.postgres[0].conninfo == "postgresql://other@db2/cpa"


def test_unknown_env_override_is_an_error():
    text = "\n".join(problems_of({}, {"PGWATCH_INTERVL": "30s", "PGWATCH_REDIS__NOPE__URL": "redis://x"}))
    assert "env PGWATCH_INTERVL: not a known setting" in text
    assert "env PGWATCH_REDIS__NOPE__URL: no redis target named 'nope'" in text


def test_dsn_from_env_and_password_file(tmp_path):
    pwfile = tmp_path / "pw"
    pwfile.write_text(SECRET + "\n")
    raw = {"postgres": [{"name": "a", "dsn_env": "MY_DSN", "password_file": str(pwfile)}],
           "redis": [{"name": "r", "url": "redis://cache:6379/0", "password_file": str(pwfile)}]}
    settings = settings_from_mapping(raw, {"MY_DSN": "postgresql://monitor@db:5432/cpa"})
    assert f"password={SECRET}" in settings.postgres[0].conninfo
    assert SECRET not in settings.postgres[0].safe_dsn
    assert settings.redis[0].resolved_url == f"redis://:{SECRET}@cache:6379/0"
    assert SECRET not in settings.redis[0].safe_url
    missing = "\n".join(problems_of({"postgres": [{"name": "a", "dsn_env": "NOT_SET_ANYWHERE"}]}))
    assert "postgres[0].dsn_env: environment variable NOT_SET_ANYWHERE is not set" in missing


def test_password_never_in_errors_or_repr(tmp_path, capsys):
    bad = write(tmp_path, f"""
postgres:
  - name: a
    dsn: "host=db password={SECRET} user"
  - name: b
    dsn: postgresql://monitor:{SECRET}@db:5432/cpa
    bogus: 1
redis:
  - name: r
    url: "redis://:{SECRET}@cache:notaport/0"
""")
    assert main(["check-config", str(bad)]) == 2
    out = capsys.readouterr()
    assert "postgres[0].dsn" in out.err and "postgres[1].bogus" in out.err and "redis[0].url" in out.err
    assert SECRET not in out.err + out.out
    good = settings_from_mapping({"postgres": [{"name": "b", "dsn": f"postgresql://m:{SECRET}@db/cpa"}]}, {})
    assert SECRET not in repr(good) and SECRET not in str(good.model_dump(exclude={"postgres": {0: {"dsn"}}}))
    assert SECRET not in good.postgres[0].safe_dsn


def test_yaml_syntax_error_names_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "listen: [\n"))
    assert "invalid YAML" in str(info.value) and "line" in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [("15s", 15), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25),
                                               (10, 10), ("1d", 86400)])
def test_durations(text, seconds):
    assert parse_config_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "15", "s", "5 minutes", "-1s", True, None, "1h 30x"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_config_duration(text)


@given(st.lists(st.tuples(st.integers(0, 999), st.sampled_from(["ms", "s", "m", "h"])), min_size=1, max_size=4))
def test_duration_sums_its_parts(parts):
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_config_duration(text) == pytest.approx(sum(n * factor[u] for n, u in parts))


def test_receiver_secrets_come_from_the_injected_environment(tmp_path, monkeypatch):
    """Alerting secrets resolve like DSNs: from the environment the config is validated against, once."""
    rules = tmp_path / "rules.yml"
    rules.write_text("groups: []\n")
    raw = {"alerting": {"rules": [str(rules)], "receivers": [
        {"type": "webhook", "name": "oncall", "url": "http://127.0.0.1:1/hook", "bearer_token_env": "HOOK_TOKEN"},
        {"type": "alertmanager", "name": "am", "urls": ["http://127.0.0.1:2"],
         "basic_auth": {"username": "u", "password_env": "AM_PASSWORD"}},
    ]}}
    monkeypatch.setenv("HOOK_TOKEN", "from-process-env")
    settings = settings_from_mapping(raw, {"HOOK_TOKEN": "injected-token", "AM_PASSWORD": "injected-pw"})
    webhook, alertmanager = settings.alerting.receivers
    assert webhook.bearer_token == "injected-token"
    assert alertmanager.basic_auth is not None and alertmanager.basic_auth.password == "injected-pw"
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(raw, {"HOOK_TOKEN": "x"})
    assert "alerting.receivers[1].basic_auth.password_env: environment variable AM_PASSWORD is not set" in str(
        err.value)
