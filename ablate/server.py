"""``ablate server``: an MLflow tracking server over PostgreSQL for a lab or a cluster, started detached.

``start`` checks the database first (``store.connect``: a host that does not answer, a refused password or a
missing database is a one-line ``StoreError``; a URI holding a password is refused: the server inherits
``PGPASSWORD`` or ``PGPASSFILE``, which libpq reads), brings a database that already holds MLflow's tables to
this MLflow's schema with ``mlflow db upgrade`` (MLflow refuses to serve an outdated one), starts ``mlflow
server`` (uvicorn, MLflow's default) in its own session and polls ``/health`` until it answers. One server per
port: a second ``start`` finds it running and returns; ``stop`` ends its whole process group.

The state folder (``STATE``, or ``state=``) holds per port ``server-PORT.json`` (the pid file: pid, database,
address, command), ``server-PORT.log`` (what the server prints, appended at every start) and, with basic
authentication, ``auth-PORT.ini`` (MLflow's auth settings: its users live in the same database).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ablate import store
from ablate.mlflow_ui import ServerError, check_port_free

STATE = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "nano4m" / "server"
START_S = 180  # how long a start may take to answer /health (about 20 s on 2 busy cores)
STOP_S = 30  # how long SIGTERM may take before the process group is killed
UPGRADE_S = 600  # mlflow db upgrade on a large database
LOOPBACK = ("127.0.0.1", "localhost")
ANY = "0.0.0.0"

# The pool: each uvicorn worker, and the `mlflow server` process that starts them, opens one SQLAlchemy pool per
# store (tracking, model registry, and with --auth the users' store) of up to POOL_SIZE connections kept open plus
# MAX_OVERFLOW more under load (MLflow's MLFLOW_SQLALCHEMYSTORE_POOL_SIZE and _MAX_OVERFLOW). So (workers + 1) x
# stores x (pool + overflow) must stay under PostgreSQL's max_connections (scripts/start_postgres.sh sets 300,
# PostgreSQL's default is 100): the server takes at most SERVER_SHARE of it, leaving the rest to Optuna searches
# and processes that use the database directly.
SERVER_SHARE = 0.5
POOL_MAX = 20  # connections per pool at most: a worker serves about 40 requests at once (its thread pool)


@dataclass(frozen=True)
class ServerSpec:
    """One tracking server. ``database``: ``postgresql://user@host:port/db`` (no password). ``artifacts``: a
    folder the server reads and writes for its clients (``serve_artifacts``), or else the shared path every
    client writes to itself. ``allowed_hosts``: Host names clients use beyond those of ``host`` (MLflow refuses
    others: DNS rebinding)."""

    database: str
    artifacts: Path
    serve_artifacts: bool = True
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    auth: bool = False
    allowed_hosts: tuple[str, ...] = ()
    state: Path = STATE

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ServerError(f"--workers {self.workers}: at least 1")
        if not 0 < self.port < 65536:
            raise ServerError(f"--port {self.port}: from 1 to 65535")

    @property
    def url(self) -> str:
        """What studies put in ``tracking.uri``: a server bound to every interface by this machine's name."""
        return f"http://{socket.getfqdn() if self.host == ANY else self.host}:{self.port}"

    @property
    def record(self) -> Path:
        return record_path(self.state, self.port)

    @property
    def log(self) -> Path:
        return self.state / f"server-{self.port}.log"

    @property
    def auth_config(self) -> Path:
        return self.state / f"auth-{self.port}.ini"


@dataclass(frozen=True)
class Record:
    """What the pid file says of a started server."""

    pid: int
    database: str
    url: str
    command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Database:
    """``max_connections``: PostgreSQL's limit. ``revision``: MLflow's schema revision (alembic), None when the
    database holds no MLflow tables yet (the server creates them)."""

    max_connections: int
    revision: str | None


def record_path(state: Path, port: int) -> Path:
    return state / f"server-{port}.json"


