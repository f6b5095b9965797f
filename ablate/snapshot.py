"""What a report reads, kept as files in ``studies/<name>/snapshot/`` so it need not page through MLflow.

    runs.parquet     one row per child run: run_id, run_key, config_hash, seed, status, start_ms, end_ms,
                     code_version
    metrics.parquet  run_id, metric, value: each metric's last logged value (today's names, ablate/metric_names.py)
    curves.parquet   run_id, metric, step, value: the whole history of the ``report.curves`` metrics
    state.json       when the snapshot was last refreshed, the store's size and time then, the curves it holds,
                     the store it was read from (a study moved to another store, ``ablate migrate``, is read
                     again whole: its runs have other ids there)
    study.pkl        the expanded study, reused while the study file, the code and its data sets are unchanged
                     (ablate/study_cache.py)
    artifacts/       run artifacts a report shows (the realized-mask figures), downloaded once

Nothing is read from a SQLite store while its files have not changed since the last refresh (a server or a
database has no such stamp: it is always asked). Otherwise,
since a finished run never changes, a refresh reads again only the runs that were not finished when last
seen (one ``get_run`` each) and the runs created since (one search on start time, with a margin for
writers waiting on the database lock and for the clocks of other machines). A run deleted from MLflow
stays in the snapshot: delete the folder to start over.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from tqdm import tqdm

from ablate.schema import StudyError
from ablate.store import sqlite_path
from ablate.study import Study
from ablate.study_cache import atomic, folder

if TYPE_CHECKING:
    from ablate.ledger import Ledger, Record

FORMAT = 2  # bump when the files' layout changes: older snapshots are then rebuilt (2: today's metric names)
CLOCK_MARGIN_MS = 2 * 60 * 1000  # > store.SQLITE_BUSY_TIMEOUT_S, plus clock skew
RUN_COLUMNS = ["run_id", "run_key", "config_hash", "seed", "status", "start_ms", "end_ms", "code_version"]


@dataclass
class Snapshot:
    runs: pd.DataFrame
    metrics: pd.DataFrame
    curves: pd.DataFrame

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(pd.DataFrame(columns=RUN_COLUMNS), pd.DataFrame(columns=["run_id", "metric", "value"]),
                   pd.DataFrame(columns=["run_id", "metric", "step", "value"]))


def unchanged(study: Study, curves: list[str]) -> dict | None:
    """The snapshot's state where it holds ``curves`` and nothing was written to the store since it was refreshed
    (a SQLite store's files as they were); else None: ``refresh`` reads the store."""
    state = _read_json(folder(study) / "state.json")
    stamp = _stamp(study)
    return state if _current(study, state, curves) and stamp is not None and state.get("stamp") == stamp else None


def _current(study: Study, state: dict, curves: list[str]) -> bool:
    """Whether the snapshot is of today's format, holds ``curves`` and was read from the study's store."""
    return (state.get("format") == FORMAT and state.get("curves") == curves and state.get("store") == study.store.uri
            and (folder(study) / "runs.parquet").is_file())


def refresh(study: Study, curves: list[str]) -> Snapshot:
    """The study's runs as they are in MLflow now; reads only what may have changed since the last refresh."""
    where = folder(study)
    # Nothing written since, so no run created before now is missing. The state is left as it was (not even the
    # time of this refresh: the next one then reads a little more).
    if unchanged(study, curves) is not None:
        return _read(where)
    state = _read_json(where / "state.json")
    current = _current(study, state, curves)
    started_ms = int(time.time() * 1000)
    stamp = _stamp(study)  # before reading: a write during the read shows next time
    from ablate.ledger import Ledger  # MLflow imported only where the store is read

    ledger = Ledger(study, create=False)
    if ledger.experiment_id is None:
        raise StudyError(f"{study.path}: study {study.name!r} has no runs recorded ({study.store.redacted} holds "
                         f"none); run `ablate submit {study.path}` first")
    old = _read(where) if current else Snapshot.empty()

    since = state["refreshed_ms"] - CLOCK_MARGIN_MS if current else None
    records = {r.run_id: r for r in ledger.records(created_after_ms=since).values()}
    finished = set(old.runs.loc[old.runs["status"] == "FINISHED", "run_id"])
    for run_id in set(old.runs["run_id"]) - finished - set(records):
        records[run_id] = ledger.record(run_id)
    fetched = [r for r in records.values() if r.run_id not in finished]

    histories = [_history(ledger, r.run_id, curves) for r in tqdm(fetched, desc=f"{study.name}: reading MLflow runs",
                                                                   unit="run", disable=len(fetched) < 50 or None)]
    ids = {r.run_id for r in fetched}
    new = Snapshot(
        _concat(_keep(old.runs, ids), pd.DataFrame([_row(r) for r in fetched], columns=RUN_COLUMNS)),
        _concat(_keep(old.metrics, ids), pd.DataFrame([(r.run_id, k, v) for r in fetched for k, v in r.metrics.items()],
                                                      columns=old.metrics.columns)),
        _concat(_keep(old.curves, ids), *histories),
    )
    _write(where, new if fetched or not current else None,
           {"format": FORMAT, "curves": curves, "refreshed_ms": started_ms, "stamp": stamp, "store": study.store.uri})
    return new


def artifacts(study: Study, run_ids: list[str], path: str) -> dict[str, Path]:
    """Each run's artifact ``path``, downloaded into the snapshot once; runs that have none are left out."""
    local = {run_id: folder(study) / "artifacts" / run_id / path for run_id in run_ids}
    missing = [run_id for run_id, file in local.items() if not file.is_file()]
    if not missing:
        return local
    from mlflow.exceptions import MlflowException

    from ablate.ledger import Ledger

    client = Ledger(study, create=False).client
    for run_id in missing:
        local[run_id].parent.mkdir(parents=True, exist_ok=True)
        try:  # a file lands in the given folder under its own name
            client.download_artifacts(run_id, path, str(local[run_id].parent))
        except (MlflowException, OSError):
            continue
    return {run_id: file for run_id, file in local.items() if file.is_file()}


def _stamp(study: Study) -> list | None:
    """Size and modification time of a SQLite store and its write-ahead log (any write changes one); None for a
    server or a database."""
    if study.store.kind != "sqlite":
        return None
    db = sqlite_path(study.store.uri)
    return [[f.stat().st_size, f.stat().st_mtime_ns] if f.is_file() else None
            for f in (db, db.with_name(db.name + "-wal"))]


def _history(ledger: Ledger, run_id: str, curves: list[str]) -> pd.DataFrame:
    rows = [(run_id, name, m.step, m.value) for name in curves
            for m in ledger.client.get_metric_history(run_id, name)]
    return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])


def _row(record: Record) -> list:
    tags = record.tags
    return [record.run_id, tags.get("run_key"), tags.get("config_hash"), int(tags.get("seed", -1)), record.status,
            record.start_ms, record.end_ms, tags.get("code_version", "unknown")]


def _keep(table: pd.DataFrame, dropped: set[str]) -> pd.DataFrame:
    return table[~table["run_id"].isin(dropped)]


def _concat(*tables: pd.DataFrame) -> pd.DataFrame:
    tables = [t for t in tables if len(t)] or tables[:1]
    return pd.concat(tables, ignore_index=True)


def _read(where: Path) -> Snapshot:
    return Snapshot(*(pd.read_parquet(where / f"{part}.parquet") for part in ("runs", "metrics", "curves")))


def _write(where: Path, snapshot: Snapshot | None, state: dict) -> None:
    """The tables (unless None: unchanged), then the state."""
    for part in ("runs", "metrics", "curves") if snapshot is not None else ():
        atomic(where / f"{part}.parquet", getattr(snapshot, part).to_parquet)
    atomic(where / "state.json", lambda tmp: tmp.write_text(json.dumps(state)))  # last: the others are complete


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
