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

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SCHEMES = {"sqlite": "sqlite", "http": "server", "https": "server", "postgresql": "database"}
DRIVER = "psycopg"  # SQLAlchemy's dialect name for psycopg 3
SQLITE_BUSY_TIMEOUT_S = 60


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


def driver_uri(uri: str, connect_timeout: float | None = None) -> str:
    """The URI SQLAlchemy (MLflow's and Optuna's stores) is given: ``postgresql://`` names psycopg 3, the driver
    this project installs (SQLAlchemy's default for the bare scheme is psycopg2), with libpq's ``connect_timeout``
    if given; a SQLite file is made ready for many writers (``sqlite_uri``); others pass through."""
    scheme, sep, rest = uri.partition("://")
    if scheme == "postgresql":
        if connect_timeout is not None and "connect_timeout=" not in rest:
            rest += f"{'&' if '?' in rest else '?'}connect_timeout={max(1, round(connect_timeout))}"
        return f"postgresql+{DRIVER}://{rest}"
    if scheme == "sqlite":
        return sqlite_uri(uri)
    return uri


def sqlite_uri(uri: str) -> str:
    """A SQLite store usable by concurrent writers: WAL mode, and a connection waits on a lock instead of failing."""
    path = sqlite_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as db:
        db.execute("PRAGMA journal_mode=WAL")
    return f"sqlite:///{path}?timeout={SQLITE_BUSY_TIMEOUT_S}"


def sqlite_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///").split("?")[0])


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
        """What ``MlflowClient`` is given (``driver_uri``); touches the SQLite file (WAL mode)."""
        return driver_uri(self.uri)

    def check(self, timeout: float = 10.0) -> None:
        """Raise ``StoreError`` (one line) unless the store, and a search's database, answer within ``timeout``."""
        reachable(self.uri, timeout)
        if self.search is not None and self.search.startswith("postgresql") and self.search != self.uri:
            reachable(self.search, timeout)

    def exists(self) -> bool:
        """Whether there is anything to read yet: a SQLite store is a file; a server or database is assumed to."""
        return self.kind != "sqlite" or sqlite_path(self.uri).is_file()


def reachable(uri: str, timeout: float = 10.0) -> None:
    """Raise ``StoreError`` (one line, the URI redacted) unless a server or a database at ``uri`` answers and
    takes the credentials in the environment; a SQLite file always does."""
    store_kind = kind(uri)
    if store_kind == "database":
        _database_answers(uri, timeout)
    elif store_kind == "server":
        _server_answers(uri, timeout)


def _database_answers(uri: str, timeout: float) -> None:
    try:
        import psycopg
    except ImportError:
        raise StoreError(f"{redacted(uri)}: PostgreSQL needs its driver: pip install -e '.[server]'") from None
    try:
        psycopg.connect(uri, connect_timeout=max(1, round(timeout))).close()
    except psycopg.Error as e:
        said = [line.strip() for line in str(e).splitlines() if line.strip()]
        # libpq's last line says why (FATAL: password authentication failed ..., database "x" does not exist)
        raise StoreError(f"{redacted(uri)}: cannot connect: {said[-1] if said else type(e).__name__}") from None


def _server_answers(uri: str, timeout: float) -> None:
    import requests

    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    try:
        answer = requests.get(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                              auth=(user, password) if user else None, timeout=timeout)
    except requests.RequestException as e:
        raise StoreError(f"{redacted(uri)}: the MLflow server does not answer ({type(e).__name__}); is it "
                         f"running (`ablate server`), and is this its host and port?") from None
    if answer.status_code in (401, 403):
        said = "refused the credentials in" if user else "asks for credentials: set"
        raise StoreError(f"{redacted(uri)}: the MLflow server {said} MLFLOW_TRACKING_USERNAME and "
                         f"MLFLOW_TRACKING_PASSWORD")
    if answer.status_code != 200:
        raise StoreError(f"{redacted(uri)}: not an MLflow tracking server (HTTP {answer.status_code} to the "
                         f"experiments API)")
