"""A structure-aware fuzzer of `check-config` (issue 15): configs and rule files built from the grammar of the real
keys, filled with hostile values (huge and negative numbers, NaN, infinities, wrong types, deep nesting, bad
unicode, long strings, ambiguous URIs, pathological regexes and PromQL), sometimes mangled at the byte level.

Whatever the input, check-config returns 0 or 2 with a message on stderr: never an exception, a traceback or
an "internal error" (exit 1, the CLI's net for a bug in a loader).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwatch_cpa.alerts.promql.functions import FUNCTIONS
from pgwatch_cpa.cli import main
from pgwatch_cpa.config.alerting import AlertingSettings, AlertmanagerReceiverSettings, WebhookReceiverSettings
from pgwatch_cpa.config.settings import CollectorSettings, PostgresTarget, RedisTarget, Settings

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))

# ------------------------------------------------------------------------------------------------ values

HUGE = st.sampled_from([10**30, -(10**30), 2**63, -(2**63) - 1, 10**300, 1e308, -1e308, 1e-320])
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
TEXT = st.text(max_size=40)  # any code point: control characters, lone surrogates are escaped by the dumper
LONG = st.integers(1_000, 200_000).map(lambda n: "x" * n)
DURATIONS = st.sampled_from(["0", "0s", "1ms", "15s", "5m", "1h30m", "2d", "1000y", "-1s", "1e12", ".nan", "nan",
                             "inf", "15", "1.5s", "500ms", "999999999999999999999h", "", " ", "1h 30m", "15x"])
URLS = st.sampled_from([
    "postgresql://u:p@ss@host/db", "postgresql://u:pw@db/cpa", "postgres://u:p%40ss@db/cpa", "host=db user=u",
    "redis://cache:6379/0", "redis://:pw@x@cache:6379/0", "rediss://c:99999", "unix:///tmp/r.sock",
    "http://hooks.example.com/x", "https://", "not a url", "ftp://x", "http://[::1", "http://h:0/x", "//h/x",
    "postgresql://[::1/db", "postgresql://u:\x00@h/db", "http://a@b@c/x", "\u202ehttp://x",
])
REGEXES = st.sampled_from([".*", "cpa_.*", "(a+)+b", r"(a)\1", "(?=a)", "a{1001}", "[", "(?x) a", "\\", "é+",
                           "(" * 60 + ")" * 60, "a" * 5000, r"\p{Greek}", "(?P<n>a)"])
PATHS = st.sampled_from(["/nonexistent/dir/state.json", "/", "/dev/null", "/dev/zero", "relative.json", "",
                         ".", "a" * 5000, "/tmp", "/proc/self/mem", "state\x00.json"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), HUGE, FLOATS, TEXT, LONG, DURATIONS, URLS, REGEXES,
                    PATHS)


def nested(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


HOSTILE = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=5),
    st.dictionaries(st.one_of(TEXT, st.integers()), SCALARS, max_size=4),
    st.integers(2, 120).map(nested),
)

# ------------------------------------------------------------------------------------------------ configs


def section(model: type, plausible: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the model's real keys (plus, rarely, an unknown one), each plausible or hostile."""
    keys = {name: st.one_of(plausible.get(name, HOSTILE), HOSTILE) for name in model.model_fields}
    keys["bogus_key"] = HOSTILE
    return st.fixed_dictionaries({}, optional=keys)


NAMES = st.one_of(st.sampled_from(["main", "cache", "a", "main"]), TEXT)
COLLECTORS = st.dictionaries(st.sampled_from(["activity", "statements", "info", "bogus"]),
                             st.one_of(section(CollectorSettings, {"interval": DURATIONS}), HOSTILE), max_size=3)
