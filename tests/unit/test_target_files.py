"""Targets files (postgres_files, redis_files): read, merged into the config, problems named by file and entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgwatch_cpa.config import load_settings, settings_from_mapping
from pgwatch_cpa.config.target_files import fingerprint
from pgwatch_cpa.errors import ConfigError

DSN = "postgresql://monitor@db.internal/cpa"


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems(path: Path, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=environ or {})
    return info.value.problems


def test_file_targets_join_the_inline_ones_relative_to_the_config(tmp_path):
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "b.yml").write_text(f"- {{name: b1, dsn: '{DSN}', interval: 30s}}\n")
    (tmp_path / "targets" / "a.json").write_text(json.dumps([{"name": "a1", "dsn": DSN}]))
    (tmp_path / "cache.yml").write_text("- {name: cache, url: 'redis://cache.internal:6379/0'}\n")
    path = config(tmp_path, f"postgres: [{{name: inline, dsn: '{DSN}'}}]\n"
                            "postgres_files: ['targets/*']\nredis_files: [cache.yml]\n")
    settings = load_settings(path, environ={})
    assert [t.name for t in settings.postgres] == ["inline", "a1", "b1"]  # files in name order
    assert settings.postgres[2].interval == 30.0
    assert [t.name for t in settings.redis] == ["cache"]
    assert settings.postgres_files == [str(tmp_path / "targets" / "*")]  # kept absolute, for the watcher


def test_a_glob_may_match_nothing_but_a_named_file_must_exist(tmp_path):
    path = config(tmp_path, "postgres_files: ['none/*.yml']\n")
    assert load_settings(path, environ={}).postgres == []
    path = config(tmp_path, "postgres_files: [missing.yml]\n")
    assert problems(path) == [f"postgres_files: {tmp_path / 'missing.yml'}: no such file"]


def test_problems_are_named_by_file_and_entry_and_secrets_stay_out(tmp_path):
    targets = tmp_path / "fleet.yml"
    targets.write_text(f"- {{name: ok, dsn: '{DSN}'}}\n"
                       "- {name: bad, dsn: 'postgresql://u:Sup3rS3cret@db/x', colour: blue}\n"
                       f"- {{name: inline, dsn: '{DSN}'}}\n")
    path = config(tmp_path, f"postgres: [{{name: inline, dsn: '{DSN}'}}]\npostgres_files: [fleet.yml]\n")
    found = problems(path)
    assert f"{targets}[1].colour: unknown key" in found
    assert f"{targets}[2].name: duplicate target name 'inline' (first used at postgres[0])" in found
    assert "Sup3rS3cret" not in "\n".join(found)


@pytest.mark.parametrize(("text", "expected"), [
    ("{name: a}\n", "expected a list of targets"),
    ("- {name: a, dsn: \n", "invalid YAML"),
    (b"- \xff\n", "not valid UTF-8"),
])
def test_a_file_that_is_not_a_list_of_targets_is_refused_with_its_path(tmp_path, text, expected):
    targets = tmp_path / "fleet.yml"
    targets.write_bytes(text if isinstance(text, bytes) else text.encode())
    found = problems(config(tmp_path, "postgres_files: [fleet.yml]\n"))
    assert len(found) == 1 and found[0].startswith(f"{targets}: ") and expected in found[0], found


def test_an_empty_file_holds_no_targets(tmp_path):
    (tmp_path / "fleet.yml").write_text("")
    assert load_settings(config(tmp_path, "postgres_files: [fleet.yml]\n"), environ={}).postgres == []


def test_environment_overrides_reach_file_targets(tmp_path):
    (tmp_path / "fleet.yml").write_text(f"- {{name: org-7, dsn: '{DSN}'}}\n")
    path = config(tmp_path, "postgres_files: [fleet.yml]\n")
    settings = load_settings(path, environ={"PGWATCH_POSTGRES__ORG_7__INTERVAL": "45s"})
    assert settings.postgres[0].interval == 45.0


def test_bad_patterns_are_config_errors():
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"postgres_files": "targets/*.yml", "redis_files": [""],
                               "target_files_check_interval": "0s"}, {})
    text = "\n".join(info.value.problems)
    assert "postgres_files: Input should be a valid list" in text
    assert "redis_files[0]: expected the path or glob of a targets file" in text
    assert "target_files_check_interval: must be between 1s and 1h" in text


def test_fingerprint_changes_with_content_and_matches(tmp_path):
    pattern = str(tmp_path / "*.yml")
    empty = fingerprint([pattern])
    (tmp_path / "a.yml").write_text("[]\n")
    one = fingerprint([pattern])
    (tmp_path / "a.yml").write_text("- {name: a}\n")
    assert empty == () and one != empty and fingerprint([pattern]) != one
