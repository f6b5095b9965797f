"""What an executor kind is: one ``executor.kind`` of a study, as submitit has one executor per backend.

A kind declares the study keys it reads beyond the common ones (``keys``: each key's type and pydantic
``Field``, with its default, range and description; ``check`` for what no single key's range says) and how
they become its submitit executor (``parameters``, ``executor_arguments``, ``make``). It says whether a job
it launched, maybe by an earlier submitter, still runs or waits to (``liveness``; ``liveness_of`` several at
once), whether an ended one was stopped rather than failed (``stopped``, ``stopped_id``), how to stop one
(``cancel``), how the submitter drives its jobs (``foreground``, ``detached``) and what ``ablate plan`` says
of it (``at_once``, ``plan_notes``).

A kind is handed the study's executor section as plain values (``Settings``), never the study. The study
schema (``ablate/schema.py``) is built from ``COMMON_KEYS`` and every registered kind's ``keys``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

if TYPE_CHECKING:
    import submitit

# What a scheduler says of a job: ``pending`` waits to start (also a requeued job), ``unknown`` when it does
# not answer (a controller down or slow), which must never be taken for ``ended``: relaunching a run whose
# job is in fact alive trains it twice at once.
Liveness = Literal["running", "pending", "ended", "unknown"]

Settings = Mapping[str, Any]  # a study's executor section, key -> value (defaults filled in, validated)
Keys = dict[str, tuple[Any, Any]]  # study key -> (its type, its pydantic Field: default, range, description)

# The executor keys of every kind: the submitter's, and submitit's own parameters (``ExecutorKind.parameters``).
COMMON_KEYS: Keys = {
    "max_parallel": (int, Field(1, ge=1, description="runs at once (local processes, search trials; SLURM: the "
                                "array's default parallelism)")),
    "threads_per_run": (int, Field(0, ge=0, description="torch CPU threads per run (0: torch's default)")),
    "max_retries": (int, Field(2, ge=0, description="relaunches of a failed run")),
    "timeout_min": (int, Field(60, ge=1, description="a run's time limit; at the limit it is checkpointed and "
                               "requeued")),
    "gpus_per_node": (int, Field(0, ge=0, description="GPUs per run; the run is data-parallel over them")),
    "tasks_per_node": (int | None, Field(None, ge=1, description="processes per run (default: one per GPU, at "
                                         "least one)")),
}


class ExecutorKind:
    """One ``executor.kind``: its study keys, its submitit executor, and what the submitter asks of its jobs.

    A subclass that sets ``kind`` in a module of this package is registered (``ablate/executors/__init__.py``).
    """

    kind: ClassVar[str]
    summary: ClassVar[str]  # the schema's one-line description of the kind
    cluster: ClassVar[str | None] = None  # submitit's backend (AutoExecutor's cluster) if not named as the kind
    keys: ClassVar[Keys] = {}  # its own study keys; a study of another kind may set them, and they are ignored
    foreground: ClassVar[bool] = False  # jobs run inside the submitter, so one at a time
    detached: ClassVar[bool] = False  # a scheduler runs the jobs: a study is submitted whole, never waited for
    stopped_states: ClassVar[tuple[str, ...]] = ()  # job states (prefixes) of a job someone else stopped

    @classmethod
    def check(cls, settings: Settings) -> None:
        """Raise ``ValueError``, naming the keys and what is allowed, for settings this kind cannot run with
        although each key is in its range."""

    @classmethod
    def parameters(cls, settings: Settings) -> dict[str, Any]:
        """``AutoExecutor.update_parameters`` arguments (None: submitit's default)."""
        return {"timeout_min": settings["timeout_min"],
                "tasks_per_node": settings["tasks_per_node"] or max(1, settings["gpus_per_node"]),
                "gpus_per_node": settings["gpus_per_node"] or None}

    @classmethod
    def executor_arguments(cls, settings: Settings) -> dict[str, Any]:
        """``AutoExecutor`` arguments fixed when it is made (not parameters)."""
        return {}

    @classmethod
    def make(cls, folder: Path, name: str, settings: Settings) -> submitit.Executor:
        """The submitit executor for a study's runs, its jobs named ``name``; a job's logs go to
        ``<folder>/<job id>/``."""
        import submitit  # the schema imports the kinds for their keys; only launching needs submitit

        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cls.cluster or cls.kind,
                                         **cls.executor_arguments(settings))
        params = {"name": name, **cls.parameters(settings)}
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return executor

    @classmethod
    def at_once(cls, settings: Settings) -> tuple[int, str]:
        """How many of a study's runs train at once (``ablate plan``'s wall time), and the key that says so."""
        return settings["max_parallel"], "max_parallel"

    @classmethod
    def plan_notes(cls, settings: Settings) -> list[str]:
        """Lines ``ablate plan`` adds about where the runs go."""
        return []

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

    @classmethod
    def liveness_of(cls, job_ids: list[str]) -> dict[str, Liveness]:
        """``liveness`` of several jobs, in one question to the scheduler where it can."""
        return {job_id: cls.liveness(job_id) for job_id in job_ids}

    @staticmethod
    def cancel(job_id: str) -> None:
        """Stop a job launched by some submitter."""

    @classmethod
    def cancel_all(cls, job_ids: list[str]) -> None:
        """Stop every one of these jobs (a study's live ones)."""
        for job_id in sorted(set(job_ids)):
            cls.cancel(job_id)
