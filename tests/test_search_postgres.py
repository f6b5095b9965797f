"""A search whose study tracks to PostgreSQL (``tracking.uri``): its trials in Optuna's RDB storage on that database,
beside MLflow's tables; a killed submitter and killed or cancelled jobs leave no trial RUNNING and none asked twice."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import psycopg
import yaml
from study_files import IN_BACKGROUND, LOCAL, TINY, children, wait_for, write_study

from ablate.cli import EXIT_UNFINISHED, main
from ablate.executors import EXECUTORS
from ablate.ledger import Ledger
from ablate.search import INTERRUPTED, Search, counted, open_search, summary
from ablate.store import OPTUNA_SCHEMA, optuna_url
from ablate.study_file import load_study

LR = {"train.lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}}


def _study(tmp_path: Path, data_root, postgres: str, trials: int, base: dict | None = None,
           executor: dict | None = None) -> Path:
    """A random search of ``trials`` trials over the tiny model's learning rate, tracked to ``postgres``."""
    search = {"params": LR, "trials": trials, "metric": "train/loss", "sampler": "random", "seed": 0}
    return write_study(tmp_path, data_root, search=search, tracking={"uri": postgres},
                       base={**TINY, "data.root": str(data_root[0]), **(base or {})}, executor=executor or LOCAL)


def _trials(path: Path) -> list[optuna.trial.FrozenTrial]:
    """The search's trials, read as anyone would: Optuna's own loader on the storage URL."""
    study = load_study(path)
    return optuna.load_study(study_name=study.name, storage=optuna_url(study.store.search)).get_trials()


def _started(uri: str) -> bool:
    """Whether a search has made its Optuna study in database ``uri`` (read without Optuna, which would make its
    tables itself, racing the submitter's)."""
    if "studies" not in _tables(uri).get(OPTUNA_SCHEMA, set()):
        return False
    with psycopg.connect(uri) as db:
        return db.execute(f"SELECT count(*) FROM {OPTUNA_SCHEMA}.studies").fetchone()[0] > 0


def _tables(uri: str) -> dict[str, set[str]]:
    with psycopg.connect(uri) as db:
        rows = db.execute("SELECT table_schema, table_name FROM information_schema.tables "
                          "WHERE table_schema IN ('public', %s)", (OPTUNA_SCHEMA,)).fetchall()
    tables: dict[str, set[str]] = {}
    for schema, table in rows:
        tables.setdefault(schema, set()).add(table)
    return tables


def _submitted(path: Path) -> int:
    """How many jobs the study's submitters launched."""
    return len(list((path.parent / load_study(path).name / "submitit").glob("*/*_submitted.pkl")))


def test_a_search_keeps_its_trials_in_the_database_beside_mlflow_s_tables(data_root, tmp_path, postgres, capsys):
    count = 3
    path = _study(tmp_path, data_root, postgres, count)
    study = load_study(path)
    half_asked = open_search(study).ask()  # what a submitter killed while drawing a trial's parameters leaves
    started = time.monotonic()
    assert summary(Search(study, progress=False).run()).startswith(f"{count + 1} trials: 1 interrupted, ")
    print(f"search of {count} trials on PostgreSQL: {time.monotonic() - started:.1f} s", file=sys.stderr)

    trials = _trials(path)
    records = Ledger(study).records()
    assert trials[half_asked.number].state.name == "FAIL" and trials[half_asked.number].user_attrs[INTERRUPTED]
    trials = counted(trials)  # the half asked trial does not count: another took its place
    assert len(trials) == count and {t.state.name for t in trials} == {"COMPLETE"}
    assert {t.user_attrs["run_key"] for t in trials} == set(records)  # one MLflow run a trial
    for trial in trials:
        assert trial.value == records[trial.user_attrs["run_key"]].metric("train/loss")
    assert not (tmp_path / "s" / "optuna.journal").exists()
    # MLflow's and Optuna's tables share a database, each in its schema: both keep an alembic_version table.
    tables = _tables(postgres)
    assert {"trials", "studies", "alembic_version"} <= tables[OPTUNA_SCHEMA] and "runs" not in tables[OPTUNA_SCHEMA]
    assert {"runs", "experiments", "alembic_version"} <= tables["public"] and "trials" not in tables["public"]

    # A search space the stored trials do not fit is refused before any trial is asked, and the way to start
    # over is a command that works.
    data = yaml.safe_load(path.read_text())
    data["search"]["params"]["train.lr"] = {"type": "categorical", "choices": [1e-3, 1e-2]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert main(["submit", str(path)]) == 2
    said = capsys.readouterr().err
    assert f"search.params.train.lr no longer fits the trials of search 's' in {postgres} (" in said
    assert len(_trials(path)) == count + 1 and _submitted(path) == count  # nothing asked, nothing launched
    command = re.search(r"`(optuna delete-study [^`]+)`", said).group(1)
    optuna_cli = Path(sys.executable).parent / "optuna"
    subprocess.run([str(optuna_cli), *shlex.split(command)[1:]], check=True, capture_output=True, timeout=120)
    assert study.name not in optuna.get_all_study_names(optuna_url(postgres))


def test_a_submitter_killed_mid_search_and_restarted_loses_no_trial_and_asks_none_twice(data_root, tmp_path,
                                                                                       postgres, stop_afterwards):
    count = 4
    path = _study(tmp_path, data_root, postgres, count)  # two trials at a time
    command = [sys.executable, "-m", "ablate.cli", "submit", str(path)]
    started = time.monotonic()
    submitter = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **IN_BACKGROUND)
    stop_afterwards(path, submitter)

    def mid_search() -> list[optuna.trial.FrozenTrial]:
        """A trial complete and two running, their jobs launched: the submitter waits on them (killed while it
        asks or launches, it may have left a trial with no parameters, or a job it did not record yet)."""
        assert submitter.poll() is None, "the search ended before it could be killed"
        trials = _trials(path) if _started(postgres) else []
        running = [t.user_attrs.get("run_key") for t in trials if t.state.name == "RUNNING"]
        if "COMPLETE" not in [t.state.name for t in trials] or len(running) < 2 or None in running:
            return []
        records = Ledger(load_study(path), create=False).records()
        return trials if all(key in records and "job_id" in records[key].tags for key in running) else []

    before = wait_for(mid_search, "a complete trial and two running", timeout_s=300)
    submitter.send_signal(signal.SIGKILL)
    submitter.wait()
    left = {t.number: (t.params, t.user_attrs["run_key"]) for t in before if t.state.name == "RUNNING"}

    restarted = subprocess.run(command, capture_output=True, text=True, timeout=600, **IN_BACKGROUND)
    assert restarted.returncode == 0, restarted.stderr
    print(f"search of {count} trials, killed once: {time.monotonic() - started:.1f} s", file=sys.stderr)
    trials = _trials(path)
    assert len(trials) == count and {t.state.name for t in trials} == {"COMPLETE"}
    # The trials left RUNNING were re-attached (same number, same parameters, same run), not asked again.
    assert {t.number: (t.params, t.user_attrs["run_key"]) for t in trials if t.number in left} == left
    keys = [t.user_attrs["run_key"] for t in trials]
    assert len(set(keys)) == count  # continuous learning rates: no two trials drew the same run
    runs = Ledger(load_study(path)).records()
    assert set(runs) == set(keys) and {r.status for r in runs.values()} == {"FINISHED"}
    assert _submitted(path) == count  # no run launched twice


