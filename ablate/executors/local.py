"""``executor.kind: local``: one process per run on this machine (submitit's LocalExecutor)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ablate.executors.base import ExecutorKind, Liveness


class Local(ExecutorKind):
    kind = "local"
    summary = "a process per run"
    stopped_states = ("INTERRUPTED",)  # the job controller died of a signal

    @staticmethod
    def liveness(job_id: str) -> Liveness:
        cmdline = Path(f"/proc/{job_id}/cmdline")  # the job id is the pid of submitit's job controller
        try:
            return "running" if b"submitit" in cmdline.read_bytes() else "ended"  # a reused pid is not our job
        except OSError:
            return "ended"

    @staticmethod
    def cancel(job_id: str) -> None:
        """SIGINT to the job's controller, as submitit's own ``cancel`` sends: it stops its run."""
        if Local.liveness(job_id) == "running":
            os.kill(int(job_id), signal.SIGINT)
