"""Eight runs writing to one SQLite MLflow store at once, as a study's local runs do: every metric step
arrives, and no writer sees "database is locked"."""

from __future__ import annotations

import multiprocessing

from mlflow.tracking import MlflowClient

from ablate.store import driver_uri
from ablate.tracking import RunTracker, ensure_experiment

WRITERS, STEPS = 8, 100
KEYS = [f"train/loss/m{i}" for i in range(16)] + ["train/loss", "train/lr", "masks/rgb/input_mean"]


def _value(writer: int, key: int, step: int) -> float:
    return writer * 1e6 + key * 1e3 + step


def _write(uri: str, writer: int, start: multiprocessing.synchronize.Barrier) -> None:
    """One run as the trainer writes it: params once, then a batch of metrics per step, then the end."""
    tracker = RunTracker(uri, "concurrency", None, run_name=f"writer-{writer}")
    start.wait(timeout=120)  # every writer is connected: now they all write at once
    tracker.log_params({f"p{i}": i for i in range(100)})
    for step in range(1, STEPS + 1):
        tracker.log_metrics({k: _value(writer, i, step) for i, k in enumerate(KEYS)}, step)
    tracker.end()


def test_eight_concurrent_writers_lose_no_metric_and_never_see_a_locked_database(tmp_path, capfd):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = ensure_experiment(uri, "concurrency")  # as the submitter does before any job starts
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters, like the runs' processes
    start = spawn.Barrier(WRITERS)
    writers = [spawn.Process(target=_write, args=(uri, w, start)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=600)
    err = capfd.readouterr().err
    assert [p.exitcode for p in writers] == [0] * WRITERS, err
    assert "database is locked" not in err

    client = MlflowClient(driver_uri(uri))
    runs = client.search_runs([experiment])
    assert sorted(r.info.run_name for r in runs) == sorted(f"writer-{w}" for w in range(WRITERS))
    for run in runs:
        writer = int(run.info.run_name.removeprefix("writer-"))
        assert run.info.status == "FINISHED" and len(run.data.params) == 100
        for i, key in enumerate(KEYS):
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert history == [(step, _value(writer, i, step)) for step in range(1, STEPS + 1)], (writer, key)
