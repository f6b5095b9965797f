"""Launching a study's runs with submitit and following them to the end.

``Dispatcher`` is the one moving part: it records a run (MLflow child run, run folder), submits a
``TrainJob`` for it, notices when the job ends, and relaunches a failed run up to
``executor.max_retries`` times. Its ``drive`` is the one loop (launch while slots are free, poll, wait);
``submit``'s policy launches a grid's runs, ``ablate.search``'s asks Optuna for trials.

A ``TrainJob`` trains or resumes the run in its folder. On preemption or timeout the trainer saves a
checkpoint at the step it is at, then submitit calls the job's ``checkpoint``, which requeues a fresh
``TrainJob``: the new process resumes from that checkpoint and continues the same MLflow run (its id is in
the run folder).
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import submitit
from submitit.core.utils import JobPaths

from ablate.executors import EXECUTORS
from ablate.ledger import Ledger, Record
from ablate.progress import Progress, say
from ablate.states import FOLLOWED_STATES, state
from ablate.study import Run, Study
from ablate.tracking import send_leftovers
from model.run_folder import RunFolder

POLL_S = 1.0
# How often a scheduler's jobs (a detached kind's) are checked for having ended without a result (cancelled,
# killed): submitit's own check backs off to minutes, the submitter asks the scheduler at this pace instead.
LIVENESS_S = 5.0


class NoProgress(RuntimeError):
    """A job was warned of its end (time limit, preemption) before it trained a step: requeued, it would be
    warned as early again and use up its requeues without training."""


@dataclass
class TrainJob:
    """What a job runs: ``train`` on one run's resolved config, resuming from the checkpoint at
    ``start_step`` (None: the run has none yet)."""

    config: dict
    evaluate: bool = True
    start_step: int | None = None

    def __call__(self) -> dict[str, float]:
        from ablate.tracking import run_tracker
        from model.config import from_dict
        from model.train import TrainOptions, train

        if submitit.JobEnvironment().num_tasks > 1:
            # One task per GPU; Accelerate reads RANK/LOCAL_RANK/WORLD_SIZE. Keeping every GPU visible keeps
            # Accelerate's cuda:LOCAL_RANK valid.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        # The scheduler's warning (USR2 before the time limit or a preemption) checkpoints the step the run is
        # at before submitit's handler requeues the job.
        warning = signal.Signals["SIG" + submitit.JobEnvironment.USR_SIG]
        return train(from_dict(self.config), TrainOptions(evaluate_at_end=self.evaluate, progress=False,
                                                          open_tracker=run_tracker, checkpoint_on=(warning,)))

    def checkpoint(self, *args: object, **kwargs: object) -> submitit.helpers.DelayedSubmission:
        """The requeued job: a fresh ``TrainJob`` from the checkpoint just saved. A job whose run's checkpoint
        is still the one it started from (warned before its first step: SLURM may send the warning up to a
        minute early) raises ``NoProgress`` instead, so the run fails with that reason (and is retried)
        rather than being requeued to no end."""
        step = RunFolder(self.config["train"]["out_dir"]).latest_step()
        if step == self.start_step:
            raise NoProgress(f"this job was warned of its end before it trained a step (checkpoint step "
                             f"{step or 0} at its start and at the warning): a longer executor.timeout_min or a "
                             "shorter executor.signal_delay_s gives each job time to train")
        return submitit.helpers.DelayedSubmission(TrainJob(self.config, self.evaluate, step))


@dataclass
class Active:
    run: Run
    run_id: str
    job: submitit.Job | None  # None: launched by an earlier submitter, followed through the ledger
    cancelled: bool = False  # by this submitter (the search's pruner)


class Dispatcher:
    """Keeps track of the runs it launched or adopted until each is done or has failed for good."""

    def __init__(self, study: Study, ledger: Ledger):
        self.study, self.ledger = study, ledger
        _let_jobs_stop_on_sigint()
        self.parent_id = ledger.parent_id()
        self.kind = EXECUTORS[study.spec.executor.kind]
        self.executor = self.kind.make(jobs_folder(study), f"nano4m-{study.name}", study.spec.executor.model_dump())
        self.active: dict[str, Active] = {}
        self.asked = float("-inf")  # when the scheduler was last asked which of its jobs live

    def launch(self, runs: list[Run], records: dict[str, Record], tags: dict[str, str] | None = None) -> None:
        """Record and submit runs (SLURM: as one job array)."""
        if not runs:
            return
        prepared = [self.ledger.prepare(run, records.get(run.key), self.parent_id, tags or {}) for run in runs]
        with self.executor.batch():
            jobs = [self.executor.submit(TrainJob(run.config, self.study.spec.evaluate, run.checkpoint_step()))
                    for run in runs]
        for run, record, job in zip(runs, prepared, jobs):
            self.ledger.set_tags(record.run_id, executor=self.study.spec.executor.kind, job_id=job.job_id)
            self.active[run.key] = Active(run, record.run_id, job)

    def follow(self, run: Run, record: Record) -> None:
        """Wait for a run whose job an earlier submitter launched."""
        self.active[run.key] = Active(run, record.run_id, None)

    def retry(self, run: Run, record: Record) -> bool:
        """Relaunch a failed run if it has retries left (counted in its ``retries`` tag)."""
        if record.retries >= self.study.spec.executor.max_retries:
            return False
        self.ledger.set_tags(record.run_id, retries=record.retries + 1)
        self.launch([run], {run.key: record})
        return True

    def cancel(self, key: str) -> None:
        """Stop a run's job; ``poll`` reports the run once the job has ended."""
        active = self.active[key]
        active.cancelled = True
        if active.job is not None:
            active.job.cancel(check=False)
        else:
            tags = self.ledger.record(active.run_id).tags
            EXECUTORS[tags["executor"]].cancel(tags["job_id"])

    def poll(self) -> list[tuple[Run, str]]:
        """Runs that ended since the last poll: ``done`` (also when it finished before a cancel arrived);
        ``cancelled`` when this dispatcher cancelled it; ``interrupted`` when someone else did (``scancel``,
        ``ablate cancel``, Ctrl-C: not retried, the next submit resumes it); otherwise it failed (a crash, a
        job that timed out more than ``executor.max_timeouts`` times) and is relaunched, or ``failed`` once
        its retries are spent."""
        ended = []
        gone = self._gone()
        for key, active in list(self.active.items()):
            if not self._ended(active, gone):
                continue
            del self.active[key]
            send_leftovers(active.run.folder, self.study.store.uri)  # its end may wait in its outbox
            record = self.ledger.record(active.run_id)
            if record.status == "FINISHED":
                ended.append((active.run, "done"))
                continue
            if active.cancelled:
                self.ledger.end(record.run_id, "KILLED")
                ended.append((active.run, "cancelled"))
                continue
            if self._stopped(active, record):
                self.ledger.end(record.run_id, "KILLED")
                say(f"run {key} ({active.run.label}) was cancelled; `ablate submit` resumes it")
                ended.append((active.run, "interrupted"))
                continue
            self.ledger.end(record.run_id, "FAILED")  # the job may have died before the trainer could say so
            retried = self.retry(active.run, self.ledger.record(active.run_id))
            what = f"relaunched (retry {record.retries + 1} of {self.study.spec.executor.max_retries})"
            say(f"run {key} ({active.run.label}) failed: {_reason(active.job)}; "
                f"{what if retried else 'no retries left'}")
            if not retried:
                ended.append((active.run, "failed"))
        return ended

    def drive(self, slots: int, more: Callable[[], bool], launch: Callable[[int], None],
              ended: Callable[[Run, str], None], polled: Callable[[], None], progress: Progress) -> None:
        """Launch, follow and wait until no run is active and ``more()`` says nothing is left to launch.

        While ``more()`` and fewer than ``slots`` runs are active, ``launch(free)`` starts up to ``free`` runs
        (each call starts one, or uses up what ``more()`` counts). Then ``ended(run, outcome)`` for every run
        ``poll`` reports, ``polled()`` (which counts what has ended on ``progress``), and ``progress`` shows the
        active runs; every ``POLL_S``."""
        while self.active or more():
            while more() and (free := slots - len(self.active)) > 0:
                launch(free)
            for run, outcome in self.poll():
                ended(run, outcome)
                progress.ended(run, outcome)
            polled()
            progress.show(self.active)
            if self.active:
                time.sleep(POLL_S)

    def _stopped(self, active: Active, record: Record) -> bool:
        """Whether someone else stopped the ended job, by what its scheduler says: the MLflow run of a job that
        timed out too many times, or died before its trainer could say so, still reads KILLED from the last
        requeue. A followed job's scheduler may not say (local, or ``sacct`` not answering): then MLflow."""
        said = self.kind.stopped(active.job) if active.job is not None else None
        if said is None:
            said = EXECUTORS[record.tags["executor"]].stopped_id(record.tags["job_id"])
        return record.status == "KILLED" if said is None else said

    def _ended(self, active: Active, gone: set[str]) -> bool:
        """A launched job has ended when its result is there, or (its scheduler no longer lists it: ``gone``)
        once its accounting says so; a followed one when its MLflow run and its scheduler say so."""
        if active.job is not None:
            return active.job.done(force_check=active.job.job_id in gone)
        return state(self.ledger.record(active.run_id)) not in FOLLOWED_STATES

    def _gone(self) -> set[str]:
        """Every ``LIVENESS_S``, the ids of the launched jobs that the scheduler of a detached kind no longer
        lists as live; else none. One bounded question for all of them (``liveness_of``)."""
        if not self.kind.detached or time.monotonic() - self.asked < LIVENESS_S:
            return set()
        self.asked = time.monotonic()
        ids = [a.job.job_id for a in self.active.values() if a.job is not None]
        return {job_id for job_id, said in self.kind.liveness_of(ids).items() if said == "ended"} if ids else set()


