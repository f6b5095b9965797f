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
from tqdm import tqdm

from ablate.executors import EXECUTORS
from ablate.ledger import Ledger, Record
from ablate.states import FOLLOWED_STATES, state
from ablate.study import Run, Study
from ablate.tracking import send_leftovers

POLL_S = 1.0


@dataclass
class TrainJob:
    """What a job runs: ``train`` on one run's resolved config."""

    config: dict
    evaluate: bool = True

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
        return submitit.helpers.DelayedSubmission(TrainJob(self.config, self.evaluate))


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
        self.executor = self.kind.make(study.dir / "submitit", f"nano4m-{study.name}", study.spec.executor.model_dump())
        self.active: dict[str, Active] = {}

    def launch(self, runs: list[Run], records: dict[str, Record], tags: dict[str, str] | None = None) -> None:
        """Record and submit runs (SLURM: as one job array)."""
        if not runs:
            return
        prepared = [self.ledger.prepare(run, records.get(run.key), self.parent_id, tags or {}) for run in runs]
        with self.executor.batch():
            jobs = [self.executor.submit(TrainJob(run.config, self.study.spec.evaluate)) for run in runs]
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
        for key, active in list(self.active.items()):
            if not self._ended(active):
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
                tqdm.write(f"run {key} ({active.run.label}) was cancelled; `ablate submit` resumes it",
                           file=sys.stderr)
                ended.append((active.run, "interrupted"))
                continue
            self.ledger.end(record.run_id, "FAILED")  # the job may have died before the trainer could say so
            retried = self.retry(active.run, self.ledger.record(active.run_id))
            what = f"relaunched (retry {record.retries + 1} of {self.study.spec.executor.max_retries})"
            tqdm.write(f"run {key} ({active.run.label}) failed: {_reason(active.job)}; "
                       f"{what if retried else 'no retries left'}", file=sys.stderr)
            if not retried:
                ended.append((active.run, "failed"))
        return ended

    def drive(self, slots: int, more: Callable[[], bool], launch: Callable[[int], None],
              ended: Callable[[Run, str], None], polled: Callable[[], None], progress: bool) -> None:
        """Launch, follow and wait until no run is active and ``more()`` says nothing is left to launch.

        While ``more()`` and fewer than ``slots`` runs are active, ``launch(free)`` starts up to ``free`` runs
        (each call starts one, or uses up what ``more()`` counts). Then ``ended(run, outcome)`` for every run
        ``poll`` reports, ``polled()``, and a bar per active run when ``progress``; every ``POLL_S``."""
        with RunBars(progress, self.study.spec.evaluate) as run_bars:
            while self.active or more():
                while more() and (free := slots - len(self.active)) > 0:
                    launch(free)
                for run, outcome in self.poll():
                    ended(run, outcome)
                polled()
                run_bars.update(self.active)
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

    def _ended(self, active: Active) -> bool:
        if active.job is not None:
            return active.job.done()
        return state(self.ledger.record(active.run_id)) not in FOLLOWED_STATES


class RunBars:
    """One progress bar per active run, under the study's bar: its training step (from its run folder)
    and last loss, then ``evaluating`` once the last step is logged. Bars come and go with the runs."""

    def __init__(self, enabled: bool, evaluate: bool):
        self.enabled, self.evaluate = enabled, evaluate
        self.bars: dict[str, tqdm] = {}

    def update(self, active: dict[str, Active]) -> None:
        if not self.enabled:
            return
        for key in [k for k in self.bars if k not in active]:
            self.bars.pop(key).close()
        for key, a in active.items():
            step, loss = a.run.progress()
            bar = self.bars.get(key)
            if bar is None:  # starts where the run is (a resumed run), so its speed counts only new steps
                bar = self.bars[key] = tqdm(total=a.run.config["train"]["steps"], initial=step, unit="step",
                                            desc=f"  {a.run.label} s{a.run.seed}", leave=False, dynamic_ncols=True)
            if step >= bar.total:  # trained: the job goes on with the final evaluation (or ends)
                if bar.n < bar.total:
                    bar.update(bar.total - bar.n)
                bar.set_postfix_str("evaluating" if self.evaluate else "finishing", refresh=False)
                bar.refresh()
                continue
            bar.set_postfix_str(f"loss={loss:.3f}" if loss is not None else "starting", refresh=False)
            bar.update(step - bar.n)  # tqdm's smoothed speed and time left
            bar.refresh()

    def __enter__(self) -> RunBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.update({})  # closes every bar, also when the submitter is interrupted


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
    if job is None:
        return "its job ended without finishing"
    try:
        error = job.exception()
    except Exception as e:  # noqa: BLE001  (no result at all: cancelled, killed, out of memory)
        error = e
    lines = str(error or "the job ended without finishing").strip().splitlines()
    said = lines[-1] if lines else type(error).__name__
    cause = _last_error(job.paths.stderr)
    return f"{said}{f'; its log ends: {cause}' if cause and cause not in said else ''} (log: {job.paths.stderr})"


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
        states[run.key] = outcome
        bar.update(1)
        if outcome == "interrupted":  # the study is being cancelled: launch nothing more
            todo.clear()

    def polled() -> None:
        bar.set_postfix(active=len(dispatcher.active), failed=list(states.values()).count("failed"))

    slots = 1 if dispatcher.kind.foreground else study.spec.executor.max_parallel
    with tqdm(total=len(runs), initial=done, desc=f"{study.name}{' ' + what if what else ''}", unit="run",
              disable=not progress) as bar:
        dispatcher.drive(slots, more=lambda: bool(todo), launch=launch, ended=ended, polled=polled, progress=progress)
    return states
