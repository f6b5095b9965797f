"""A tracker whose store is away keeps training's records in the run folder and sends them, once each, when the
store answers again (``ablate/outbox.py``, ``ablate/tracking.py``). The store here is a real SQLite file made
unreachable by a plain file standing where its folder should be; tests/test_tracking_server.py kills a real
MLflow server instead."""

from __future__ import annotations

import fcntl
import json
import time

from mlflow.tracking import MlflowClient

from ablate.outbox import Outbox, unsent_count
from ablate.store import mlflow_uri
from ablate.tracking import RunTracker, send_leftovers
from model.run_folder import RunFolder


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_run_trains_on_while_its_store_is_away_and_everything_arrives_once_when_it_answers(tmp_path, capfd):
    blocker = tmp_path / "store"
    blocker.write_text("not a folder")  # the store's folder cannot be made: every request fails at once
    uri = f"sqlite:///{blocker}/mlflow.db"
    folder = RunFolder(tmp_path / "run")

    tracker = RunTracker(uri, "outage", folder, run_name="r", request_timeout=2)
    started = time.monotonic()
    tracker.log_params({"lr": 0.1, "model": "tiny"})
    for step in range(1, 51):
        tracker.log_metrics({"train/loss": 1 / step, "train/lr": 0.1}, step)
    tracker.set_tags({"note": "away"})
    assert time.monotonic() - started < 5  # one failed try, then backoff: no step waits on the store
    assert tracker.run_id is None and unsent_count(folder) == 1 + 1 + 1 + 50 + 1  # create, RUNNING, params, ...
    assert "does not answer" in capfd.readouterr().err

    blocker.unlink()  # the store is back
    tracker.retry_at = 0.0  # no need to wait out the backoff in a test
    for step in range(51, 61):
        tracker.log_metrics({"train/loss": 1 / step, "train/lr": 0.1}, step)
    tracker.end()
    assert unsent_count(folder) == 0 and "answers again" in capfd.readouterr().err

    client = MlflowClient(mlflow_uri(uri))
    (run,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
    assert run.info.run_id == tracker.run_id == folder.read_mlflow_run_id()  # created once, and the folder names it
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1", "model": "tiny"}
    assert run.data.tags["note"] == "away"
    assert _history(client, run.info.run_id, "train/loss") == [(s, 1 / s) for s in range(1, 61)]


def test_a_resumed_run_logs_no_step_twice_and_keeps_its_first_params(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    folder = RunFolder(tmp_path / "run")
    first = RunTracker(uri, "resume", folder, run_name="r")
    first.log_params({"lr": 0.1})
    for step in range(1, 11):
        first.log_metrics({"train/loss": float(step)}, step)
    first.end("KILLED")

    again = RunTracker(uri, "resume", folder, run_name="r")  # resumed from a checkpoint at step 5: 6..10 replayed
    again.log_params({"lr": 0.1, "added": 1})
    for step in range(6, 16):
        again.log_metrics({"train/loss": float(step)}, step)
    again.end()

    client = MlflowClient(mlflow_uri(uri))
    assert again.run_id == first.run_id
    assert _history(client, first.run_id, "train/loss") == [(s, float(s)) for s in range(1, 16)]
    run = client.get_run(first.run_id)
    assert run.data.params == {"lr": "0.1", "added": "1"} and run.info.status == "FINISHED"


def test_a_create_whose_answer_was_lost_finds_its_run_instead_of_making_a_ghost(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    folder = RunFolder(tmp_path / "run")
    tracker = RunTracker(uri, "ghost", folder, run_name="r")
    # The store made the run, but the answer never came: the folder does not know it, the outbox still asks.
    folder.tracking_sent.unlink()
    (folder.path / RunFolder.MLFLOW_RUN_ID).unlink()
    again = RunTracker(uri, "ghost", folder, run_name="r")
    again.end()
    client = MlflowClient(mlflow_uri(uri))
    runs = client.search_runs([client.get_experiment_by_name("ghost").experiment_id])
    assert again.run_id == tracker.run_id and [r.info.run_id for r in runs] == [tracker.run_id]


def test_what_a_dead_trainer_left_is_sent_by_the_submitter_in_order(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    folder = RunFolder(tmp_path / "run")
    tracker = RunTracker(uri, "leftovers", folder, run_name="r")
    tracker.retry_at = float("inf")  # its store went away, and the trainer died before it came back
    for step in range(1, 4):
        tracker.log_metrics({"train/loss": float(step)}, step)
    tracker.outbox.put("status", status="FINISHED", ms=int(time.time() * 1000))
    assert unsent_count(folder) == 4
    assert send_leftovers(folder, uri) and unsent_count(folder) == 0
    assert send_leftovers(folder, uri)  # nothing left: nothing sent again
    client = MlflowClient(mlflow_uri(uri))
    assert client.get_run(tracker.run_id).info.status == "FINISHED"
    assert _history(client, tracker.run_id, "train/loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_the_outbox_groups_metrics_skips_a_cut_line_and_yields_to_another_sender(tmp_path):
    folder = RunFolder(tmp_path)
    outbox = Outbox(folder)
    outbox.put("status", status="RUNNING", ms=0)
    for step in range(3):
        outbox.put("metrics", step=step, ms=0, metrics={f"m{i}": 0.0 for i in range(600)})
    outbox.put("tags", tags={"a": "b"})
    with folder.tracking_outbox.open("a") as f:
        f.write('{"seq": 6, "op": "met')  # a crash in the middle of a write
    outbox = Outbox(folder)  # the restarted trainer's
    groups = []
    assert outbox.send(lambda group: groups.append([(r["seq"], r["op"]) for r in group]))
    # 600 + 600 metrics exceed MLflow's batch of 1000: the metrics go in three batches
    assert groups == [[(1, "status")], [(2, "metrics")], [(3, "metrics")], [(4, "metrics")], [(5, "tags")]]
    assert outbox.unsent() == []

    outbox.put("tags", tags={"c": "d"})  # starts a line of its own after the cut one
    assert json.loads(folder.tracking_outbox.read_text().splitlines()[-1])["seq"] == 6
    with folder.tracking_lock.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a submitter is sending
        assert not outbox.send(lambda group: groups.append(group))
    assert len(groups) == 5 and unsent_count(folder) == 1
