"""A run's state: what the ledger recorded for it, and whether its job is alive (asked of its executor kind).

    missing      no MLflow run yet (or created and never launched)
    queued       launched, waiting for a slot
    running      its job is alive
    done         FINISHED
    failed       FAILED (relaunched while ``retries`` < ``executor.max_retries``)
    interrupted  started, not finished, no live job: launching it again resumes its checkpoint
    pruned       stopped by the search's pruner
    unknown      its job's scheduler does not answer (a SLURM controller down): it may be running, so it is
                 neither relaunched nor counted as ended until the scheduler answers again
"""

from __future__ import annotations

from ablate.executors import EXECUTORS, Liveness
from ablate.ledger import Record

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
    liveness = job_alive(record)
    if liveness == "unknown":
        return "unknown"
    if liveness == "alive":
        return "queued" if record.status == "SCHEDULED" else "running"
    return "failed" if record.status == "FAILED" else "interrupted"


def job_alive(record: Record) -> Liveness:
    """Whether the run's job (its ``executor`` and ``job_id`` tags) still runs or waits to."""
    kind = EXECUTORS.get(record.tags.get("executor", ""))
    return "ended" if kind is None else kind.alive(record.tags.get("job_id", ""))


def cancel_live_jobs(records: list[Record]) -> int:
    """Cancel the jobs of the runs still queued or running; returns how many runs that stopped."""
    alive = [r for r in records if state(r) in ALIVE_STATES]
    for kind in sorted({r.tags["executor"] for r in alive}):
        EXECUTORS[kind].cancel_all([r.tags["job_id"] for r in alive if r.tags["executor"] == kind])
    return len(alive)
