"""A run's state: what the ledger recorded for it, and whether its job is alive (asked of its executor kind).

    missing      no MLflow run yet (or created and never launched)
    queued       launched, its job waiting to start (SLURM's PENDING, a requeued job too)
    running      its job runs
    done         FINISHED
    failed       FAILED (relaunched while ``retries`` < ``executor.max_retries``)
    interrupted  started, not finished, no live job: launching it again resumes its checkpoint
    pruned       stopped by the search's pruner
    unknown      its job's scheduler does not answer (a SLURM controller down): it may be running, so it is
                 neither relaunched nor counted as ended until the scheduler answers again
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ablate.executors import EXECUTORS, Liveness

if TYPE_CHECKING:  # the CLI's help reads RUN_STATES; the ledger would bring MLflow along
    from ablate.ledger import Record

RUN_STATES = ("missing", "queued", "running", "done", "failed", "interrupted", "pruned", "unknown")
ALIVE_STATES = ("queued", "running")
# Whose job may still run: a submitter follows them and never launches a second job for them.
FOLLOWED_STATES = (*ALIVE_STATES, "unknown")


def state(record: Record | None) -> str:
    """One of the states in the module docstring."""
    if record is None or (record.status == "SCHEDULED" and "job_id" not in record.tags):
        return "missing"
    if record.tags.get("pruned"):
        return "pruned"
    if record.status == "FINISHED":
        return "done"
    liveness = job_liveness(record)
    if liveness == "unknown":
        return "unknown"
    if liveness == "pending" or (liveness == "running" and record.status == "SCHEDULED"):
        return "queued"  # a local job is running as soon as its process is: queued until its trainer starts
    if liveness == "running":
        return "running"
    return "failed" if record.status == "FAILED" else "interrupted"


def job_liveness(record: Record) -> Liveness:
    """Whether the run's job (its ``executor`` and ``job_id`` tags) runs, waits to, or has ended."""
    kind = EXECUTORS.get(record.tags.get("executor", ""))
    return "ended" if kind is None else kind.liveness(record.tags.get("job_id", ""))


def cancel_live_jobs(records: list[Record]) -> int:
    """Cancel the jobs of the runs still queued or running; returns how many runs that stopped."""
    alive = [r for r in records if state(r) in ALIVE_STATES]
    for kind in sorted({r.tags["executor"] for r in alive}):
        EXECUTORS[kind].cancel_all([r.tags["job_id"] for r in alive if r.tags["executor"] == kind])
    return len(alive)