def _let_jobs_stop_on_sigint() -> None:
    """submitit cancels a local job with SIGINT (so do ``ablate cancel`` and the pruner). A shell without job
    control (a script, ``sh -c``, a CI runner) starts a background command (``ablate submit ... &``) with SIGINT
    ignored, and every process it starts would inherit that and never stop on cancel. A handler, unlike an
    ignored signal, is reset to the default in a started process; this one does nothing, so the submitter
    itself still ignores SIGINT as the shell asked."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _ignore)


def _ignore(signum: int, frame: object) -> None:
    pass


def _reason(job: submitit.Job | None) -> str:
    """Why a job ended without finishing its run, in a line: the last line of its log that says why (the
    exception its run raised, submitit's ``timed-out too many times``, SLURM's error), else what submitit
    says of its end; then where its log is."""
    if job is None:
        return "its job ended without finishing"
    cause = _last_error(job.paths.stderr)
    if cause is None:
        try:
            error = job.exception()
        except Exception as e:  # noqa: BLE001  (no result at all: cancelled, killed, out of memory)
            error = e
        cause = _said(error)
    return f"{cause} (log: {job.paths.stderr})"


def _said(error: BaseException | None) -> str:
    """A job's error in a line: the line that names the exception (not submitit's list of log paths), or the
    scheduler state of a job that left no result."""
    text = str(error or "")
    if ended := re.search(r"has not produced any output \(state: ([^)]*)\)", text):
        return f"the job ended without a result (state {ended[1]})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if _ERROR_LINE.match(line)),
                lines[0] if lines else "the job ended without finishing")


# A line of a job's stderr that says why it stopped: a Python exception, submitit's or SLURM's own words.
_ERROR_LINE = re.compile(r"^([\w.]+(Error|Exception|Interrupt|Exit)\b|.*timed-out|slurmstepd: error|srun: error)")


def _last_error(stderr: Path) -> str | None:
    """The last line of a job's stderr that says why it stopped (``... timed-out too many times``, the
    exception a traceback ends with); None when it has none or cannot be read."""
    try:
        lines = stderr.read_text(errors="replace").splitlines()[-200:]
    except OSError:
        return None
    return next((line.strip() for line in reversed(lines) if _ERROR_LINE.match(line.strip())), None)


LOG_TAIL_LINES = 5  # of a job's log in what ``ablate submit`` says last of a run that failed for good


def jobs_folder(study: Study) -> Path:
    """Where a study's jobs keep their logs and pickles, a folder per job id."""
    return study.dir / "submitit"


