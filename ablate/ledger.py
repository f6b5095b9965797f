"""What a study has done so far, kept in its MLflow store: the ledger the submitter reads and writes.

One experiment per study (tagged with the study's name, file and code version, its description as MLflow's
note), a parent run for the study (the study file, and the report once one is written), one child run per
run key, tagged::

    study, run_key, config_hash, seed, masking, family, code_version, retries, executor, job_id
    (and search_params for an Optuna trial's run, pruned when the pruner stopped it)

``masking`` is the study's masking choice (``Run.masking``: a preset such as ``dirichlet_4m``, or a family),
``family`` the family it is of (the config's ``masking.name``). Stores written before the ``masking`` tag have
``family`` only; nothing here reads either (a run is found by its key).

A run's state, read from its record and its job, is ``ablate/states.py``'s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from ablate.metric_names import current
from ablate.schema import StudyError
from ablate.study import Run, Study
from ablate.tracking import EXPERIMENT_KIND, MODEL_TRAINING, ensure_experiment

_PAGE = 1000
STUDY_RUN = "study_run_id"  # the experiment's tag naming its parent run
PARENT_WAIT_S = 60.0  # how long a ledger waits for the experiment's creator to create the parent run


@dataclass
class Record:
    """One MLflow run as the ledger sees it."""

    run_id: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]
    start_ms: int | None
    end_ms: int | None

    @property
    def retries(self) -> int:
        return int(self.tags.get("retries", 0))

    @property
    def seconds(self) -> float | None:
        return (self.end_ms - self.start_ms) / 1000 if self.start_ms and self.end_ms else None

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)


class Ledger:
    """The study's MLflow experiment. ``create=False`` reads only (and touches no file) for plan and status.

    MLflow records where artifacts go as an absolute path, fixed when the experiment is created: a study
    folder moved (or copied) elsewhere still points there. Opening such a store says so on stderr, and
    ``create=True`` (what writes runs) refuses it rather than write artifacts to the old place."""

    def __init__(self, study: Study, create: bool = True):
        self.study = study
        store = study.store
        if not create and not store.exists():
            self.client, self.experiment_id = None, None
            return
        self.client = MlflowClient(store.client_uri)
        exp = self.client.get_experiment_by_name(study.name)
        if exp is not None and (moved := _moved(exp.artifact_location, study)):
            if create:
                raise StudyError(moved)
            print(f"warning: {moved}", file=sys.stderr)
        if create:
            self.experiment_id, created = ensure_experiment(store.uri, study.name, store.artifacts)
            self._describe()
            if created:  # at once, whatever this ledger is for: every other process waits for it (parent_id)
                self._create_parent()
        else:
            self.experiment_id = exp.experiment_id if exp else None

    def _describe(self) -> None:
        """The experiment says which study it is (MLflow shows the note as its description)."""
        spec = self.study.spec
        tags = {"mlflow.note.content": spec.description, "study": spec.name, "study_file": str(self.study.path),
                "code_version": code_version(), EXPERIMENT_KIND: MODEL_TRAINING}
        for key, value in tags.items():
            self.client.set_experiment_tag(self.experiment_id, key, value)

    def records(self, created_after_ms: int | None = None) -> dict[str, Record]:
        """Child runs by run key (only those created after ``created_after_ms``, if given)."""
        if self.experiment_id is None:
            return {}
        query = "tags.kind = 'run'"
        if created_after_ms is not None:
            query += f" and attributes.start_time > {created_after_ms}"  # MLflow sets it when a run is created
        out, token = {}, None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=_PAGE, page_token=token)
            out.update({r.data.tags["run_key"]: _record(r) for r in page})
            token = page.token
            if not token:
                return out

    def record(self, run_id: str) -> Record:
        return _record(self.client.get_run(run_id))

    def study_run(self) -> str | None:
        """The id of the study's parent run, if it has one (named by the experiment's ``STUDY_RUN`` tag, or, in
        a store written before that tag, the run tagged ``kind: study``)."""
        if self.experiment_id is None:
            return None
        if named := self.client.get_experiment(self.experiment_id).tags.get(STUDY_RUN):
            return named
        found = self.client.search_runs([self.experiment_id], "tags.kind = 'study'", max_results=1)
        return found[0].info.run_id if found else None

    def parent_id(self) -> str:
        """The study's parent run, set RUNNING (as it is while its runs are). The process that created the
        experiment created it (``_create_parent``); any other waits until the experiment names it, and creates
        it only if it never does (its creator died in between, or an experiment written without one). Many
        submitters or jobs may ask at once."""
        found = self.study_run()
        deadline = time.monotonic() + PARENT_WAIT_S
        while found is None and time.monotonic() < deadline:
            time.sleep(0.2)
            found = self.study_run()
        if found is None:
            return self._create_parent()
        self.client.update_run(found, status="RUNNING")
        return found

    def _create_parent(self) -> str:
        """Create the study's parent run (RUNNING), with the study file as artifact, and name it in the
        experiment."""
        run = self.client.create_run(self.experiment_id, run_name=self.study.name, tags={
            "kind": "study", "study": self.study.name, "code_version": code_version(),
            "mlflow.note.content": self.study.spec.description,
        })
        self.client.set_experiment_tag(self.experiment_id, STUDY_RUN, run.info.run_id)
        self.client.log_artifact(run.info.run_id, str(self.study.path))
        return run.info.run_id

    def prepare(self, run: Run, record: Record | None, parent_id: str, tags: dict[str, str]) -> Record:
        """Make sure the run has its MLflow run and its folder names it; never replaces a recorded run."""
        if record is None:
            created = self.client.create_run(self.experiment_id, run_name=f"{run.label} s{run.seed}", tags={
                "kind": "run", "mlflow.parentRunId": parent_id, "study": self.study.name, "run_key": run.key,
                "config_hash": run.config_hash, "seed": str(run.seed), "masking": run.masking, "family": run.family,
                "code_version": code_version(), "retries": "0", **tags,
            })
            self.client.update_run(created.info.run_id, status="SCHEDULED")
            record = self.record(created.info.run_id)
        run.folder.write_mlflow_run_id(record.run_id)  # the trainer continues it (a requeued job included)
        return record

    def set_tags(self, run_id: str, **tags: object) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value))

    def end(self, run_id: str, status: str) -> None:
        """Close a run the trainer could not close itself (its job died, or the pruner stopped it)."""
        if self.client.get_run(run_id).info.status not in ("FINISHED", status):
            self.client.set_terminated(run_id, status=status)


def _moved(recorded: str, study: Study) -> str | None:
    """What to say when the store's artifact location is not this study folder's."""
    here = study.store.artifacts
    if study.store.kind != "sqlite" or recorded == here:
        return None
    old = recorded.removeprefix("file://")
    return (f"{study.dir / 'mlflow.db'} keeps its artifacts at {old}, not in this study folder: the folder was "
            f"moved or copied, and MLflow records artifact locations as absolute paths. Move it back to "
            f"{Path(old).parent}, or link the old place to it (ln -s {study.dir} {Path(old).parent})")


def _record(run) -> Record:
    info = run.info
    status = info.status if isinstance(info.status, str) else RunStatus.to_string(info.status)
    metrics = {current(k): v for k, v in run.data.metrics.items()}  # an older store's names read as today's
    return Record(info.run_id, status, dict(run.data.tags), metrics, info.start_time, info.end_time)


@cache
def code_version() -> str:
    """``git describe`` of the code that submits (``-dirty`` when it has uncommitted changes)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=repo, capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def search_params(record: Record) -> dict | None:
    return json.loads(record.tags["search_params"]) if "search_params" in record.tags else None

