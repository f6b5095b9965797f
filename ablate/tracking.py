"""MLflow tracking: one MLflow run per training run, continued (not duplicated) on resume.

The default store is SQLite. Many processes write to it at once in a study, so the database
is switched to WAL mode and every connection waits on a lock instead of failing at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from ablate.metric_names import mlflow_safe
from ablate.store import driver_uri, kind, sqlite_path
from model.config import Config, to_dict
from model.run_folder import RunFolder

EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
# MLflow prints a notice for every started and finished run and logs alembic migrations; runs print enough.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values (MLflow stores them as strings)."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def artifact_root(uri: str) -> str | None:
    """Where a new experiment's artifacts go by default: beside a SQLite file (MLflow's default is ./mlruns in
    the cwd), the server's own for a server, None (MLflow's default) for a database.

    MLflow records this location, and every run's artifact URI under it, as an absolute path: a store
    moved to another folder still points at the old one (the ledger says so, and how to fix it)."""
    if kind(uri) != "sqlite":
        return None
    return (sqlite_path(uri).parent / "artifacts").resolve().as_uri()


def ensure_experiment(uri: str, name: str, artifacts: str | None = None) -> str:
    """The experiment's id, created if needed at ``artifacts`` (default ``artifact_root``): get-or-create, so
    any number of processes may call it at once."""
    client = MlflowClient(driver_uri(uri))
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        # The runs table is the page MLflow 3's UI opens an experiment of this kind on (not its GenAI view).
        return client.create_experiment(name, artifact_location=artifacts or artifact_root(uri),
                                        tags={EXPERIMENT_KIND: MODEL_TRAINING})
    except mlflow.exceptions.MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


class RunTracker:
    """Thin wrapper around one MLflow run. ``run_id=None`` starts a new run.

    A resumed run replays the steps between its checkpoint and the moment it stopped; those steps
    were logged already (with the same values: training is deterministic), so they are not logged
    again, and every metric keeps exactly one value per step.
    """

    def __init__(self, uri: str, experiment: str, run_id: str | None, run_name: str = "", tags: dict | None = None):
        self.client = MlflowClient(driver_uri(uri))
        self.logged_until: dict[str, int] = {}  # metric -> last step already in MLflow
        if run_id is None:
            exp_id = ensure_experiment(uri, experiment)
            run = self.client.create_run(exp_id, run_name=run_name or None, tags=tags or {})
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
            for key in self.client.get_run(run_id).data.metrics:
                self.logged_until[key] = max(m.step for m in self.client.get_metric_history(run_id, key))
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        new = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for start in range(0, len(new), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=new[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log at ``step``; a name MLflow would rewrite (``ablate/metric_names.py``) is a ``ValueError``."""
        if bad := [k for k in metrics if not mlflow_safe(k)]:
            raise ValueError(f"metric names {bad}: MLflow would rewrite them; use letters, digits and _ - . : /")
        now_ms = int(time.time() * 1000)
        ms = [mlflow.entities.Metric(k, float(v), now_ms, step) for k, v in metrics.items()
              if step > self.logged_until.get(k, -1)]
        for start in range(0, len(ms), 1000):
            self.client.log_batch(self.run_id, metrics=ms[start : start + 1000], synchronous=True)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def run_tracker(cfg: Config) -> RunTracker | None:
    """The MLflow run of the run in ``cfg.train.out_dir`` (None when ``tracking.enabled`` is false): the one
    its run folder names (a resumed run, or one a submitter created), else a new one. Params already logged
    are kept as they are; the resolved config is logged once.
    Handed to ``model.train.train(cfg, TrainOptions(open_tracker=run_tracker))``, which calls it on the main process."""
    if not cfg.tracking.enabled:
        return None
    folder = RunFolder(cfg.train.out_dir)
    run_id = folder.read_mlflow_run_id()
    tracker = RunTracker(cfg.tracking.uri, cfg.tracking.experiment, run_id, cfg.tracking.run_name or folder.path.name)
    if run_id is None:
        folder.write_mlflow_run_id(tracker.run_id)
    tracker.log_params(flatten(to_dict(cfg)))
    if not any(a.path == RunFolder.CONFIG for a in tracker.client.list_artifacts(tracker.run_id)):
        tracker.log_artifact(folder.config)
    return tracker
