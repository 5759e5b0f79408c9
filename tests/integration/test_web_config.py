"""`pgwatch-cpa run --web.config.file`: TLS, client certificates and basic auth on a real daemon process, with
certificates made by the openssl CLI; a bad web config file is refused with exit 2, naming the file and the key."""

from __future__ import annotations

import base64
import http.client
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import yaml

from pgwatch_cpa.cli import main
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
PROTECTED = ["/metrics", "/alerts", "/api/v1/alerts", "/report", "/"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require_tool("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", cwd=directory)


def make_cert(directory: Path, name: str, ca: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions + "\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=directory)


@pytest.fixture
def pki(tmp_path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a stranger's CA and client."""
    directory = tmp_path / "pki"
    directory.mkdir()
    make_ca(directory, "ca")
    make_cert(directory, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
    make_cert(directory, "client", "ca", "extendedKeyUsage=clientAuth")
    make_ca(directory, "other-ca")
    make_cert(directory, "stranger", "other-ca", "extendedKeyUsage=clientAuth")
    return directory


def web_config(pki: Path, **tls: str) -> Path:
    """A web config beside the certificates, naming them relative to itself (as the toolkit resolves them)."""
    path = pki / "web.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", **tls},
                                    "basic_auth_users": {"prometheus": hashed}}))
    return path


def client_context(pki: Path, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        context.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    return context


def get(url: str, context: ssl.SSLContext | None = None, user: str | None = None,
        password: str = PASSWORD) -> tuple[int, dict[str, str], str]:
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def refused(url: str, context: ssl.SSLContext | None = None) -> bool:
    """The connection fails: a TLS error, a reset, or an answer that is not HTTP."""
    try:
        get(url, context, "prometheus")
    except (OSError, http.client.HTTPException):
        return True
    return False


def test_https_with_basic_auth_and_open_healthz(pki, daemon_factory):
    daemon = daemon_factory({}, "--web.config.file", str(web_config(pki)))
    https = f"https://127.0.0.1:{daemon.port}"
    context = client_context(pki)
    daemon.wait_for(lambda: get(https + "/healthz", context)[0] == 200, 30, "HTTPS /healthz without credentials")
    assert get(https + "/readyz", context)[0] in (200, 503)  # a probe: open as well

    for path in PROTECTED:
        status, headers, _ = get(https + path, context)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm="), (path, status)
        assert get(https + path, context, "prometheus", "wrong")[0] == 401, path
        assert get(https + path, context, "nobody")[0] == 401, path
    status, _, body = get(https + "/metrics", context, "prometheus")
    assert status == 200 and "pgwatch_build_info" in body
    for path in ("/alerts", "/api/v1/alerts"):
        assert get(https + path, context, "prometheus")[0] == 200, path
    assert get(https + "/report", context, "prometheus")[0] != 401
    assert get(https + "/metrics", context, "prometheus")[0] == 200  # again: from the cache of verifications

    assert refused(f"http://127.0.0.1:{daemon.port}/metrics"), "plain HTTP on the HTTPS port"
    assert refused(https + "/metrics", ssl.create_default_context()), "a client that does not trust the CA"
    assert f"https://127.0.0.1:{daemon.port}/metrics" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_client_certificate_required_when_configured(pki, daemon_factory):
    config = web_config(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.crt")
    daemon = daemon_factory({}, "--web.config.file", str(config))
    https = f"https://127.0.0.1:{daemon.port}"
    with_cert = client_context(pki, "client")
    daemon.wait_for(lambda: get(https + "/healthz", with_cert)[0] == 200, 30, "HTTPS with a client certificate")
    assert get(https + "/metrics", with_cert, "prometheus")[0] == 200
    assert refused(https + "/healthz", client_context(pki)), "no client certificate"
    assert refused(https + "/healthz", client_context(pki, "stranger")), "a certificate of another CA"
    assert get(https + "/healthz", with_cert)[0] == 200, "the daemon serves on after refusing those"
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize(("content", "expected"), [
    ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "server.key"}},
     "tls_server_config.cert_file: cannot read"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "client.key"}},
     "tls_server_config.cert_file, key_file"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "min_version": "TLS14"}},
     "tls_server_config.min_version"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key",
                            "client_auth_type": "RequireAndVerifyClientCert"}},
     "tls_server_config.client_ca_file: required"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "cipher_suites": ["X"]}},
     "tls_server_config.cipher_suites: an exporter-toolkit setting pgwatch-cpa does not support"),
    ({"basic_auth_users": {"prometheus": "plain-text-password"}}, "basic_auth_users.prometheus: not a bcrypt hash"),
    ({"basic_auth_user": {}}, "basic_auth_user: unknown key"),
    ("tls_server_config: [", "invalid YAML"),
    ("basic_auth_users:\n  prometheus: $2y$10$a\n  prometheus: $2y$10$b\n", "duplicate key 'prometheus'"),
])
def test_a_bad_web_config_file_exits_2_naming_the_file_and_the_key(pki, tmp_path, capsys, content, expected):
    path = pki / "web.yml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    config = tmp_path / "config.yaml"
    config.write_text("{}\n")
    assert main(["run", "--config", str(config), "--web.config.file", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and expected in err, err
    assert "Traceback" not in err
