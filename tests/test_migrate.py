"""``ablate migrate``: a finished study copied from its SQLite store into a real MLflow server (over PostgreSQL) reports
the same table, every run keeps its params, tags, times, metric histories and artifacts; a second migrate copies
nothing; a half-made copy is made again; a run that may still run and a store that cannot be used are refused,
in one line, before anything is copied."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from study_files import write_study
from tracking_server import free_port

from ablate import snapshot, states
from ablate.cli import main
from ablate.ledger import STUDY_RUN, Ledger
from ablate.migrate import MIGRATED_FROM, MIGRATING, PARENT, PARENT_RUN, migrate, named_runs
from ablate.outbox import Outbox
from ablate.store import mlflow_uri, redacted
from ablate.study_file import load_study


def _runs(study) -> dict:
    """Every run of the study's ledger as MLflow has it, by what it is (run key, or the parent run)."""
    ledger = Ledger(study, create=False)
    return {what: ledger.client.get_run(record.run_id) for what, record in named_runs(ledger).items()}


def _histories(client: MlflowClient, run) -> dict:
    return {key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics}


def _artifacts(client: MlflowClient, run, folder: Path) -> dict[str, bytes]:
    root = Path(client.download_artifacts(run.info.run_id, "", str(folder)))
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _moved_to(path: Path, uri: str, folder: Path) -> Path:
    """A copy of the study file in ``folder`` whose tracking section names ``uri``."""
    spec = yaml.safe_load(path.read_text()) | {"tracking": {"uri": uri}}
    moved = folder / path.name
    moved.write_text(yaml.safe_dump(spec, sort_keys=False))
    return moved


def _report(path: Path, out: Path, capsys) -> tuple[str, str]:
    """(table.md with the study file's hash left out, summary.csv)"""
    assert main(["report", str(path), "--out", str(out), "--no-figures"]) == 0
    capsys.readouterr()
    table = re.sub(r"(study \S+) [0-9a-f]{12};", r"\1 HASH;", (out / "table.md").read_text())
    return table, (out / "summary.csv").read_text()


def test_a_migrated_study_reports_the_same_table_keeps_every_record_and_a_second_migrate_copies_nothing(
        finished_study, mlflow_server, tmp_path, capsys):
    local = load_study(finished_study, expand=False)
    here_report = _report(finished_study, tmp_path / "here", capsys)  # its snapshot and report, from SQLite
    before = _runs(local)
    assert main(["migrate", str(finished_study), "--to", mlflow_server.uri]) == 0
    said = capsys.readouterr().out
    assert f"3 runs copied, 0 already there (skipped), into {mlflow_server.uri}" in said
    assert f"tracking:\n  uri: {mlflow_server.uri}\n" in said and "mlflow_run_id" in said

    moved = load_study(_moved_to(finished_study, mlflow_server.uri, tmp_path), expand=False)
    after = _runs(moved)
    assert after.keys() == before.keys() and len(before) == 3  # the parent and two runs, found by key
    there, here = MlflowClient(mlflow_server.uri), MlflowClient(local.store.client_uri)
    for what, old in before.items():
        new = after[what]
        assert new.info.run_id != old.info.run_id and new.data.tags[MIGRATED_FROM] == old.info.run_id
        assert MIGRATING not in new.data.tags
        assert (new.info.run_name, new.info.status, new.info.start_time, new.info.end_time) == (
            old.info.run_name, old.info.status, old.info.start_time, old.info.end_time)
        assert new.data.params == old.data.params and new.data.metrics == old.data.metrics
        tags = {k: v for k, v in new.data.tags.items() if k not in (MIGRATED_FROM, PARENT)}
        assert tags == {k: v for k, v in old.data.tags.items() if k != PARENT}
        if what != PARENT_RUN:
            assert new.data.tags[PARENT] == after[PARENT_RUN].info.run_id
        assert _histories(there, new) == _histories(here, old)
        assert sum(len(h) for h in _histories(here, old).values()) >= (4 if what != PARENT_RUN else 0)
        assert _artifacts(there, new, tmp_path / "new" / what) == _artifacts(here, old, tmp_path / "old" / what)
    experiment = there.get_experiment_by_name(local.name)
    assert experiment.tags[STUDY_RUN] == after[PARENT_RUN].info.run_id  # the ledger's way to its parent run
    assert Ledger(moved, create=False).study_run() == after[PARENT_RUN].info.run_id
    assert ({k: v for k, v in experiment.tags.items() if k != STUDY_RUN}
            == {k: v for k, v in here.get_experiment_by_name(local.name).tags.items() if k != STUDY_RUN})

    # The study file edited in place: the same folder, so the snapshot read from SQLite is there; it is read again.
    shutil.copytree(snapshot.folder(local), snapshot.folder(moved))
    assert _report(moved.path, tmp_path / "there", capsys) == here_report
    read = pd.read_parquet(snapshot.folder(moved) / "runs.parquet")
    assert set(read["run_id"]) == {r.info.run_id for w, r in after.items() if w != PARENT_RUN}

    assert main(["migrate", str(finished_study), "--to", mlflow_server.uri]) == 0
    assert "0 runs copied, 3 already there (skipped)" in capsys.readouterr().out
    again = _runs(moved)
    assert {w: r.info.run_id for w, r in again.items()} == {w: r.info.run_id for w, r in after.items()}
    assert len(there.search_runs([experiment.experiment_id])) == 3
    assert all(_histories(there, again[w]) == _histories(there, after[w]) for w in after)


