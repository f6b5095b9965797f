"""MLflow tracking: one MLflow run per training run, continued (not duplicated) on resume, and a training run
that never waits long on its store.

A tracker writes everything to its run folder's outbox first (``ablate/outbox.py``) and sends it from there:
while the store does not answer, training goes on, the records wait, and they go in order once it answers
again. A request blocks at most ``tracking.request_timeout`` seconds (MLflow's own retries, minutes of them
with backoff, are turned off in the training process), and after a failure the next try waits a little longer
each time (up to ``RETRY_MAX_S``). At its end a run waits up to ``DRAIN_S`` for the store to take the rest; what
is still unsent then is sent by the submitter once the job has ended (``send_leftovers``), or by the next
submit; ``ablate status`` counts it.

A SQLite store, written by many processes at once in a study, is in WAL mode with a busy timeout
(``ablate/store.py``).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import sqlalchemy.exc
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablate.metric_names import mlflow_safe
from ablate.outbox import Outbox, Record
from ablate.store import kind, mlflow_uri, redacted, sqlite_path
from model.config import Config, to_dict
from model.run_folder import RunFolder

EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
# MLflow prints a notice for every started and finished run and logs alembic migrations; runs print enough.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow's usage telemetry sends requests of its own from every training process (one failed inside its client).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
RETRY_MAX_S = 30.0  # a store that is away is asked again after 1, 2, 4, ... seconds, at most this
DRAIN_S = 120.0  # how long a run that has ended waits for its store to take what it has not sent yet
CREATE_KEY = "tracker_key"  # tags a run a tracker created: it is looked up by it before it is created again
# What a store that is away raises (MLflow wraps most, not all, of its transports' errors).
UNREACHABLE = (MlflowException, requests.RequestException, sqlalchemy.exc.SQLAlchemyError, OSError)


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


def ensure_experiment(uri: str, name: str, artifacts: str | None = None) -> tuple[str, bool]:
    """The experiment's id, created if needed at ``artifacts`` (default ``artifact_root``), and whether this call
    created it: get-or-create, so any number of processes may call it at once (the store's unique name decides)."""
    client = MlflowClient(mlflow_uri(uri))
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id, False
    try:
        # The runs table is the page MLflow 3's UI opens an experiment of this kind on (not its GenAI view).
        return client.create_experiment(name, artifact_location=artifacts or artifact_root(uri),
                                        tags={EXPERIMENT_KIND: MODEL_TRAINING}), True
    except MlflowException:  # another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id, False


def bound_requests(timeout: float) -> None:
    """MLflow's HTTP client in this process: one try per request, at most ``timeout`` seconds (the tracker
    retries itself, without blocking training)."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(timeout)))


class RunTracker:
    """One MLflow run, written through the outbox of the run folder ``folder``: the run the folder names (a
    resumed run, or one a submitter created), else one created on first contact with the store.

    A resumed run replays the steps between its checkpoint and the moment it stopped; those steps were logged
    already (with the same values: training is deterministic), so they are not logged again, and every metric
    keeps exactly one value per step. What was logged is read from the outbox (from MLflow for a folder written
    before outboxes).
    """

    def __init__(self, uri: str, experiment: str, folder: RunFolder, run_name: str = "",
                 request_timeout: float = 10.0):
        bound_requests(request_timeout)
        self.uri, self.experiment, self.folder, self.request_timeout = uri, experiment, folder, request_timeout
        self._client: MlflowClient | None = None  # made on first contact (a SQLite store's folder may be away too)
        self.outbox = Outbox(folder)
        self.run_id = folder.read_mlflow_run_id()
        self.logged_until: dict[str, int] = {}  # metric -> last step logged (sent or waiting)
        self.retry_at, self.failures = 0.0, 0
        records = self.outbox.logged()
        for record in records:
            if record["op"] == "metrics":
                self.logged_until.update(dict.fromkeys(record["metrics"], record["step"]))
        if self.run_id is None and not any(r["op"] == "create" for r in records):
            self.outbox.put("create", key=uuid.uuid4().hex, experiment=experiment, run_name=run_name)
        elif self.run_id is not None and not records:
            self.logged_until = self._logged_in_mlflow()
        self.outbox.put("status", status="RUNNING", ms=_now_ms())
        self.flush()

    def log_params(self, params: dict[str, Any]) -> None:
        """Params not in the run yet (one logged already keeps its value)."""
        self.outbox.put("params", params={k: str(v)[:6000] for k, v in params.items()})
        self.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log at ``step``; a name MLflow would rewrite (``ablate/metric_names.py``) is a ``ValueError``."""
        if bad := [k for k in metrics if not mlflow_safe(k)]:
            raise ValueError(f"metric names {bad}: MLflow would rewrite them; use letters, digits and _ - . : /")
        new = {k: float(v) for k, v in metrics.items() if step > self.logged_until.get(k, -1)}
        if new:
            self.outbox.put("metrics", step=step, ms=_now_ms(), metrics=new)
            self.logged_until.update(dict.fromkeys(new, step))
        self.flush()

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self.outbox.put("artifact", path=str(Path(path).resolve()), artifact_path=artifact_path)
        self.flush()

    def has_artifact(self, path: Path | str) -> bool:
        """Whether ``path`` was logged (sent or waiting)."""
        resolved = str(Path(path).resolve())
        return any(r["op"] == "artifact" and r["path"] == resolved for r in self.outbox.logged())

    def set_tags(self, tags: dict[str, str]) -> None:
        self.outbox.put("tags", tags={k: str(v) for k, v in tags.items()})
        self.flush()

    def end(self, status: str = "FINISHED") -> None:
        """The run's status, then up to ``DRAIN_S`` seconds for the store to take what waits."""
        self.outbox.put("status", status=status, ms=_now_ms())
        if not self.flush(wait_s=DRAIN_S):
            print(f"tracking: {len(self.outbox.unsent())} records for "
                  f"{redacted(self.uri)} wait in {self.folder.tracking_outbox}; the submitter sends them once "
                  f"the store answers (`ablate status` counts them)", file=sys.stderr)

    def flush(self, wait_s: float = 0.0) -> bool:
        """Send what waits, unless the store failed a moment ago; keep trying for ``wait_s`` seconds.
        True once nothing waits (or another process is sending it)."""
        deadline = time.monotonic() + wait_s
        while True:
            if time.monotonic() >= self.retry_at:
                try:
                    self.outbox.send(self._deliver)
                except UNREACHABLE as e:
                    self._failed(e)
                else:
                    if self.failures:
                        print(f"tracking: {redacted(self.uri)} answers again; what waited is sent", file=sys.stderr)
                    self.failures = 0
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(max(0.0, min(self.retry_at, deadline) - time.monotonic()))

    def _failed(self, error: Exception) -> None:
        self.failures += 1
        self.retry_at = time.monotonic() + min(RETRY_MAX_S, 2.0 ** (self.failures - 1))
        if self.failures == 1:
            said = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            print(f"tracking: {redacted(self.uri)} does not answer ({said}); training goes on and its records "
                  f"wait in {self.folder.tracking_outbox}", file=sys.stderr)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(mlflow_uri(self.uri, connect_timeout=self.request_timeout))
        return self._client

    def _deliver(self, group: list[Record]) -> None:
        if group[0]["op"] == "create":
            self.run_id = create_once(self.client, self.uri, group[0])
            self.folder.write_mlflow_run_id(self.run_id)
            return
        deliver(self.client, self.run_id, group)

    def _logged_in_mlflow(self) -> dict[str, int]:
        try:
            return {key: max(m.step for m in self.client.get_metric_history(self.run_id, key))
                    for key in self.client.get_run(self.run_id).data.metrics}
        except UNREACHABLE:  # nothing to compare with: replayed steps may be logged twice
            return {}


def create_once(client: MlflowClient, uri: str, record: Record) -> str:
    """The run a ``create`` record asks for: the one tagged with its key if an earlier try made it (its answer
    lost), else a new one."""
    exp_id, _ = ensure_experiment(uri, record["experiment"])
    found = client.search_runs([exp_id], f"tags.{CREATE_KEY} = '{record['key']}'", max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(exp_id, run_name=record["run_name"] or None,
                             tags={CREATE_KEY: record["key"]}).info.run_id


def deliver(client: MlflowClient, run_id: str, group: list[Record]) -> None:
    """Send one group of outbox records to the run ``run_id`` (``Outbox.send``'s groups)."""
    op = group[0]["op"]
    if op == "metrics":
        metrics = [Metric(k, v, r["ms"], r["step"]) for r in group for k, v in r["metrics"].items()]
        client.log_batch(run_id, metrics=metrics, synchronous=True)
    elif op == "params":
        existing = client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in group[0]["params"].items() if k not in existing]
        for start in range(0, len(new), 100):  # MLflow caps a batch at 100 params
            client.log_batch(run_id, params=new[start : start + 100], synchronous=True)
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in group[0]["tags"].items()], synchronous=True)
    elif op == "artifact":
        if Path(group[0]["path"]).exists():  # a file deleted meanwhile is not there to send
            client.log_artifact(run_id, group[0]["path"], group[0]["artifact_path"])
    elif op == "status" and group[0]["status"] == "RUNNING":
        client.update_run(run_id, status="RUNNING")
    elif op == "status":
        client.set_terminated(run_id, status=group[0]["status"], end_time=group[0]["ms"])
    else:
        raise ValueError(f"outbox record {group[0]['seq']}: unknown op {op!r}")