def allowed_hosts(spec: ServerSpec) -> list[str]:
    """MLflow's ``--allowed-hosts``: the ``host:port`` forms of every name clients may use for ``spec.host``
    (both loopback names for 127.0.0.1; this machine's names, and loopback, for 0.0.0.0), then ``allowed_hosts``
    (a name without a port gets the server's)."""
    if spec.host in LOOPBACK:
        names = list(LOOPBACK)
    else:
        names = [socket.gethostname(), socket.getfqdn()] + (list(LOOPBACK) if spec.host == ANY else [spec.host])
    forms = [f"{name}:{spec.port}" for name in names]
    forms += [name if ":" in name or "*" in name else f"{name}:{spec.port}" for name in spec.allowed_hosts]
    return list(dict.fromkeys(forms))


def command(spec: ServerSpec) -> list[str]:
    """The ``mlflow server`` command line (it holds no password: the server inherits PGPASSWORD or PGPASSFILE)."""
    artifacts = spec.artifacts.resolve().as_uri()
    where = (["--serve-artifacts", "--artifacts-destination", artifacts] if spec.serve_artifacts
             else ["--no-serve-artifacts", "--default-artifact-root", artifacts])
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.driver_uri(spec.database),
            *where, "--host", spec.host, "--port", str(spec.port), "--workers", str(spec.workers),
            "--allowed-hosts", ",".join(allowed_hosts(spec))] + (["--app-name", "basic-auth"] if spec.auth else [])


def pool(workers: int, stores: int, max_connections: int) -> tuple[int, int]:
    """(pool size, max overflow) of each SQLAlchemy pool of a server with ``workers`` (see the note on the pool);
    a ``ServerError`` when the database cannot take that many workers."""
    per_pool = min(POOL_MAX, int(max_connections * SERVER_SHARE) // ((workers + 1) * stores))
    if per_pool < 2:
        raise ServerError(f"--workers {workers} is too many for PostgreSQL's max_connections {max_connections}: "
                          f"each worker holds {stores} connection pools; use fewer workers or raise max_connections")
    return (per_pool + 1) // 2, per_pool // 2


def inspect(database: str) -> Database:
    """Whether ``database`` answers (one-line ``StoreError`` if not), its connection limit and MLflow schema."""
    with store.connect(database) as db:
        max_connections = int(db.execute("SHOW max_connections").fetchone()[0])
        revision = None
        if db.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is not None:
            revision = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    return Database(max_connections, revision)


def start(spec: ServerSpec, say: Callable[[str], None] = print) -> str:
    """Start the server (or find it running) and return its ``tracking.uri``; ``say`` gets what happens."""
    if store.kind(spec.database) != "database":
        raise store.StoreError(f"{store.redacted(spec.database)}: ablate server serves a PostgreSQL database "
                               "(postgresql://user@host:port/db)")
    if store.has_password(spec.database):
        raise store.StoreError(f"{store.redacted(spec.database)}: the URI holds a password: leave it out and set "
                               "PGPASSWORD or PGPASSFILE")
    if (record := running(spec.state, spec.port)) is not None:
        return _already(spec, record, say)
    check_port_free(spec.port, spec.host)
    database = inspect(spec.database)
    if database.revision is not None:
        _upgrade(spec.database, database.revision, say)
    stores = 3 if spec.auth else 2  # tracking, model registry, and the users' store of basic authentication
    pool_size, overflow = pool(spec.workers, stores, database.max_connections)
    env = {**os.environ, "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(pool_size),
           "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(overflow),
           # MLflow's job runner (GenAI judges, trace rollups: seven more processes) serves nothing a study logs
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    spec.state.mkdir(parents=True, exist_ok=True)
    if spec.auth:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(_write_auth_config(spec))
        # CSRF tokens of the auth pages; the workers of one server share it through the environment
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    argv = command(spec)
    began = time.monotonic()
    with spec.log.open("a") as log:
        log.write(f"\n=== ablate server {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(argv)}\n")
        log.flush()
        server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  cwd=spec.state, start_new_session=True)
    record = Record(server.pid, spec.database, spec.url, argv)
    spec.record.write_text(json.dumps(asdict(record), indent=1) + "\n")
    try:
        _wait_healthy(spec, server.pid)
    except BaseException:
        stop(spec.state, spec.port, kill=True, say=lambda line: None)
        raise
    say(f"started the MLflow server in {time.monotonic() - began:.0f} s (pid {server.pid}, {spec.workers} "
        f"workers, pools of {pool_size}+{overflow} connections; log {spec.log})")
    say(f"tracking.uri: {spec.url}")
    return spec.url


def stop(state: Path, port: int, kill: bool = False, say: Callable[[str], None] = print) -> bool:
    """Stop the server on ``port`` and everything it started (SIGTERM, SIGKILL after ``STOP_S``; ``kill``:
    SIGKILL at once, as a crash would); wait until they are gone. False when none ran."""
    record = running(state, port)
    if record is None:
        say(f"no MLflow server started by ablate server runs on port {port}")
        return False
    _signal_group(record.pid, signal.SIGKILL if kill else signal.SIGTERM)
    if not _group_gone(record.pid, STOP_S):
        _signal_group(record.pid, signal.SIGKILL)
        if not _group_gone(record.pid, STOP_S):
            raise ServerError(f"processes of the MLflow server's group {record.pid} outlived SIGKILL")
    record_path(state, port).unlink(missing_ok=True)
    say(f"stopped the MLflow server on port {port} (pid {record.pid})")
    return True


def running(state: Path, port: int) -> Record | None:
    """The pid file's server when its process lives (a stale pid file is removed)."""
    path = record_path(state, port)
    if not path.is_file():
        return None
    record = Record(**json.loads(path.read_text()))
    if _group_gone(record.pid, 0):
        path.unlink()
        return None
    return record


def _already(spec: ServerSpec, record: Record, say: Callable[[str], None]) -> str:
    if record.database != spec.database:
        raise ServerError(f"port {spec.port} already serves {store.redacted(record.database)} (pid {record.pid}); "
                          f"stop it first: ablate server --stop --port {spec.port}")
    _wait_healthy(spec, record.pid)  # it may be starting still
    say(f"the MLflow server already runs on port {spec.port} (pid {record.pid}; log {spec.log})")
    say(f"tracking.uri: {record.url}")
    return record.url


def _upgrade(database: str, revision: str, say: Callable[[str], None]) -> None:
    """``mlflow db upgrade`` on a database holding MLflow's tables at ``revision``; says what it found."""
    done = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", store.driver_uri(database)],
                          capture_output=True, text=True, timeout=UPGRADE_S)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise store.StoreError(f"{store.redacted(database)}: mlflow db upgrade failed: {last}")
    now = inspect(database).revision
    change = f"upgraded its schema from {revision} to {now}" if now != revision else f"schema current ({now})"
    say(f"{store.redacted(database)} holds MLflow's tables: ran mlflow db upgrade: {change}")


