"""A run folder's lease: one trainer at a time in a run folder, whatever its scheduler does.

A trainer takes ``lease.json`` (its holder: job id, host, pid, and when it was last renewed) before it writes
anything in the folder, renews it every ``RENEW_S`` from a thread, and gives it back when it stops. A second
trainer that finds the lease held by a live holder raises ``RunFolderLeased`` without touching the folder: a
requeued job whose predecessor still runs (a node lost to the controller but not dead), or a job launched
twice, cannot train one run twice at once. A holder is dead, and its lease taken over, when it ran on this
host and its process is gone (``kill -9``), or when it has not renewed for ``TTL_S``.

The decision is made under an exclusive ``flock`` on ``lease.lock``, so two trainers starting at once on one
host cannot both take it; a holder whose lease was taken over anyway (it stalled past ``TTL_S``) learns at
its next renewal and reports ``lost``, as does one that cannot renew it for most of ``TTL_S``; the trainer
then stops before its next write.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from model.run_folder import RunFolder

TTL_S, RENEW_S = 60.0, 10.0


class RunFolderLeased(RuntimeError):
    """Another live trainer holds the run folder."""


@dataclass(frozen=True)
class Holder:
    job: str  # the scheduler's job id ("" outside one), as the ledger's job_id tag spells it
    host: str
    pid: int

    @classmethod
    def me(cls) -> Holder:
        env = os.environ
        job = env.get("SLURM_JOB_ID", "")
        if "SLURM_ARRAY_TASK_ID" in env:  # an array task, named as squeue and submitit name it
            job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
        return cls(job, socket.gethostname(), os.getpid())

    def __str__(self) -> str:
        return f"{'job ' + self.job + ', ' if self.job else ''}pid {self.pid} on {self.host}"


class Lease:
    """``folder``'s lease: ``acquire`` takes it (``RunFolderLeased`` if a live holder has it), ``release`` gives
    it back."""

    def __init__(self, folder: Path, holder: Holder | None = None):
        self.folder, self.holder = RunFolder(folder), holder or Holder.me()
        self.lost: str | None = None  # set by the renewing thread: who took the lease over
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        self.folder.path.mkdir(parents=True, exist_ok=True)
        with self._locked():
            held = self._read()
            if held is not None and held[0] != self.holder and _alive(*held):
                holder, renewed = held
                raise RunFolderLeased(
                    f"{self.folder.path}: another trainer holds this run folder ({holder}, renewed "
                    f"{time.time() - renewed:.0f} s ago); this one exits without touching it. If that holder is "
                    f"gone for good, its lease lapses {TTL_S:.0f} s after its last renewal.")
            self._write()
        self._renewer = threading.Thread(target=self._renew, name="run-folder-lease", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        """Give the lease back (nothing to do if ``acquire`` did not take it)."""
        if self._renewer is None:
            return
        self._stop.set()
        self._renewer.join()
        with self._locked():
            held = self._read()
            if held is not None and held[0] == self.holder:
                self.folder.lease.unlink()

    def _renew(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(RENEW_S):
            try:
                with self._locked():
                    held = self._read()
                    if held is None or held[0] != self.holder:
                        self.lost = str(held[0]) if held else "nobody (the lease file was removed)"
                        return
                    self._write()
                renewed = time.monotonic()
            except OSError as e:  # a full disk, a stale NFS handle: try again, and give up before it lapses
                if time.monotonic() - renewed > TTL_S - 2 * RENEW_S:
                    self.lost = f"nobody: it could not be renewed ({e})"
                    return

    def _locked(self):
        return _Flock(self.folder.lease_lock)

    def _read(self) -> tuple[Holder, float] | None:
        try:
            data = json.loads(self.folder.lease.read_text())
            return Holder(**data["holder"]), float(data["renewed"])
        except (OSError, ValueError, KeyError, TypeError):  # none, or not one this code wrote
            return None

    def _write(self) -> None:
        lease = self.folder.lease
        tmp = lease.with_name(f"{lease.name}.{self.holder.pid}.tmp")
        tmp.write_text(json.dumps({"holder": asdict(self.holder), "renewed": time.time()}))
        os.replace(tmp, lease)


def _alive(holder: Holder, renewed: float) -> bool:
    if holder.host == socket.gethostname():
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: alive
            pass
    return time.time() - renewed < TTL_S


class _Flock:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