def _checkpointed(path: Path, key: str) -> bool:
    """Whether run ``key`` has a checkpoint (so that a relaunch resumes it)."""
    return load_study(path).run_folder(key).latest_step() is not None


def test_a_killed_job_s_trial_is_rerun_and_a_cancelled_one_is_asked_again_none_left_running(data_root, tmp_path,
                                                                                          postgres, stop_afterwards):
    count = 2
    base = {"train.steps": 100, "train.checkpoint_every": 5}
    path = _study(tmp_path, data_root, postgres, count, base=base, executor={**LOCAL, "max_retries": 1})
    started = time.monotonic()
    submitter = subprocess.Popen([sys.executable, "-m", "ablate.cli", "submit", str(path)], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, **IN_BACKGROUND)
    stop_afterwards(path, submitter)

    def both_training() -> list[optuna.trial.FrozenTrial]:
        assert submitter.poll() is None, "the search ended before its jobs could be stopped"
        trials = _trials(path) if _started(postgres) else []
        keys = [t.user_attrs.get("run_key") for t in trials]
        return trials if len(trials) == count and all(k and _checkpointed(path, k) for k in keys) else []

    killed, cancelled = wait_for(both_training, "two trials training past a checkpoint", timeout_s=300)
    records = Ledger(load_study(path)).records()
    killed_run, cancelled_run = (records[t.user_attrs["run_key"]] for t in (killed, cancelled))
    (trainer,) = children(int(killed_run.tags["job_id"]))
    os.kill(trainer, signal.SIGKILL)  # a crash the trainer cannot report: its run still reads RUNNING
    EXECUTORS["local"].cancel(cancelled_run.tags["job_id"])  # what `ablate cancel` does to each local job
    out, _ = submitter.communicate(timeout=600)  # the killed run is relaunched and finishes; nothing more asked
    assert submitter.returncode == EXIT_UNFINISHED == 3  # a trial's run was cancelled: not finished
    assert not psutil.pid_exists(trainer) or psutil.Process(trainer).status() == psutil.STATUS_ZOMBIE

    trials = {t.number: t for t in _trials(path)}
    assert "RUNNING" not in {t.state.name for t in trials.values()}
    assert trials[killed.number].state.name == "COMPLETE"
    assert trials[cancelled.number].state.name == "FAIL" and trials[cancelled.number].user_attrs[INTERRUPTED]
    (waiting,) = [t for t in trials.values() if t.state.name == "WAITING"]  # the cancelled trial, asked again
    assert waiting.user_attrs["run_key"] == cancelled.user_attrs["run_key"]
    assert "1 interrupted" in out and "1 waiting" in out and "1 complete" in out
    records = Ledger(load_study(path)).records()
    assert records[killed_run.tags["run_key"]].run_id == killed_run.run_id  # resumed in the same MLflow run
    assert records[killed_run.tags["run_key"]].retries == 1
    assert records[cancelled_run.tags["run_key"]].status == "KILLED"

    assert main(["submit", str(path)]) == 0  # the re-asked trial resumes the cancelled run
    print(f"search of {count} trials, a job killed and one cancelled: {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    trials = _trials(path)
    assert "RUNNING" not in {t.state.name for t in trials} and len(trials) == count + 1
    assert [t.state.name for t in counted(trials)] == ["COMPLETE"] * count
    assert trials[waiting.number].state.name == "COMPLETE" and trials[waiting.number].params == cancelled.params
    records = Ledger(load_study(path)).records()
    assert len(records) == count and {r.status for r in records.values()} == {"FINISHED"}
    assert records[cancelled_run.tags["run_key"]].run_id == cancelled_run.run_id  # resumed, not started over
    assert _submitted(path) == count + 2  # the two first jobs, the killed run's retry, the cancelled run's resume
