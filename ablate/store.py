"""Where a study's records live: its ``tracking:`` section resolved to one MLflow store and one Optuna storage.

Three kinds of store, by the URI's scheme (``SCHEMES``):

- ``sqlite``: the default, ``studies/NAME/mlflow.db`` beside its ``artifacts/``; right for one machine.
- ``server``: ``http(s)://host:port`` of an ``mlflow server`` (``ablate server``), for a lab or a cluster.
- ``database``: ``postgresql://user@host:port/db``, used directly by every process (no server in between).

Credentials are never part of a study: a URI with a password is refused. PostgreSQL's come from libpq's
environment (``PGPASSWORD`` or ``PGPASSFILE``), a server's from ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``. PostgreSQL is reached through psycopg 3 (the ``.[server]`` extra): a plain
``postgresql://`` is given to SQLAlchemy as ``postgresql+psycopg://`` (``driver_uri``).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib.metadata
import os
import shutil
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ablate.user_cache import user_cache

if TYPE_CHECKING:
    import psycopg

SCHEMES = {"sqlite": "sqlite", "http": "server", "https": "server", "postgresql": "database"}
DRIVER = "psycopg"  # SQLAlchemy's dialect name for psycopg 3
SQLITE_BUSY_TIMEOUT_S = 60
SCHEMA_LOCK = 0x6E616E6F34  # the advisory lock a process holds while MLflow creates its tables ("nano4")
CONNECT_TIMEOUT_S = 5  # a database or server that does not answer within this is reported, not waited on
OPTUNA_SCHEMA = "optuna"  # Optuna's tables, apart from MLflow's (in public): each has an alembic_version table


class StoreError(ValueError):
    """A store that cannot be used; the message is one line and names the URI without its password."""


def kind(uri: str) -> str:
    """``sqlite``, ``server`` or ``database``; raises ``StoreError`` for a scheme none of them takes."""
    scheme = urlsplit(uri).scheme.split("+")[0]
    if scheme not in SCHEMES:
        allowed = ", ".join(f"{s}://" for s in SCHEMES)
        raise StoreError(f"{redacted(uri)}: unknown scheme {scheme + '://' if scheme else '(none)'}; "
                         f"a tracking URI starts with one of {allowed}")
    return SCHEMES[scheme]


def redacted(uri: str) -> str:
    """The URI as it may be printed or logged: a password in it becomes ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def has_password(uri: str) -> bool:
    return urlsplit(uri).password is not None


def connect(uri: str) -> psycopg.Connection:
    """An open connection (autocommit) to the ``postgresql://`` database ``uri``, the password from libpq's
    environment; a host that does not answer, a refused password or a missing database is a one-line
    ``StoreError``."""
    import psycopg

    try:
        return psycopg.connect(uri, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True)
    except psycopg.Error as e:
        why = " ".join(str(e).split())
        hint = "; libpq takes the password from PGPASSWORD or PGPASSFILE" if "password" in why else ""
        raise StoreError(f"{redacted(uri)}: cannot connect: {why}{hint}") from None


def check_server(url: str) -> None:
    """An MLflow server answers at ``url`` (``http(s)://host:port``) and accepts the environment's credentials
    (``MLFLOW_TRACKING_USERNAME``, ``MLFLOW_TRACKING_PASSWORD``), or a one-line ``StoreError`` says why not."""
    request = urllib.request.Request(f"{url.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user is not None:
        secret = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        request.add_header("Authorization", f"Basic {base64.b64encode(secret).decode()}")
    try:
        urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S).close()
    except urllib.error.HTTPError as e:
        if e.code == 401:
            who = f"refused user {user!r}" if user is not None else "needs a user: MLFLOW_TRACKING_USERNAME is unset"
            raise StoreError(f"{redacted(url)}: the server {who} (401); set MLFLOW_TRACKING_USERNAME and "
                             "MLFLOW_TRACKING_PASSWORD") from None
        answer = " ".join(e.read(200).decode(errors="replace").split())
        raise StoreError(f"{redacted(url)}: not usable as an MLflow server: {e.code} {e.reason}: {answer}") from None
    except OSError as e:  # refused, unknown host, timed out (URLError is an OSError)
        why = getattr(e, "reason", e)
        raise StoreError(f"{redacted(url)}: no MLflow server answers ({why})") from None


def driver_uri(uri: str, connect_timeout: float | None = None) -> str:
    """The URI SQLAlchemy (MLflow's and Optuna's stores) is given for a ``postgresql://`` one: it names psycopg 3,
    the driver this project installs (SQLAlchemy's default for the bare scheme is psycopg2), with libpq's
    ``connect_timeout`` if given. Other URIs pass through."""
    scheme, _, rest = uri.partition("://")
    if scheme != "postgresql":
        return uri
    if connect_timeout is not None and "connect_timeout=" not in rest:
        rest += f"{'&' if '?' in rest else '?'}connect_timeout={max(1, round(connect_timeout))}"
    return f"postgresql+{DRIVER}://{rest}"


