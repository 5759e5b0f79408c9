"""A small, safe subset of Go text/template, as Prometheus uses it in alert labels and annotations.

Supported: literal text; actions ``{{ pipeline }}`` with ``{{-``/``-}}`` trimming and ``{{/* comments */}}``;
operands ``$labels.name``, ``.Labels.name``, ``$value``, ``.Value``, ``$externalLabels.name``, string and number
literals; calls ``fn arg...`` and pipes ``x | fn arg...`` of the functions in FUNCTIONS. Anything else (if/range,
variables, unknown functions such as ``query``) is rejected when the rule file is loaded, never at alert time.

Output matches Go: ``{{ $value }}`` prints a float as Go's %v does (1e+06, 0.1), a missing label prints
``<no value>``, and the humanize* functions follow Prometheus's template package.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from pgwatch_cpa.errors import PgwatchError


class TemplateError(PgwatchError):
    """A template outside the supported subset, or one that does not parse."""


# ---------------------------------------------------------------------------------------------------------------
# Go float formatting


def _digits(v: float) -> tuple[str, int]:
    """Shortest round-trip digits of |v| and the decimal exponent of the first digit (as strconv computes)."""
    _, digits, exp = Decimal(repr(abs(v))).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    return text, len(digits) + int(exp) - 1


def _special(v: float) -> str | None:
    if v != v:
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return None


def _exp_form(sign: str, digits: str, exp: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def go_float(v: float) -> str:
    """fmt's %v (and %g) of a float64: shortest round-trip digits, exponent form when exp < -4 or exp >= 6."""
    special = _special(v)
    if special:
        return special
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    sign = "-" if v < 0 else ""
    digits, exp = _digits(v)
    if exp < -4 or exp >= 6:  # strconv 'g' with shortest precision decides with precision 6
        return _exp_form(sign, digits, exp)
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    if exp + 1 >= len(digits):
        return sign + digits + "0" * (exp + 1 - len(digits))
    return f"{sign}{digits[:exp + 1]}.{digits[exp + 1:]}"


def go_float_e(v: float) -> str:
    """strconv.FormatFloat(v, 'e', -1, 64): the /api/v1/alerts "value" field."""
    special = _special(v)
    if special:
        return special
    if v == 0:
        return "-0e+00" if math.copysign(1.0, v) < 0 else "0e+00"
    digits, exp = _digits(v)
    return _exp_form("-" if v < 0 else "", digits, exp)


def go_g(v: float, prec: int) -> str:
    """fmt's %.<prec>g."""
    special = _special(v)
    if special:
        return special
    return f"{v:.{prec}g}"  # same rule as Go: exponent form when exp < -4 or exp >= prec


# ---------------------------------------------------------------------------------------------------------------
# Prometheus template functions


def _to_float(x: object) -> float:
    if isinstance(x, bool):
        raise TemplateError("can't convert bool to float")
    if isinstance(x, int | float):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            raise TemplateError(f"strconv.ParseFloat: parsing {x!r}: invalid syntax") from None
    raise TemplateError(f"can't convert {type(x).__name__} to float")


def _scale_small(v: float, suffix: str = "") -> str:
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return f"{go_g(v, 4)}{prefix}{suffix}"


def humanize(x: object) -> str:
    v = _to_float(x)
    if v == 0 or not math.isfinite(v):
        return go_g(v, 4)
    if abs(v) >= 1:
        prefix = ""
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix = p
            v /= 1000
        return go_g(v, 4) + prefix
    return _scale_small(v)


def humanize1024(x: object) -> str:
    v = _to_float(x)
    if abs(v) <= 1 or not math.isfinite(v):
        return go_g(v, 4)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix = p
        v /= 1024
    return go_g(v, 4) + prefix


