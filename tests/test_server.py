"""``ablate server`` against the real PostgreSQL of scripts/start_postgres.sh: a real ``mlflow server`` started
detached, found running, used by an MLflow client, stopped with every process it started, started again on the
same database (which it upgrades); and bad input refused in one line before anything starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient
from tracking_server import free_port, tracking_server

from ablate import server as ablate_server
from ablate.cli import main
from ablate.mlflow_ui import ServerError, check_port_free
from ablate.server import ServerSpec, command, pool, running
from ablate.store import StoreError, check_server, connect


def _group(pid: int) -> list[psutil.Process]:
    """The live processes of the group ``pid`` leads (the server and everything it started)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_a_client_logs_through_it_a_second_start_finds_it_and_a_restart_upgrades_the_database(mlflow_server):
    spec = mlflow_server.spec
    assert mlflow_server.said[-1] == f"tracking.uri: http://127.0.0.1:{spec.port}" == f"tracking.uri: {spec.url}"
    pid = running(spec.state, spec.port).pid
    assert len(_group(pid)) >= 3  # mlflow server, uvicorn's supervisor, its workers

    client = MlflowClient(mlflow_server.uri)
    run = client.create_run(client.create_experiment("served"))
    client.log_metric(run.info.run_id, "train/loss", 1.5, step=3)
    artifact = Path(tempfile.mkdtemp()) / "config.yaml"
    artifact.write_text("model: tiny\n")
    client.log_artifact(run.info.run_id, str(artifact))
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")] == [(3, 1.5)]
    fetched = Path(client.download_artifacts(run.info.run_id, "config.yaml", tempfile.mkdtemp()))
    assert fetched.read_text() == "model: tiny\n"
    assert [p.read_text() for p in spec.artifacts.rglob("config.yaml")] == ["model: tiny\n"]  # served: stored here

    mlflow_server.start()  # idempotent: it runs, it is not started twice
    assert mlflow_server.said[-2:] == [f"the MLflow server already runs on port {spec.port} (pid {pid}; log "
                                       f"{spec.log})", f"tracking.uri: {spec.url}"]
    assert running(spec.state, spec.port).pid == pid

    mlflow_server.stop()
    assert not _group(pid) and not _answers(mlflow_server.uri) and running(spec.state, spec.port) is None
    check_port_free(spec.port)

    mlflow_server.start()  # the same database, now holding MLflow's tables
    with connect(spec.database) as db:
        revision = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert f"{spec.database} holds MLflow's tables: ran mlflow db upgrade: schema current ({revision})" in \
        mlflow_server.said
    assert [m.value for m in MlflowClient(mlflow_server.uri).get_metric_history(run.info.run_id, "train/loss")] == [1.5]
    restarted = running(spec.state, spec.port).pid
    mlflow_server.stop(kill=True)  # as a crash would: no shutdown
    assert not _group(restarted) and not _answers(mlflow_server.uri)


def test_the_command_line_starts_finds_and_stops_it_leaving_no_process(postgres, tmp_path):
    port, state = free_port(), tmp_path / "state"
    cli = [sys.executable, "-m", "ablate.cli", "server"]
    started = subprocess.run([*cli, postgres, "--artifacts", str(tmp_path / "artifacts"), "--port", str(port),
                              "--state", str(state), "--workers", "1"], capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.splitlines()[-1] == f"tracking.uri: http://127.0.0.1:{port}"
        pid = running(state, port).pid
        again = subprocess.run([*cli, postgres, "--artifacts", str(tmp_path / "artifacts"), "--port", str(port),
                                "--state", str(state)], capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "already runs" in again.stdout, again.stdout + again.stderr
    finally:
        stopped = subprocess.run([*cli, "--stop", "--port", str(port), "--state", str(state)], capture_output=True,
                                 text=True, timeout=120)
    assert stopped.returncode == 0 and stopped.stdout == f"stopped the MLflow server on port {port} (pid {pid})\n"
    assert not _group(pid) and not _answers(f"http://127.0.0.1:{port}")
    assert not (state / f"server-{port}.json").exists()
    assert "Uvicorn running on" in (state / f"server-{port}.log").read_text()


def test_basic_auth_refuses_a_wrong_password_in_one_line(postgres, tmp_path, monkeypatch):
    server = tracking_server(postgres, tmp_path / "server", auth=True, workers=1)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    with pytest.raises(ServerError, match="(?s)exited before answering.*MLFLOW_AUTH_ADMIN_PASSWORD"):
        server.start()  # MLflow ships no admin password: the server stops at once, the log says why
    assert running(server.spec.state, server.spec.port) is None
    check_port_free(server.spec.port)

    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "first-admin-password")
    server.start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "first-admin-password")
        check_server(server.uri)
        run = MlflowClient(server.uri).create_run("0")  # MLflow's client takes the same variables
        assert run.info.status == "RUNNING"
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(StoreError) as refused:
            check_server(server.uri)
        assert str(refused.value) == (f"{server.uri}: the server refused user 'admin' (401); set "
                                      "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
        with pytest.raises(StoreError, match="needs a user: MLFLOW_TRACKING_USERNAME is unset"):
            check_server(server.uri)
    finally:
        server.stop()


def test_an_unreachable_server_is_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreError) as unreachable:
        check_server(url)
    assert str(unreachable.value) == f"{url}: no MLflow server answers ([Errno 111] Connection refused)"


