"""``ablate migrate STUDY --to URI``: a study's MLflow records copied from its store into another one (an MLflow
server or a PostgreSQL database), so that the study can continue there.

Copied: the experiment (name, tags, description), the study's parent run and every child run (the ledger's
runs: ``kind`` study and run) with their params, tags, run names, statuses, start and end times, each
metric's whole history (values, steps, timestamps) and their artifacts. MLflow gives every copy a new run
id; a child's ``mlflow.parentRunId`` and the experiment's ``STUDY_RUN`` tag name the parent's copy. Nothing
is written to the study's own store or folder.

Each copy is tagged ``migrated_from`` (its source run's id) and, until it is whole, ``migrating``: a copy left
half made by an interrupted migrate is deleted and made again, a whole one is skipped, so running the
command again copies nothing twice.

Refused, before anything is copied: a URI the study file could not hold (``TrackingSpec``: a password in it),
a store that does not answer (``Store.check``), a run whose job may still run (``states.FOLLOWED_STATES``), a
run whose folder holds records its store has not taken (``ablate/outbox.py``: they would miss the copy, and
would later be sent to a run id the target does not know), and a run key the target already records in a
run that is no copy of this store's run.

The ledger finds runs by their ``run_key`` tag, so new run ids are no loss to it. A run folder's
``mlflow_run_id`` still names the old run: the next ``ablate submit`` rewrites it for every run it launches
(``Ledger.prepare``); a finished run's is read only to send what its outbox holds unsent, and a run with
records unsent is not migrated.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from dataclasses import dataclass

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from pydantic import ValidationError
from tqdm import tqdm

from ablate import store
from ablate.ledger import STUDY_RUN, Ledger, Record
from ablate.outbox import METRICS_PER_BATCH, unsent_count
from ablate.schema import StudyError, TrackingSpec
from ablate.states import FOLLOWED_STATES, state
from ablate.study import Study
from ablate.tracking import ensure_experiment

MIGRATED_FROM = "migrated_from"  # on a copy: its source run's id
MIGRATING = "migrating"  # on a copy still being made; removed once it is whole
PARENT = "mlflow.parentRunId"
PARENT_RUN = "the study's parent run"  # how messages name it beside run keys
TERMINAL = ("FINISHED", "FAILED", "KILLED")  # set_terminated's statuses; others are set as they are
PARAMS_PER_BATCH = 100  # MLflow's cap on one log_batch (its metrics cap: outbox.METRICS_PER_BATCH)
# The client prints a link for every run it ends on a server: one per copied run.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


@dataclass
class Migration:
    """What one migrate did: ``copied`` runs, ``skipped`` ones whose whole copy was there already, ``remade``
    half-made copies (of an interrupted migrate) deleted and copied again."""

    study: Study  # the study as it reads once its tracking.uri is the target
    copied: int = 0
    skipped: int = 0
    remade: int = 0

    def __str__(self) -> str:
        target = self.study.store
        remade = f" ({self.remade} left half made by an interrupted migrate, made again)" if self.remade else ""
        return (f"{self.study.name}: {self.copied} runs copied{remade}, {self.skipped} already there (skipped), "
                f"into {target.redacted}.\nTo continue the study there, put in {self.study.path}:\n\n"
                f"tracking:\n  uri: {target.uri}\n\n"
                "The copies have new run ids (MLflow cannot keep them); the ledger finds runs by their run_key tag. "
                "The run folders' mlflow_run_id files still name the old runs: the next `ablate submit` rewrites "
                "each for the run it launches, and a finished run's is not read again.")


def migrate(study: Study, to: str, progress: bool | None = None) -> Migration:
    """Copy the study's records from ``study.store`` into the store at ``to`` (see the module docstring).
    ``progress``: a bar over runs (default: when stderr is a terminal). Raises ``StoreError`` or ``StudyError``
    (one line each) before copying anything."""
    target = _retargeted(study, to)
    source = Ledger(study, create=False)
    runs = named_runs(source)
    if not runs:
        raise StudyError(f"{study.path}: nothing to migrate: {study.store.redacted} records no run of {study.name!r}")
    if live := sorted(what for what, record in runs.items() if state(record) in FOLLOWED_STATES):
        raise StudyError(f"{study.path}: {len(live)} run(s) may still run ({', '.join(live)}); let them end or "
                         f"`ablate cancel {study.path}`, then migrate again; nothing was copied")
    if unsent := sorted(key for key in runs if key != PARENT_RUN and unsent_count(study.run_folder(key))):
        raise StudyError(f"{study.path}: {len(unsent)} run(s) hold records {study.store.redacted} has not taken yet "
                         f"({', '.join(unsent)}; `ablate status` counts them): `ablate submit {study.path}` sends "
                         "them once it answers, then migrate again; nothing was copied")
    target.store.check()
    there = Ledger(target, create=False)
    copies, half_made = _copies(named_runs(there), runs, target.store)

    migration = Migration(target, remade=len(half_made))
    experiment_id, _ = ensure_experiment(target.store.uri, study.name, target.store.artifacts)
    for key, value in source.client.get_experiment(source.experiment_id).tags.items():
        if key != STUDY_RUN:  # names the source's parent run: set to its copy's once that is whole
            there.client.set_experiment_tag(experiment_id, key, value)
    for run_id in half_made:
        there.client.delete_run(run_id)
    show = sys.stderr.isatty() if progress is None else progress
    for record in tqdm(runs.values(), desc=f"{study.name}: migrating", unit="run", disable=not show):
        if record.run_id in copies:
            migration.skipped += 1
            continue
        copies[record.run_id] = _copy(source.client, there.client, experiment_id, record.run_id, copies)
        migration.copied += 1
    if PARENT_RUN in runs:
        there.client.set_experiment_tag(experiment_id, STUDY_RUN, copies[runs[PARENT_RUN].run_id])
    return migration


def _retargeted(study: Study, to: str) -> Study:
    """The study as it reads with ``tracking: {uri: to}``; a URI it could not hold is a one-line ``StoreError``."""
    if store.kind(to) == "sqlite":
        raise store.StoreError(f"{store.redacted(to)}: a study moves to an MLflow server (http(s)://) or a "
                               "PostgreSQL database (postgresql://); a SQLite store is only ever the study's own file")
    if to == study.store.uri:
        raise store.StoreError(f"{store.redacted(to)} is the study's store already")
    try:
        tracking = TrackingSpec(uri=to)
    except ValidationError as e:
        raise store.StoreError(f"{store.redacted(to)}: {e.errors()[0]['ctx']['error']}") from None
    return dataclasses.replace(study, spec=study.spec.model_copy(update={"tracking": tracking}))


def named_runs(ledger: Ledger) -> dict[str, Record]:
    """The ledger's runs by what they are: the study's parent run first (its children name its copy), then each
    child by its run key."""
    parent = ledger.study_run()
    return ({PARENT_RUN: ledger.record(parent)} if parent is not None else {}) | ledger.records()


def _copies(there: dict[str, Record], ours: dict[str, Record], target: store.Store) -> tuple[dict[str, str], list[str]]:
    """The copies already in the target: whole ones (source run id -> copy's id) and half-made ones (their ids).
    A run there that is no copy of ours, under a run key of ours or as the study's parent, is a ``StudyError``."""
    ids = {record.run_id for record in ours.values()}
    whole, half_made, clash = {}, [], []
    for what, record in there.items():
        origin = record.tags.get(MIGRATED_FROM)
        if origin in ids and MIGRATING in record.tags:
            half_made.append(record.run_id)
        elif origin in ids:
            whole[origin] = record.run_id
        elif what in ours:
            clash.append(what)
    if clash:
        raise StudyError(f"{target.redacted} records runs of this study already that are no copies of its store's "
                         f"({', '.join(clash)}); migrate into a store without them; nothing was copied")
    return whole, half_made


def _copy(source: MlflowClient, target: MlflowClient, experiment_id: str, run_id: str, copies: dict[str, str]) -> str:
    """One run copied whole (see the module docstring); returns the copy's id."""
    run = source.get_run(run_id)
    info, data = run.info, run.data
    tags = {k: v for k, v in data.tags.items() if k != PARENT} | {MIGRATED_FROM: run_id, MIGRATING: "yes"}
    if data.tags.get(PARENT) in copies:
        tags[PARENT] = copies[data.tags[PARENT]]
    copy = target.create_run(experiment_id, start_time=info.start_time, tags=tags, run_name=info.run_name).info.run_id
    params = [Param(k, v) for k, v in data.params.items()]
    for start in range(0, len(params), PARAMS_PER_BATCH):
        target.log_batch(copy, params=params[start : start + PARAMS_PER_BATCH], synchronous=True)
    history = [Metric(key, m.value, m.timestamp, m.step) for key in data.metrics
               for m in source.get_metric_history(run_id, key)]
    for start in range(0, len(history), METRICS_PER_BATCH):
        target.log_batch(copy, metrics=history[start : start + METRICS_PER_BATCH], synchronous=True)
    if source.list_artifacts(run_id):
        with tempfile.TemporaryDirectory() as tmp:
            target.log_artifacts(copy, source.download_artifacts(run_id, "", tmp))
    if info.status in TERMINAL:
        target.set_terminated(copy, info.status, end_time=info.end_time)
    else:  # SCHEDULED, or RUNNING with no live job (interrupted): the next submit resumes it
        target.update_run(copy, status=info.status)
    target.delete_tag(copy, MIGRATING)
    return copy
