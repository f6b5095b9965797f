"""``ablate ui``: MLflow's UI server over a study's store, supervised until Ctrl-C or SIGTERM; for a study tracked to
an MLflow server, that server's own UI (nothing is started).

The page opens on the study's view: its training runs (the parent study run left out, so nothing is collapsed),
sorted by name (configurations with their seeds together), with the study's masking choice (tag ``masking``: the
preset's name, e.g. ``dirichlet_4m``; ``family`` is the family it is of) and its report metrics (``report.metrics``,
the race's and the search's metric) as columns. MLflow's runs table takes its search (``searchFilter``,
``orderByKey``, ...) from the URL, but its columns only from the browser's local storage or from a shared view:
the experiment tag ``mlflow.sharedViewState.<key>`` holding the view as JSON, opened by
``?viewStateShareKey=<key>`` (what the page's "Share" button makes; MLflow 3.15's saved views are the traces
view's). So the view is written to the experiment as ``mlflow.sharedViewState.ablate`` each time the UI is opened
(the study's metrics may have changed), and the printed address opens it; nothing of MLflow is patched, and an
old store only gains that tag.

The server is as light as MLflow allows: ``mlflow ui`` and its one uvicorn process, no job runner
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: the runs table needs none of MLflow's GenAI jobs), no access log,
its log in ``<study>/mlflow_ui.log`` (not the terminal). It is started before MLflow is imported here, so the two
overlap. It runs in its own process group, bound to 127.0.0.1; a taken port is refused before anything starts,
and stopping stops the whole group at once (uvicorn's graceful shutdown bounded to a second, as an open page
holds connections), so nothing it started outlives it.
"""

from __future__ import annotations

import contextlib
import json
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
    from ablate.ledger import Ledger
    from ablate.study import Study

UI_START_S = 120  # how long to wait for MLflow's server to listen
STOP_S = 2  # after SIGTERM: uvicorn stops within its 1 s graceful timeout; what is left then is killed
VIEW_KEY = "ablate"  # the study's view: experiment tag mlflow.sharedViewState.<VIEW_KEY>, ?viewStateShareKey=
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow's UI reads a shared view from this experiment tag
LOG_NAME = "mlflow_ui.log"  # in the study's folder
# The server's environment: no job runner (huey consumers for GenAI jobs the runs table never starts); MLflow's
# usage telemetry off unless asked for, as in training (ablate/tracking.py): its flush delays the server's exit.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
SERVER_ENV_DEFAULTS = {"MLFLOW_DISABLE_TELEMETRY": "true"}


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
    log = study.dir / LOG_NAME
    with log.open("w") as out:
        server = subprocess.Popen(ui_command(study.store.client_uri, port), stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env={**SERVER_ENV_DEFAULTS, **os.environ, **SERVER_ENV},
                                  start_new_session=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        from ablate.ledger import Ledger  # MLflow takes seconds to import: meanwhile the server starts

        url = runs_url(port, _study_view(Ledger(study, create=False), nothing))
        if not _listening(port, server):
            raise ServerError(f"the MLflow UI server exited with status {server.returncode} before listening "
                              f"on port {port}; its log: {log}")
        print(f"MLflow UI for {study.name}: {url} (Ctrl-C to stop; server log: {log})", flush=True)
        if open_browser and _graphical():
            webbrowser.open(url)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server)


def study_view(study: Study) -> dict:
    """The runs table as the study wants it first (MLflow's shared view state: search facets and UI state)."""
    metrics = [*study.spec.report.metrics, *(s.metric for s in (study.spec.race, study.spec.search) if s)]
    return {"searchFilter": "tags.kind = 'run'",  # the training runs; the parent study run is not fetched
            "orderByKey": "tags.`mlflow.runName`", "orderByAsc": True,
            "selectedColumns": ["tags.`masking`", *(f"metrics.`{m}`" for m in dict.fromkeys(metrics))]}


def _study_view(ledger: Ledger, nothing: str) -> str:
    """Write the study's view to its experiment; its experiment id."""
    if ledger.experiment_id is None:
        raise StudyError(nothing)
    ledger.client.set_experiment_tag(ledger.experiment_id, SHARED_VIEW_TAG + VIEW_KEY,
                                     json.dumps(study_view(ledger.study)))
    return ledger.experiment_id


def runs_url(port: int | str, experiment_id: str) -> str:
    """The study's view of its runs table on a local port or a server's URL (MLflow 3 opens on its GenAI view
    unless asked for the machine-learning one)."""
    base = f"http://127.0.0.1:{port}" if isinstance(port, int) else port.rstrip("/")
    return (f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_KEY}")


def _open_server(study: Study, open_browser: bool, nothing: str) -> int:
    """The study's runs on the MLflow server it tracks to."""
    from ablate.ledger import Ledger

    url = runs_url(study.store.uri, _study_view(Ledger(study, create=False), nothing))
    print(f"MLflow UI for {study.name}: {url} (served by its tracking server)", flush=True)
    if open_browser and _graphical():
        webbrowser.open(url)
    return 0


def ui_command(store: str, port: int) -> list[str]:
    # One worker: one person looks at one study (MLflow's default of 4 workers is heavy on a laptop). No access
    # log; a graceful shutdown that does not wait for an open page's connections.
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--uvicorn-opts", "--no-access-log --timeout-graceful-shutdown 1"]


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
    """SIGTERM to the server's process group; once the server has stopped (at most ``STOP_S``), SIGKILL to what
    is left of the group, so nothing it started outlives it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=STOP_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def _graphical() -> bool:
    return sys.platform == "darwin" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
