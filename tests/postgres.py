"""The PostgreSQL that scripts/start_postgres.sh runs (started by scripts/test before the suite): a fresh database
per test, reached with the password from the environment as a study's processes would."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
PORT = int(os.environ.get("NANO4M_PG_PORT", 5433))
USER = os.environ.get("NANO4M_PG_USER", "nano4m")
PASSWORD = os.environ.get("NANO4M_PG_PASSWORD", "nano4m")


def uri(database: str) -> str:
    """A study's ``tracking.uri`` for ``database``: no password in it."""
    return f"postgresql://{USER}@127.0.0.1:{PORT}/{database}"


def _admin() -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=PORT, user=USER, password=PASSWORD, dbname=USER, autocommit=True)


@pytest.fixture(scope="session")
def postgres_server() -> None:
    """The server is up (started here if scripts/test did not), and libpq finds the password in PGPASSWORD.
    One start at a time: pytest-xdist's workers each run this, and two concurrent ALTER ROLEs of the script
    fail ("tuple concurrently updated")."""
    with FileLock(Path(tempfile.gettempdir()) / "nano4m-start-postgres.lock"):
        subprocess.run(["bash", str(REPO / "scripts/start_postgres.sh")], check=True, capture_output=True)
    os.environ["PGPASSWORD"] = PASSWORD


@pytest.fixture
def postgres(postgres_server) -> Iterator[str]:
    """The URI of a new empty database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with _admin() as db:
        db.execute(f'CREATE DATABASE "{name}"')
    yield uri(name)
    with _admin() as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
