"""Hostile and careless input (issue 15): refused with exit 2 and a message naming what and where, never a
traceback, a crash, a hang or a leaked secret. Each test failed on the code before the fix."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pytest

from pgwatch_cpa.alerts.history import History
from pgwatch_cpa.alerts.promql import Evaluator
from pgwatch_cpa.alerts.rules import RuleError, load_rules, parse_rules
from pgwatch_cpa.cli import main
from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.config.settings import DiscoverSettings
from pgwatch_cpa.durations import parse_config_duration
from pgwatch_cpa.errors import ConfigError
from pgwatch_cpa.secrets import MASK, RedactingFilter, mask_dsn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_pgwatch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """check-config reads the process environment: no stray PGWATCH_* override may change the outcome."""
    import os

    for var in list(os.environ):
        if var.startswith("PGWATCH_") and var != "PGWATCH_REQUIRE_ALL":
            monkeypatch.delenv(var)


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """check-config through the CLI: (exit code, stderr). An exception escaping main fails the test."""
    code = main(["check-config", str(path)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return code, out.err


def refused(path: Path, capsys: pytest.CaptureFixture[str], *expected: str, culprit: Path | None = None) -> str:
    """check-config exits 2; stderr names the culprit file (the config unless given) and holds ``expected``."""
    code, err = check(path, capsys)
    assert code == 2, err
    assert str(culprit or path) in err, f"the message names the file: {err}"
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    return err


def config_file(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def rule_file(tmp_path: Path, expr: str, name: str = "rules.yml") -> Path:
    path = tmp_path / name
    path.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: '" + expr.replace("'", "''")
                    + "'\n")
    return path


def with_rules(tmp_path: Path, rules: Path) -> Path:
    return config_file(tmp_path, f"alerting:\n  rules: [{rules.name}]\n")


def problems_of(raw: dict, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(raw, environ or {})
    return info.value.problems


PG = {"name": "main", "dsn": "postgresql://monitor@db/cpa"}
REDIS = {"name": "cache", "url": "redis://cache:6379/0"}
HOOK = {"name": "hook", "type": "webhook", "url": "https://hooks.example.com/x"}
AM = {"name": "am", "type": "alertmanager", "urls": ["http://am:9093"]}


# ------------------------------------------------------------------------------------------------ files


def test_config_that_is_not_utf8_is_refused_with_its_line(tmp_path, capsys):
    path = config_file(tmp_path, b"interval: 15s\nlisten: \"\xff\xfe\"\n")
    refused(path, capsys, "line 2", "not valid UTF-8")


@pytest.mark.parametrize("nested", ["[" * 5000 + "]" * 5000, "{a: " * 5000 + "1" + "}" * 5000,
                                    "[" * 200 + "]" * 200])
def test_config_nested_thousands_of_levels_is_refused(tmp_path, capsys, nested):
    refused(config_file(tmp_path, f"interval: 15s\nlisten: {nested}\n"), capsys, "invalid YAML", "nest")


def test_config_nested_in_block_style_is_refused(tmp_path, capsys):
    text = "".join(" " * i + "a:\n" for i in range(400))
    refused(config_file(tmp_path, text), capsys, "nested more than 50 levels deep")


def test_config_larger_than_1_mib_is_refused(tmp_path, capsys):
    path = config_file(tmp_path, "interval: 15s\n" + "# padding\n" * 110_000)
    refused(path, capsys, "larger than 1 MiB")


def test_config_with_duplicate_keys_names_the_line(tmp_path, capsys):
    path = config_file(tmp_path, "interval: 15s\nlisten: 127.0.0.1:9188\ninterval: 20s\n")
    refused(path, capsys, "line 3", "duplicate key 'interval' (first at line 1)")
    nested = config_file(tmp_path, "redis:\n  - name: a\n    url: redis://a\n    timeout: 1s\n    timeout: 2s\n",
                         "nested.yaml")
    refused(nested, capsys, "line 5", "duplicate key 'timeout'")


def test_config_alias_bomb_is_refused_quickly(tmp_path, capsys):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    path = config_file(tmp_path, "\n".join(lines) + "\n")
    started = time.monotonic()
    refused(path, capsys, "more than 200,000 keys and values")
    assert time.monotonic() - started < 10


def test_config_integer_of_5000_digits_is_refused(tmp_path, capsys):
    refused(config_file(tmp_path, "interval: " + "9" * 5000 + "\n"), capsys, "invalid YAML value")


def test_rule_file_that_is_not_utf8_is_refused(tmp_path, capsys):
    rules = tmp_path / "rules.yml"
    rules.write_bytes(b"groups:\n  - name: g\n    rules: []\n# \xff\n")
    err = refused(with_rules(tmp_path, rules), capsys, "line 4", "not valid UTF-8", culprit=rules)
    assert "UnicodeDecodeError" not in err


@pytest.mark.parametrize("text", ["groups: " + "[" * 5000 + "]" * 5000 + "\n",
                                  "groups: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
                                  "groups: " + "[" * 300 + "]" * 300 + "\n"])
def test_rule_file_nested_thousands_of_levels_is_refused(tmp_path, capsys, text):
    rules = tmp_path / "rules.yml"
    rules.write_text(text)
    refused(with_rules(tmp_path, rules), capsys, "invalid YAML", "nest", culprit=rules)


def test_rule_file_larger_than_4_mib_is_refused(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text("groups: []\n" + "#" * (4 * 1024 * 1024))
    with pytest.raises(RuleError, match="larger than 4 MiB"):
        load_rules(rules)


def test_rule_file_alias_bomb_and_unhashable_key_are_refused():
    lines = ["x: &a [y, y, y, y, y, y, y, y, y, y]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(RuleError, match="keys and values"):
        parse_rules("\n".join(lines) + "\ngroups: []\n")
    with pytest.raises(RuleError, match="a key must be a string"):
        parse_rules("groups:\n  - name: g\n    rules:\n      - {[a]: 1}\n")


# ------------------------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(("text", "message"), [
    ("0", "must be between 1s and 1h, got 0s"),
    ("1ms", "must be between 1s and 1h, got 1ms"),
    (".nan", "duration must be a number, not NaN"),
    (".inf", "duration must be finite"),
    ("-.inf", "duration must be finite"),
    ("2h", "must be between 1s and 1h, got 2h"),
])
def test_interval_out_of_bounds_is_refused(tmp_path, capsys, text, message):
    refused(config_file(tmp_path, f"interval: {text}\n"), capsys, f"interval: {message}")


def test_parse_config_duration_refuses_nan_infinities_and_overflow():
    for value in (math.nan, math.inf, -math.inf, 10**400, "9" * 100 + "s"):
        with pytest.raises(ValueError):
            parse_config_duration(value)


@pytest.mark.parametrize("text", ["0", ".nan", ".inf", "7200", "-1"])
def test_environment_is_refused_exactly_like_the_file(text):
    from_file = problems_of({"interval": __import__("yaml").safe_load(text)})
    from_env = problems_of({"interval": "15s"}, {"PGWATCH_INTERVAL": text})
    assert from_env == from_file
    assert from_env[0].startswith("interval: ")


def test_environment_number_of_seconds_means_what_the_file_means():
    assert settings_from_mapping({}, {"PGWATCH_INTERVAL": "30"}).interval == 30.0
    assert settings_from_mapping({}, {"PGWATCH_INTERVAL": "30s"}).interval == 30.0
    assert problems_of({"redis": [dict(REDIS)]}, {"PGWATCH_REDIS__CACHE__TIMEOUT": "0"}) == [
        "redis[0].timeout: must be between 100ms and 1m, got 0s"]


# Every duration setting: (raw config with the value put at the path, path, below the minimum, above the maximum)
DURATIONS = [
    (lambda v: {"interval": v}, "interval", "999ms", "61m"),
    (lambda v: {"postgres": [{**PG, "interval": v}]}, "postgres[0].interval", "0s", "2h"),
    (lambda v: {"postgres": [{**PG, "connect_timeout": v}]}, "postgres[0].connect_timeout", "0s", "61s"),
    (lambda v: {"postgres": [{**PG, "statement_timeout": v}]}, "postgres[0].statement_timeout", "99ms", "11m"),
    (lambda v: {"postgres": [{**PG, "lock_timeout": v}]}, "postgres[0].lock_timeout", "0s", "2m"),
    (lambda v: {"postgres": [{**PG, "long_query_threshold": v}]}, "postgres[0].long_query_threshold", "0s", "2d"),
    (lambda v: {"postgres": [{**PG, "idle_in_transaction_threshold": v}]},
     "postgres[0].idle_in_transaction_threshold", "0s", "2d"),
    (lambda v: {"postgres": [{**PG, "slow_query_threshold": v}]}, "postgres[0].slow_query_threshold", "0s", "2h"),
    (lambda v: {"postgres": [{**PG, "collectors": {"activity": {"interval": v}}}]},
     "postgres[0].collectors.activity.interval", "0s", "2d"),
    (lambda v: {"redis": [{**REDIS, "interval": v}]}, "redis[0].interval", "0s", "2h"),
    (lambda v: {"redis": [{**REDIS, "timeout": v}]}, "redis[0].timeout", "0s", "2m"),
    (lambda v: {"redis": [{**REDIS, "key_scan_budget": v}]}, "redis[0].key_scan_budget", "0s", "51ms"),
    (lambda v: {"alerting": {"evaluation_interval": v}}, "alerting.evaluation_interval", "0s", "2h"),
    (lambda v: {"alerting": {"receivers": [{**HOOK, "timeout": v}]}}, "alerting.receivers[0].timeout", "0s", "6m"),
    (lambda v: {"alerting": {"receivers": [{**HOOK, "group_wait": v}]}}, "alerting.receivers[0].group_wait",
     None, "2h"),
    (lambda v: {"alerting": {"receivers": [{**HOOK, "group_interval": v}]}},
     "alerting.receivers[0].group_interval", "0s", "2d"),
    (lambda v: {"alerting": {"receivers": [{**HOOK, "repeat_interval": v}]}},
     "alerting.receivers[0].repeat_interval", "0s", "31d"),
    (lambda v: {"alerting": {"receivers": [{**AM, "resend_delay": v}]}}, "alerting.receivers[0].resend_delay",
     "0s", "2h"),
    (lambda v: {"alerting": {"receivers": [{**AM, "timeout": v}]}}, "alerting.receivers[0].timeout", "0s", "6m"),
]


@pytest.mark.parametrize(("raw", "path", "low", "high"), DURATIONS, ids=[d[1] for d in DURATIONS])
def test_every_duration_setting_has_bounds_and_refuses_nan(raw, path, low, high):
    for value in [v for v in (low, high) if v is not None] + [math.nan, math.inf]:
        problems = problems_of(raw(value))
        assert len(problems) == 1 and problems[0].startswith(f"{path}: "), (value, problems)


# ------------------------------------------------------------------------------------------------ values


def test_hostile_values_refused_with_their_paths(tmp_path, capsys):
    path = config_file(tmp_path, f"""
