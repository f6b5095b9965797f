"""Where a study's runs go: one class per ``executor.kind``, as submitit has one executor per backend.

A kind says how to make its submitit executor for a study (``parameters``, ``make``), whether a job it
launched, maybe by an earlier submitter, still runs or waits to (``liveness``), whether an ended one was
stopped rather than failed (``stopped``, ``stopped_id``), how to stop one (``cancel``), and how the submitter
drives its jobs (``foreground``, ``detached``). ``EXECUTORS`` maps each kind to its class; the
study schema allows exactly its keys (``ablate/schema.py``), so a new kind is one class here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import submitit

    from ablate.schema import ExecutorSpec
    from ablate.study import Study


# What a scheduler says of a job: ``pending`` waits to start (also a requeued job), ``unknown`` when it does
# not answer (a controller down or slow), which must never be taken for ``ended``: relaunching a run whose
# job is in fact alive trains it twice at once.
Liveness = Literal["running", "pending", "ended", "unknown"]


class ExecutorKind:
    """One ``executor.kind``: its submitit executor, and what the submitter asks of the jobs it launches."""

    kind: ClassVar[str]
    summary: ClassVar[str]  # the schema's one-line description of the kind
    foreground: ClassVar[bool] = False  # jobs run inside the submitter, so one at a time
    detached: ClassVar[bool] = False  # a scheduler runs the jobs: a study is submitted whole, never waited for
    stopped_states: ClassVar[tuple[str, ...]] = ()  # job states (prefixes) of a job someone else stopped

    @classmethod
    def parameters(cls, spec: ExecutorSpec) -> dict[str, Any]:
        """``AutoExecutor.update_parameters`` arguments for the study's executor section (None: submitit's
        default)."""
        return {"timeout_min": spec.timeout_min, "tasks_per_node": spec.tasks_per_node or max(1, spec.gpus_per_node),
                "gpus_per_node": spec.gpus_per_node or None}

    @classmethod
    def executor_arguments(cls, spec: ExecutorSpec) -> dict[str, Any]:
        """``AutoExecutor`` arguments fixed when it is made (not parameters)."""
        return {}

    @classmethod
    def make(cls, study: Study) -> submitit.Executor:
        """The submitit executor for a study's runs; its logs go to ``<study dir>/submitit/<job id>/``."""
        import submitit  # the schema imports this module for the kinds; only launching needs submitit

        executor = submitit.AutoExecutor(folder=study.dir / "submitit" / "%j", cluster=cls.kind,
                                         **cls.executor_arguments(study.spec.executor))
        params = {"name": f"nano4m-{study.name}", **cls.parameters(study.spec.executor)}
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return executor

    @classmethod
    def stopped(cls, job: submitit.Job) -> bool | None:
        """Whether someone else stopped the ended job (``scancel``, ``ablate cancel``, Ctrl-C) rather than it
        failing, by what the scheduler says (a job that timed out too many times failed, whatever its MLflow
        run says); None when it cannot say (submitit's UNKNOWN: no accounting answer)."""
        state = job.state
        return None if state == "UNKNOWN" else state.startswith(cls.stopped_states)

    @staticmethod
    def stopped_id(job_id: str) -> bool | None:
        """``stopped`` for an ended job launched by some submitter; None when the scheduler cannot say."""
        return None

    @staticmethod
    def liveness(job_id: str) -> Liveness:
        """Whether a job launched by some submitter (maybe an earlier one) runs, waits to, or has ended."""
        return "ended"

    @staticmethod
    def cancel(job_id: str) -> None:
        """Stop a job launched by some submitter."""

    @classmethod
    def cancel_all(cls, job_ids: list[str]) -> None:
        """Stop every one of these jobs (a study's live ones)."""
        for job_id in sorted(set(job_ids)):
            cls.cancel(job_id)


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


class Debug(ExecutorKind):
    """Jobs run inside the submitter: never alive once it has gone, nothing to cancel from outside."""

    kind = "debug"
    summary = "in the submitter's process, one at a time (for pdb)"
    foreground = True
    stopped_states = ("CANCELLED",)


class Slurm(ExecutorKind):
    kind = "slurm"
    summary = "a job array"
    detached = True
    stopped_states = ("CANCELLED",)

    @classmethod
    def parameters(cls, spec: ExecutorSpec) -> dict[str, Any]:
        return super().parameters(spec) | {
            "nodes": 1, "cpus_per_task": spec.cpus_per_task or max(1, spec.threads_per_run), "mem_gb": spec.mem_gb,
            "slurm_partition": spec.partition, "slurm_account": spec.account,
            "slurm_array_parallelism": spec.array_parallelism or spec.max_parallel,
            "slurm_signal_delay_s": spec.signal_delay_s, "slurm_setup": spec.setup or None,
            "slurm_additional_parameters": spec.additional or None,
        }

    # After the controller failed to answer, it is not asked again for this long: a study's runs would
    # each wait for their own timeout (20 s apiece) to learn the same thing.
    QUIET_S, TIMEOUT_S = 10.0, 5.0
    _silent_until: ClassVar[float] = 0.0

    @classmethod
    def liveness(cls, job_id: str) -> Liveness:
        """``squeue``: a waiting state is pending, another live state running; no line, or a job id it no
        longer knows, ended; an error or no answer within ``TIMEOUT_S`` unknown."""
        if time.monotonic() < cls._silent_until:
            return "unknown"
        out = cls._ask(["squeue", "-h", "-j", job_id, "-o", "%T"])
        if out is not None and out.returncode == 0:
            states = set(out.stdout.split())
            return "pending" if states & PENDING_JOB_STATES else "running" if states & LIVE_JOB_STATES else "ended"
        if out is not None and "Invalid job id" in out.stderr:  # purged from the controller's memory
            return "ended"
        cls._silent_until = time.monotonic() + cls.QUIET_S
        return "unknown"

    @classmethod
    def executor_arguments(cls, spec: ExecutorSpec) -> dict[str, Any]:
        return {"slurm_max_num_timeout": spec.max_timeouts}

    @classmethod
    def stopped_id(cls, job_id: str) -> bool | None:
        """``sacct``'s state of the job (its last requeue): CANCELLED is stopped, any other ended state failed."""
        out = cls._ask(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])
        if out is None or out.returncode != 0:
            return None
        states = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]  # "CANCELLED by 1000"
        return states[-1].startswith(cls.stopped_states) if states else None

    @classmethod
    def _ask(cls, command: list[str]) -> subprocess.CompletedProcess | None:
        """A SLURM command's answer, or None when it cannot run or does not answer within ``TIMEOUT_S``."""
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=cls.TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            return None

    @staticmethod
    def cancel(job_id: str) -> None:
        """``scancel``: an array task id stops that task, an array id the whole array."""
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)

    @classmethod
    def cancel_all(cls, job_ids: list[str]) -> None:
        """Arrays are cancelled whole: in Slurm 22.05 cancelling one task of a pending array loses its record."""
        super().cancel_all([job_id.split("_")[0] for job_id in job_ids])


# squeue's states of a job that waits to start (a requeued one too), and of one that still runs or will
# (``squeue --help``'s state list, less the ended ones).
PENDING_JOB_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
LIVE_JOB_STATES = PENDING_JOB_STATES | {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                                        "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT"}

# The schema lists the kinds in this order (its error message and docs/studies.md too).
EXECUTORS: dict[str, type[ExecutorKind]] = {kind.kind: kind for kind in (Local, Debug, Slurm)}
