"""``executor.kind: slurm``: a study's runs as one job array (submitit's SlurmExecutor), its study keys (sbatch's
options), and what ``squeue``, ``sacct`` and ``scancel`` say of and do to its jobs."""

from __future__ import annotations

import math
import subprocess
import time
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field

from ablate.executors.base import ExecutorKind, Keys, Liveness, Settings

SIGNAL_SHARE = 0.5  # of a job's time limit that executor.signal_delay_s may take at most
EARLY_SIGNAL_S = 60  # SLURM may send --signal up to this much earlier than asked (sbatch --signal)
MIN_SEGMENT_S = 60  # the least training a job must be sure of before its warning

# squeue's states of a job that waits to start (a requeued one too), and of one that still runs or will
# (``squeue --help``'s state list, less the ended ones).
PENDING_JOB_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
LIVE_JOB_STATES = PENDING_JOB_STATES | {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                                        "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT"}


def _sbatch_values(options: dict[str, Any]) -> dict[str, Any]:
    for name, value in options.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"{name}: {value!r}: an sbatch option takes a string, a number or a boolean")
    return options


class Slurm(ExecutorKind):
    kind = "slurm"
    summary = "a job array"
    detached = True
    stopped_states = ("CANCELLED",)
    keys: ClassVar[Keys] = {
        "partition": (str | None, Field(None, description="SLURM partition (sbatch --partition)")),
        "account": (str | None, Field(None, description="SLURM account (sbatch --account)")),
        "cpus_per_task": (int | None, Field(None, ge=1, description="SLURM CPUs per process (default: "
                                            "threads_per_run, at least 1)")),
        "mem_gb": (float | None, Field(None, gt=0, description="SLURM memory per node")),
        "array_parallelism": (int | None, Field(None, ge=1, description="SLURM array tasks at once (default: "
                                                "max_parallel)")),
        "signal_delay_s": (int, Field(120, ge=0, description="SLURM sends USR2 this long before the time limit: "
                                      "the run checkpoints and is requeued")),
        "max_timeouts": (int, Field(3, ge=0, description="SLURM requeues of a job at its time limit before it "
                                    "fails (submitit's max_num_timeout); the failed run is then retried "
                                    "(max_retries)")),
        "setup": (list[str], Field(default_factory=list, description="shell lines the SLURM job runs before "
                                   "python (e.g. module load)")),
        "additional": (Annotated[dict[str, Any], AfterValidator(_sbatch_values)],
                       Field(default_factory=dict, description="any other sbatch option: name -> string, number "
                             "or boolean (e.g. qos: normal)")),
    }

    @classmethod
    def check(cls, settings: Settings) -> None:
        """SLURM signals a job ``signal_delay_s`` before its limit, or up to ``EARLY_SIGNAL_S`` earlier still,
        and the run is requeued: a job must be sure of ``MIN_SEGMENT_S`` of training before that window, and
        the delay may take at most ``SIGNAL_SHARE`` of the limit, or the run never finishes (its requeues
        run out)."""
        delay, minutes = settings["signal_delay_s"], settings["timeout_min"]
        limit_s = minutes * 60
        longest = math.floor(min(SIGNAL_SHARE * limit_s, limit_s - EARLY_SIGNAL_S - MIN_SEGMENT_S))
        if delay <= longest:
            return
        shortest = math.ceil(max(delay / SIGNAL_SHARE, delay + EARLY_SIGNAL_S + MIN_SEGMENT_S) / 60)
        allowed = f"signal_delay_s <= {longest} or " if longest >= 0 else ""
        raise ValueError(f"timeout_min={minutes} ({limit_s} s) with signal_delay_s={delay} leaves a job sure of "
                         f"{max(0, limit_s - delay - EARLY_SIGNAL_S)} s of training before each requeue (SLURM "
                         f"may send the warning up to {EARLY_SIGNAL_S} s earlier than asked); allowed: {allowed}"
                         f"timeout_min >= {shortest} (a job sure of at least {MIN_SEGMENT_S} s, a delay of at most "
                         f"{SIGNAL_SHARE:.0%} of the limit)")

    @classmethod
    def parameters(cls, settings: Settings) -> dict[str, Any]:
        return super().parameters(settings) | {
            "nodes": 1, "cpus_per_task": settings["cpus_per_task"] or max(1, settings["threads_per_run"]),
            "mem_gb": settings["mem_gb"], "slurm_partition": settings["partition"],
            "slurm_account": settings["account"],
            "slurm_array_parallelism": settings["array_parallelism"] or settings["max_parallel"],
            "slurm_signal_delay_s": settings["signal_delay_s"], "slurm_setup": settings["setup"] or None,
            "slurm_additional_parameters": settings["additional"] or None,
        }

    @classmethod
    def executor_arguments(cls, settings: Settings) -> dict[str, Any]:
        return {"slurm_max_num_timeout": settings["max_timeouts"]}

    @classmethod
    def at_once(cls, settings: Settings) -> tuple[int, str]:
        """A study's runs go out as one array, ``array_parallelism`` of them at once."""
        if settings["array_parallelism"]:
            return settings["array_parallelism"], "array_parallelism"
        return super().at_once(settings)

    @classmethod
    def plan_notes(cls, settings: Settings) -> list[str]:
        partition = settings["partition"]
        return [f"SLURM partition {partition!r}" if partition else
                "SLURM partition: the cluster's default (executor.partition is not set)"]

    # After the controller failed to answer, it is not asked again for this long: a study's runs would
    # each wait for their own timeout (20 s apiece) to learn the same thing.
    QUIET_S, TIMEOUT_S = 10.0, 5.0
    _silent_until: ClassVar[float] = 0.0

    @classmethod
    def liveness(cls, job_id: str) -> Liveness:
        return cls.liveness_of([job_id])[job_id]

    @classmethod
    def liveness_of(cls, job_ids: list[str]) -> dict[str, Liveness]:
        """One ``squeue`` for all (array tasks one a line): a waiting state is pending, another live state
        running; a job it does not list, or a job id it no longer knows, ended; an error or no answer within
        ``TIMEOUT_S`` unknown."""
        if time.monotonic() < cls._silent_until:
            return dict.fromkeys(job_ids, "unknown")
        out = cls._ask(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T"])
        if out is not None and out.returncode == 0:
            states: dict[str, set[str]] = {}
            for line in out.stdout.splitlines():
                if len(words := line.split()) == 2:  # an array task also stands for its array's id
                    for job_id in {words[0], words[0].split("_")[0]}:
                        states.setdefault(job_id, set()).add(words[1])
            return {job_id: "pending" if states.get(job_id, set()) & PENDING_JOB_STATES else
                    "running" if states.get(job_id, set()) & LIVE_JOB_STATES else "ended" for job_id in job_ids}
        if out is not None and "Invalid job id" in out.stderr:  # all purged from the controller's memory
            return dict.fromkeys(job_ids, "ended")
        cls._silent_until = time.monotonic() + cls.QUIET_S
        return dict.fromkeys(job_ids, "unknown")

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
