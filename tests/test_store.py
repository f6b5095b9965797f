"""A new SQLite store is a copy of an empty one with MLflow's tables: usable at once, as MLflow would have made
it, and never over a store that exists."""

from __future__ import annotations

import sqlite3
import time

from mlflow.tracking import MlflowClient

from ablate.store import _copy_empty_store, mlflow_uri, sqlite_path


def _rows(path, query):
    with sqlite3.connect(path) as db:
        return db.execute(query).fetchall()


def _schema(path) -> list[tuple[str, str, list[str]]]:
    """Every table and index with the lines of its SQL, sorted: two stores MLflow makes itself may list a
    table's constraints in different orders."""
    return [(kind, name, sorted((sql or "").replace(",", "").split("\n")))
            for kind, name, sql in _rows(path, "SELECT type, name, sql FROM sqlite_master ORDER BY type, name")]


def test_a_new_store_is_what_mlflow_makes_usable_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made_by_mlflow = tmp_path / "mlflow-made.db"
    MlflowClient(f"sqlite:///{made_by_mlflow}").search_experiments()  # MLflow runs its migrations
    before = int(time.time() * 1000)
    uris = [mlflow_uri(f"sqlite:///{tmp_path / name / 'mlflow.db'}") for name in ("one", "two")]
    for uri in uris:
        path = sqlite_path(uri)
        assert _schema(path) == _schema(made_by_mlflow)
        for query in ("SELECT version_num FROM alembic_version", "SELECT name, artifact_location FROM "
                      "experiments", "SELECT * FROM workspaces"):
            assert _rows(path, query) == _rows(made_by_mlflow, query), query
        assert _rows(path, "SELECT creation_time FROM experiments")[0][0] >= before
        assert _rows(path, "PRAGMA journal_mode") == [("wal",)]
        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment("e"))
        client.log_metric(run.info.run_id, "m", 1.0)
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    assert not list(tmp_path.glob("*/.mlflow.db.*"))  # no partial copy left behind


def test_a_store_that_exists_is_never_replaced(tmp_path):
    uri = mlflow_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient(uri)
    experiment = client.create_experiment("kept")
    _copy_empty_store(sqlite_path(uri))  # as a second process that saw no file a moment ago would
    assert MlflowClient(uri).get_experiment(experiment).name == "kept"
