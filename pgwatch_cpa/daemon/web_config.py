"""``--web.config.file``: TLS and basic auth for the HTTP endpoints, in the Prometheus exporter-toolkit's format.

The keys are the toolkit's (docs/web-configuration.md); one it documents that this daemon does not implement is
refused by name, an unknown one as unknown, so a file never means less here than it does for an exporter::

    tls_server_config:
      cert_file: server.crt              # with key_file: serve HTTPS (paths relative to this file)
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # NoClientCert (default), RequestClientCert,
      client_ca_file: ca.crt                         # VerifyClientCertIfGiven, RequireAndVerifyClientCert
      min_version: TLS12                 # TLS10 .. TLS13 (default TLS12)
      max_version: TLS13
    basic_auth_users:                    # user: bcrypt hash (htpasswd -nBC 10 user)
      prometheus: $2y$10$...

Every path but /healthz and /readyz then needs one of the users. bcrypt is slow on purpose: a verification runs
in a worker thread (two at a time), and a successful one is remembered for a minute, as the toolkit does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import ssl
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
from pydantic import ValidationError

from pgwatch_cpa.config.base import StrictModel
from pgwatch_cpa.config.yamlfile import YamlFileError, read_yaml
from pgwatch_cpa.errors import ConfigError

MAX_WEB_CONFIG_BYTES = 64 * 1024
AUTH_CACHE_SECONDS = 60.0
AUTH_CACHE_ENTRIES = 1024

TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
ClientAuthType = Literal["NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
                         "RequireAndVerifyClientCert"]
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
                 "TLS13": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_NONE,  # asked for, never checked: no-op
           "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Documented by the exporter-toolkit, not implemented here: refused by name rather than silently ignored.
_NOT_SUPPORTED = {
    (): {"http_server_config", "rate_limit"},
    ("tls_server_config",): {"cert", "key", "client_ca", "client_allowed_sans", "cipher_suites",
                             "curve_preferences", "prefer_server_cipher_suites"},
}
_BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
# Checked against when the user is unknown, so an unknown user costs a bcrypt verification like a known one.
_DUMMY_HASH = b"$2b$10$btc7ARK9dabJZOLZtxQvp.GQLt9ygADsedvuAnN.p.tQltG/.nmp."  # of a random string


class TlsServerConfig(StrictModel):
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: str = ""
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"


class WebConfigFile(StrictModel):
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, str] | None = None


@dataclass(frozen=True)
class WebConfig:
    """What the HTTP server needs from the file: a TLS context (None: plain HTTP) and the basic auth users."""

    source: str
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check the file, load the certificates; ConfigError lists every problem with its key."""
    path = Path(path)
    source = str(path)
    try:
        raw = read_yaml(path, MAX_WEB_CONFIG_BYTES, "web config file")
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror or exc}"], source=source) from None
    except YamlFileError as exc:  # too large, not UTF-8, not YAML, a duplicate key, nested too deeply
        raise ConfigError([str(exc)], source=source) from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping of keys to values"], source=source)
    problems = _unsupported(raw)
    try:
        parsed = WebConfigFile.model_validate(raw)
    except ValidationError as exc:
        problems += [_describe(err) for err in exc.errors() if not _is_unsupported(err["loc"])]
        raise ConfigError(problems, source=source) from None
    users = _users(parsed.basic_auth_users or {}, problems)
    context = _ssl_context(parsed.tls_server_config, path.parent, problems)
    if problems:
        raise ConfigError(problems, source=source)
    return WebConfig(source, context, users)


def _unsupported(raw: dict[Any, Any]) -> list[str]:
    problems = []
    for where, keys in _NOT_SUPPORTED.items():
        section: object = raw
        for key in where:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict):
            problems += [f"{'.'.join((*where, k))}: an exporter-toolkit setting pgwatch-cpa does not support"
                         for k in sorted(keys & set(section))]
    return problems


def _is_unsupported(loc: tuple[int | str, ...]) -> bool:
    return bool(loc) and loc[-1] in _NOT_SUPPORTED.get(tuple(loc[:-1]), set())  # type: ignore[arg-type]


