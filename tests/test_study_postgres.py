"""A study tracked to a real PostgreSQL (``tracking: {uri: postgresql://...}``): many processes starting at once
make one experiment and one parent run, a local study runs and reports through it, and a store that cannot be
used is refused in one line before anything is recorded."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import postgres as pg
import pytest
from mlflow.tracking import MlflowClient
from study_files import write_study

from ablate.dispatch import submit
from ablate.ledger import Ledger
from ablate.store import mlflow_uri
from ablate.study_file import load_study

STARTS = 32


def _start(path: str, start: multiprocessing.synchronize.Barrier, parents: multiprocessing.Queue) -> None:
    """What a submitter (or a job) does first: get or create the study's experiment and parent run."""
    study = load_study(Path(path), expand=False)
    start.wait(timeout=120)
    parents.put(Ledger(study).parent_id())


def test_thirty_two_processes_starting_at_once_make_one_experiment_and_one_parent_run(tmp_path, data_root, postgres):
    path = write_study(tmp_path, data_root, name="crowd", tracking={"uri": postgres})
    # Forked from this process, which has imported what they need but opened no connection: 32 start in a second.
    fork = multiprocessing.get_context("fork")
    start, parents = fork.Barrier(STARTS), fork.Queue()
    processes = [fork.Process(target=_start, args=(str(path), start, parents)) for _ in range(STARTS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * STARTS
    said = {parents.get(timeout=10) for _ in range(STARTS)}

    client = MlflowClient(mlflow_uri(postgres))
    experiments = [e for e in client.search_experiments() if e.name == "crowd"]
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id], "tags.kind = 'study'")
    assert len(runs) == 1 and said == {runs[0].info.run_id}


def test_a_local_study_runs_and_reports_through_postgresql(tmp_path, data_root, postgres):
    path = write_study(tmp_path, data_root, name="pg", seeds=[0, 1], tracking={"uri": postgres})
    assert set(submit(load_study(path), progress=False).values()) == {"done"}
    study = load_study(path)
    assert not (study.dir / "mlflow.db").exists()  # nothing went to a SQLite file
    records = Ledger(study, create=False).records()
    assert sorted(records) == sorted(run.key for run in study.runs)
    assert all(r.status == "FINISHED" and r.metric("train/loss") is not None for r in records.values())
    client = MlflowClient(mlflow_uri(postgres))
    for run in study.runs:
        steps = sorted(m.step for m in client.get_metric_history(records[run.key].run_id, "train/loss"))
        assert steps == list(range(1, run.config["train"]["steps"] + 1))
    report = _ablate("report", str(path), "--out", str(tmp_path / "reports"))
    assert report.returncode == 0, report.stderr
    assert "train/loss" in report.stdout


def _ablate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("case", ["unreachable", "wrong password", "no such database", "unknown scheme",
                                  "server away"])
def test_a_store_that_cannot_be_used_is_refused_in_one_line_before_anything_is_recorded(case, tmp_path, data_root,
                                                                                       postgres):
    uri = {"unreachable": pg.uri("nano4m").replace(str(pg.PORT), "1"),
           "wrong password": postgres, "no such database": pg.uri("no_such_database"),
           "unknown scheme": "mysql://nano4m:secret@127.0.0.1/nano4m", "server away": "http://127.0.0.1:1"}[case]
    path = write_study(tmp_path, data_root, name="bad", tracking={"uri": uri})
    env = {"PGPASSWORD": "wrong"} if case == "wrong password" else {}
    # every command checks the store; each case is seen through submit, one through them all
    for command in ("plan", "submit", "status", "report") if case == "wrong password" else ("submit",):
        done = _ablate(command, str(path), env=env)
        lines = done.stderr.strip().splitlines()
        # a URI the schema refuses is a study problem: the file's header line, then the one problem
        assert done.returncode == 2 and len(lines) == 1 + (case == "unknown scheme"), (command, done.stderr)
        said = lines[-1]
        assert "secret" not in done.stderr and "tracking" in said and ("127.0.0.1" in said or "mysql://" in said)
    assert {"unreachable": "cannot connect", "wrong password": "password authentication failed",
            "no such database": 'database "no_such_database" does not exist', "unknown scheme": "unknown scheme",
            "server away": "no MLflow server answers"}[case] in said
    assert not (tmp_path / "bad").exists()  # no store, no run folder, no job log
    client = MlflowClient(mlflow_uri(postgres))
    assert [e.name for e in client.search_experiments()] == ["Default"]