POSTGRES = section(PostgresTarget, {
    "name": NAMES, "dsn": URLS, "connect_timeout": DURATIONS, "statement_timeout": DURATIONS,
    "lock_timeout": DURATIONS, "interval": DURATIONS, "collectors": COLLECTORS, "password_file": PATHS,
    "discover": st.fixed_dictionaries({}, optional={"include": REGEXES, "exclude": REGEXES}),
    "databases": st.lists(TEXT, max_size=3), "top_n": st.integers(),
})
REDIS = section(RedisTarget, {
    "name": NAMES, "url": URLS, "timeout": DURATIONS, "interval": DURATIONS, "key_scan_budget": DURATIONS,
    "key_families": st.dictionaries(TEXT, st.lists(TEXT, max_size=3), max_size=3), "collectors": COLLECTORS,
})
WEBHOOK = section(WebhookReceiverSettings, {
    "name": NAMES, "type": st.sampled_from(["webhook", "alertmanager", "email"]), "url": URLS,
    "group_wait": DURATIONS, "group_interval": DURATIONS, "repeat_interval": DURATIONS, "timeout": DURATIONS,
    "hmac_secret_file": PATHS, "bearer_token_env": st.sampled_from(["HOME", "PGWATCH_NOPE"]),
})
ALERTMANAGER = section(AlertmanagerReceiverSettings, {
    "name": NAMES, "type": st.just("alertmanager"), "urls": st.lists(URLS, max_size=3),
    "resend_delay": DURATIONS,
})
ALERTING = section(AlertingSettings, {
    "evaluation_interval": DURATIONS, "state_file": PATHS, "external_url": URLS,
    "receivers": st.lists(st.one_of(WEBHOOK, ALERTMANAGER, HOSTILE), max_size=3),
})
CONFIG = section(Settings, {
    "listen": st.sampled_from(["127.0.0.1:9188", ":0", "[::1]:80", "x", "h:65536"]), "interval": DURATIONS,
    "postgres": st.lists(st.one_of(POSTGRES, HOSTILE), max_size=3),
    "redis": st.lists(st.one_of(REDIS, HOSTILE), max_size=3),
    "alerting": st.one_of(ALERTING, HOSTILE), "log_level": st.sampled_from(["info", "trace"]),
})
ENVIRON = st.dictionaries(
    st.sampled_from(["PGWATCH_INTERVAL", "PGWATCH_LISTEN", "PGWATCH_POSTGRES__MAIN__DSN",
                     "PGWATCH_POSTGRES__MAIN__CONNECT_TIMEOUT", "PGWATCH_REDIS__CACHE__TIMEOUT", "PGWATCH_BOGUS",
                     "PGWATCH_ALERTING", "PGWATCH_POSTGRES"]),
    st.one_of(DURATIONS, URLS, st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30))
    .filter(lambda v: "\x00" not in v),  # no environment can hold a NUL byte
    max_size=3)

# ------------------------------------------------------------------------------------------------ rule files

SELECTOR = st.builds(
    lambda name, label, op, value, rng, offset: f"{name}{{{label}{op}{value!r}}}{rng}{offset}".replace("'", '"'),
    st.sampled_from(["up", "pg_up", "x_total", "", "a:b"]), st.sampled_from(["a", "__name__", "job"]),
    st.sampled_from(["=", "!=", "=~", "!~"]), st.one_of(REGEXES, TEXT.filter(lambda s: "'" not in s)),
    st.sampled_from(["", "[5m]", "[1000y]", "[0s]", "[1d]", "[25h]"]),
    st.sampled_from(["", " offset 5m", " offset -2d", " offset 1000y", " @ 100"]),
).map(lambda s: s.replace("{a=''}", ""))
NUMBER = st.one_of(st.integers(-(10**20), 10**20).map(str), st.sampled_from(["NaN", "Inf", "-Inf", "0x1f", "1e400"]))


def _grow(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", children,
                  st.sampled_from(["+", "-", "*", "/", "%", "^", "==", ">", "<=", "and", "or", "unless",
                                   "> bool", "+ on(a) group_left", "atan2"]), children),
        st.builds(lambda f, a: f"{f}({a})", st.sampled_from([*FUNCTIONS, "label_replace", "sort", "holt_winters"]),
                  children),
        st.builds(lambda agg, a, by: f"{agg}{by}({a})", st.sampled_from(["sum", "avg", "max", "topk", "count"]),
                  children, st.sampled_from(["", " by (a)", " without (job)"])),
        children.map(lambda a: f"({a})"),
        children.map(lambda a: f"-{a}"),
    )