def test_allowed_hosts_match_the_address_it_binds():
    local = command(ServerSpec("postgresql://u@db:5432/m", Path("/a"), port=5123))
    assert local[local.index("--allowed-hosts") + 1] == "127.0.0.1:5123,localhost:5123"
    assert local[local.index("--backend-store-uri") + 1] == "postgresql+psycopg://u@db:5432/m"
    assert local[local.index("--artifacts-destination") + 1] == "file:///a" and "--serve-artifacts" in local

    spec = ServerSpec("postgresql://u@db:5432/m", Path("/shared/art"), serve_artifacts=False, host="0.0.0.0",
                      port=5123, allowed_hosts=("login1.cluster", "10.1.*"))
    every = command(spec)
    allowed = every[every.index("--allowed-hosts") + 1].split(",")
    assert f"{socket.gethostname()}:5123" in allowed and f"{socket.getfqdn()}:5123" in allowed
    assert {"127.0.0.1:5123", "localhost:5123", "login1.cluster:5123", "10.1.*"} <= set(allowed)
    assert every[every.index("--host") + 1] == "0.0.0.0" and spec.url == f"http://{socket.getfqdn()}:5123"
    assert every[every.index("--default-artifact-root") + 1] == "file:///shared/art"
    assert "--no-serve-artifacts" in every and "--app-name" not in every


def test_pools_are_sized_to_the_workers_and_the_database():
    for workers in (1, 2, 4, 8, 16, 32):
        size, overflow = pool(workers, 2, 300)
        assert size >= 1 and overflow >= 1 and (workers + 1) * 2 * (size + overflow) <= 150
    assert pool(2, 2, 300) == (10, 10)  # SQLAlchemy's default (5 + 10) is about that
    with pytest.raises(ServerError, match="--workers 40 is too many for PostgreSQL's max_connections 100"):
        pool(40, 2, 100)


def test_a_stale_pid_file_is_forgotten(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "server-5123.json").write_text(f'{{"pid": {gone.pid}, "database": "d", "url": "u"}}')
    assert running(tmp_path, 5123) is None and not (tmp_path / "server-5123.json").exists()


@pytest.mark.parametrize("bad", ["unreachable", "wrong password", "missing database", "password in the URI"])
def test_bad_input_is_one_line_and_starts_nothing(bad, postgres, tmp_path, monkeypatch, capsys):
    user_at, rest = postgres.split("@")
    uri = {"unreachable": f"{user_at}@127.0.0.1:{free_port()}/{rest.split('/')[1]}",
           "missing database": f"{postgres}_missing", "password in the URI": postgres.replace("@", ":secret@"),
           "wrong password": postgres}[bad]
    expected = {"unreachable": "Connection refused", "wrong password": "password authentication failed",
                "missing database": "does not exist", "password in the URI": "the URI holds a password"}[bad]
    port, state = free_port(), tmp_path / "state"
    argv = ["server", uri, "--artifacts", str(tmp_path / "artifacts"), "--port", str(port), "--state", str(state)]
    if bad == "wrong password":  # as a user would: the command line, its own process
        done = subprocess.run([sys.executable, "-m", "ablate.cli", *argv], capture_output=True, text=True,
                              env={**os.environ, "PGPASSWORD": "wrong"}, timeout=60)
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code = main(argv)
        out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("ablate: error: postgresql://") and expected in err, err
    if bad == "password in the URI":
        assert "secret" not in err and ":***@" in err
    assert not state.exists() and not (tmp_path / "artifacts").exists()  # nothing started, nothing written
    check_port_free(port)


def test_a_taken_port_is_refused_before_the_database_is_touched(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is in use"):
            ablate_server.start(ServerSpec("postgresql://u@127.0.0.1:1/none", tmp_path, port=port,
                                           state=tmp_path / "state"))
