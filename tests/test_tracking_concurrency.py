"""Sixteen runs writing to one MLflow store at once, as a study's runs do, to the study's SQLite file and through a
real MLflow server on PostgreSQL: every metric step arrives once, and no writer sees "database is locked"."""

from __future__ import annotations

import multiprocessing

import pytest
from mlflow.tracking import MlflowClient

from ablate.store import mlflow_uri
from ablate.tracking import RunTracker, ensure_experiment
from model.run_folder import RunFolder

WRITERS, STEPS = 16, 100
KEYS = [f"train/loss/m{i}" for i in range(16)] + ["train/loss", "train/lr", "masks/rgb/input_mean"]


def _value(writer: int, key: int, step: int) -> float:
    return writer * 1e6 + key * 1e3 + step


def _write(uri: str, folder: str, writer: int, start: multiprocessing.synchronize.Barrier) -> None:
    """One run as the trainer writes it: params once, then a batch of metrics per step, then the end."""
    tracker = RunTracker(uri, "concurrency", RunFolder(folder), run_name=f"writer-{writer}")
    start.wait(timeout=120)  # every writer is connected: now they all write at once
    tracker.log_params({f"p{i}": i for i in range(100)})
    for step in range(1, STEPS + 1):
        tracker.log_metrics({k: _value(writer, i, step) for i, k in enumerate(KEYS)}, step)
    tracker.end()


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_sixteen_concurrent_writers_lose_no_metric_and_never_see_a_locked_database(store, tmp_path, capfd, request):
    uri = f"sqlite:///{tmp_path}/mlflow.db" if store == "sqlite" else request.getfixturevalue("mlflow_server").uri
    experiment, _ = ensure_experiment(uri, "concurrency")  # as the submitter does before any job starts
    # Forked: what the runs import is imported once (the test is about the store, not start-up).
    fork = multiprocessing.get_context("fork")
    start = fork.Barrier(WRITERS)
    writers = [fork.Process(target=_write, args=(uri, str(tmp_path / f"run{w}"), w, start)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=600)
    err = capfd.readouterr().err
    assert [p.exitcode for p in writers] == [0] * WRITERS, err
    assert "database is locked" not in err and "does not answer" not in err  # every record went at once

    client = MlflowClient(mlflow_uri(uri))
    runs = client.search_runs([experiment])
    assert sorted(r.info.run_name for r in runs) == sorted(f"writer-{w}" for w in range(WRITERS))
    for run in runs:
        writer = int(run.info.run_name.removeprefix("writer-"))
        assert run.info.status == "FINISHED" and len(run.data.params) == 100
        for i, key in enumerate(KEYS):
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert history == [(step, _value(writer, i, step)) for step in range(1, STEPS + 1)], (writer, key)
