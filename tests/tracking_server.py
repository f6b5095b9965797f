"""A real MLflow tracking server for tests: ``ablate server`` over the ``postgres`` fixture's fresh database on a
free port, its artifacts and state in the test's folder. A test may stop it, or kill it as a crash would, and
start it again on the same port and database."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ablate.server import ServerSpec, start, stop


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TrackingServer:
    """``uri``: the ``tracking.uri`` of the server; ``said``: what ``ablate server`` printed, start after stop."""

    spec: ServerSpec
    said: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return self.spec.url

    def start(self) -> None:
        """Start it (about 15 s on 2 busy cores); returns once it answers."""
        start(self.spec, say=self.said.append)

    def stop(self, kill: bool = False) -> None:
        """Stop it and every process it started (``kill``: SIGKILL at once, no shutdown); returns once gone."""
        stop(self.spec.state, self.spec.port, kill=kill, say=self.said.append)


def tracking_server(database: str, folder: Path, **spec) -> TrackingServer:
    """A server (not started) over ``database`` on a free port, its artifacts and state in ``folder``."""
    return TrackingServer(ServerSpec(database, folder / "artifacts", port=free_port(), state=folder, **spec))


@pytest.fixture
def mlflow_server(postgres, tmp_path) -> Iterator[TrackingServer]:
    """A running server over a fresh database; stopped after the test (whatever state the test left it in)."""
    server = tracking_server(postgres, tmp_path / "mlflow-server")
    server.start()
    yield server
    server.stop()