def mlflow_uri(uri: str, connect_timeout: float | None = None) -> str:
    """What ``MlflowClient`` is given for a tracking URI, the store made ready for many processes at once: a SQLite
    file in WAL mode with a busy timeout (``sqlite_uri``); a PostgreSQL database with MLflow's tables, created
    by one process at a time (``_mlflow_tables``); a server's URL as it is."""
    store_kind = kind(uri)
    if store_kind == "sqlite":
        return sqlite_uri(uri)
    if store_kind == "database":
        _mlflow_tables(uri)
        return driver_uri(uri, connect_timeout)
    return uri


def optuna_url(uri: str) -> str:
    """What Optuna's ``RDBStorage`` (and an ``optuna`` command's ``--storage``) is given for the PostgreSQL database
    ``uri``: psycopg 3 (``driver_uri``), and Optuna's tables in the schema ``OPTUNA_SCHEMA`` (libpq's ``options``)."""
    parts = urlsplit(driver_uri(uri))
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query.get('options', '')} -csearch_path={OPTUNA_SCHEMA}".strip()
    return urlunsplit(parts._replace(query=urlencode(query)))


@functools.cache
def _mlflow_tables(uri: str) -> None:
    """Create MLflow's tables in an empty database under a PostgreSQL advisory lock, once per process: MLflow
    creates them on first use, and 32 processes doing so at once collide in PostgreSQL's catalog."""
    from mlflow.tracking import MlflowClient

    with connect(uri) as db:
        db.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        try:  # the process that held the lock before made them whole
            if db.execute("SELECT to_regclass('experiments')").fetchone()[0] is None:
                MlflowClient(driver_uri(uri)).search_experiments(max_results=1)  # MLflow creates its tables
        finally:
            db.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))


def sqlite_uri(uri: str) -> str:
    """A SQLite store usable by concurrent writers: WAL mode, and a connection waits on a lock instead of failing.
    A new one starts as a copy of an empty store (``_copy_empty_store``)."""
    path = sqlite_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _copy_empty_store(path)
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as db:
        db.execute("PRAGMA journal_mode=WAL")
    return f"sqlite:///{path}?timeout={SQLITE_BUSY_TIMEOUT_S}"


def sqlite_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///").split("?")[0])


def _copy_empty_store(path: Path) -> None:
    """Make the SQLite store ``path`` a copy of an empty one with MLflow's tables (``_empty_store``), as MLflow
    would have made it (its Default experiment's artifacts under ./mlruns, creation time now): MLflow runs all
    its schema migrations on a new file, for every new study (0.6 s quiet, 3 s on a busy machine). Made beside
    ``path`` and linked into place, so a process that opens the store never sees half a copy and one made
    meanwhile by another is kept. Where that cannot be done (a file system without hard links) MLflow creates
    the tables itself."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        shutil.copyfile(_empty_store(), partial)
        now = int(time.time() * 1000)
        with contextlib.closing(sqlite3.connect(partial)) as db, db:
            db.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                       "WHERE experiment_id = 0", (str(Path.cwd() / "mlruns" / "0"), now, now))
        os.link(partial, path)
    except (OSError, sqlite3.Error):  # made meanwhile by another process (FileExistsError), or left to MLflow
        pass
    finally:
        partial.unlink(missing_ok=True)


def _empty_store() -> Path:
    """An empty SQLite store with this MLflow's tables, made once per MLflow version in the user cache."""
    template = user_cache() / f"mlflow-{importlib.metadata.version('mlflow')}-empty.db"
    if not template.exists():
        from mlflow.tracking import MlflowClient

        template.parent.mkdir(parents=True, exist_ok=True)
        partial = template.with_name(f".{template.name}.{os.getpid()}.new")
        MlflowClient(f"sqlite:///{partial}").search_experiments(max_results=1)  # MLflow creates its tables
        os.replace(partial, template)
    return template


@dataclass(frozen=True)
class Store:
    """One study's tracking location.

    ``uri``: the MLflow tracking URI (as the study gives it). ``artifacts``: where a new experiment's artifacts go
    (a ``file://`` URI), None for a server's own (``mlflow-artifacts:``). ``search``: the Optuna storage, a
    journal file's path for SQLite or a PostgreSQL URI, None where a server's database is not known."""

    uri: str
    artifacts: str | None
    search: str | None

    @property
    def kind(self) -> str:
        return kind(self.uri)

    @property
    def redacted(self) -> str:
        return redacted(self.uri)

    @property
    def client_uri(self) -> str:
        """What ``MlflowClient`` is given (``mlflow_uri``)."""
        return mlflow_uri(self.uri)

    def check(self) -> None:
        """Raise ``StoreError`` (one line) unless the store, and a search's database, answer."""
        reachable(self.uri)
        if self.search is not None and self.search.startswith("postgresql") and self.search != self.uri:
            reachable(self.search)

    def exists(self) -> bool:
        """Whether there is anything to read yet: a SQLite store is a file; a server or database is assumed to."""
        return self.kind != "sqlite" or sqlite_path(self.uri).is_file()


def reachable(uri: str) -> None:
    """Raise ``StoreError`` (one line, the URI redacted) unless a server or a database at ``uri`` answers and
    takes the credentials in the environment; a SQLite file always does."""
    store_kind = kind(uri)
    if store_kind == "database":
        connect(uri).close()
    elif store_kind == "server":
        check_server(uri)
