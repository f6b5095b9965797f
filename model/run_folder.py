"""A run's folder (``train.out_dir``): every file in it is named here, and read and written through ``RunFolder``.

    config.yaml         the resolved config
    checkpoints/        step_XXXXXXX/, one complete checkpoint (what is in it: ``model/checkpoint.py``), and
                        ``latest``, the name of the newest complete one
    history.jsonl       logged training metrics, one JSON object per logged step (``{"step": ..., metric: value}``)
    mlflow_run_id       the MLflow run it continues when resumed (written by the study's ledger or its first trainer)
    tracking_outbox.jsonl, tracking_sent, tracking_outbox.lock
                        what its tracker logged, the last record the MLflow store took, and the lock a sender
                        holds (``ablate/outbox.py``)
    eval.json           the final evaluation
    generation.png      what the final evaluation generated (on a generated data set only)
    masks/              mask_budgets.png and mask_frequency.png: the masks the run realized (``model/mask_stats.py``)
    lease.json          who trains it now, taken under a flock on ``lease.lock`` (``model/lease.py``)

Among a run's MLflow artifacts, its files keep their paths relative to the folder (``config.yaml``,
``masks/mask_frequency.png``). Reading the latest checkpoint's step or the history's last record imports no
torch: ``ablate status`` reads them for every run of a study.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from model.config import Config, from_dict, to_yaml

TAIL_BYTES = 4096  # the end of a long run's history: enough for its last few records


class RunFolder:
    """The run folder at ``path`` (it need not exist yet)."""

    CONFIG = "config.yaml"
    CHECKPOINTS = "checkpoints"
    LATEST = "latest"
    STEP_PREFIX = "step_"  # a checkpoint's folder: the prefix and the step in 7 digits
    HISTORY = "history.jsonl"
    MLFLOW_RUN_ID = "mlflow_run_id"
    TRACKING_OUTBOX = "tracking_outbox.jsonl"
    TRACKING_SENT = "tracking_sent"
    TRACKING_LOCK = "tracking_outbox.lock"
    EVAL = "eval.json"
    GENERATION = "generation.png"
    MASKS = "masks"  # also the mask figures' folder among the run's MLflow artifacts
    MASK_BUDGETS = "mask_budgets.png"
    MASK_FREQUENCY = "mask_frequency.png"
    MASK_FREQUENCY_ARTIFACT = f"{MASKS}/{MASK_FREQUENCY}"  # what a report reads back from MLflow
    LEASE = "lease.json"
    LEASE_LOCK = "lease.lock"

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # The resolved config.

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    def write_config(self, cfg: Config) -> None:
        self._write(self.config, to_yaml(cfg))

    def read_config(self) -> Config:
        return from_dict(yaml.safe_load(self.config.read_text()))

    # Checkpoints: written by ``model/checkpoint.py`` into ``checkpoint(step)``, then pointed at.

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    def checkpoint(self, step: int) -> Path:
        """The folder of the checkpoint at ``step``."""
        return self.checkpoints / f"{self.STEP_PREFIX}{step:07d}"

    @classmethod
    def step_of(cls, checkpoint: Path) -> int:
        """The step a checkpoint folder was saved at."""
        return int(checkpoint.name.removeprefix(cls.STEP_PREFIX))

    def saved_checkpoints(self) -> list[Path]:
        """Every checkpoint folder, complete or not, oldest first."""
        return sorted(self.checkpoints.glob(f"{self.STEP_PREFIX}*"))

    def point_latest(self, checkpoint: Path) -> None:
        """Name ``checkpoint`` (complete) the latest, atomically: a crash leaves the previous pointer whole."""
        pointer = self.checkpoints / self.LATEST
        tmp = pointer.with_name(f"{self.LATEST}.tmp")
        tmp.write_text(checkpoint.name)
        os.replace(tmp, pointer)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint's folder, or None."""
        name = self._latest_name()
        path = self.checkpoints / name if name else None
        return path if path is not None and path.is_dir() else None

    def latest_step(self) -> int | None:
        """The step of the checkpoint a resumed run starts from, None before its first; reads the pointer only."""
        name = self._latest_name()
        try:
            return self.step_of(Path(name)) if name else None
        except ValueError:  # not a pointer this code wrote
            return None

    def _latest_name(self) -> str | None:
        try:
            return (self.checkpoints / self.LATEST).read_text().strip() or None
        except OSError:
            return None

    # The history of logged training metrics.

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    def open_history(self, step: int) -> History:
        """The history to append to, resuming at checkpoint ``step``: records logged after it are dropped
        (those steps are trained, and logged, again), as is a record cut off by a crash mid-write."""
        if self.history.is_file():
            kept = [line for line in self.history.read_text().splitlines()
                    if (logged := _logged(line)) is not None and logged[0] <= step]
            self.history.write_text("".join(line + "\n" for line in kept))
        return History(self.history)

    def last_logged(self) -> tuple[int, dict[str, float]] | None:
        """(step, metrics) of the history's last complete record, read from its tail; None before the first.
        A write may be under way: a last line cut off is skipped."""
        try:
            with self.history.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        return next((logged for line in reversed(lines) if (logged := _logged(line)) is not None), None)

    # The MLflow run, the evaluation and the figures.

    def read_mlflow_run_id(self) -> str | None:
        """The MLflow run this run continues, or None (it has none yet)."""
        try:
            return (self.path / self.MLFLOW_RUN_ID).read_text().strip() or None
        except FileNotFoundError:
            return None

    def write_mlflow_run_id(self, run_id: str) -> None:
        self._write(self.path / self.MLFLOW_RUN_ID, run_id)

    @property
    def tracking_outbox(self) -> Path:
        return self.path / self.TRACKING_OUTBOX

    @property
    def tracking_sent(self) -> Path:
        return self.path / self.TRACKING_SENT

    @property
    def tracking_lock(self) -> Path:
        return self.path / self.TRACKING_LOCK

    @property
    def eval(self) -> Path:
        return self.path / self.EVAL

    def write_eval(self, results: dict[str, float]) -> None:
        self._write(self.eval, json.dumps(results, indent=2))

    def read_eval(self) -> dict[str, float]:
        return json.loads(self.eval.read_text())

    @property
    def generation(self) -> Path:
        return self.path / self.GENERATION

    @property
    def masks(self) -> Path:
        return self.path / self.MASKS

    @property
    def mask_budgets(self) -> Path:
        return self.masks / self.MASK_BUDGETS

    @property
    def mask_frequency(self) -> Path:
        return self.masks / self.MASK_FREQUENCY

    # The lease (``model/lease.py``).

    @property
    def lease(self) -> Path:
        return self.path / self.LEASE

    @property
    def lease_lock(self) -> Path:
        return self.path / self.LEASE_LOCK

    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


class History:
    """A run's history opened for appending (``RunFolder.open_history``): each record is flushed as it is
    written, so ``RunFolder.last_logged`` sees it at once."""

    def __init__(self, path: Path):
        self._file = path.open("a")

    def append(self, step: int, metrics: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _logged(line: str) -> tuple[int, dict[str, Any]] | None:
    """(step, metrics) of one history line, or None if it is not a whole record."""
    try:
        record = json.loads(line)
        step = int(record.pop("step"))
    except (ValueError, KeyError, TypeError, AttributeError):  # cut off (a JSONDecodeError), or not a record
        return None
    return step, record