def _describe(err: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"


def _users(users: Mapping[str, str], problems: list[str]) -> dict[str, bytes]:
    out = {}
    for user, hashed in users.items():
        if not user or ":" in user:
            problems.append(f"basic_auth_users.{user}: a user name is not empty and has no ':'")
        elif not _BCRYPT_HASH.match(hashed):
            problems.append(f"basic_auth_users.{user}: not a bcrypt hash ($2y$10$ and 53 characters; "
                            "htpasswd -nBC 10 USER makes one)")
        else:
            out[user] = hashed.encode()
    return out


def _ssl_context(tls: TlsServerConfig | None, base: Path, problems: list[str]) -> ssl.SSLContext | None:
    """Like the toolkit: no TLS section, or one without any file or client auth, is plain HTTP."""
    if tls is None or tls == TlsServerConfig(min_version=tls.min_version, max_version=tls.max_version):
        return None
    before = len(problems)
    for key in ("cert_file", "key_file"):
        if not getattr(tls, key):
            problems.append(f"tls_server_config.{key}: required to serve TLS")
    verify = _VERIFY.get(tls.client_auth_type)
    if verify is None:  # Python's ssl cannot ask for a certificate it then does not verify
        problems.append(f"tls_server_config.client_auth_type: {tls.client_auth_type} is not supported; use "
                        "RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file")
    elif verify != ssl.CERT_NONE and not tls.client_ca_file:
        problems.append(f"tls_server_config.client_ca_file: required with client_auth_type {tls.client_auth_type}")
    elif verify == ssl.CERT_NONE and tls.client_ca_file:
        problems.append(f"tls_server_config.client_auth_type: {tls.client_auth_type} does not check client "
                        "certificates against client_ca_file: use VerifyClientCertIfGiven or "
                        "RequireAndVerifyClientCert")
    if _TLS_VERSIONS[tls.min_version] > _TLS_VERSIONS[tls.max_version]:
        problems.append(f"tls_server_config.min_version: {tls.min_version} is above max_version {tls.max_version}")
    files = {key: _readable(base, getattr(tls, key), key, problems)
             for key in ("cert_file", "key_file", "client_ca_file") if getattr(tls, key)}
    if len(problems) > before:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    try:
        # An encrypted key gets an empty password instead of OpenSSL's prompt on the terminal.
        context.load_cert_chain(files["cert_file"], files["key_file"], password=lambda: b"")
    except (ssl.SSLError, ValueError) as exc:
        problems.append(f"tls_server_config.cert_file, key_file: {files['cert_file']} and {files['key_file']} are "
                        f"not a PEM certificate and its unencrypted private key ({_reason(exc)})")
    if tls.client_ca_file and verify is not None:
        try:
            context.load_verify_locations(cafile=files["client_ca_file"])
        except (ssl.SSLError, ValueError) as exc:
            problems.append(f"tls_server_config.client_ca_file: {files['client_ca_file']} holds no PEM CA "
                            f"certificate ({_reason(exc)})")
        context.verify_mode = verify
    return context


def _readable(base: Path, name: str, key: str, problems: list[str]) -> str:
    path = base / name  # an absolute name stays as it is
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        problems.append(f"tls_server_config.{key}: cannot read {path}: {exc.strerror or exc}")
    return str(path)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or " ".join(str(exc).split())[:200]


class BasicAuth:
    """Checks ``Authorization: Basic`` against the bcrypt hashes; successes are cached (keyed by a SHA-256 of the
    user, the password and the hash, never the password itself) for AUTH_CACHE_SECONDS."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self.users = dict(users)
        self._verified: dict[bytes, float] = {}  # cache key -> expiry (monotonic)
        self._executor: ThreadPoolExecutor | None = None

    async def check(self, header: str | None) -> bool:
        credentials = _basic_credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self.users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), password, hashed or b""))).digest()
        now = time.monotonic()
        if hashed is not None and self._verified.get(key, 0.0) > now:
            return True
        if self._executor is None:
            self._executor = ThreadPoolExecutor(2, thread_name_prefix="bcrypt")
        ok = await asyncio.get_running_loop().run_in_executor(self._executor, _verify, password,
                                                              hashed or _DUMMY_HASH)
        if ok and hashed is not None:
            if len(self._verified) >= AUTH_CACHE_ENTRIES:
                self._verified = {k: t for k, t in self._verified.items() if t > now}
                if len(self._verified) >= AUTH_CACHE_ENTRIES:
                    self._verified.clear()
            self._verified[key] = now + AUTH_CACHE_SECONDS
            return True
        return False

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _verify(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # a password over bcrypt's 72 bytes (refused, as Go's bcrypt does) or a bad hash
        return False
