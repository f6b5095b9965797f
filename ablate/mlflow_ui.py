"""``ablate ui``: MLflow's UI server over a study's store, supervised until Ctrl-C or SIGTERM; for a study tracked to
an MLflow server, that server's own UI (nothing is started).

The server runs in its own process group, bound to 127.0.0.1; a taken port is refused before anything starts,
and stopping stops the whole group (MLflow's job workers too), so nothing it started outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import webbrowser
from typing import TYPE_CHECKING

from ablate.schema import StudyError

if TYPE_CHECKING:
    from ablate.study import Study

UI_START_S = 120  # how long to wait for MLflow's server to listen


class ServerError(Exception):
    """An MLflow server (``ablate ui``, ``ablate server``) cannot serve; the message says why and what to do."""


def serve(study: Study, port: int, open_browser: bool, named: str) -> int:
    """Serve the study's store on ``port`` until Ctrl-C or SIGTERM (0) or until the server exits (its status);
    ``named``: the study as the user named it (the message when nothing is recorded says what to submit)."""
    nothing = f"{study.path}: study {study.name!r} has nothing recorded yet; `ablate submit {named}` first"
    if not study.store.exists():
        raise StudyError(nothing)
    if study.store.kind == "server":
        return _open_server(study, open_browser, nothing)
    check_port_free(port)
    from ablate.ledger import Ledger  # MLflow takes seconds to import: a taken port is refused before

    ledger = Ledger(study, create=False)
    if ledger.experiment_id is None:
        raise StudyError(nothing)
    url = runs_url(port, ledger.experiment_id)
    server = subprocess.Popen(ui_command(study.store.client_uri, port), start_new_session=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        if not _listening(port, server):
            raise ServerError(f"the MLflow UI server exited with status {server.returncode} before listening "
                              f"on port {port}")
        print(f"MLflow UI for {study.name}: {url} (Ctrl-C to stop)", flush=True)
        if open_browser and _graphical():
            webbrowser.open(url)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server)


def runs_url(port: int | str, experiment_id: str) -> str:
    """The study's runs table on a local port or a server's URL (MLflow 3 opens on its GenAI view unless asked
    for the machine-learning one)."""
    base = f"http://127.0.0.1:{port}" if isinstance(port, int) else port.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _open_server(study: Study, open_browser: bool, nothing: str) -> int:
    """The study's runs on the MLflow server it tracks to."""
    from ablate.ledger import Ledger

    ledger = Ledger(study, create=False)
    if ledger.experiment_id is None:
        raise StudyError(nothing)
    url = runs_url(study.store.uri, ledger.experiment_id)
    print(f"MLflow UI for {study.name}: {url} (served by its tracking server)", flush=True)
    if open_browser and _graphical():
        webbrowser.open(url)
    return 0


def ui_command(store: str, port: int) -> list[str]:
    # One worker: one person looks at one study (MLflow's default of 4 workers is heavy on a laptop).
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no use
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ServerError(f"port {port} on {host} is in use ({e.strerror}); choose another with --port"
                              ) from None


def _listening(port: int, server: subprocess.Popen) -> bool:
    """Wait until the server accepts connections (True) or exits (False)."""
    deadline = time.monotonic() + UI_START_S
    while server.poll() is None and time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return server.poll() is None


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the UI as Ctrl-C does


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group; once the server has stopped (at most 10 s), SIGKILL to what is
    left of the group (MLflow's job workers), so nothing it started outlives it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def _graphical() -> bool:
    return sys.platform == "darwin" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