def _recorded(folder: Path, data_root, job_id: int = 0, running_seed: int | None = None):
    """The study ``live`` (three seeds) recorded the way the submitter and its trainers record one, every run
    finished but the one of ``running_seed``, left RUNNING with the local job ``job_id``."""
    study = load_study(write_study(folder, data_root, name="live", seeds=[0, 1, 2]))
    ledger = Ledger(study)
    parent = ledger.parent_id()
    for run in study.runs:
        run_id = ledger.prepare(run, None, parent, {"executor": "local", "job_id": str(job_id)}).run_id
        ledger.client.log_batch(run_id, metrics=[Metric("train/loss", 5.0 - s, 1000 + s, s) for s in range(5)],
                                synchronous=True)
        ledger.client.update_run(run_id, status="RUNNING")
        if run.seed != running_seed:
            ledger.client.set_terminated(run_id, "FINISHED")
    ledger.end(parent, "FINISHED")
    return study


@pytest.fixture
def live_study(data_root, tmp_path):
    """``_recorded`` with seed 1 running: its job a process with submitit in its command line, as a local job's
    controller has. Yields (study, the running run's key, the job)."""
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "submitit"])
    study = _recorded(tmp_path, data_root, job.pid, running_seed=1)
    yield study, study.runs[1].key, job
    job.kill()
    job.wait()


def test_a_run_that_may_still_run_is_refused_and_an_interrupted_migrate_is_finished(live_study, postgres, capsys,
                                                                                    monkeypatch):
    study, key, job = live_study
    assert main(["migrate", str(study.path), "--to", postgres]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and key in err and "nothing was copied" in err
    target = MlflowClient(mlflow_uri(postgres))
    assert target.get_experiment_by_name("live") is None

    job.kill()
    job.wait()  # its job is gone: the run is interrupted, copied as it is (RUNNING: the next submit resumes it)
    ended = MlflowClient.set_terminated

    def dies_in_the_second_copy(client, *args, **kwargs):  # after the parent, in the middle of a run's copy
        if len(target.search_runs([target.get_experiment_by_name("live").experiment_id])) == 2:
            raise KeyboardInterrupt
        return ended(client, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_terminated", dies_in_the_second_copy)
    with pytest.raises(KeyboardInterrupt):
        migrate(study, postgres)
    monkeypatch.undo()
    experiment_id = target.get_experiment_by_name("live").experiment_id
    half_made = target.search_runs([experiment_id], f"tags.{MIGRATING} = 'yes'")
    assert len(half_made) == 1 and half_made[0].data.tags["kind"] == "run"  # looks like a run: it must go

    migration = migrate(study, postgres)
    assert (migration.copied, migration.skipped, migration.remade) == (3, 1, 1)
    assert target.get_run(half_made[0].info.run_id).info.lifecycle_stage == "deleted"
    moved = migration.study
    here, there = _runs(study), _runs(moved)
    assert there.keys() == here.keys() and len(here) == 4
    assert {w: r.info.status for w, r in there.items()} == {w: r.info.status for w, r in here.items()}
    assert there[key].info.status == "RUNNING"
    assert states.state(Ledger(moved, create=False).records()[key]) == "interrupted"
    assert all(MIGRATING not in r.data.tags for r in there.values())
    source = MlflowClient(study.store.client_uri)
    assert all(_histories(target, there[w]) == _histories(source, here[w]) for w in here)
    assert len(target.search_runs([experiment_id])) == 4


@pytest.mark.parametrize("to, why", [
    ("postgresql://nano4m:secret@127.0.0.1:5433/nano4m", "holds a password"),
    ("ftp://127.0.0.1/x", "unknown scheme"),
    ("sqlite:///tmp/other.db", "SQLite"),
    ("http://127.0.0.1:{port}", "no MLflow server answers"),
    ("postgresql://nano4m@127.0.0.1:5433/no_such_database", "does not exist"),
    ("postgresql://nano4m@127.0.0.1:{port}/nano4m", "Connection refused"),
    ("postgresql://nano4m@127.0.0.1:5433/nano4m", "password authentication failed"),
])
def test_a_store_that_cannot_be_used_is_refused_in_one_line_naming_it_without_its_password(
        finished_study, postgres_server, to, why, monkeypatch, capsys):
    to = to.format(port=free_port())
    if "5433/nano4m" in to and "secret" not in to:
        monkeypatch.setenv("PGPASSWORD", "wrong")
    before = {w: r.info.run_id for w, r in _runs(load_study(finished_study, expand=False)).items()}
    assert main(["migrate", str(finished_study), "--to", to]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("ablate: error: "), err
    assert why in err and redacted(to) in err and "secret" not in err
    assert {w: r.info.run_id for w, r in _runs(load_study(finished_study, expand=False)).items()} == before


def test_records_a_run_folder_has_not_sent_and_runs_the_target_holds_otherwise_are_refused(data_root, postgres,
                                                                                          tmp_path, capsys):
    study = _recorded(tmp_path / "a", data_root)
    unsent = study.runs[2]
    Outbox(unsent.folder).put("tags", tags={"late": "1"})  # its trainer's store was away when it ended
    capsys.readouterr()
    assert main(["migrate", str(study.path), "--to", postgres]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and unsent.key in err and "ablate submit" in err and "nothing was copied" in err
    target = MlflowClient(mlflow_uri(postgres))
    assert target.get_experiment_by_name("live") is None

    unsent.folder.tracking_outbox.unlink()
    assert migrate(study, postgres).copied == 4
    elsewhere = _recorded(tmp_path / "b", data_root)  # the same study recorded again in another store: same keys
    capsys.readouterr()
    assert main(["migrate", str(elsewhere.path), "--to", postgres]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and all(run.key in err for run in study.runs) and PARENT_RUN in err
    assert len(target.search_runs([target.get_experiment_by_name("live").experiment_id])) == 4