def _write_auth_config(spec: ServerSpec) -> Path:
    """MLflow's basic-auth settings with its users in the tracking database (one database to back up); the
    first admin's password comes from MLFLOW_AUTH_ADMIN_PASSWORD (MLflow ships none)."""
    spec.auth_config.write_text("[mlflow]\ndefault_permission = READ\n"
                                f"database_uri = {store.driver_uri(spec.database)}\nadmin_username = admin\n"
                                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return spec.auth_config


def _wait_healthy(spec: ServerSpec, pid: int) -> None:
    """Until the server answers /health; a ``ServerError`` with its log's last lines if its processes end first
    or ``START_S`` passes."""
    deadline = time.monotonic() + START_S
    while not _healthy(spec):
        if _group_gone(pid, 0):
            raise ServerError(f"the MLflow server exited before answering on port {spec.port}; last lines of "
                              f"{spec.log}:\n{_tail(spec.log)}")
        if time.monotonic() > deadline:
            raise ServerError(f"the MLflow server did not answer /health on port {spec.port} within {START_S} s; "
                              f"last lines of {spec.log}:\n{_tail(spec.log)}")
        time.sleep(0.5)


def _healthy(spec: ServerSpec) -> bool:
    host = "127.0.0.1" if spec.host == ANY else spec.host
    try:
        with urllib.request.urlopen(f"http://{host}:{spec.port}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _group_gone(pid: int, timeout_s: float) -> bool:
    """Whether no process is left in the group ``pid`` leads, waiting up to ``timeout_s`` (the leader is reaped
    when it is this process's child, as a test's server is)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