def humanize_duration(x: object) -> str:
    v = _to_float(x)
    if not math.isfinite(v):
        return go_g(v, 4)
    if v == 0:
        return go_g(v, 4) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        d = int(v)
        seconds, minutes, hours, days = d % 60, (d // 60) % 60, (d // 3600) % 24, d // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{go_g(v, 4)}s"
    return _scale_small(v, "s")


def humanize_percentage(x: object) -> str:
    return go_g(_to_float(x) * 100, 4) + "%"


_PRINTF_VERB = re.compile(r"%([-+ #0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def printf(fmt: str, *args: object) -> str:
    """Go's Sprintf for the verbs alert texts use: %s %v %d %f %e %g %q %%."""
    values = list(args)

    def one(m: re.Match[str]) -> str:
        flags, width, prec, verb = m.groups()
        if verb == "%":
            return "%"
        if not values:
            return f"%!{verb}(MISSING)"
        arg = values.pop(0)
        return _printf_one(flags, width, prec, verb, arg)

    return _PRINTF_VERB.sub(one, fmt)


def _printf_one(flags: str, width: str | None, prec: str | None, verb: str, arg: object) -> str:
    spec = flags + (width or "")
    if verb in "fFeE" and isinstance(arg, int | float) and not isinstance(arg, bool):
        special = _special(float(arg))
        body = special if special else format(float(arg), f"{spec}.{prec or 6}{verb}")
        return body.rjust(int(width or 0))
    if verb in "gG" and isinstance(arg, int | float):
        body = go_g(float(arg), int(prec)) if prec else go_float(float(arg))
        return body.rjust(int(width or 0))
    if verb == "d" and isinstance(arg, int) and not isinstance(arg, bool):
        return format(arg, spec + "d")
    if verb in "sv":
        return _text(arg).rjust(int(width or 0))
    if verb == "q" and isinstance(arg, str):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"%!{verb}({_go_type(arg)}={_text(arg)})"


def _go_type(arg: object) -> str:
    return {float: "float64", int: "int", str: "string"}.get(type(arg), type(arg).__name__)


def _text(v: object) -> str:
    if isinstance(v, float):
        return go_float(v)
    if v is None:
        return "<no value>"
    return str(v)


FUNCTIONS: dict[str, Callable[..., str]] = {
    "humanize": humanize,
    "humanize1024": humanize1024,
    "humanizeDuration": humanize_duration,
    "humanizePercentage": humanize_percentage,
    "printf": printf,
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "title": lambda s: str(s).title(),
}


# ---------------------------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class _Operand:
    kind: str  # "label" | "value" | "external" | "literal"
    key: str = ""  # the label name of "label" and "external"
    literal: object = None

    def resolve(self, labels: Mapping[str, str], value: float, external: Mapping[str, str]) -> object:
        if self.kind == "literal":
            return self.literal
        if self.kind == "value":
            return value
        source = labels if self.kind == "label" else external
        return source.get(self.key)  # None prints "<no value>", as Go's missing key


@dataclass(frozen=True)
class _Command:
    func: str | None
    args: tuple[_Operand, ...]


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|`[^`]*`|\||[^\s|]+)')
_FIELD = re.compile(r"^(\$labels|\.Labels|\$externalLabels|\.ExternalLabels)\.([A-Za-z_][A-Za-z0-9_]*)$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class Template:
    """A parsed template; render() never raises for a template that parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[str | list[_Command]] = _parse(text)

    @property
    def uses_value(self) -> bool:
        return any(op.kind == "value" for p in self.parts if isinstance(p, list) for c in p for op in c.args)

    @property
    def is_static(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def render(self, labels: Mapping[str, str], value: float, external: Mapping[str, str] | None = None) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            try:
                out.append(_text(_run(part, labels, value, external or {})))
            except TemplateError as exc:  # Prometheus puts the error text in place of the result
                return f"<error expanding template: {exc}>"
        return "".join(out)


def _run(pipeline: list[_Command], labels: Mapping[str, str], value: float, external: Mapping[str, str]) -> object:
    result: object = None
    for i, cmd in enumerate(pipeline):
        args = [op.resolve(labels, value, external) for op in cmd.args]
        if i > 0:
            args.append(result)
        result = args[0] if cmd.func is None else FUNCTIONS[cmd.func](*args)
    return result


def _parse(text: str) -> list[str | list[_Command]]:
    parts: list[str | list[_Command]] = []
    pos = 0
    for m in _ACTION.finditer(text):
        literal = text[pos:m.start()]
        if m.group(1):
            literal = literal.rstrip()
        parts.append(literal)
        pos = m.end()
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
        body = m.group(2).strip()
        if body.startswith("/*") and body.endswith("*/"):
            continue
        parts.append(_parse_pipeline(body))
    tail = text[pos:]
    if "{{" in tail or "}}" in tail:
        raise TemplateError(f"unbalanced braces in template {text!r}")
    parts.append(tail)
    return [p for p in parts if p != ""]


def _parse_pipeline(body: str) -> list[_Command]:
    if not body:
        raise TemplateError("empty action {{ }}")
    tokens = [t for t in _TOKEN.findall(body) if t]
    commands: list[_Command] = []
    current: list[str] = []
    for tok in [*tokens, "|"]:
        if tok != "|":
            current.append(tok)
            continue
        if not current:
            raise TemplateError(f"missing command in pipeline {{{{ {body} }}}}")
        commands.append(_parse_command(current, body, first=not commands))
        current = []
    return commands


def _parse_command(tokens: list[str], body: str, first: bool) -> _Command:
    head = tokens[0]
    if head in FUNCTIONS:
        return _Command(head, tuple(_parse_operand(t, body) for t in tokens[1:]))
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", head):
        raise TemplateError(f'unsupported template function or keyword "{head}" in {{{{ {body} }}}}')
    if len(tokens) > 1 or not first:
        raise TemplateError(f"cannot parse {{{{ {body} }}}}")
    return _Command(None, (_parse_operand(head, body),))


def _parse_operand(tok: str, body: str) -> _Operand:
    if tok in ("$value", ".Value"):
        return _Operand("value")
    m = _FIELD.match(tok)
    if m:
        return _Operand("label" if m.group(1) in ("$labels", ".Labels") else "external", key=m.group(2))
    if tok.startswith('"') and tok.endswith('"') and len(tok) >= 2:
        return _Operand("literal", literal=_unquote(tok[1:-1]))
    if tok.startswith("`") and tok.endswith("`") and len(tok) >= 2:
        return _Operand("literal", literal=tok[1:-1])
    if _NUMBER.match(tok):
        return _Operand("literal", literal=int(tok) if re.fullmatch(r"[-+]?\d+", tok) else float(tok))
    raise TemplateError(f"unsupported operand {tok!r} in {{{{ {body} }}}}")


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s)
