"""``executor.kind: debug``: the runs train inside the submitter, one after the other (for pdb)."""

from __future__ import annotations

from ablate.executors.base import ExecutorKind


class Debug(ExecutorKind):
    """Jobs run inside the submitter: never alive once it has gone, nothing to cancel from outside."""

    kind = "debug"
    summary = "in the submitter's process, one at a time (for pdb)"
    foreground = True
    stopped_states = ("CANCELLED",)