def send_leftovers(folder: RunFolder, uri: str) -> bool:
    """Send what a run's tracker left unsent (its job has ended); True once nothing waits. A store that still
    does not answer is tried again later (the next poll, the next submit)."""
    outbox = Outbox(folder)
    run_id = folder.read_mlflow_run_id()
    if run_id is None or outbox.sent() >= outbox.last_seq:  # nothing waits, or no run to send it to
        return True
    client = MlflowClient(mlflow_uri(uri))
    try:
        return outbox.send(lambda group: deliver(client, run_id, group))
    except UNREACHABLE:
        return False


def _now_ms() -> int:
    return int(time.time() * 1000)


def run_tracker(cfg: Config) -> RunTracker | None:
    """The MLflow run of the run in ``cfg.train.out_dir`` (None when ``tracking.enabled`` is false): the one
    its run folder names (a resumed run, or one a submitter created), else a new one. Params already logged
    are kept as they are; the resolved config is logged once.
    Handed to ``model.train.train(cfg, TrainOptions(open_tracker=run_tracker))``, which calls it on the main process."""
    if not cfg.tracking.enabled:
        return None
    folder = RunFolder(cfg.train.out_dir)
    tracker = RunTracker(cfg.tracking.uri, cfg.tracking.experiment, folder, cfg.tracking.run_name or folder.path.name,
                         cfg.tracking.request_timeout)
    tracker.log_params(flatten(to_dict(cfg)))
    if not tracker.has_artifact(folder.config):
        tracker.log_artifact(folder.config)
    return tracker