postgres:
  - name: main
    dsn: postgresql://monitor@127.0.0.1:5432/cpa
    connect_timeout: 0
    statement_timeout: 1.0e+12
redis:
  - name: cache
    url: redis://127.0.0.1:6379/0
    timeout: 0
alerting:
  state_file: {tmp_path}/missing/dir/alerts.json
  receivers:
    - {{name: hook, type: webhook, url: 'not a url'}}
    - {{name: am, type: alertmanager, urls: ['am:9093']}}
""")
    refused(path, capsys, "postgres[0].connect_timeout: must be between 500ms and 1m",
            "postgres[0].statement_timeout: must be between 100ms and 10m",
            "redis[0].timeout: must be between 100ms and 1m",
            f"alerting.state_file: directory {tmp_path}/missing/dir does not exist",
            "alerting.receivers[0].url: must be an http:// or https:// URL",
            "alerting.receivers[1].urls[0]: must be an http:// or https:// URL")


@pytest.mark.parametrize("url", ["not a url", "ftp://host/x", "http://", "https:///path", "//host/x",
                                 "http://host:99999/x", "http://a@b@host/x"])
def test_webhook_url_must_be_http_with_a_host(url):
    problems = problems_of({"alerting": {"receivers": [{**HOOK, "url": url}]}})
    assert len(problems) == 1 and problems[0].startswith("alerting.receivers[0].url: "), problems


def test_state_file_that_is_a_directory_is_refused(tmp_path):
    problems = problems_of({"alerting": {"state_file": str(tmp_path)}})
    assert problems == [f"alerting.state_file: {tmp_path} is a directory; name a file in it"]


def test_a_file_with_100000_problems_prints_a_bounded_list(tmp_path, capsys):
    path = config_file(tmp_path, "postgres:\n  - name: a\n    dsn: host=db\n    databases: ["
                       + ", ".join(["1"] * 100_000) + "]\n")
    started = time.monotonic()
    err = refused(path, capsys, "100,000 problem(s)", "... and 99,950 more")
    assert time.monotonic() - started < 20
    assert len(err.splitlines()) <= 60


def test_a_rule_file_with_100000_problems_prints_a_bounded_list(tmp_path, capsys):
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n" + "  - 1\n" * 100_000)
    err = refused(with_rules(tmp_path, rules), capsys, "100,000 problem(s)", "groups[49]: expected a mapping",
                  "... and 99,950 more problems", culprit=rules)
    assert len(err.splitlines()) <= 60


# ------------------------------------------------------------------------------------------------ secrets


def test_uri_with_an_unencoded_at_in_the_password_is_refused_with_a_hint(tmp_path, capsys):
    path = config_file(tmp_path, "postgres:\n  - name: main\n    dsn: postgresql://u:p@ss@host/db\n")
    err = refused(path, capsys, "postgres[0].dsn: more than one '@'", "%40")
    assert "u:p@ss" not in err and "'ss@host'" not in err
    env = problems_of({"postgres": [{"name": "main", "dsn_env": "DSN"}]}, {"DSN": "postgresql://u:pw@x@host/db"})
    assert env == ["postgres[0].dsn_env: more than one '@' before the host: percent-encode '@' in the user name or "
                   "password as %40 (e.g. postgresql://user:p%40ss@host/db)"]
    redis = problems_of({"redis": [{"name": "c", "url": "redis://:pw@x@cache:6379/0"}]})
    assert redis[0].startswith("redis[0].url: more than one '@'")


def test_percent_encoded_at_is_accepted_and_masked():
    settings = settings_from_mapping({"postgres": [{"name": "main", "dsn": "postgresql://u:p%40ss@host/db"}]}, {})
    assert settings.postgres[0].safe_dsn == "postgresql://u:****@host/db"


def test_short_parsed_passwords_are_registered_and_masked_in_credential_position(caplog):
    redactor = RedactingFilter()
    for secret in ("ss", "p", "", None):
        redactor.add(secret)
    assert redactor.short_secrets() == {"ss", "p"}, "every non-empty parsed password is registered"
    logger = logging.getLogger("test.hostile.redact")
    handler = logging.Handler()
    lines: list[str] = []
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(redactor)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting to %s", "postgresql://u:ss@db:5432/cpa")
        logger.warning("connecting to %s", "postgres://u:p@ss@db/cpa and host=db password=ss")
        logger.warning("class pass: the ss of a session, p of a page")
    finally:
        logger.removeHandler(handler)
    assert lines[0] == f"connecting to postgresql://u:{MASK}@db:5432/cpa"
    assert lines[1] == f"connecting to postgres://u:{MASK}@db/cpa and host=db password={MASK}"
    assert lines[2] == "class pass: the ss of a session, p of a page", "short secrets never mask plain words"


def test_mask_dsn_masks_the_whole_ambiguous_password():
    assert mask_dsn("postgresql://u:p@ss@host/db") == "postgresql://u:****@host/db"


# ------------------------------------------------------------------------------------------------ rules


def test_huge_expression_is_refused_before_parsing(tmp_path, capsys):
    rules = rule_file(tmp_path, " + ".join(["a"] * 8000))  # 32 KB: 2.5 GB and 6 s in the parser, then a traceback
    started = time.monotonic()
    refused(with_rules(tmp_path, rules), capsys, 'rules.yml: group "g", rule "A": expr: expression is 31,997 bytes',
            culprit=rules)
    assert time.monotonic() - started < 10


def test_twenty_thousand_parentheses_do_not_abort_the_process():
    with pytest.raises(RuleError, match="bytes long"):
        parse_rules(_rule("(" * 20_000 + "a" + ")" * 20_000))


@pytest.mark.parametrize(("expr", "message"), [
    ("(" * 1000 + "a" + ")" * 1000, "is nested 1000 brackets deep, more than the 32 allowed"),
    ("abs(" * 40 + "a" + ")" * 40, "is nested 40 brackets deep, more than the 32 allowed"),
    (" + ".join(["a"] * 1000), "has 999 operators, more than the 128 allowed; split the rule"),
    ("-" * 3000 + "a", "has 3000 operators, more than the 128 allowed; split the rule"),
])
def test_deep_expressions_within_the_size_limit_are_refused(expr, message):
    with pytest.raises(RuleError) as info:
        parse_rules(_rule(expr))
    assert info.value.problems == [f'alerts.yml: group "g", rule "A": expr: expression {message}']


def test_brackets_and_operators_inside_strings_do_not_count():
    parse_rules(_rule('x{a=~"' + "(" * 40 + "a" + ")" * 40 + '", b!="' + "+" * 200 + '"} > 0'))


@pytest.mark.parametrize(("expr", "message"), [
    ("rate(x[1000y]) > 0", "range [1000y] of x is longer than 1d"),
    ("x offset 1000y", "offset 1000y of x is larger than 1d"),
    ("x offset -2d", "offset -2d of x is larger than 1d"),
    ("sum(rate({__name__=~'x.*'}[2d]))", "range [2d] of the selector is longer than 1d"),
])
def test_ranges_and_offsets_beyond_a_day_are_refused(expr, message):
    with pytest.raises(RuleError) as info:
        parse_rules(_rule(expr))
    assert message in info.value.problems[0] and 'rule "A"' in info.value.problems[0]


def test_a_day_of_range_and_offset_is_accepted():
    parse_rules(_rule("rate(x[1d] offset 1d) > 0"))


def test_regex_matchers_run_in_linear_time():
    rules = parse_rules(_rule('x{a=~"(a+)+b"}'))
    history = History()
    history.ingest([("x", {"a": "a" * 26 + "c"}, 1.0), ("x", {"a": "aab"}, 1.0)], 990.0)
    started = time.monotonic()
    result = Evaluator(history).vector(next(rules.rules()).expr, 1000.0)
    assert time.monotonic() - started < 0.5, "Python's re takes seconds here, doubling per character"
    assert [s.labels["a"] for s in result] == ["aab"]


@pytest.mark.parametrize("regex", ["a{1001}", "(?x) a b"])
def test_regex_outside_re2_is_refused_at_load(regex):
    with pytest.raises(RuleError) as info:
        parse_rules(_rule(f'x{{a=~"{regex}"}}'))
    assert info.value.problems[0].startswith('alerts.yml: group "g", rule "A": regex')
    assert "RE2" in info.value.problems[0]


def test_regex_anchored_like_prometheus():
    rules = parse_rules(_rule('x{a=~"b|c"}'))
    history = History()
    history.ingest([("x", {"a": v}, 1.0) for v in ("b", "c", "bc", "ab", "b\n")], 990.0)
    assert sorted(s.labels["a"] for s in Evaluator(history).vector(next(rules.rules()).expr, 1000.0)) == ["b", "c"]


def test_discover_regexes_use_re2():
    problems = problems_of({"postgres": [{**PG, "discover": {"include": r"(cpa)\1", "exclude": "(?<=a)b"}}]})
    assert [p.split(":")[0] for p in problems] == ["postgres[0].discover.include", "postgres[0].discover.exclude"]
    assert all("RE2" in p for p in problems)
    discover = DiscoverSettings(include="cpa_.*", exclude="cpa_test.*")
    assert [discover.matches(d) for d in ("cpa_1", "cpa_test_1", "xcpa_1", "cpa_1\n")] == [True, False, False, False]
    started = time.monotonic()
    assert not DiscoverSettings(include="(a+)+b").matches("a" * 5000 + "c")
    assert time.monotonic() - started < 0.5


def test_run_refuses_a_bad_config_without_starting(tmp_path, capsys):
    path = config_file(tmp_path, "interval: 0\nlisten: 127.0.0.1:1\n")
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "interval: must be between 1s and 1h" in err and "Traceback" not in err


def test_example_config_still_passes(capsys):
    assert check(ROOT / "config.example.yaml", capsys)[0] == 0


def _rule(expr: str) -> str:
    return "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: '" + expr.replace("'", "''") + "'\n"