PROMQL = st.one_of(
    st.recursive(st.one_of(SELECTOR, NUMBER), _grow, max_leaves=12),
    st.integers(1, 6000).map(lambda n: " + ".join(["a"] * n)),
    st.integers(1, 25_000).map(lambda n: "(" * n + "a" + ")" * n),
    st.integers(1, 5000).map(lambda n: "-" * n + "a"),
    TEXT, LONG, st.integers(), FLOATS, st.none(), st.lists(TEXT, max_size=2),
)
TEMPLATE = st.one_of(TEXT, LONG, st.sampled_from(["{{ $labels.target }}", "{{ $value | humanize }}", "{{", "}}",
                                                  "{{ printf \"%.9999f\" $value }}", "{{ .Labels.x }}",
                                                  "{{ $value | humanizeDuration }}", "{{" * 1000]), HOSTILE)
RULE = st.fixed_dictionaries({}, optional={
    "alert": st.one_of(st.sampled_from(["A", "B", "A"]), TEXT, HOSTILE), "expr": PROMQL,
    "for": st.one_of(DURATIONS, HOSTILE), "keep_firing_for": DURATIONS,
    "labels": st.dictionaries(st.one_of(st.sampled_from(["severity", "__name__", "9x"]), TEXT), TEMPLATE,
                              max_size=3),
    "annotations": st.dictionaries(st.sampled_from(["summary", "description"]), TEMPLATE, max_size=2),
    "record": st.just("x"), "bogus": HOSTILE,
})
GROUP = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.sampled_from(["g", "g", "h"]), TEXT, HOSTILE),
    "interval": st.one_of(DURATIONS, HOSTILE), "rules": st.one_of(st.lists(st.one_of(RULE, HOSTILE), max_size=4),
                                                                  HOSTILE),
    "limit": HOSTILE,
})
RULES = st.one_of(st.fixed_dictionaries({}, optional={"groups": st.one_of(st.lists(GROUP, max_size=3), HOSTILE),
                                                      "bogus": HOSTILE}), HOSTILE)

# ------------------------------------------------------------------------------------------------ bytes

MANGLE = st.one_of(
    st.just(None),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00",
                                                                    b"\x1b", b"\t", b"\xef\xbb\xbf"])),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.just("append"), st.just(0.0), st.sampled_from([b"\ninterval: 15s\ninterval: 20s\n",
                                                                b"\n" + b"[" * 3000, b"\n&a x: *b\n", b"\n? [a]\n: 1\n",
                                                                b"\n- - -\n", b"\n...\n---\nb: 1\n",
                                                                b"\nx: !!python/object:os.system ls\n"])),
)


def render(doc: Any, mangle: Any) -> bytes:
    data = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=200).encode("utf-8", "surrogatepass")
    if mangle is None:
        return data
    how, where, extra = mangle
    at = int(len(data) * where)
    if how == "insert":
        return data[:at] + extra + data[at:]
    if how == "truncate":
        return data[:at]
    return data + extra


def check_config(config: bytes, rules: bytes | None, environ: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(config)
        if rules is not None:
            (Path(tmp) / "rules.yml").write_bytes(rules)
        out, err = io.StringIO(), io.StringIO()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PGWATCH_") or k == "PGWATCH_REQUIRE_ALL"}
        with mock.patch.dict(os.environ, {**clean, **environ}, clear=True), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check-config", str(path)])
    text = err.getvalue()
    assert code in (0, 2), f"exit {code}: {text}"
    assert "Traceback" not in text + out.getvalue() and "internal error" not in text, text
    if code == 2:
        assert text.startswith("error: ") and len(text.splitlines()) <= 60, text
    else:
        assert out.getvalue().endswith(": OK (" + out.getvalue().split(": OK (", 1)[1])


@FUZZ
@given(doc=CONFIG, mangle=MANGLE, environ=ENVIRON)
def test_check_config_never_fails_on_a_hostile_config(doc, mangle, environ):
    check_config(render(doc, mangle), None, environ)


@FUZZ
@given(rules=RULES, mangle=MANGLE, interval=st.one_of(st.just("15s"), DURATIONS))
def test_check_config_never_fails_on_a_hostile_rule_file(rules, mangle, interval):
    config = yaml.safe_dump({"interval": interval, "alerting": {"rules": ["rules.yml"]}}).encode()
    check_config(config, render(rules, mangle), {})
