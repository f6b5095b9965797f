"""A run's tracking outbox: what its tracker logged, kept in the run folder until the MLflow store has taken it.

Every record is appended to ``RunFolder.tracking_outbox`` (one JSON object per line, numbered by ``seq``) before
it is sent, and ``RunFolder.tracking_sent`` holds the ``seq`` of the last one the store took and where the next
begins in the file (so sending reads only what waits). A store that is
away (a server restarting, a database failing over) so costs a training run nothing: its records wait here and
go, in order, once the store answers again (``ablate/tracking.py`` decides when to try).

A record reaches the store once in effect, even when it is sent twice because an answer was lost: a metric keeps
the timestamp it was logged with, and MLflow's SQL store (behind a server too) keeps one row per (key, step,
timestamp, value); params already there are skipped; tags and statuses are set; artifacts replaced; a run is
created under a key of its own (``create``), looked up before it is created again.

Sending holds a lock (``RunFolder.tracking_lock``), so a trainer and a submitter tidying up after a dead job never
send at once; whoever cannot take it at once leaves the sending to the other.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from model.run_folder import RunFolder

METRICS_PER_BATCH = 1000  # MLflow's cap on one log_batch
TAIL_BYTES = 4096

Record = dict[str, Any]  # {"seq": n, "op": "create" | "metrics" | "params" | "tags" | "artifact" | "status", ...}


class Outbox:
    """The outbox of the run folder ``folder``; records are appended with ``put`` and sent with ``send``."""

    def __init__(self, folder: RunFolder):
        self.folder = folder
        self.last_seq = last_seq(folder)
        self._cut = _ends_cut(folder.tracking_outbox)  # a crash cut the last line: the next record starts anew

    def put(self, op: str, **fields: Any) -> None:
        """Append one record (flushed: a crash loses none that ``put`` returned from)."""
        self.last_seq += 1
        self.folder.path.mkdir(parents=True, exist_ok=True)
        with self.folder.tracking_outbox.open("a") as f:
            f.write("\n" * self._cut + json.dumps({"seq": self.last_seq, "op": op, **fields}) + "\n")
        self._cut = False

    def records(self, start: int = 0) -> Iterator[tuple[Record, int]]:
        """Every whole record from byte ``start`` on, in order, each with the offset just past it (a line cut
        off by a crash is skipped)."""
        try:
            with self.folder.tracking_outbox.open("rb") as f:
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return
        end = start
        for line in data.splitlines(keepends=True):
            end += len(line)
            try:
                yield json.loads(line), end
            except ValueError:
                continue

    def logged(self) -> list[Record]:
        """Every record, sent or not."""
        return [record for record, _ in self.records()]

    def sent(self) -> int:
        return sent_seq(self.folder)

    def unsent(self) -> list[tuple[Record, int]]:
        seq, offset = _sent(self.folder)
        return [(r, end) for r, end in self.records(offset) if r["seq"] > seq]

    def send(self, deliver: Callable[[list[Record]], None]) -> bool:
        """Hand the unsent records to ``deliver`` in order, in groups (consecutive metrics together, up to
        ``METRICS_PER_BATCH``), marking each group sent once ``deliver`` returns. Returns False, sending nothing,
        when another process holds the lock; raises what ``deliver`` raises (what was sent stays marked)."""
        self.folder.path.mkdir(parents=True, exist_ok=True)
        with self.folder.tracking_lock.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            for group, end in _groups(self.unsent()):
                deliver(group)
                _mark_sent(self.folder, group[-1]["seq"], end)
        return True


def last_seq(folder: RunFolder) -> int:
    """The ``seq`` of the outbox's last whole record (0 when it has none), read from its tail."""
    try:
        with folder.tracking_outbox.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def _ends_cut(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.seek(0, os.SEEK_END) > 0 and f.seek(-1, os.SEEK_END) >= 0 and f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def sent_seq(folder: RunFolder) -> int:
    return _sent(folder)[0]


def _sent(folder: RunFolder) -> tuple[int, int]:
    """(seq of the last record sent, byte offset of the next); (0, 0) before the first."""
    try:
        seq, offset = folder.tracking_sent.read_text().split()
        return int(seq), int(offset)
    except (FileNotFoundError, ValueError):
        return 0, 0


def unsent_count(folder: RunFolder) -> int:
    """How many records wait to be sent (``ablate status``); reads two small files' ends."""
    return max(0, last_seq(folder) - sent_seq(folder))


def _mark_sent(folder: RunFolder, seq: int, offset: int) -> None:
    tmp = folder.tracking_sent.with_name(folder.tracking_sent.name + ".tmp")
    tmp.write_text(f"{seq} {offset}")
    os.replace(tmp, folder.tracking_sent)


def _groups(records: list[tuple[Record, int]]) -> Iterator[tuple[list[Record], int]]:
    """Consecutive metrics records together (up to ``METRICS_PER_BATCH`` metrics), any other alone; each group
    with the offset just past it."""
    group: list[Record] = []
    end = 0
    for record, after in records:
        if group and (record["op"] != "metrics" or group[-1]["op"] != "metrics"
                      or sum(len(r["metrics"]) for r in group) + len(record["metrics"]) > METRICS_PER_BATCH):
            yield group, end
            group = []
        group.append(record)
        end = after
    if group:
        yield group, end