def job_log(study: Study, job_id: str) -> Path:
    """The stderr log of a study's job (of its first task), as submitit names it."""
    return JobPaths(jobs_folder(study) / "%j", job_id=job_id, task_id=0).stderr


def failure(study: Study, run: Run, record: Record) -> str:
    """What ``ablate submit`` says last of a run that failed for good: the run, why (its last job's log line
    that says why) and the last lines of that log, read from disk (also for a run an earlier submitter
    launched)."""
    head = f"run {run.key} ({run.label} s{run.seed}) failed after {record.retries} retries"
    if "job_id" not in record.tags:
        return f"{head}: it has no job log"
    log = job_log(study, record.tags["job_id"])
    try:
        lines = [line.rstrip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"{head}: its job log {log} cannot be read"
    tail = "\n".join(f"    {line}" for line in lines[-LOG_TAIL_LINES:])
    return f"{head}: {_last_error(log) or 'its log says no cause'}\n  its log {log} ends:\n{tail}"


def submit(study: Study, wait: bool = False, progress: bool = True) -> dict[str, str]:
    """Launch what is missing, resume what was interrupted, retry what failed; returns run key -> state.

    local and debug runs are driven from here (at most ``max_parallel`` at once), so this waits for
    them; a SLURM study is one job array, waited for only with ``wait``.
    """
    ledger = Ledger(study)
    dispatcher = Dispatcher(study, ledger)
    states = follow_and_launch(study, dispatcher, ledger, study.runs, wait, progress)
    if all(s in ("done", "failed") for s in states.values()):
        ledger.end(dispatcher.parent_id, "FINISHED" if all(s == "done" for s in states.values()) else "FAILED")
    return states


def follow_and_launch(study: Study, dispatcher: Dispatcher, ledger: Ledger, runs: list[Run], wait: bool,
                      progress: bool, what: str = "") -> dict[str, str]:
    """``submit`` for some of the study's runs (a race's round: ``what`` names it on the first line): follow
    those still running, launch the missing and interrupted ones, retry the failed ones; returns run key ->
    state once all have ended (local, or with ``wait``), else once launched."""
    for run in runs:  # what trainers could not send (their store was away) first: it may finish a run
        send_leftovers(run.folder, study.store.uri)
    records = ledger.records()
    states = {run.key: state(records.get(run.key)) for run in runs}
    todo = []
    for run in runs:
        s, record = states[run.key], records.get(run.key)
        if s in FOLLOWED_STATES:
            dispatcher.follow(run, record)
        elif s in ("missing", "interrupted"):
            todo.append(run)
        elif s == "failed" and dispatcher.retry(run, record):
            states[run.key] = "queued"
    counts = Counter(states.values())
    print(f"{study.name}{' ' + what if what else ''}: {len(runs)} runs "
          f"({', '.join(f'{n} {s}' for s, n in counts.items())}); launching {len(todo)}", file=sys.stderr)
    if dispatcher.kind.detached:
        dispatcher.launch(todo, records)
        todo.clear()
        if not wait:
            return {key: "queued" if key in dispatcher.active and s != "unknown" else s for key, s in states.items()}
    done = sum(s in ("done", "pruned", "failed") for s in states.values())

    def launch(free: int) -> None:
        dispatcher.launch(todo[:free], records)
        del todo[:free]

    def ended(run: Run, outcome: str) -> None:
        nonlocal done
        states[run.key] = outcome
        done += 1
        if outcome == "interrupted":  # the study is being cancelled: launch nothing more
            todo.clear()

    def polled() -> None:
        shown.count(done, active=len(dispatcher.active), failed=list(states.values()).count("failed"))

    slots = 1 if dispatcher.kind.foreground else study.spec.executor.max_parallel
    with Progress(f"{study.name}{' ' + what if what else ''}", len(runs), done, "run", study.spec.evaluate,
                  shown=progress) as shown:
        dispatcher.drive(slots, more=lambda: bool(todo), launch=launch, ended=ended, polled=polled, progress=shown)
    return states
